"""Selective scan in Triton, parallel over batch, channels and the sequence (CUDA GPUs; CPU tensors under
``TRITON_INTERPRET=1`` for tests).

The recurrence ``h_t = a_t * h_{t-1} + b_t`` (``a_t = exp(dt_t * A)``, ``b_t = dt_t * u_t * B_t``, one per
channel d and state n) is cut into chunks of ``T`` steps. Three launches:

1. **summary** (grid: channel blocks x chunks x batch): per chunk, the state it would end in from a zero
   start, ``S = sum_t exp(A * (dt_{t+1} + ... + dt_end)) * b_t``, and its total decay ``P = exp(A * sum dt)``.
   Closed forms from a cumulative sum of dt: no scan needed here.
2. **carry** (grid: batch x channels x states): ``h_in[c+1] = P_c * h_in[c] + S_c`` from the initial state;
   the state after the last chunk is the returned last state. 16 chunks' links are composed at once by an
   associative scan, so the serial chain is ``L / (16 T)`` steps (13 at 12,545 tokens), not ``L / T``.
3. **output** (same grid as 1): each chunk scans its ``(BLOCK_D, N, T)`` tile with ``tl.associative_scan``
   over the pairs ``(a_t, b_t)``, adds ``cumprod(a) * h_in``, contracts with ``C``, adds ``D * u`` (and an
   optional addend), gates with ``silu(z)``.

The backward is the same shape. The adjoint ``g_t = C_t * dy_t + a_{t+1} * g_{t+1}`` runs right to left;
its chunk summary ``X = sum_t exp(A * (dt_start + ... + dt_t)) * C_t * dy_t`` comes from the same launch as
the forward summary, the carry launch runs both carries, and the last launch recomputes each chunk's states
(never storing ``batch*dim*L*N`` values) and its adjoints. The adjoint scan reads its tile in reversed step
order and scans it forward, so no reverse scan is needed (``associative_scan(reverse=True)`` has had
ordering bugs on GPUs); one ``tl.flip`` brings ``a_t * h_{t-1}`` into that order. B/C gradients are summed
over a block of channels in registers and over blocks and chunks by torch: deterministic, no atomics.

``reverse=True`` scans from the last position to the first: only the step -> position map changes. Its steps
start at position ``n_chunks * T - 1`` (padding first), so its chunks cover the same positions as the forward
direction's: :func:`scan_fwd_pair` runs both directions of a mixer over one chunk of positions in one program
and writes their gated sum once (launch 3 for both directions: one ``(batch, dim, L)`` write instead of three).
Inputs fp32 / bf16 / fp16 (loaded and computed in fp32); state and carries fp32.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CHUNK = 64            # steps per chunk of the forward (a power of two: the flip and the scan need it)
BWD_CHUNK = 32        # ... of the backward, whose program holds ~3x as many tiles (no register spills at 32)
CARRY_GROUP = 16      # chunks the carry pass composes at once (its serial chain: n_chunks / CARRY_GROUP steps)
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRETED_BLOCK_D = 32


# ---------------------------------------------------------------------------------------------- helpers
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
def _affine_combine(a1, b1, a2, b2):
    # apply (a1, b1) then (a2, b2):  h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _channels(pid_gd, dim, G, BLOCK_D: tl.constexpr):
    """Channel offsets and mask of block ``pid_gd`` (blocks never span two B/C groups) and its group."""
    per_group = dim // G
    n_db = (per_group + BLOCK_D - 1) // BLOCK_D
    g = pid_gd // n_db
    local = (pid_gd % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
    return g * per_group + local, local < per_group, g


@triton.jit
def _steps(pid_c, L, n_chunks, T: tl.constexpr, REVERSE: tl.constexpr, BACKWARDS: tl.constexpr):
    """The chunk's steps (``BACKWARDS``: last step first), their mask and positions in the sequence.

    The reverse direction's steps run from position ``n_chunks * T - 1`` down, padding first: its chunk c
    covers the positions of the forward direction's chunk ``n_chunks - 1 - c`` (so one program can handle
    both directions of the same positions, :func:`scan_fwd_pair`); padded steps are masked, i.e. identity."""
    if BACKWARDS:
        steps = pid_c * T + (T - 1) - tl.arange(0, T)
    else:
        steps = pid_c * T + tl.arange(0, T)
    if REVERSE:
        pos = n_chunks * T - 1 - steps
    else:
        pos = steps
    return steps, pos < L, pos


@triton.jit
def _load_dt(delta_ptr, bias, rows, pos, mask, SOFTPLUS: tl.constexpr):
    """dt (fp32) at (rows, pos); 0 where masked, so padded steps and channels leave the state unchanged."""
    dt = tl.load(delta_ptr + rows[:, None] + pos[None, :], mask=mask, other=0.0).to(tl.float32) + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(dt)
    return tl.where(mask, dt, 0.0)


@triton.jit
def _load_channels(ptr, offs_d, mask_d, PRESENT: tl.constexpr, BLOCK_D: tl.constexpr):
    """A per-channel vector (D, the dt bias) in fp32, or zeros when absent."""
    if PRESENT:
        return tl.load(ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return tl.zeros([BLOCK_D], tl.float32)


@triton.jit
def _load_rows(ptr, rows, pos, mask):
    return tl.load(ptr + rows[:, None] + pos[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _dy_pre(dout_ptr, z_ptr, rows, pos, mask, HAS_Z: tl.constexpr):
    """Gradient reaching the ungated output: ``dout * silu(z)``."""
    dy = _load_rows(dout_ptr, rows, pos, mask)
    if HAS_Z:
        zt = _load_rows(z_ptr, rows, pos, mask)
        dy = dy * zt * _sigmoid(zt)
    return dy


@triton.jit
def _chunk_tile(pid_c, A_ptr, bias_ptr, dim, L, N, G, n_chunks, HAS_BIAS: tl.constexpr, REVERSE: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr):
    """What a (channel block, chunk, batch) program of the summary / output kernels works on: channel
    offsets, positions, masks, A and the dt bias, row offsets of u-shaped and B/C tensors, and the offsets of
    its ``(BLOCK_D, BLOCK_N)`` slot in the per-chunk ``(batch, chunks, dim, N)`` buffers."""
    pid_gd, pid_b = tl.program_id(0), tl.program_id(2).to(tl.int64)   # int64 offsets: B*D*L may pass 2^31
    offs_d, mask_d, g = _channels(pid_gd, dim, G, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    steps, mask_t, pos = _steps(pid_c, L, n_chunks, T, REVERSE, False)
    mask = mask_d[:, None] & mask_t[None, :]
    mask_nt = mask_n[:, None] & mask_t[None, :]
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    bias = _load_channels(bias_ptr, offs_d, mask_d, HAS_BIAS, BLOCK_D)
    rows = (pid_b * dim + offs_d) * L
    bc = ((pid_b * G + g) * N + offs_n) * L
    carried = ((pid_b * n_chunks + pid_c) * dim + offs_d)[:, None] * N + offs_n[None, :]
    return offs_d, mask_d, pos, mask, mask_nt, mask_dn, A, bias, rows, bc, carried


# ---------------------------------------------------------------------------------------------- kernels
@triton.jit
def _chunk_summary_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, bias_ptr, dout_ptr, z_ptr,
                          P_ptr, S_ptr, X_ptr,
                          dim, L, N, G, n_chunks,
                          HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
                          ADJOINT: tl.constexpr, HAS_Z: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr):
    """Per chunk: total decay P, state S from a zero start and (``ADJOINT``) the adjoint X it sends left."""
    offs_d, mask_d, pos, mask, mask_nt, mask_dn, A, bias, rows, bc, carried = _chunk_tile(
        tl.program_id(1), A_ptr, bias_ptr, dim, L, N, G, n_chunks, HAS_BIAS, REVERSE, BLOCK_D, BLOCK_N, T)

    dt = _load_dt(delta_ptr, bias, rows, pos, mask, SOFTPLUS)
    u = _load_rows(u_ptr, rows, pos, mask)
    Bt = _load_rows(B_ptr, bc, pos, mask_nt)
    cum = tl.cumsum(dt, axis=1)                       # dt summed from the chunk's first step to t
    total = tl.sum(dt, axis=1)
    after = total[:, None] - cum                      # dt summed over the steps after t
    decay_after = tl.exp(A[:, :, None] * after[:, None, :])
    S = tl.sum(decay_after * (dt * u)[:, None, :] * Bt[None, :, :], axis=2)
    tl.store(P_ptr + carried, tl.exp(A * total[:, None]), mask=mask_dn)
    tl.store(S_ptr + carried, S, mask=mask_dn)
    if ADJOINT:
        dy = _dy_pre(dout_ptr, z_ptr, rows, pos, mask, HAS_Z)
        Ct = _load_rows(C_ptr, bc, pos, mask_nt)
        X = tl.sum(tl.exp(A[:, :, None] * cum[:, None, :]) * dy[:, None, :] * Ct[None, :, :], axis=2)
        tl.store(X_ptr + carried, X, mask=mask_dn)


@triton.jit
def _carry_group(P_ptr, V_ptr, carry, first, step, n_chunks, stride, base, mask, GROUP: tl.constexpr):
    """``GROUP`` consecutive links of a carry chain at once: chunk ``first + j * step`` maps the value entering it,
    ``v -> P * v + V``. Writes the value entering each of them over V (loaded first) and returns the value
    leaving the last. The links are composed with one associative scan, so the serial chain is ``n_chunks /
    GROUP`` dependent steps instead of ``n_chunks``; chunks past either end are identity links."""
    j = tl.arange(0, GROUP)
    c = first + j * step
    inside = (c >= 0) & (c < n_chunks)
    at = base[None, :] + c[:, None] * stride
    both = inside[:, None] & mask[None, :]
    p = tl.load(P_ptr + at, mask=both, other=1.0)
    v = tl.load(V_ptr + at, mask=both, other=0.0)
    decay, local = tl.associative_scan((p, v), 0, _affine_combine)
    leaving = local + decay * carry[None, :]                        # the value after link j
    entering = tl.where((j == 0)[:, None], carry[None, :], 0.0)     # link 0 gets the carry; link j the
    tl.store(V_ptr + at, entering, mask=both & (j == 0)[:, None])   # value after link j - 1
    tl.store(V_ptr + at + step * stride, leaving, mask=both & (j < GROUP - 1)[:, None]
             & ((c + step >= 0) & (c + step < n_chunks))[:, None])
    return tl.sum(tl.where((j == GROUP - 1)[:, None], leaving, 0.0), axis=0)


@triton.jit
def _carry_kernel(P_ptr, S_ptr, X_ptr, h0_ptr, dlast_ptr, last_ptr, dh0_ptr, dim, N, n_chunks,
                  FORWARD: tl.constexpr, ADJOINT: tl.constexpr, HAS_H0: tl.constexpr, HAS_DLAST: tl.constexpr,
                  BLOCK: tl.constexpr, GROUP: tl.constexpr):
    """Parallel over (batch, channel, state), ``GROUP`` chunks at a time along the sequence. Overwrites S with
    the state entering each chunk (``FORWARD``) and X with the adjoint entering each chunk from its right
    (``ADJOINT``)."""
    pid, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < dim * N
    stride = dim * N
    base = pid_b * n_chunks * stride + offs
    n_groups = (n_chunks + GROUP - 1) // GROUP
    if FORWARD:
        if HAS_H0:
            h = tl.load(h0_ptr + pid_b * stride + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            h = tl.zeros([BLOCK], tl.float32)
        for gi in range(0, n_groups):
            h = _carry_group(P_ptr, S_ptr, h, gi * GROUP, 1, n_chunks, stride, base, mask, GROUP)
        tl.store(last_ptr + pid_b * stride + offs, h, mask=mask)
    if ADJOINT:
        if HAS_DLAST:
            gc = tl.load(dlast_ptr + pid_b * stride + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            gc = tl.zeros([BLOCK], tl.float32)
        for gi in range(0, n_groups):   # right to left: the group's chunks last first
            gc = _carry_group(P_ptr, X_ptr, gc, n_chunks - 1 - gi * GROUP, -1, n_chunks, stride, base, mask, GROUP)
        if HAS_H0:   # what the first step sends left is the gradient of the initial state
            tl.store(dh0_ptr + pid_b * stride + offs, gc, mask=mask)


@triton.jit
def _chunk_states(u, dt, Bt, A, hin):
    """States of one chunk ``(BLOCK_D, BLOCK_N, T)`` from the state entering it, and their inputs b_t."""
    a = tl.exp(A[:, :, None] * dt[:, None, :])
    b = (dt * u)[:, None, :] * Bt[None, :, :]
    decay, h_local = tl.associative_scan((a, b), 2, _affine_combine)
    return h_local + decay * hin[:, :, None], b


@triton.jit
def _direction_output(pid_c, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, hin_ptr,
                      dim, L, N, G, n_chunks,
                      HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr):
    """One direction's ungated output ``C . h + D * u`` over chunk ``pid_c`` (in its step order), from the
    state entering the chunk; with the row offsets, positions and mask of the tile."""
    offs_d, mask_d, pos, mask, mask_nt, mask_dn, A, bias, rows, bc, carried = _chunk_tile(
        pid_c, A_ptr, bias_ptr, dim, L, N, G, n_chunks, HAS_BIAS, REVERSE, BLOCK_D, BLOCK_N, T)
    hin = tl.load(hin_ptr + carried, mask=mask_dn, other=0.0)
    dt = _load_dt(delta_ptr, bias, rows, pos, mask, SOFTPLUS)
    u = _load_rows(u_ptr, rows, pos, mask)
    h, _ = _chunk_states(u, dt, _load_rows(B_ptr, bc, pos, mask_nt), A, hin)
    y = tl.sum(h * _load_rows(C_ptr, bc, pos, mask_nt)[None, :, :], axis=1)
    y += _load_channels(D_ptr, offs_d, mask_d, HAS_D, BLOCK_D)[:, None] * u
    return y, rows, pos, mask


@triton.jit
def _gate_and_store(y, z_ptr, out_ptr, rows, pos, mask, HAS_Z: tl.constexpr):
    if HAS_Z:
        zt = _load_rows(z_ptr, rows, pos, mask)
        y = y * zt * _sigmoid(zt)
    tl.store(out_ptr + rows[:, None] + pos[None, :], y, mask=mask)


@triton.jit
def _chunk_output_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, add_ptr, hin_ptr, out_ptr,
                         dim, L, N, G, n_chunks,
                         HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr,
                         SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
                         BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr):
    """``out = ((C . h) + D * u + add) * silu(z)`` for one chunk, from the state entering it."""
    y, rows, pos, mask = _direction_output(tl.program_id(1), u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr,
                                           hin_ptr, dim, L, N, G, n_chunks, HAS_D, HAS_BIAS, SOFTPLUS, REVERSE,
                                           BLOCK_D, BLOCK_N, T)
    if HAS_ADD:
        y += _load_rows(add_ptr, rows, pos, mask)
    _gate_and_store(y, z_ptr, out_ptr, rows, pos, mask, HAS_Z)


@triton.jit
def _pair_output_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, hin_ptr,
                        ub_ptr, deltab_ptr, Ab_ptr, Bb_ptr, Cb_ptr, Db_ptr, biasb_ptr, hinb_ptr,
                        z_ptr, out_ptr, dim, L, N, G, n_chunks,
                        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                        DIVIDE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr):
    """Both directions of a bidirectional mixer over the same positions, summed, gated, written once:
    ``out = (y_forward + y_reverse) [/ 2] * silu(z)``. The reverse direction's chunk covering these positions
    is ``n_chunks - 1 - c`` and lists them last first, so its output is flipped into position order."""
    pid_c = tl.program_id(1)
    y, rows, pos, mask = _direction_output(pid_c, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, hin_ptr,
                                           dim, L, N, G, n_chunks, HAS_D, HAS_BIAS, SOFTPLUS, False,
                                           BLOCK_D, BLOCK_N, T)
    yb, _, _, _ = _direction_output(n_chunks - 1 - pid_c, ub_ptr, deltab_ptr, Ab_ptr, Bb_ptr, Cb_ptr, Db_ptr,
                                    biasb_ptr, hinb_ptr, dim, L, N, G, n_chunks, HAS_D, HAS_BIAS, SOFTPLUS, True,
                                    BLOCK_D, BLOCK_N, T)
    y += tl.flip(yb, 1)
    if DIVIDE:
        y = y * 0.5
    _gate_and_store(y, z_ptr, out_ptr, rows, pos, mask, HAS_Z)


@triton.jit
def _chunk_backward_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr,
                           hin_ptr, gin_ptr,
                           du_ptr, ddelta_ptr, dz_ptr, out_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr,
                           dim, L, N, G, n_cb, n_chunks,
                           HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                           SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, HAS_OUT: tl.constexpr,
                           BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr,
                           CHANNELS: tl.constexpr):
    """Gradients of one chunk for ``CHANNELS`` channels of one group, ``BLOCK_D`` at a time (their B/C
    gradients summed here): recompute the states from the carried state, the adjoints from the carried one."""
    pid_gd, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    steps, mask_t, pos = _steps(pid_c, L, n_chunks, T, REVERSE, False)       # forward step order
    rsteps, rmask_t, rpos = _steps(pid_c, L, n_chunks, T, REVERSE, True)     # the same steps, last first
    # the step after each one (in the same chunk and sequence); the chunk's last step has none here: the
    # carried adjoint already holds what comes from the right
    nsteps = rsteps + 1
    if REVERSE:
        npos = n_chunks * T - 1 - nsteps
    else:
        npos = nsteps
    nmask_t = (npos < L) & (nsteps < (pid_c + 1) * T)
    mask_nt = mask_n[:, None] & mask_t[None, :]
    rmask_nt = mask_n[:, None] & rmask_t[None, :]
    per_group = dim // G
    g = pid_gd // n_cb
    bc = ((pid_b * G + g) * N + offs_n) * L
    Bt = _load_rows(B_ptr, bc, pos, mask_nt)
    Ct = _load_rows(C_ptr, bc, pos, mask_nt)
    rBt = _load_rows(B_ptr, bc, rpos, rmask_nt)
    rCt = _load_rows(C_ptr, bc, rpos, rmask_nt)
    dC_acc = tl.zeros([BLOCK_N, T], tl.float32)      # forward step order
    dB_acc = tl.zeros([BLOCK_N, T], tl.float32)      # last step first
    for sb in range(0, CHANNELS // BLOCK_D):
        local = (pid_gd % n_cb) * CHANNELS + sb * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = local < per_group
        offs_d = g * per_group + local
        mask = mask_d[:, None] & mask_t[None, :]
        rmask = mask_d[:, None] & rmask_t[None, :]
        nmask = mask_d[:, None] & nmask_t[None, :]
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
        bias = _load_channels(bias_ptr, offs_d, mask_d, HAS_BIAS, BLOCK_D)
        Dv = _load_channels(D_ptr, offs_d, mask_d, HAS_D, BLOCK_D)
        rows = (pid_b * dim + offs_d) * L
        carried = ((pid_b * n_chunks + pid_c) * dim + offs_d)[:, None] * N + offs_n[None, :]

        # Forward step order: states, output, dC, dz, and a_t * h_{t-1} = h_t - b_t for the decay gradients.
        dt = _load_dt(delta_ptr, bias, rows, pos, mask, SOFTPLUS)
        u = _load_rows(u_ptr, rows, pos, mask)
        h, b = _chunk_states(u, dt, Bt, A, tl.load(hin_ptr + carried, mask=mask_dn, other=0.0))
        y = tl.sum(h * Ct[None, :, :], axis=1) + Dv[:, None] * u
        dy = _load_rows(dout_ptr, rows, pos, mask)
        if HAS_Z:
            zt = _load_rows(z_ptr, rows, pos, mask)
            s = _sigmoid(zt)
            tl.store(dz_ptr + rows[:, None] + pos[None, :], dy * y * s * (1.0 + zt * (1.0 - s)), mask=mask)
            dy = dy * zt * s
            y = y * zt * s
        if HAS_OUT:   # the forward output, for a caller that would otherwise scan forward again
            tl.store(out_ptr + rows[:, None] + pos[None, :], y, mask=mask)
        dC_acc += tl.sum(dy[:, None, :] * h, axis=0)
        dD_part = tl.sum(dy * u, axis=1)
        decayed_prev = tl.flip(h - b, 2)                  # a_t * h_{t-1}, last step first

        # Last step first: the adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} as a forward scan over reversed steps.
        rdt = _load_dt(delta_ptr, bias, rows, rpos, rmask, SOFTPLUS)
        ru = _load_rows(u_ptr, rows, rpos, rmask)
        rdy = _dy_pre(dout_ptr, z_ptr, rows, rpos, rmask, HAS_Z)
        ndt = _load_dt(delta_ptr, bias, rows, npos, nmask, SOFTPLUS)   # 0 where there is no next step: a = 1
        a_next = tl.exp(A[:, :, None] * ndt[:, None, :])
        prod, g_local = tl.associative_scan((a_next, rdy[:, None, :] * rCt[None, :, :]), 2, _affine_combine)
        gadj = g_local + prod * tl.load(gin_ptr + carried, mask=mask_dn, other=0.0)[:, :, None]
        dB_acc += tl.sum(gadj * (rdt * ru)[:, None, :], axis=0)
        gh = gadj * decayed_prev
        ddt = tl.sum(gadj * ru[:, None, :] * rBt[None, :, :] + gh * A[:, :, None], axis=1)
        tl.store(du_ptr + rows[:, None] + rpos[None, :], rdy * Dv[:, None] + rdt * tl.sum(gadj * rBt[None, :, :], 1),
                 mask=rmask)
        dA_part = tl.sum(gh * rdt[:, None, :], axis=2)
        if SOFTPLUS:
            raw = _load_rows(delta_ptr, rows, rpos, rmask) + bias[:, None]
            ddt = tl.where(raw > 20.0, ddt, ddt * _sigmoid(raw))
        ddt = tl.where(rmask, ddt, 0.0)
        tl.store(ddelta_ptr + rows[:, None] + rpos[None, :], ddt, mask=rmask)
        tl.store(dA_ptr + carried, dA_part, mask=mask_dn)
        part = (pid_b * n_chunks + pid_c) * dim + offs_d
        tl.store(dD_ptr + part, dD_part, mask=mask_d)
        tl.store(dbias_ptr + part, tl.sum(ddt, axis=1), mask=mask_d)
    # this program's share of dB/dC at each position (summed over its channels); torch sums the shares
    share = ((pid_b * G + g) * n_cb + pid_gd % n_cb) * N + offs_n
    tl.store(dC_ptr + share[:, None] * L + pos[None, :], dC_acc, mask=mask_nt)
    tl.store(dB_ptr + share[:, None] * L + rpos[None, :], dB_acc, mask=rmask_nt)


# ---------------------------------------------------------------------------------------------- launch
def _configs(kind):
    """The autotuner's space: channels per program (x N states x T steps in registers) and warps; pairs that
    ptxas (sm_90a, N = 16) compiles with no or a few bytes of register spills (larger blocks spill more)."""
    pairs = ((4, 4), (4, 8), (8, 8)) if kind == "fwd" else ((2, 8), (4, 4), (4, 8), (8, 8))
    return [triton.Config({"BLOCK_D": bd}, num_warps=w) for bd, w in pairs]


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class _Launcher:
    """A kernel with BLOCK_D / num_warps autotuned per shape on a GPU, or fixed (interpreter, tests).

    The autotuner benchmarks (synchronising, allocating) the first time it sees a shape, which a CUDA graph
    being captured forbids: during a capture the config chosen earlier for the shape is launched directly, or
    the first of the space when the shape was never seen (torch.compile's CUDA graphs run each shape once
    before recording, so they get the tuned one)."""

    def __init__(self, fn, kind, key):
        self.fn, self.kind, self.key = fn, kind, key
        self.tuned = None if _INTERPRET else triton.autotune(configs=_configs(kind), key=key,
                                                              cache_results=True)(fn)
        self.chosen = {}   # shape key -> the config the autotuner chose

    def _shape_key(self, args, meta):
        named = dict(zip(self.fn.arg_names, args), **meta)
        return tuple(named[k] for k in self.key) + tuple(str(v.dtype) for v in args if hasattr(v, "dtype"))

    def __call__(self, grid, args, meta, config=None):
        if config is None and self.tuned is not None:
            key = self._shape_key(args, meta)
            if not _capturing():
                result = self.tuned[grid](*args, **meta)
                self.chosen[key] = self.tuned.best_config
                return result
            best = self.chosen.get(key) or _configs(self.kind)[0]
            config = dict(best.kwargs, num_warps=best.num_warps)
        # Interpreted (no autotuner): wide blocks, since its cost grows with programs x operations.
        cfg = dict(config) if config is not None else {"BLOCK_D": _INTERPRETED_BLOCK_D}
        warps = cfg.pop("num_warps", 4)
        meta = dict(meta, **cfg)
        return self.fn[grid(meta)](*args, **meta, num_warps=warps)


_summary = _Launcher(_chunk_summary_kernel, "fwd", ["dim", "L", "N", "ADJOINT"])
_output = _Launcher(_chunk_output_kernel, "fwd", ["dim", "L", "N"])
_pair_output = _Launcher(_pair_output_kernel, "fwd", ["dim", "L", "N"])
_backward = _Launcher(_chunk_backward_kernel, "bwd", ["dim", "L", "N", "CHANNELS"])


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _backward_channels(batch: int, per_group: int, G: int, n_chunks: int, device) -> int:
    """Channels per backward program: the most (fewer B/C partial sums to write and add up: 4x less memory
    traffic at (64, 384, 1569) than 32 channels) that still leaves 4 programs per SM; 8 when even that
    leaves the GPU half idle (batch 1, short clips)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    for channels in (128, 64, 32, 16):
        if G * triton.cdiv(per_group, channels) * n_chunks * batch >= 4 * sms:
            return channels
    return 8


def _prep(u, delta, A, B, C, D, z, delta_bias):
    """Contiguous inputs (kernels upcast on load), B/C with a group axis."""
    c = lambda t: None if t is None else t.contiguous()  # noqa: E731
    Bg = B.unsqueeze(1) if B.dim() == 3 else B
    Cg = C.unsqueeze(1) if C.dim() == 3 else C
    return c(u), c(delta), A.float().contiguous(), Bg.contiguous(), Cg.contiguous(), \
        None if D is None else D.float().contiguous(), c(z), \
        None if delta_bias is None else delta_bias.float().contiguous()


def _block_grid(batch, dim, G, n_chunks):
    per_group = dim // G
    return lambda meta: (G * triton.cdiv(per_group, meta["BLOCK_D"]), n_chunks, batch)


def _split(config, chunk=CHUNK):
    """``(T, kernel config or None)`` from a test's ``_config``."""
    if config is None:
        return chunk, None
    kernel = {k: v for k, v in config.items() if k not in ("T", "CHANNELS", "CARRY_GROUP")}
    return config.get("T", chunk), kernel or None   # (no block size given: the autotuner's / the default)


def _carry(P, S, X, h0, dlast, batch, dim, N, n_chunks, forward, adjoint, group=None):
    f = dict(device=P.device, dtype=torch.float32)
    last = torch.empty(batch, dim, N, **f) if forward else None
    dh0 = torch.empty(batch, dim, N, **f) if (adjoint and h0 is not None) else None
    block = 128
    group = group or min(CARRY_GROUP, triton.next_power_of_2(n_chunks))
    opt = lambda t: t if t is not None else P  # noqa: E731  (absent pointers are never read)
    _carry_kernel[(triton.cdiv(dim * N, block), batch)](
        P, opt(S), opt(X), opt(h0), opt(dlast), opt(last), opt(dh0), dim, N, n_chunks,
        FORWARD=forward, ADJOINT=adjoint, HAS_H0=h0 is not None, HAS_DLAST=dlast is not None, BLOCK=block,
        GROUP=group)
    return last, dh0


def _states_entering_chunks(u, delta, A, B, C, bias, initial_state, n_chunks, common, cfg, group=None):
    """Launches 1 and 2 of the forward: the state entering each chunk ``(batch, n_chunks, dim, N)`` and the
    last state (inputs prepared by :func:`_prep`)."""
    batch, dim, L = u.shape
    N, G = A.shape[1], B.shape[1]
    f = dict(device=u.device, dtype=torch.float32)
    P = torch.empty(batch, n_chunks, dim, N, **f)
    S = torch.empty(batch, n_chunks, dim, N, **f)   # then: the state entering each chunk
    h0 = None if initial_state is None else initial_state.detach().float().contiguous()
    _summary(_block_grid(batch, dim, G, n_chunks),
             (u, delta, A, B, C, bias if bias is not None else A, A, A, P, S, A, dim, L, N, G, n_chunks),
             dict(common, ADJOINT=False, HAS_Z=False), cfg)
    last, _ = _carry(P, S, None, h0, None, batch, dim, N, n_chunks, True, False, group)
    return S, last


def scan_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False,
             initial_state=None, out=None, add=None, _config=None):
    """``(out, last_state)``: ``out`` in u's dtype (or written into the given ``out``), last state fp32.
    ``add`` (u's shape) is added before the gate. ``_config`` (tests): ``{"T": steps per chunk, "BLOCK_D":
    channels per program, "num_warps": w, "CARRY_GROUP": chunks composed at once}`` instead of the defaults /
    the autotuner (the backward also takes "CHANNELS": channels per program)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, dd, AA, BB, CC, DD, zz, bb = _prep(u, delta, A, B, C, D, z, delta_bias)
    G = BB.shape[1]
    T, cfg = _split(_config)
    n_chunks = triton.cdiv(L, T)
    opt = lambda t: t if t is not None else AA  # noqa: E731  (absent pointers are never read)
    grid = _block_grid(batch, dim, G, n_chunks)
    common = dict(HAS_BIAS=bb is not None, SOFTPLUS=bool(delta_softplus), REVERSE=bool(reverse),
                  BLOCK_N=triton.next_power_of_2(N), T=T)
    S, last = _states_entering_chunks(uu, dd, AA, BB, CC, bb, initial_state, n_chunks, common, cfg,
                                      (_config or {}).get("CARRY_GROUP"))
    if out is not None and any(t is not None and _shares_memory(out, t) for t in (u, delta, z, add)):
        raise ValueError("scan_fwd: out must not share memory with u, delta, z or add (the autotuner reruns "
                         "the kernel)")
    direct = out is not None and out.is_contiguous() and out.shape == u.shape
    target = out if direct else torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
    ad = None if add is None else add.contiguous()
    _output(grid, (uu, dd, AA, BB, CC, opt(DD), opt(zz), opt(bb), opt(ad), S, target, dim, L, N, G, n_chunks),
            dict(common, HAS_D=DD is not None, HAS_Z=zz is not None, HAS_ADD=ad is not None), cfg)
    if out is not None and not direct:
        target = out.copy_(target)
    return target, last


def scan_bwd(dout, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, dlast=None,
             reverse=False, initial_state=None, return_out=False, _config=None):
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)`` in their inputs' dtypes (None for absent
    inputs), then ``d initial_state`` when one is given, then the forward output when ``return_out``."""
    batch, dim, L = u.shape
    N = A.shape[1]
    uu, dd, AA, BB, CC, DD, zz, bb = _prep(u, delta, A, B, C, D, z, delta_bias)
    G = BB.shape[1]
    per_group = dim // G
    T, cfg = _split(_config, BWD_CHUNK)
    n_chunks = triton.cdiv(L, T)
    channels = (_config or {}).get("CHANNELS") or _backward_channels(batch, per_group, G, n_chunks, u.device)
    if cfg is not None:
        cfg.setdefault("BLOCK_D", min(4, channels))
    elif _INTERPRET:
        channels = _INTERPRETED_BLOCK_D
    n_cb = triton.cdiv(per_group, channels)
    f = dict(device=u.device, dtype=torch.float32)
    opt = lambda t: t if t is not None else AA  # noqa: E731
    go = dout.contiguous()
    h0 = None if initial_state is None else initial_state.detach().float().contiguous()
    gl = None if dlast is None else dlast.detach().float().contiguous()
    P = torch.empty(batch, n_chunks, dim, N, **f)
    S = torch.empty(batch, n_chunks, dim, N, **f)   # then: the state entering each chunk
    X = torch.empty(batch, n_chunks, dim, N, **f)   # then: the adjoint entering each chunk from its right
    grid = _block_grid(batch, dim, G, n_chunks)
    common = dict(HAS_BIAS=bb is not None, SOFTPLUS=bool(delta_softplus), REVERSE=bool(reverse),
                  BLOCK_N=triton.next_power_of_2(N), T=T)
    _summary(grid, (uu, dd, AA, BB, CC, opt(bb), go, opt(zz), P, S, X, dim, L, N, G, n_chunks),
             dict(common, ADJOINT=True, HAS_Z=zz is not None), cfg)
    _, dh0 = _carry(P, S, X, h0, gl, batch, dim, N, n_chunks, True, True, (_config or {}).get("CARRY_GROUP"))
    del P
    du = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
    ddelta = torch.empty(batch, dim, L, device=u.device, dtype=delta.dtype)
    dz = torch.empty(batch, dim, L, device=u.device, dtype=z.dtype) if zz is not None else None
    out = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype) if return_out else None
    dA = torch.empty(batch, n_chunks, dim, N, **f)
    dD = torch.empty(batch, n_chunks, dim, **f)
    dbias = torch.empty(batch, n_chunks, dim, **f)
    dB = torch.empty(batch, G, n_cb, N, L, **f)
    dC = torch.empty(batch, G, n_cb, N, L, **f)
    _backward(lambda meta: (G * n_cb, n_chunks, batch),
              (uu, dd, AA, BB, CC, opt(DD), opt(zz), opt(bb), go, S, X,
               du, ddelta, opt(dz), opt(out), dA, dD, dbias, dB, dC, dim, L, N, G, n_cb, n_chunks),
              dict(common, HAS_D=DD is not None, HAS_Z=zz is not None, HAS_OUT=out is not None, CHANNELS=channels),
              cfg)
    dB, dC = dB.sum(2), dC.sum(2)
    if B.dim() == 3:
        dB, dC = dB.squeeze(1), dC.squeeze(1)
    grads = (du, ddelta, dA.sum((0, 1)).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
             None if D is None else dD.sum((0, 1)).to(D.dtype), dz,
             None if delta_bias is None else dbias.sum((0, 1)).to(delta_bias.dtype))
    if initial_state is not None:
        grads += (dh0.to(initial_state.dtype),)
    return grads + (out,) if return_out else grads


def scan_fwd_pair(forward: dict, backward: dict, z=None, delta_softplus=False, divide=False, _config=None):
    """Both directions of a bidirectional mixer in one output pass: ``(y_f + y_b) [/ 2] * silu(z)``, where
    ``y_f`` scans ``forward`` = ``{u, delta, A, B, C, D, delta_bias}`` from the first position and ``y_b``
    scans ``backward`` (same keys and shapes) from the last. Same result as two :func:`scan_fwd` calls summed
    and gated, one ``(batch, dim, L)`` write instead of three; no gradients (inference and the recomputing
    training function's forward). Returns the output in u's dtype."""
    f, b = ([t for t in _prep(d["u"], d["delta"], d["A"], d["B"], d["C"], d.get("D"), None, d.get("delta_bias"))]
            for d in (forward, backward))
    batch, dim, L = f[0].shape
    N, G = f[2].shape[1], f[3].shape[1]
    if [t is None for t in f] != [t is None for t in b] or b[0].shape != f[0].shape or b[3].shape != f[3].shape:
        raise ValueError("scan_fwd_pair: both directions need the same inputs and shapes")
    T, cfg = _split(_config)
    n_chunks = triton.cdiv(L, T)
    common = dict(HAS_BIAS=f[7] is not None, SOFTPLUS=bool(delta_softplus), BLOCK_N=triton.next_power_of_2(N), T=T)
    states = [_states_entering_chunks(d[0], d[1], d[2], d[3], d[4], d[7], None, n_chunks, dict(common, REVERSE=rev),
                                      cfg, (_config or {}).get("CARRY_GROUP"))[0] for d, rev in ((f, False), (b, True))]
    zz = None if z is None else z.contiguous()
    out = torch.empty(batch, dim, L, device=f[0].device, dtype=forward["u"].dtype)
    opt = lambda t: t if t is not None else f[2]  # noqa: E731
    per_dir = lambda d, S: (d[0], d[1], d[2], d[3], d[4], opt(d[5]), opt(d[7]), S)  # noqa: E731
    _pair_output(_block_grid(batch, dim, G, n_chunks),
                 (*per_dir(f, states[0]), *per_dir(b, states[1]), opt(zz), out, dim, L, N, G, n_chunks),
                 dict(common, HAS_D=f[5] is not None, HAS_Z=zz is not None, DIVIDE=bool(divide)), cfg)
    return out
