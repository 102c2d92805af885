// Depthwise causal 1-D convolution with optional SiLU, forward and backward, for CPU.
//   y[c, t] = act( bias[c] + sum_k w[c, k] * x[c, t - (K-1) + k] )        (causal)
//   y[c, t] = act( bias[c] + sum_k w[c, k] * x[c, t + (K-1) - k] )        (reverse: anti-causal, which
//             equals flip(conv(flip(x))) and serves the backward scan direction without flip copies)
// x, y: (batch, dim, L) fp32 contiguous; w: (dim, K); bias: (dim) or null. OpenMP over rows, SIMD over time.
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd_math.h"

namespace {
using namespace vm;


// Pre-activation of one row into pre[0..L_out) from a row of L_in >= L_out inputs: a zero-padded copy of x
// lets every tap be a plain shifted read. pad holds K-1 zeros before (causal) or after (reverse) the row.
// With L_in > L_out the extra inputs are the neighbouring positions a chunked caller passes as the conv's
// halo: before the outputs (causal; output t is input L_in - L_out + t) or after them (reverse).
inline void row_preact(const float* x, const float* w, float bias, int64_t L_in, int64_t L_out, int64_t K,
                       bool reverse, float* pad, float* pre) {
    const int64_t off = reverse ? 0 : K - 1;
    const int64_t shift = reverse ? 0 : L_in - L_out;
    std::memset(pad, 0, (L_in + K - 1) * sizeof(float));
    std::memcpy(pad + off, x, L_in * sizeof(float));
    for_blocks(L_out, [&](int64_t t, int64_t n) {
        vf acc = splat(bias);
        for (int64_t k = 0; k < K; ++k) {
            // causal: x[t-(K-1)+k] = pad[t+k]; reverse: x[t+(K-1)-k] = pad[t+(K-1)-k]
            const int64_t tap = reverse ? K - 1 - k : k;
            acc += load_n(pad + shift + t + tap, n) * w[k];
        }
        store_n(pre + t, acc, n);
    });
}

}  // namespace

VM_EXPORT_TARGET_INFO(vm_causal_conv1d)

extern "C" {

// x: (batch, dim, L_in), y: (batch, dim, L_out) with L_out <= L_in (see row_preact for the halo).
int vm_causal_conv1d_fwd_window(const float* x, const float* w, const float* bias, int silu, int reverse,
                                int64_t batch, int64_t dim, int64_t L_in, int64_t L_out, int64_t K, float* y,
                                int num_threads) {
    if (L_out > L_in || L_out < 0) return 1;
#pragma omp parallel num_threads(num_threads > 0 ? num_threads : 1)
    {
        FlushDenormals ftz;
        std::vector<float> pad(L_in + K + W);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < batch * dim; ++r) {
            const int64_t c = r % dim;
            float* out = y + r * L_out;
            row_preact(x + r * L_in, w + c * K, bias ? bias[c] : 0.0f, L_in, L_out, K, reverse, pad.data(), out);
            if (silu)
                for_blocks(L_out, [&](int64_t t, int64_t n) {
                    vf v = load_n(out + t, n);
                    store_n(out + t, v * vsigmoid(v), n);
                });
        }
    }
    return 0;
}

int vm_causal_conv1d_fwd(const float* x, const float* w, const float* bias, int silu, int reverse, int64_t batch,
                         int64_t dim, int64_t L, int64_t K, float* y, int num_threads) {
    return vm_causal_conv1d_fwd_window(x, w, bias, silu, reverse, batch, dim, L, L, K, y, num_threads);
}

// dw_part: (batch, dim, K) and dbias_part: (batch, dim) per-batch partial sums, summed by the caller.
int vm_causal_conv1d_bwd(const float* x, const float* w, const float* bias, int silu, int reverse, int64_t batch,
                         int64_t dim, int64_t L, int64_t K, const float* dy, float* dx, float* dw_part,
                         float* dbias_part, int num_threads) {
#pragma omp parallel num_threads(num_threads > 0 ? num_threads : 1)
    {
        FlushDenormals ftz;
        std::vector<float> pad(L + K + W), g(L + 2 * K + W);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < batch * dim; ++r) {
            const int64_t c = r % dim;
            const float* wc = w + c * K;
            // g = dL/d(pre-activation), stored with K-1 zeros on both sides for the transposed taps.
            float* gp = g.data() + (K - 1);
            std::memset(g.data(), 0, (L + 2 * K - 2) * sizeof(float));
            row_preact(x + r * L, wc, bias ? bias[c] : 0.0f, L, L, K, reverse, pad.data(), gp);
            vf db = splat(0.0f);
            for_blocks(L, [&](int64_t t, int64_t n) {
                vf gv = load_n(dy + r * L + t, n);
                if (silu) {
                    vf v = load_n(gp + t, n), s = vsigmoid(v);
                    gv = gv * s * (1.0f + v * (1.0f - s));
                }
                store_n(gp + t, gv, n);
                db += gv;
            });
            if (dbias_part) dbias_part[r] = hsum(db);
            // dw[k] = sum_t g[t] * x_tap(t, k); pad still holds the shifted row.
            for (int64_t k = 0; k < K; ++k) {
                const int64_t tap = reverse ? K - 1 - k : k;
                vf acc = splat(0.0f);
                for_blocks(L, [&](int64_t t, int64_t n) { acc += load_n(gp + t, n) * load_n(pad.data() + t + tap, n); });
                dw_part[r * K + k] = hsum(acc);
            }
            // dx[s] = sum_k w[k] * g[t] where s is the input position tap k of output t reads.
            // causal: s = t-(K-1)+k  =>  t = s+(K-1)-k ; reverse: s = t+(K-1)-k  =>  t = s-(K-1)+k
            for_blocks(L, [&](int64_t s, int64_t n) {
                vf acc = splat(0.0f);
                for (int64_t k = 0; k < K; ++k) {
                    const int64_t shift = reverse ? -(K - 1) + k : (K - 1) - k;
                    acc += load_n(gp + s + shift, n) * wc[k];
                }
                store_n(dx + r * L + s, acc, n);
            });
        }
    }
    return 0;
}

}  // extern "C"
