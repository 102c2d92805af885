"""Selective scan in Triton (CUDA GPUs; CPU tensors under ``TRITON_INTERPRET=1`` for tests).

Each program owns one batch element and a block of channels that all use the same B/C group, holds
the ``(BLOCK_D, N)`` state in registers and walks the sequence. The backward never stores the
``batch*dim*L*N`` states: a first sweep keeps one state every ``CHUNK`` steps (``batch*dim*L*N/CHUNK``
values, with CHUNK = 16 and N = 16 that is ``batch*dim*L``), then the reverse sweep recomputes one
chunk at a time into a small per-program scratch buffer and runs the adjoint recurrence over it.
B/C gradients are reduced over the channel block inside the program and over blocks by the caller,
so the result is deterministic (no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 16


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)), with log1p by Goldberg's trick (accurate for very negative x)
    y = tl.exp(-tl.abs(x))
    u = 1.0 + y
    d = u - 1.0
    l1p = tl.where(d == 0.0, y, tl.log(u) * (y / tl.where(d == 0.0, 1.0, d)))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + l1p)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _block_setup(A_ptr, D_ptr, bias_ptr, dim, L, N, G, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch element, channel block (all in one B/C group), masks and per-channel params."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    g = (pid_d * BLOCK_D) // (dim // G)
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        Dv = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_D], tl.float32)
    row = (pid_b * dim + offs_d) * L
    bc = ((pid_b * G + g) * N + offs_n) * L
    return pid_b, pid_d, offs_d, offs_n, mask_d, mask_n, mask_dn, A, Dv, bias, row, bc


@triton.jit
def _step(h, t, u_ptr, delta_ptr, B_ptr, A, bias, row, bc, mask_d, mask_n, SOFTPLUS: tl.constexpr):
    """One recurrence step at position t: returns the new state and u_t."""
    u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32) + bias
    if SOFTPLUS:
        dt = _softplus(dt)
    Bt = tl.load(B_ptr + bc + t, mask=mask_n, other=0.0).to(tl.float32)
    return tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :], u


@triton.jit
def _initial_state(h0_ptr, pid_b, dim, N, offs_d, offs_n, mask_dn, HAS_H0: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    if HAS_H0:
        return tl.load(h0_ptr + (pid_b * dim + offs_d)[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
    return tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)


@triton.jit
def _scan_fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, out_ptr, last_ptr,
                     dim, L, N, G,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
                     SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_b, pid_d, offs_d, offs_n, mask_d, mask_n, mask_dn, A, Dv, bias, row, bc = _block_setup(
        A_ptr, D_ptr, bias_ptr, dim, L, N, G, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)
    h = _initial_state(h0_ptr, pid_b, dim, N, offs_d, offs_n, mask_dn, HAS_H0, BLOCK_D, BLOCK_N)
    for t in range(0, L):
        h, u = _step(h, t, u_ptr, delta_ptr, B_ptr, A, bias, row, bc, mask_d, mask_n, SOFTPLUS)
        Ct = tl.load(C_ptr + bc + t, mask=mask_n, other=0.0).to(tl.float32)
        y = tl.sum(h * Ct[None, :], axis=1) + Dv * u
        if HAS_Z:
            zt = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
            y = y * zt * _sigmoid(zt)
        tl.store(out_ptr + row + t, y, mask=mask_d)
    tl.store(last_ptr + (pid_b * dim + offs_d)[:, None] * N + offs_n[None, :], h, mask=mask_dn)


@triton.jit
def _scan_bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, dout_ptr, dlast_ptr,
                     ckpt_ptr, scratch_ptr,
                     du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, out_ptr, dh0_ptr,
                     dim, L, N, G, n_chunks, n_dblocks,
                     HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, HAS_H0: tl.constexpr, HAS_OUT: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK_L: tl.constexpr):
    pid_b, pid_d, offs_d, offs_n, mask_d, mask_n, mask_dn, A, Dv, bias, row, bc = _block_setup(
        A_ptr, D_ptr, bias_ptr, dim, L, N, G, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
    prog = pid_b * n_dblocks + pid_d
    ckpt = ckpt_ptr + prog * n_chunks * BLOCK_D * BLOCK_N       # state entering each chunk
    scratch = scratch_ptr + prog * CHUNK_L * BLOCK_D * BLOCK_N  # the states of one chunk
    part = (pid_b * n_dblocks + pid_d) * N                      # this block's dB/dC partial sums

    # Sweep 1: keep the state entering every chunk.
    h = _initial_state(h0_ptr, pid_b, dim, N, offs_d, offs_n, mask_dn, HAS_H0, BLOCK_D, BLOCK_N)
    for t in range(0, L):
        if t % CHUNK_L == 0:
            tl.store(ckpt + (t // CHUNK_L) * BLOCK_D * BLOCK_N + tile, h)
        h, u = _step(h, t, u_ptr, delta_ptr, B_ptr, A, bias, row, bc, mask_d, mask_n, SOFTPLUS)
    tl.debug_barrier()

    # Sweep 2: chunks in reverse; recompute the chunk's states, then the adjoint recurrence.
    if HAS_DLAST:
        gst = tl.load(dlast_ptr + (pid_b * dim + offs_d)[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0)
    else:
        gst = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK_L
        h = tl.load(ckpt + c * BLOCK_D * BLOCK_N + tile)
        for k in range(0, CHUNK_L):
            t = t0 + k
            if t < L:
                h, u = _step(h, t, u_ptr, delta_ptr, B_ptr, A, bias, row, bc, mask_d, mask_n, SOFTPLUS)
                tl.store(scratch + k * BLOCK_D * BLOCK_N + tile, h)
        tl.debug_barrier()
        for kk in range(0, CHUNK_L):
            k = CHUNK_L - 1 - kk
            t = t0 + k
            if t < L:
                u = tl.load(u_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                raw = tl.load(delta_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32) + bias
                dt = _softplus(raw) if SOFTPLUS else raw
                Bt = tl.load(B_ptr + bc + t, mask=mask_n, other=0.0).to(tl.float32)
                Ct = tl.load(C_ptr + bc + t, mask=mask_n, other=0.0).to(tl.float32)
                ht = tl.load(scratch + k * BLOCK_D * BLOCK_N + tile)
                if k > 0:
                    hprev = tl.load(scratch + (k - 1) * BLOCK_D * BLOCK_N + tile)
                else:
                    hprev = tl.load(ckpt + c * BLOCK_D * BLOCK_N + tile)
                dA_t = tl.exp(dt[:, None] * A)
                dy = tl.load(dout_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                if HAS_Z or HAS_OUT:
                    y = tl.sum(ht * Ct[None, :], axis=1) + Dv * u
                if HAS_Z:
                    zt = tl.load(z_ptr + row + t, mask=mask_d, other=0.0).to(tl.float32)
                    s = _sigmoid(zt)
                    tl.store(dz_ptr + row + t, dy * y * s * (1.0 + zt * (1.0 - s)), mask=mask_d)
                    dy = dy * zt * s
                    y = y * zt * s
                if HAS_OUT:   # the forward output, for a caller that would otherwise scan forward again
                    tl.store(out_ptr + row + t, y, mask=mask_d)
                dD_acc += dy * u
                gn = gst + dy[:, None] * Ct[None, :]
                gn = tl.where(mask_dn, gn, 0.0)
                tl.store(dC_ptr + (part + offs_n) * L + t, tl.sum(dy[:, None] * ht, axis=0), mask=mask_n)
                tl.store(dB_ptr + (part + offs_n) * L + t, tl.sum(gn * (dt * u)[:, None], axis=0), mask=mask_n)
                gh = gn * dA_t * hprev
                ddt = tl.sum(gn * (u[:, None] * Bt[None, :]) + gh * A, axis=1)
                tl.store(du_ptr + row + t, dy * Dv + dt * tl.sum(gn * Bt[None, :], axis=1), mask=mask_d)
                dA_acc += gh * dt[:, None]
                gst = gn * dA_t
                if SOFTPLUS:
                    ddt = tl.where(raw > 20.0, ddt, ddt * _sigmoid(raw))
                tl.store(ddelta_ptr + row + t, ddt, mask=mask_d)
                dbias_acc += ddt
        tl.debug_barrier()
    tl.store(dA_ptr + (pid_b * dim + offs_d)[:, None] * N + offs_n[None, :], dA_acc, mask=mask_dn)
    if HAS_H0:   # the adjoint after the first step is the gradient of the state before it
        tl.store(dh0_ptr + (pid_b * dim + offs_d)[:, None] * N + offs_n[None, :], gst, mask=mask_dn)
    tl.store(dD_ptr + pid_b * dim + offs_d, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + pid_b * dim + offs_d, dbias_acc, mask=mask_d)


def _block_d(dim: int, G: int) -> int:
    """Largest power of two <= 64 dividing the channels of one group, so a block never spans groups."""
    per_group = dim // G
    b = 1
    while b < 64 and per_group % (b * 2) == 0:
        b *= 2
    return b


def _prep(u, delta, A, B, C, D, z, delta_bias):
    f32 = lambda t: None if t is None else t.contiguous()  # noqa: E731  (kernels upcast on load)
    Bg = B.unsqueeze(1) if B.dim() == 3 else B
    Cg = C.unsqueeze(1) if C.dim() == 3 else C
    return f32(u), f32(delta), A.float().contiguous(), Bg.contiguous(), Cg.contiguous(), \
        None if D is None else D.float().contiguous(), f32(z), \
        None if delta_bias is None else delta_bias.float().contiguous()


def _flip(t):
    return t if t is None or t.dim() < 3 else t.flip(-1)


def scan_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False,
             initial_state=None, out=None, add=None):
    if add is not None:   # (the CPU kernel's extra: added before the gate; here with torch ops)
        res, last = scan_fwd(u, delta, A, B, C, D, None, delta_bias, delta_softplus, reverse, initial_state)
        res = res + add
        if z is not None:
            res = res * torch.nn.functional.silu(z.to(res.dtype))
        return (res if out is None else out.copy_(res)), last
    if out is not None:   # (the CPU kernel's signature; here the result is copied)
        res, last = scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, initial_state)
        return out.copy_(res), last
    if reverse:   # the GPU kernel scans forward only; flips are cheap next to the scan there
        out, last = scan_fwd(_flip(u), _flip(delta), A, _flip(B), _flip(C), D, _flip(z), delta_bias, delta_softplus,
                             initial_state=initial_state)
        return out.flip(-1), last
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, dd, AA, BB, CC, DD, zz, bb = _prep(u, delta, A, B, C, D, z, delta_bias)
    G = BB.shape[1]
    out = torch.empty(batch, dim, L, device=u.device, dtype=torch.float32)
    last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)  # explicit: default dtype may differ
    BLOCK_D = _block_d(dim, G)
    dummy = AA
    grid = (batch, triton.cdiv(dim, BLOCK_D))
    h0 = None if initial_state is None else initial_state.detach().float().contiguous()
    _scan_fwd_kernel[grid](uu, dd, AA, BB, CC, DD if DD is not None else dummy, zz if zz is not None else dummy,
                           bb if bb is not None else dummy, h0 if h0 is not None else dummy, out, last, dim, L, N, G,
                           HAS_D=DD is not None, HAS_Z=zz is not None, HAS_BIAS=bb is not None,
                           HAS_H0=h0 is not None,
                           SOFTPLUS=bool(delta_softplus), BLOCK_D=BLOCK_D, BLOCK_N=triton.next_power_of_2(N))
    return out.to(u.dtype), last


def scan_bwd(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, dlast=None,
             reverse=False, initial_state=None, return_out=False):
    """Gradients as :func:`videomamba.ops.selective_scan_cpu.scan_bwd` returns them (then ``d initial_state``
    when given, then the forward output when ``return_out``)."""
    if reverse:
        g = scan_bwd(_flip(dout), _flip(u), _flip(delta), A, _flip(B), _flip(C), D, _flip(z), delta_bias,
                     delta_softplus, dlast, initial_state=initial_state, return_out=return_out)
        flipped = [_flip(x) if x is not None and x.dim() >= 3 else x for x in g[:8]]   # per-position grads
        if initial_state is not None:
            flipped.append(g[8])                                                      # d initial_state
        return tuple(flipped + ([g[-1].flip(-1)] if return_out else []))
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, dd, AA, BB, CC, DD, zz, bb = _prep(u, delta, A, B, C, D, z, delta_bias)
    G = BB.shape[1]
    BLOCK_D = _block_d(dim, G)
    BLOCK_N = triton.next_power_of_2(N)
    n_dblocks = triton.cdiv(dim, BLOCK_D)
    n_chunks = triton.cdiv(L, CHUNK)
    dev = u.device
    f = dict(device=dev, dtype=torch.float32)
    ckpt = torch.empty(batch * n_dblocks * n_chunks * BLOCK_D * BLOCK_N, **f)
    scratch = torch.empty(batch * n_dblocks * CHUNK * BLOCK_D * BLOCK_N, **f)
    du, ddelta = torch.empty(batch, dim, L, **f), torch.empty(batch, dim, L, **f)
    dz = torch.empty(batch, dim, L, **f) if zz is not None else None
    dA, dD, dbias = torch.empty(batch, dim, N, **f), torch.empty(batch, dim, **f), torch.empty(batch, dim, **f)
    dB_part = torch.empty(batch, n_dblocks, N, L, **f)
    dC_part = torch.empty(batch, n_dblocks, N, L, **f)
    h0 = None if initial_state is None else initial_state.detach().float().contiguous()
    dh0 = torch.empty(batch, dim, N, **f) if h0 is not None else None
    out = torch.empty(batch, dim, L, **f) if return_out else None
    dummy = AA
    or_dummy = lambda t: t if t is not None else dummy  # noqa: E731  (absent pointers are never read)
    _scan_bwd_kernel[(batch, n_dblocks)](
        uu, dd, AA, BB, CC, or_dummy(DD), or_dummy(zz), or_dummy(bb), or_dummy(h0), dout.contiguous(),
        dlast.contiguous().float() if dlast is not None else dummy,
        ckpt, scratch, du, ddelta, or_dummy(dz), dA, dD, dbias, dB_part, dC_part, or_dummy(out), or_dummy(dh0),
        dim, L, N, G, n_chunks, n_dblocks,
        HAS_D=DD is not None, HAS_Z=zz is not None, HAS_BIAS=bb is not None, SOFTPLUS=bool(delta_softplus),
        HAS_DLAST=dlast is not None, HAS_H0=h0 is not None, HAS_OUT=out is not None,
        BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, CHUNK_L=CHUNK)
    per_group = n_dblocks // G
    dB = dB_part.view(batch, G, per_group, N, L).sum(2)
    dC = dC_part.view(batch, G, per_group, N, L).sum(2)
    if B.dim() == 3:
        dB, dC = dB.squeeze(1), dC.squeeze(1)
    grads = (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
             None if D is None else dD.sum(0).to(D.dtype), None if z is None else dz.to(z.dtype),
             None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype))
    if dh0 is not None:
        grads += (dh0.to(initial_state.dtype),)
    return grads + (out.to(u.dtype),) if return_out else grads
