"""The bidirectional mixer without gradients, in chunks along the sequence: a working set independent of L.

The unchunked forward materialises a dozen ``(b, d_inner, L)`` tensors per block (in_proj halves, two conv
outputs, two deltas, two scan outputs, the gate), which at 64 frames is more memory than the whole residual
stream. Here every one of them lives for one chunk only:

* pass 1, chunks from the last to the first: in_proj (x half) of the chunk and the K-1 rows after it (the
  anti-causal conv's halo) -> conv -> x_proj / dt_proj -> reverse scan starting from the state the chunk
  after left -> the ungated output ``y_b`` is written to one ``b * d_inner * L`` buffer, the only
  full-length intermediate (the model reuses it across blocks);
* pass 2, chunks from the first to the last: in_proj (x and z) of the chunk and the K-1 rows before it ->
  causal conv -> x_proj / dt_proj -> forward scan carrying the state -> ``(y_f + y_b) * silu(z)`` ->
  out_proj, written (or added, for an in-place residual update) to the chunk's rows of the output once the
  next chunk has read its halo rows.

The x half of in_proj runs twice (once per pass), the K-1 halo rows of in_proj and the conv three times;
everything else once. The outputs equal the unchunked
path's up to float rounding (the gate is applied to the sum instead of to each direction).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..ops import add_norm_into, fused_mixer_cpu, norm_forward
from ..ops.selective_scan import ENV_VAR as SCAN_BACKEND_VAR
from . import mixer_math
from .mixer_math import (_weight_matmul, fused_applies, fused_direction, gated_scan_sum, project_in_half,
                         project_out, scan_backend_for, scan_direction)
from .workspace import Workspace


def _eager(t: torch.Tensor) -> bool:
    from ..ops.scan_op import _eager as eager

    return eager(t)


def runs_in_chunks(chunk: int, L: int) -> bool:
    """Whether a no-grad sequence of L tokens runs in chunks of ``chunk``: when it is longer than two chunks.
    Up to two, chunking would save at most half of the (small) working set but costs a second x projection
    and a pass per direction, so it runs whole (measured: 8 frames 1.3x faster whole than in 1024-token chunks)."""
    return 0 < chunk and 2 * chunk < L


def chunked_inference_applies(mixer, h: torch.Tensor) -> bool:
    """Chunk when no gradient is recorded, the sequence is longer than two chunks (:func:`runs_in_chunks`),
    nothing traces, and the scan backend can start from a state (not mamba_ssm: see :func:`mixer_chunked`)."""
    return (not torch.is_grad_enabled() and runs_in_chunks(getattr(mixer, "inference_chunk", 0), h.shape[1])
            and _eager(h) and _scan_backend(h, mixer) != "mamba_ssm")


def _chunks(L: int, size: int):
    return [(s, min(s + size, L)) for s in range(0, L, size)]


def _conv_inputs(mixer, x_ext, p, reverse: bool, n: int):
    """Conv over the chunk plus its halo, keep the chunk's n positions, then dt / B / C on those only."""
    from ..ops.causal_conv1d import causal_conv1d_window

    xc = causal_conv1d_window(x_ext, p.conv_weight, p.conv_bias, "silu", reverse, n)
    x_dbl = _weight_matmul(p.x_proj_weight, xc)
    dt, B, C = torch.split(x_dbl, [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=1)
    return xc, _weight_matmul(p.dt_proj_weight, dt), B, C


def _scan_into(kernel, xc, dt, B, C, p, reverse, state, out, add=None, z=None):
    """The scan of one chunk written into ``out``: ``(y + add) * silu(z)``, or ungated without z (kernel
    backends write there directly and fuse the add and the gate into their last pass)."""
    if kernel is None:
        y, last = scan_direction(xc, dt, B, C, p, None, reverse, initial_state=state, return_last_state=True)
        if add is not None:
            y = y + add
        if z is not None:
            y = y * F.silu(z)
        return out.copy_(y), last
    f = torch.float64 if p.A_log.dtype == torch.float64 else torch.float32
    return kernel.scan_fwd(xc, dt, -torch.exp(p.A_log.to(f)), B, C, p.D.to(f), z, p.dt_proj_bias.to(f), True,
                           reverse, initial_state=state, out=out, add=add)


def _scan_backend(x: torch.Tensor, mixer) -> str:
    """The backend the scans of this mixer will resolve to for activations like ``x``."""
    return scan_backend_for(x, mixer.A_log)


def _scan_kernel(x: torch.Tensor, mixer, name: str | None = None):
    """The kernel module the scans of this mixer will use, or None (reference / mamba_ssm: the public path)."""
    from ..ops.scan_op import _kernel_module

    name = name or _scan_backend(x, mixer)
    if name not in ("cpu", "triton") or x.dtype != torch.float32:
        return None
    return _kernel_module(name, x.device.type)


INFERENCE_MEMORY = ("fast", "low")


@torch.no_grad()
def mixer_chunked(mixer, src: torch.Tensor, *, out: torch.Tensor, norm=None, accumulate: bool = False,
                  y_b: torch.Tensor | None = None, hidden_dtype: torch.dtype | None = None,
                  chunk: int | None = None, memory: str = "fast", workspace: Workspace | None = None) -> torch.Tensor:
    """``out = mixer(h)`` (``accumulate``: ``out += mixer(h)``) with ``h = src``, or ``h = norm(src)`` when a norm
    is given (then ``src`` is the residual stream and ``out`` may be ``src`` itself: a chunk's rows are
    updated only after the next chunk has read its conv halo from them).

    ``memory="fast"`` keeps the backward direction's output for the whole sequence between the passes (``y_b``:
    an optional buffer of ``>= b * d_inner * L`` elements, chunk-major so that each chunk's slab is contiguous;
    allocated if None). ``"low"`` keeps only its state at each chunk boundary and scans each chunk backwards
    again in pass 2 (the x projection is shared, the conv / x_proj / dt_proj / scan of that direction run
    twice): nothing of length L but the stream itself, for ~20% more time.

    ``workspace``: where the chunk buffers (and ``y_b`` when not given) come from, reused across blocks and calls
    (:class:`.workspace.Workspace`); a private one when None.
    """
    if memory not in INFERENCE_MEMORY:
        raise ValueError(f"mixer_chunked: memory must be one of {INFERENCE_MEMORY}, got {memory!r}")
    b, L, _ = src.shape
    chunk = chunk or mixer.inference_chunk
    halo = mixer.d_conv - 1
    dtype = hidden_dtype or src.dtype
    Di = mixer.d_inner
    low = memory == "low"
    ws = workspace if workspace is not None else Workspace()

    def mixer_input(s, e):
        h = src[:, s:e]
        if norm is not None and h.dtype == dtype:   # normalised into the workspace (no allocation per chunk)
            h = add_norm_into(norm, h, None, ws.take("h", h.shape, dtype, h.device))
        elif norm is not None:
            h = norm_forward(norm, h, None, prenorm=False).to(dtype)
        return h

    w_in, b_in = mixer.in_proj.weight, mixer.in_proj.bias
    probe = src.to(dtype) if src.dtype != dtype else src
    backend = _scan_backend(probe, mixer)
    if backend == "mamba_ssm":
        # mamba-ssm's scan cannot start from a given state, so it cannot continue a chunk from the previous
        # one. Rather than run our kernel in its place (its measurements must be its own), the sequence is
        # one chunk: each direction is one mamba-ssm call over all of L, with no initial state. Same results;
        # the working set of the unchunked forward (the in-place residual update is kept).
        chunk = L
    kernel = _scan_kernel(probe, mixer, backend)
    pieces = _chunks(L, chunk)
    out_dtype = torch.float32 if kernel is not None else dtype
    if low:
        y_b = ws.take("y_b", (b * Di * min(chunk, L),), out_dtype, src.device)   # one chunk, reused
    elif y_b is None:
        y_b = ws.take("y_b", (b * Di * L,), out_dtype, src.device)

    def buffer(name, n, dt=dtype):   # a (b, Di, n) chunk buffer of the workspace
        return ws.take(name, (b, Di, n), dt, src.device)

    def slab(s, e):   # the backward direction's output for positions [s, e), contiguous (b, Di, e - s)
        offset = 0 if low else b * Di * s
        return y_b[offset:offset + b * Di * (e - s)].view(b, Di, e - s)

    # Pass 1: the backward direction, last chunk first; keeps its ungated output ("fast") or the state that
    # enters each chunk ("low"). The anti-causal conv's halo (the next positions' x) comes from projecting a
    # few more rows of the input.
    p_b = mixer.direction_params(reverse=True)
    fused = fused_applies(probe, p_b)
    state, entering = None, {}
    for s, e in reversed(pieces):
        entering[s] = state
        e1 = min(e + halo, L)
        x_ext = project_in_half(mixer_input(s, e1), w_in, b_in, 0, out=buffer("x", e1 - s))
        if fused:   # conv, projections and scan in one kernel pass (the state it leaves goes to the chunk before)
            _, (_, state) = fused_mixer_cpu.mixer_fwd(x_ext, None, fused_direction(p_b, state), n=e - s,
                                                      out=slab(s, e), return_last_state=True)
            continue
        xc, dt, B, C = _conv_inputs(mixer, x_ext, p_b, True, e - s)
        _, state = _scan_into(kernel, xc, dt, B, C, p_b, True, state, slab(s, e))
        del x_ext, xc, dt, B, C

    # Pass 2: the forward direction, first chunk first; gate, out_proj, write. The causal conv's halo is
    # projected from the rows before the chunk, which is why each chunk's result is written one step late.
    p = mixer.direction_params(reverse=False)
    state, pending = None, None
    for s, e in pieces:
        s0, e1 = max(s - halo, 0), (min(e + halo, L) if low else e)
        h = mixer_input(s0, e1)
        x_ext = project_in_half(h, w_in, b_in, 0, out=buffer("x", e1 - s0))
        z = project_in_half(h[:, s - s0:e - s0], w_in, b_in, 1, out=buffer("z", e - s))
        del h
        if pending is not None:
            _write(out, *pending, accumulate)
        if fused:   # low: the backward direction again from the state saved at the chunk's end, in the same pass
            y, (state, _) = fused_mixer_cpu.mixer_fwd(
                x_ext, fused_direction(p, state), fused_direction(p_b, entering[s]) if low else None, lo=s - s0,
                n=e - s, z=z, add=None if low else slab(s, e), scale=0.5 if mixer.divide_output else 1.0,
                out=z if not low and z.dtype == torch.float32 else buffer("y", e - s, torch.float32),
                scratch=y_b if low else None, return_last_state=True)   # (one direction may overwrite z)
            del x_ext, z
            o = ws.take("o", (b, e - s, mixer.out_proj.weight.shape[0]), dtype, src.device)   # written next chunk
            pending = (s, e, project_out(y.to(dtype), mixer.out_proj.weight, mixer.out_proj.bias, out=o))
            del y
            continue
        if low:   # this chunk's backward direction again, from the state saved at its end
            xc, dt, B, C = _conv_inputs(mixer, x_ext[..., s - s0:], p_b, True, e - s)
            _scan_into(kernel, xc, dt, B, C, p_b, True, entering[s], slab(s, e))
            x_ext = x_ext[..., :e - s0]
        xc, dt, B, C = _conv_inputs(mixer, x_ext, p, False, e - s)
        del x_ext
        y = torch.empty(b, Di, e - s, device=src.device, dtype=out_dtype)
        y, state = _scan_into(kernel, xc, dt, B, C, p, False, state, y, add=slab(s, e), z=z)
        del xc, dt, B, C, z
        if mixer.divide_output:
            y = y / 2
        pending = (s, e, project_out(y.to(dtype), mixer.out_proj.weight, mixer.out_proj.bias))
        del y
    _write(out, *pending, accumulate)
    return out


def _write(out, s, e, o, accumulate):
    if accumulate:
        out[:, s:e] += o
    else:
        out[:, s:e] = o


def fused_call_conditions(x: torch.Tensor, dtype: torch.dtype | None = None):
    """What a packed pair of :func:`_fused_pair` depends on beyond the parameters, for activations like ``x``
    (in ``dtype`` when given): the kernel build, the scan backend variable, the fused-kernel switch, gradient
    mode, the dtype and device; None where nothing may be packed (not eager). The block loop computes it once
    per forward, not per block."""
    if not _eager(x):
        return None
    return (fused_mixer_cpu.cpu_arch(), os.environ.get(SCAN_BACKEND_VAR), mixer_math.FUSED_ENABLED,
            torch.is_grad_enabled(), dtype or x.dtype, x.device.type)


_UNSET = object()


def _parameters_signature(tensors) -> tuple:
    """What a packed pair depends on in its parameters: each one's address, dtype and shape (None kept in
    place). In-place updates leave it unchanged and need no re-packing: the kernel reads the parameters' memory."""
    return tuple([None if t is None else (t.data_ptr(), t.dtype, t.shape) for t in tensors])


def _fused_pair(mixer, x: torch.Tensor, conditions=_UNSET):
    """The mixer's two directions packed for the fused kernel (:class:`~videomamba.ops.fused_mixer_cpu.
    PackedPair`), kept on the mixer; None where the fused kernel does not apply. The cache holds while every
    parameter has the same address, dtype and shape, and the per-call conditions (:func:`fused_call_conditions`,
    given by a caller that computed them for this call) are unchanged; in-place updates need no re-packing (the
    kernel reads the parameters' memory)."""
    if conditions is _UNSET:
        conditions = fused_call_conditions(x)
    if conditions is None:
        return None
    tensors = mixer.direction_tensors() if hasattr(mixer, "direction_tensors") else None
    if tensors is None:
        return None
    signature = (conditions, _parameters_signature(tensors))
    cached = mixer.__dict__.get("_fused_pair_cache")
    if cached is not None and cached[0] == signature:
        return cached[1]
    params = (mixer.direction_params(False), mixer.direction_params(True))
    pair = None
    if fused_applies(x, params[0]):
        pair = fused_mixer_cpu.pack_pair(fused_direction(params[0]), fused_direction(params[1]))
    mixer.__dict__["_fused_pair_cache"] = (signature, pair)
    return pair


def fused_pairs(owner, mixers, probe: torch.Tensor, conditions) -> list:
    """:func:`_fused_pair` of every mixer of a stack, for one forward over all of them, with one check of the
    whole stack (every parameter's address, dtype and shape, and the per-call conditions) instead of one per block:
    the per-block check cost about 20-25 us per block of an image forward, 1.5-2% of it. The list is kept on
    ``owner`` (``_fused_pairs_cache``; drop it when pickling: it holds ctypes pointers). ``probe``: a tensor
    with the in_proj output's dtype and device."""
    if conditions is None:
        return [None] * len(mixers)
    stack = [m.direction_tensors() if hasattr(m, "direction_tensors") else None for m in mixers]
    if any(tensors is None for tensors in stack):
        return [_fused_pair(m, probe, conditions) for m in mixers]
    signature = (conditions, tuple(_parameters_signature(tensors) for tensors in stack))
    cached = owner.__dict__.get("_fused_pairs_cache")
    if cached is not None and cached[0] == signature:
        return cached[1]
    pairs = [_fused_pair(m, probe, conditions) for m in mixers]
    owner.__dict__["_fused_pairs_cache"] = (signature, pairs)
    return pairs


@torch.no_grad()
def mixer_whole(mixer, h: torch.Tensor, workspace: Workspace, out: torch.Tensor | None = None,
                conditions=_UNSET, pair=_UNSET) -> torch.Tensor:
    """``mixer(h)`` without gradients over the whole sequence (no chunks: the fastest way for sequences up to
    two chunks), every ``(b, d_inner, L)`` tensor a view of ``workspace``. The result goes to ``out``, which may
    be ``h`` itself (only in_proj reads h, before out is written), else to the workspace's ``"o"`` buffer: use
    it before the next call. ``conditions``: :func:`fused_call_conditions` of this call's activations, when the
    caller computed them once for all its blocks; ``pair``: this mixer's entry of :func:`fused_pairs`, when the
    caller took them for all its blocks."""
    b, L, _ = h.shape
    Di, ws = mixer.d_inner, workspace
    w_in, b_in = mixer.in_proj.weight, mixer.in_proj.bias
    # One sequence takes both halves from one product (the rows of a (1, 2Di, L) result are two contiguous
    # halves): one call instead of two, 8% faster at an image's 197 tokens; past a thousand tokens the product
    # runs in blocks of columns (mixer_math.IN_PROJ_COLUMNS), faster than two half-height products.
    if b == 1:
        xz = project_in_half(h, w_in, b_in, None, out=ws.take("xz", (1, 2 * Di, L), h.dtype, h.device))
        x, z = xz[:, :Di], xz[:, Di:]
    else:
        x = project_in_half(h, w_in, b_in, 0, out=ws.take("x", (b, Di, L), h.dtype, h.device))
        z = project_in_half(h, w_in, b_in, 1, out=ws.take("z", (b, Di, L), h.dtype, h.device))
    if pair is _UNSET:
        pair = _fused_pair(mixer, x, conditions)
    scale = 0.5 if mixer.divide_output else 1.0
    if pair is not None:
        y = fused_mixer_cpu.mixer_fwd_packed(pair, x, z, ws.take("y", (b, Di, L), torch.float32, h.device),
                                             ws.take("y_b", (b * Di * L,), torch.float32, h.device), scale)
    else:
        params = (mixer.direction_params(False), mixer.direction_params(True))
        if fused_applies(x, params[0]):
            y = fused_mixer_cpu.mixer_fwd(x, fused_direction(params[0]), fused_direction(params[1]), z=z,
                                          scale=scale, out=ws.take("y", (b, Di, L), torch.float32, h.device),
                                          scratch=ws.take("y_b", (b * Di * L,), torch.float32, h.device))
        else:
            y = gated_scan_sum(x, z, params, mixer.dt_rank, mixer.d_state, mixer.divide_output)
    if out is None:
        out = ws.take("o", (b, L, mixer.out_proj.weight.shape[0]), h.dtype, h.device)
    return project_out(y.to(h.dtype), mixer.out_proj.weight, mixer.out_proj.bias, out=out)
