// The selective-scan recurrence of one channel row, for the scan kernel (selective_scan.cpp; the fused mixer
// scans blocks of channels in the lanes instead): per step h = exp(dt*A) * h + dt*u*B_t, y_t = <C_t, h>.
// B and C are time-major (L, NP) so that B_t is one contiguous vector; the state lives in NV registers.
#pragma once
#include <cstdint>
#include <type_traits>

#include "simd_math.h"

namespace vm {

constexpr int kMaxState = 256;            // the largest state size a caller may pass
constexpr int kMaxNV = kMaxState / W;     // vectors per state row at most

// One scan step: h = exp2(dt*A2) * h + dt*u*B_t; returns C_t * h (its lane sum is y_t). Stores the state and
// the decay at hs_s / das_s when given (the backward's buffers). NONPOS: the caller guarantees dt*A <= 0
// (dt a softplus, A = -exp(A_log)), so the decay takes the cheaper vexp2_nonpos.
template <int NV, bool NONPOS = false>
VM_INLINE vf scan_step(const float* Bt, const float* Ct, float dtt, float dtu, const vf* A2, vf* h, int64_t nv,
                       float* hs_s, float* das_s) {
    vf acc = splat(0.0f);
    for (int64_t k = 0; k < nv; ++k) {
        const vf decay = NONPOS ? vexp2_nonpos(A2[k] * dtt) : vexp2(A2[k] * dtt);
        h[k] = decay * h[k] + load(Bt + k * W) * dtu;
        if (hs_s) store(hs_s + k * W, h[k]);
        if (das_s) store(das_s + k * W, decay);
        acc += h[k] * load(Ct + k * W);
    }
    return acc;
}

// L steps over positions 0..L-1 (REV: L-1..0), y[position] = <C, h>; states and decays kept in scan-step
// order when hs / das are given. A2 = A * log2(e) (the decay is 2^(dt * A2), cheaper than exp). The steps
// run in blocks of W with the W partial sums in registers, reduced by one transposing sum per block.
template <int NV, bool REV, bool NONPOS = false>
inline void scan_steps(int64_t L, int64_t NP, const float* Bp, const float* Cp, const float* u, const float* dt,
                       const vf* A2, vf* h, float* y, float* hs, float* das) {
    const int64_t nv = NV > 0 ? NV : NP / W;
    auto at = [&](int64_t s) { return REV ? L - 1 - s : s; };
    int64_t s = 0;
    for (; s + W <= L; s += W) {
        vf acc[W];
#pragma GCC unroll 16
        for (int j = 0; j < W; ++j) {
            const int64_t t = at(s + j);
            acc[REV ? W - 1 - j : j] = scan_step<NV, NONPOS>(Bp + t * NP, Cp + t * NP, dt[t], dt[t] * u[t], A2, h, nv,
                                                     hs ? hs + (s + j) * NP : nullptr,
                                                     das ? das + (s + j) * NP : nullptr);
        }
        store(y + (REV ? L - s - W : s), hsum_rows(acc));   // W positions, ascending
    }
    for (; s < L; ++s) {
        const int64_t t = at(s);
        y[t] = hsum(scan_step<NV, NONPOS>(Bp + t * NP, Cp + t * NP, dt[t], dt[t] * u[t], A2, h, nv,
                                  hs ? hs + s * NP : nullptr, das ? das + s * NP : nullptr));
    }
}

// The register counts unrolled at compile time: the common state sizes (16 = the models', 1 to 64 = the
// tests' and Mamba's) on every width; other sizes take the loop with a run-time count (NV = 0).
template <typename F>
int dispatch_nv(int64_t NP, F&& f) {
    if (NP <= 0 || NP % W || NP / W > kMaxNV) return 1;
    switch (NP / W) {
        case 1: f(std::integral_constant<int, 1>{}); break;
        case 2: f(std::integral_constant<int, 2>{}); break;
        case 3: f(std::integral_constant<int, 3>{}); break;
        case 4: f(std::integral_constant<int, 4>{}); break;
        case 8: f(std::integral_constant<int, 8>{}); break;
        default: f(std::integral_constant<int, 0>{});
    }
    return 0;
}

}  // namespace vm
