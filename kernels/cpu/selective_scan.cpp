// Selective scan forward and backward for CPU: OpenMP over (batch, channel) rows, SIMD over the state
// dimension, fp32 state math. Plain C ABI (loaded with ctypes), so it never depends on torch's C++ ABI.
//
//   dt_t  = softplus(delta_t + bias)            (bias / softplus optional)
//   h_t   = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t
//   y_t   = <C_t, h_t> + D * u_t ;  out_t = y_t * silu(z_t)   (D / z optional)
//
// Layouts (all fp32, contiguous): u, delta, z, out: (batch, dim, L); A: (dim, NP);
// B, C: (batch, G, L, NP) time-major so that B_t is contiguous; channel d uses group d / (dim / G).
// NP is the state size padded by the caller to a multiple of the vector width W (vm_selective_scan_lanes:
// 16 with AVX-512, 8 with AVX2, 4 with SSE/NEON) with A = B = C = 0 in the padding, which keeps those
// lanes at h = 0. The state of one row lives in NP/W vector registers.
// The backward recomputes the states and decays of a row into a per-thread buffer (2*L*NP floats), so nothing of
// size batch*dim*L*N is ever stored; it can also write the forward output on the way (the fused mixer's
// backward needs it and would otherwise run the forward scan a second time).
// An optional initial state h0 (batch, dim, NP) starts the recurrence (a sequence processed in chunks carries
// it across chunks); the backward then also returns its gradient.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <vector>

#include "scan_steps.h"
#include "simd_math.h"

namespace {

using namespace vm;

struct Args {
    const float *u, *delta, *A, *B, *C, *D, *z, *bias;
    int softplus;
    int reverse;  // scan from the last position to the first (the backward direction, without flips)
    int64_t batch, dim, L, NP, G;
    // Position of scan step s. Elementwise passes work in position order; only the recurrences map.
    inline int64_t pos(int64_t s) const { return reverse ? L - 1 - s : s; }
};

// dt of one row, vectorised over time.
inline void row_dt(const Args& a, int64_t d, const float* delta, float* dt) {
    const float b = a.bias ? a.bias[d] : 0.0f;
    for_blocks(a.L, [&](int64_t t, int64_t n) {
        vf x = load_n(delta + t, n) + b;
        store_n(dt + t, a.softplus ? vsoftplus(x) : x, n);
    });
}

// The state recurrence of one row (scan_steps.h): y = <C, h> written to ysum[position]; states and decays
// exp(dt*A) are also kept in scan-step order when hs / das are given (for the backward, which then needs no
// second exp per step). Loads A.
template <int NV, bool REV>
inline void recurrence_dir(const Args& a, int64_t d, const float* Bp, const float* Cp, const float* u,
                           const float* dt, const float* h0, vf* A, vf* h, float* ysum, float* hs, float* das) {
    const int64_t nv = NV > 0 ? NV : a.NP / W, NP = a.NP;
    vf A2[NV > 0 ? NV : kMaxNV];
    for (int64_t k = 0; k < nv; ++k) {
        A[k] = load(a.A + d * NP + k * W);
        A2[k] = A[k] * kLog2e;
        h[k] = h0 ? load(h0 + k * W) : splat(0.0f);
    }
    scan_steps<NV, REV>(a.L, NP, Bp, Cp, u, dt, A2, h, ysum, hs, das);
}

template <int NV>
inline void recurrence(const Args& a, int64_t d, const float* Bp, const float* Cp, const float* u, const float* dt,
                       const float* h0, vf* A, vf* h, float* ysum, float* hs, float* das) {
    if (a.reverse)
        recurrence_dir<NV, true>(a, d, Bp, Cp, u, dt, h0, A, h, ysum, hs, das);
    else
        recurrence_dir<NV, false>(a, d, Bp, Cp, u, dt, h0, A, h, ysum, hs, das);
}

template <int NV>
void fwd_row(const Args& a, int64_t bi, int64_t d, const float* h0, const float* add, float* dt, float* out,
             float* last) {
    const int64_t nv = NV > 0 ? NV : a.NP / W, NP = a.NP, L = a.L;
    const int64_t row = (bi * a.dim + d) * L;
    const int64_t g = d / (a.dim / a.G);
    const float* Bp = a.B + (bi * a.G + g) * L * NP;
    const float* Cp = a.C + (bi * a.G + g) * L * NP;
    const float* u = a.u + row;
    const float Dd = a.D ? a.D[d] : 0.0f;
    row_dt(a, d, a.delta + row, dt);
    vf A[NV > 0 ? NV : kMaxNV], h[NV > 0 ? NV : kMaxNV];
    const float* h0row = h0 ? h0 + (bi * a.dim + d) * NP : nullptr;
    recurrence<NV>(a, d, Bp, Cp, u, dt, h0row, A, h, out + row, nullptr, nullptr);
    // out = (y + D*u [+ add]) * silu(z)
    const float* z = a.z ? a.z + row : nullptr;
    for_blocks(L, [&](int64_t t, int64_t n) {
        vf o = load_n(out + row + t, n) + load_n(u + t, n) * Dd;
        if (add) o += load_n(add + row + t, n);
        if (z) {
            vf zz = load_n(z + t, n);
            o = o * zz * vsigmoid(zz);
        }
        store_n(out + row + t, o, n);
    });
    if (last)
        for (int64_t k = 0; k < nv; ++k) store(last + (bi * a.dim + d) * NP + k * W, h[k]);
}

template <int NV>
void bwd_row(const Args& a, int64_t bi, int64_t d, const float* h0, const float* dout, const float* dlast, float* buf,
             float* dB, float* dC, float* du, float* ddelta, float* dA, float* dD, float* dz, float* dbias, float* out,
             float* dh0) {
    const int64_t nv = NV > 0 ? NV : a.NP / W, NP = a.NP, L = a.L;
    const int64_t row = (bi * a.dim + d) * L;
    const int64_t g = d / (a.dim / a.G);
    const int64_t bc = (bi * a.G + g) * L * NP;
    const float* Bp = a.B + bc;
    const float* Cp = a.C + bc;
    const float* u = a.u + row;
    const float Dd = a.D ? a.D[d] : 0.0f;
    float* dt = buf;               // L: dt after bias/softplus
    float* dy = dt + L;            // L: gradient reaching y (after the gate)
    float* hs = dy + L;            // L*NP: states, in scan-step order
    float* das = hs + L * NP;      // L*NP: decays exp(dt*A), in scan-step order
    row_dt(a, d, a.delta + row, dt);

    vf A[NV > 0 ? NV : kMaxNV], h[NV > 0 ? NV : kMaxNV];
    const float* h0row = h0 ? h0 + (bi * a.dim + d) * NP : nullptr;
    // dy first holds y_t before D*u and the gate; it becomes the gradient just below.
    recurrence<NV>(a, d, Bp, Cp, u, dt, h0row, A, h, dy, hs, das);
    // Gate: out = y * silu(z)  =>  dz = dout * y * silu'(z), dy = dout * silu(z).
    for_blocks(L, [&](int64_t t, int64_t n) {
        vf go = load_n(dout + row + t, n);
        const vf y = load_n(dy + t, n) + load_n(u + t, n) * Dd;
        if (a.z) {
            vf zz = load_n(a.z + row + t, n), s = vsigmoid(zz);
            store_n(dz + row + t, go * y * s * (1.0f + zz * (1.0f - s)), n);
            if (out) store_n(out + row + t, y * zz * s, n);
            go = go * zz * s;
        } else if (out) {
            store_n(out + row + t, y, n);
        }
        store_n(dy + t, go, n);
    });

    vf gst[NV > 0 ? NV : kMaxNV], dA_acc[NV > 0 ? NV : kMaxNV];  // adjoint state (times exp(dt_{t+1} A))
    vf hcur[NV > 0 ? NV : kMaxNV];   // h of the current step: the previous step's hprev, kept in registers
    for (int64_t k = 0; k < nv; ++k) {   // a gradient on the last state seeds the adjoint
        gst[k] = dlast ? load(dlast + (bi * a.dim + d) * NP + k * W) : splat(0.0f);
        dA_acc[k] = splat(0.0f);
        hcur[k] = load(hs + (L - 1) * NP + k * W);
    }
    RowSums gB_sum(du + row, !a.reverse), ddt_sum(ddelta + row, !a.reverse);   // steps run backwards
    for (int64_t s = L - 1; s >= 0; --s) {
        const int64_t t = a.pos(s);
        const float dyt = dy[t], dtt = dt[t], ut = u[t];
        vf ddt_v = splat(0.0f), gB_v = splat(0.0f);
        for (int64_t k = 0; k < nv; ++k) {
            const int64_t o = t * NP + k * W, os = s * NP + k * W;
            const vf Bt = load(Bp + o), Ct = load(Cp + o), dAt = load(das + os);
            const vf hprev = s > 0 ? load(hs + os - NP) : (h0row ? load(h0row + k * W) : splat(0.0f));
            const vf gn = gst[k] + Ct * dyt;
            store(dC + bc + o, load(dC + bc + o) + hcur[k] * dyt);
            store(dB + bc + o, load(dB + bc + o) + gn * (dtt * ut));
            const vf gh = gn * dAt * hprev;             // d/d(dt*A) of the decay term
            ddt_v += gn * Bt * ut + gh * A[k];
            gB_v += gn * Bt;
            dA_acc[k] += gh * dtt;
            gst[k] = gn * dAt;
            hcur[k] = hprev;
        }
        gB_sum.push(gB_v, t);
        ddt_sum.push(ddt_v, t);
    }
    gB_sum.flush();
    ddt_sum.flush();
    // du = D*dy + dt * <g, B>;  dD = sum_t dy*u
    vf dD_v = splat(0.0f);
    for_blocks(L, [&](int64_t t, int64_t n) {
        const vf dyv = load_n(dy + t, n), uv = load_n(u + t, n);
        store_n(du + row + t, dyv * Dd + load_n(dt + t, n) * load_n(du + row + t, n), n);
        dD_v += dyv * uv;
    });
    const float dD_acc = hsum(dD_v);
    // Back through softplus(delta + bias); the bias gradient is the row sum.
    const float bias = a.bias ? a.bias[d] : 0.0f;
    vf db = splat(0.0f);
    for_blocks(L, [&](int64_t t, int64_t n) {
        vf g = load_n(ddelta + row + t, n);
        if (a.softplus) {
            vf raw = load_n(a.delta + row + t, n) + bias;
            g = raw > 20.0f ? g : g * vsigmoid(raw);
        }
        store_n(ddelta + row + t, g, n);
        db += n == W ? g : load_n(ddelta + row + t, n);
    });
    for (int64_t k = 0; k < nv; ++k) store(dA + (bi * a.dim + d) * NP + k * W, dA_acc[k]);
    if (dh0)   // the adjoint after the first step is the gradient of the state before it
        for (int64_t k = 0; k < nv; ++k) store(dh0 + (bi * a.dim + d) * NP + k * W, gst[k]);
    dD[bi * a.dim + d] = dD_acc;
    dbias[bi * a.dim + d] = hsum(db);
}

}  // namespace

VM_EXPORT_TARGET_INFO(vm_selective_scan)

extern "C" {

int vm_selective_scan_version() { return 7; }

// out: (batch, dim, L); h0 (initial state), last_state: (batch, dim, NP) or null; add: (batch, dim, L) or
// null, added to the output before the gate (a chunked caller's other scan direction).
int vm_selective_scan_fwd(const float* u, const float* delta, const float* A, const float* B, const float* C,
                          const float* D, const float* z, const float* bias, int softplus, int reverse, int64_t batch,
                          int64_t dim, int64_t L, int64_t NP, int64_t G, const float* h0, const float* add, float* out,
                          float* last_state, int num_threads) {
    Args a{u, delta, A, B, C, D, z, bias, softplus, reverse, batch, dim, L, NP, G};
    return dispatch_nv(NP, [&](auto nv) {
        constexpr int NV = decltype(nv)::value;
#pragma omp parallel num_threads(num_threads > 0 ? num_threads : 1)
        {
            FlushDenormals ftz;
            std::vector<float> dt(L + W);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < batch * dim; ++r) fwd_row<NV>(a, r / dim, r % dim, h0, add, dt.data(), out, last_state);
        }
    });
}

// Gradients (dlast: gradient of the last state, or null). dA_part, dD_part, dbias_part: (batch, dim[, NP]) per-batch partial sums (the caller sums
// over batch); dB, dC: (batch, G, L, NP), zero-filled by the caller. Optional: h0 (initial state) and its
// gradient dh0 (batch, dim, NP); out (batch, dim, L) receives the forward output.
int vm_selective_scan_bwd(const float* u, const float* delta, const float* A, const float* B, const float* C,
                          const float* D, const float* z, const float* bias, int softplus, int reverse, int64_t batch,
                          int64_t dim, int64_t L, int64_t NP, int64_t G, const float* h0, const float* dout,
                          const float* dlast, float* du,
                          float* ddelta, float* dA_part, float* dB, float* dC, float* dD_part, float* dz,
                          float* dbias_part, float* out, float* dh0, int num_threads) {
    Args a{u, delta, A, B, C, D, z, bias, softplus, reverse, batch, dim, L, NP, G};
    const int64_t bc_size = batch * G * L * NP;
    const int nt = num_threads > 0 ? num_threads : 1;
    return dispatch_nv(NP, [&](auto nv) {
        constexpr int NV = decltype(nv)::value;
        // Channels of one group share B/C: threads other than the first accumulate dB/dC privately.
        std::vector<float> part(static_cast<size_t>(nt - 1) * 2 * bc_size, 0.0f);
        int used = 1;
#pragma omp parallel num_threads(nt)
        {
            FlushDenormals ftz;
            const int tid = omp_get_thread_num();
#pragma omp single
            used = omp_get_num_threads();
            float* my_dB = tid == 0 ? dB : part.data() + (tid - 1) * 2 * bc_size;
            float* my_dC = tid == 0 ? dC : my_dB + bc_size;
            std::vector<float> buf(2 * L + 2 * L * NP + W);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < batch * dim; ++r)
                bwd_row<NV>(a, r / dim, r % dim, h0, dout, dlast, buf.data(), my_dB, my_dC, du, ddelta, dA_part, dD_part,
                            dz, dbias_part, out, dh0);
#pragma omp for schedule(static)
            for (int64_t i = 0; i < bc_size; ++i) {
                float sb = 0.0f, sc = 0.0f;
                for (int k = 0; k < used - 1; ++k) {
                    sb += part[k * 2 * bc_size + i];
                    sc += part[k * 2 * bc_size + bc_size + i];
                }
                dB[i] += sb;
                dC[i] += sc;
            }
        }
    });
}

// FTZ + DAZ on (1) or off (0) for the calling thread and the OpenMP pool's threads (torch's, see
// _build.py), so that torch's own CPU ops also skip subnormals.
int vm_set_flush_denormals(int on, int num_threads) {
#pragma omp parallel num_threads(num_threads > 0 ? num_threads : 1)
    set_flush_denormals(on != 0);
    return 0;
}

}  // extern "C"
