"""Depthwise causal 1-D convolution (with optional fused SiLU) in Triton: forward and backward.

CUDA GPUs; CPU tensors under ``TRITON_INTERPRET=1`` (tests). Semantics as
:func:`videomamba.ops.causal_conv1d.causal_conv1d_ref`: for ``x (batch, dim, L)``, ``weight (dim, K)``

    y[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (K-1) + k]      (zero left padding)

then SiLU when asked. ``reverse=True`` is the anti-causal ``flip(conv(flip(x)))``, i.e. tap ``k`` reads
``x[t + (K-1) - k]`` (zero right padding); it is computed by indexing, without flip copies.

Layout. Tensors are contiguous ``(batch, dim, L)``, so a row of one channel is contiguous along ``L``.
The grid is ``(cdiv(L, BLOCK_L), cdiv(dim, BLOCK_C), batch)`` (sequence blocks on axis 0, which has no
65535 limit); each program owns a ``(BLOCK_C, BLOCK_L)`` tile of one batch element. Tap ``k`` is one
masked tile load of ``x`` shifted by ``K-1-k`` positions, so the ``K`` loads together read the tile plus its
``K-1``-position halo (left halo causal, right halo reverse); every load is coalesced along ``L`` and the
overlapping parts come from cache. Math is fp32 whatever the input dtype (fp32/bf16/fp16 x; any float
weight and bias); outputs are stored in x's dtype.

Backward, with ``g = dy * silu'(y_pre)`` (``g = dy`` without SiLU) and ``s_k = K-1-k``:
``dx[t] = sum_k w[k] * g[t + s_k]`` (reverse: ``g[t - s_k]``), ``dw[k] = sum_t g[t] * x[t - s_k]``,
``dbias = sum_t g[t]``. ``g`` outside the tile (the ``K-1`` halo positions ``dx`` needs) is recomputed from
``x`` in the same program rather than written to memory and read back, so one pass reads ``x`` and ``dy``
and writes ``dx``. The ``dw``/``dbias`` sums are reduced over the tile's positions inside the program and
written as one partial per ``(batch, sequence block)``; the host sums the partials with torch, so the
result is deterministic (no atomics).

Block sizes: on CUDA a small ``triton.autotune`` space keyed on ``(dim, L)``; under the interpreter (which
cannot autotune) one fixed config. ``conv_fwd`` / ``conv_bwd`` take a private ``_config`` dict
(``BLOCK_C``, ``BLOCK_L``, optional ``num_warps``) that bypasses the autotuner, so tests can force small
blocks whose boundaries the test shapes cross.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

MAX_K = 8   # taps the dispatch sends here (the kernels unroll K*K loads in the SiLU backward)

# One config where the autotuner cannot run (the interpreter) and for explicit calls without _config.
_FIXED = dict(BLOCK_C=16, BLOCK_L=64, num_warps=4)


@triton.jit
def _sigmoid(v):
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _conv_at(xb, w_ptr, b_ptr, offs_c, pos, mask_c, L, K: tl.constexpr, HAS_BIAS: tl.constexpr,
             REVERSE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """The pre-activation conv output (fp32) at positions ``pos`` of channels ``offs_c``."""
    acc = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[:, None]
    for k in tl.static_range(K):
        if REVERSE:
            src = pos + (K - 1 - k)
        else:
            src = pos - (K - 1 - k)
        m = mask_c[:, None] & ((src >= 0) & (src < L))[None, :]
        xv = tl.load(xb + offs_c[:, None] * L + src[None, :], mask=m, other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + offs_c * K + k, mask=mask_c, other=0.0).to(tl.float32)
        acc += wk[:, None] * xv
    return acc


@triton.jit
def _grad_at(xb, dyb, w_ptr, b_ptr, offs_c, pos, mask_c, L, K: tl.constexpr, HAS_BIAS: tl.constexpr,
             SILU: tl.constexpr, REVERSE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """``g = dy * silu'(y_pre)`` at positions ``pos`` (fp32), zero outside ``[0, L)`` and past ``dim``."""
    valid = mask_c[:, None] & ((pos >= 0) & (pos < L))[None, :]
    g = tl.load(dyb + offs_c[:, None] * L + pos[None, :], mask=valid, other=0.0).to(tl.float32)
    if SILU:
        v = _conv_at(xb, w_ptr, b_ptr, offs_c, pos, mask_c, L, K, HAS_BIAS, REVERSE, BLOCK_C, BLOCK_L)
        s = _sigmoid(v)
        g = g * s * (1.0 + v * (1.0 - s))
    return g


@triton.jit
def _tile(dim, L, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's (sequence block, channel block, batch element): channel / position offsets, the channel
    mask and the 64-bit offset of its batch element (offsets inside one batch element fit 32 bits)."""
    pid_l, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    return pid_l, pid_b, offs_c, offs_t, offs_c < dim, pid_b.to(tl.int64) * dim * L


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, dim, L,
                     K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, pid_b, offs_c, offs_t, mask_c, base = _tile(dim, L, BLOCK_C, BLOCK_L)
    acc = _conv_at(x_ptr + base, w_ptr, b_ptr, offs_c, offs_t, mask_c, L, K, HAS_BIAS, REVERSE, BLOCK_C, BLOCK_L)
    if SILU:
        acc = acc * _sigmoid(acc)
    mask = mask_c[:, None] & (offs_t < L)[None, :]
    tl.store(y_ptr + base + offs_c[:, None] * L + offs_t[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, dx_ptr, dw_part_ptr, db_part_ptr, dim, L,
                     K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l, pid_b, offs_c, offs_t, mask_c, base = _tile(dim, L, BLOCK_C, BLOCK_L)
    xb = x_ptr + base
    dyb = dy_ptr + base

    # g on the tile's own positions: the dw / dbias partials and the s_k = 0 tap of dx.
    g = _grad_at(xb, dyb, w_ptr, b_ptr, offs_c, offs_t, mask_c, L, K, HAS_BIAS, SILU, REVERSE, BLOCK_C, BLOCK_L)
    part = (pid_b * tl.num_programs(0) + pid_l).to(tl.int64) * dim + offs_c   # row of (batch * n_l, dim)
    if HAS_BIAS:
        tl.store(db_part_ptr + part, tl.sum(g, axis=1), mask=mask_c)
    for k in tl.static_range(K):
        if REVERSE:
            src = offs_t + (K - 1 - k)
        else:
            src = offs_t - (K - 1 - k)
        m = mask_c[:, None] & ((src >= 0) & (src < L))[None, :]
        xv = tl.load(xb + offs_c[:, None] * L + src[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(dw_part_ptr + part * K + k, tl.sum(g * xv, axis=1), mask=mask_c)

    # dx[t] = sum_j w[j] g[t + s_j] (reverse: g[t - s_j]); g beyond the tile is recomputed (the halo).
    w_last = tl.load(w_ptr + offs_c * K + (K - 1), mask=mask_c, other=0.0).to(tl.float32)
    dx = w_last[:, None] * g
    for j in tl.static_range(K - 1):
        if REVERSE:
            pos = offs_t - (K - 1 - j)
        else:
            pos = offs_t + (K - 1 - j)
        gj = _grad_at(xb, dyb, w_ptr, b_ptr, offs_c, pos, mask_c, L, K, HAS_BIAS, SILU, REVERSE, BLOCK_C, BLOCK_L)
        wj = tl.load(w_ptr + offs_c * K + j, mask=mask_c, other=0.0).to(tl.float32)
        dx += wj[:, None] * gj
    mask = mask_c[:, None] & (offs_t < L)[None, :]
    tl.store(dx_ptr + base + offs_c[:, None] * L + offs_t[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _bwd_block_l(L: int) -> int:
    """The backward's sequence block on CUDA: fixed per L (the autotuner varies the rest), because the
    number of sequence blocks sets the shape of the dw / dbias partial buffers."""
    return 128 if L >= 1024 else 64


# The autotuning spaces: forward (BLOCK_C, BLOCK_L, num_warps); backward (BLOCK_C, num_warps), BLOCK_L from L.
FWD_SPACE = [(4, 256, 4), (8, 128, 4), (16, 128, 4), (32, 64, 4), (16, 256, 8), (32, 128, 8)]
BWD_SPACE = [(8, 4), (16, 4), (32, 4), (32, 8), (64, 8)]


def _autotuner(which: str, space, do_bench=None):
    """``triton.autotune`` over ``space`` (see FWD_SPACE / BWD_SPACE), keyed on ``(dim, L)``; ``do_bench``
    replaces Triton's GPU timer (tests drive this path in the interpreter with a fake one)."""
    if which == "fwd":
        configs = [triton.Config(dict(BLOCK_C=c, BLOCK_L=l), num_warps=w) for c, l, w in space]
        kernel = _conv_fwd_kernel
    else:
        configs = [triton.Config(dict(BLOCK_C=c), num_warps=w) for c, w in space]
        kernel = _conv_bwd_kernel
    extra = {} if do_bench is None else {"do_bench": do_bench}
    return triton.autotune(configs=configs, key=["dim", "L"], **extra)(kernel)


@functools.lru_cache(maxsize=None)
def _tuned(which: str):
    return _autotuner(which, FWD_SPACE if which == "fwd" else BWD_SPACE)


def _use_autotune(x: torch.Tensor, config) -> bool:
    return config is None and x.is_cuda and not _interpreting()


def _split_config(config) -> tuple[dict, dict]:
    cfg = dict(_FIXED if config is None else config)
    launch = {"num_warps": cfg.pop("num_warps", 4)}
    return cfg, launch


def _weight2d(weight: torch.Tensor, dim: int) -> torch.Tensor:
    w = weight.reshape(dim, -1).contiguous()
    if not 1 <= w.shape[1] <= MAX_K:
        raise ValueError(f"causal conv Triton kernel: K must be in [1, {MAX_K}], got {w.shape[1]}")
    return w


def conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, silu: bool = False,
             reverse: bool = False, _config: dict | None = None) -> torch.Tensor:
    """``y (batch, dim, L)`` in x's dtype (contiguous). ``_config``: see module doc."""
    batch, dim, L = x.shape
    w = _weight2d(weight, dim)
    xx = x.contiguous()
    y = torch.empty(batch, dim, L, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    b = bias.contiguous() if bias is not None else w   # (a dummy pointer, never read without HAS_BIAS)
    meta = dict(K=w.shape[1], HAS_BIAS=bias is not None, SILU=bool(silu), REVERSE=bool(reverse))
    if _use_autotune(x, _config):
        def grid(m):
            return triton.cdiv(L, m["BLOCK_L"]), triton.cdiv(dim, m["BLOCK_C"]), batch
        _tuned("fwd")[grid](xx, w, b, y, dim, L, **meta)
        return y
    cfg, launch = _split_config(_config)
    grid = (triton.cdiv(L, cfg["BLOCK_L"]), triton.cdiv(dim, cfg["BLOCK_C"]), batch)
    _conv_fwd_kernel[grid](xx, w, b, y, dim, L, **meta, **cfg, **launch)
    return y


def conv_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             silu: bool = False, reverse: bool = False, _config: dict | None = None):
    """``(dx, dweight, dbias)``: dx in x's dtype, dweight shaped and typed as ``weight``, dbias as ``bias``
    (None without bias)."""
    batch, dim, L = x.shape
    w = _weight2d(weight, dim)
    K = w.shape[1]
    dev = x.device
    dx = torch.empty(batch, dim, L, dtype=x.dtype, device=dev)
    if dx.numel() == 0:
        dx.zero_()
        dweight = torch.zeros_like(weight)
        return dx, dweight, (torch.zeros_like(bias) if bias is not None else None)
    xx, gg = x.contiguous(), dy.contiguous()
    b = bias.contiguous() if bias is not None else w
    meta = dict(K=K, HAS_BIAS=bias is not None, SILU=bool(silu), REVERSE=bool(reverse))
    tune = _use_autotune(x, _config)
    if tune:
        block_l = _bwd_block_l(L)
    else:
        cfg, launch = _split_config(_config)
        block_l = cfg["BLOCK_L"]
    n_l = triton.cdiv(L, block_l)
    dw_part = torch.empty(batch * n_l, dim, K, dtype=torch.float32, device=dev)
    db_part = torch.empty(batch * n_l, dim, dtype=torch.float32, device=dev) if bias is not None else dw_part
    args = (xx, w, b, gg, dx, dw_part, db_part, dim, L)
    if tune:
        def grid(m):
            return n_l, triton.cdiv(dim, m["BLOCK_C"]), batch
        _tuned("bwd")[grid](*args, **meta, BLOCK_L=block_l)
    else:
        grid = (n_l, triton.cdiv(dim, cfg["BLOCK_C"]), batch)
        _conv_bwd_kernel[grid](*args, **meta, **cfg, **launch)
    dweight = dw_part.sum(0).reshape(weight.shape).to(weight.dtype)
    dbias = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias
