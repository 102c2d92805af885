// The residual add and RMSNorm of the no-gradient block loop, for CPU, in one pass over each row:
//   stream[r] += add[r]                                   (when add is given)
//   out[r]     = stream[r] * rsqrt(mean(stream[r]^2) + eps) * weight
// fp32 rows of `cols` values, all contiguous. A block's norm in torch is five to six separate ops (square, mean,
// add eps, rsqrt, two products), each a few microseconds of dispatch: at an image's 197 tokens those cost more
// than the arithmetic (measured: 30 us per block against about 5 here).
//
// `out` may be `add` itself (the block loop writes a mixer's output where the next norm goes): each row reads
// its addend completely before it writes that row of `out`, and rows do not overlap.
#include <cmath>
#include <cstdint>

#include "simd_math.h"

namespace {
using namespace vm;

inline void add_norm_row(float* s, const float* a, const float* w, float eps, float* o, int64_t cols) {
    vf sq0 = splat(0.0f), sq1 = splat(0.0f);   // two sums: half the add chain
    int64_t i = 0;
    for (; i + 2 * W <= cols; i += 2 * W) {
        vf v0 = load(s + i), v1 = load(s + i + W);
        if (a) {
            v0 += load(a + i);
            v1 += load(a + i + W);
            store(s + i, v0);
            store(s + i + W, v1);
        }
        sq0 += v0 * v0;
        sq1 += v1 * v1;
    }
    for (; i < cols; i += W) {
        const int64_t n = cols - i < W ? cols - i : W;
        vf v = load_n(s + i, n);
        if (a) {
            v += load_n(a + i, n);
            store_n(s + i, v, n);
        }
        sq0 += v * v;
    }
    const float mean = hsum(sq0 + sq1) / static_cast<float>(cols);
    const float scale = 1.0f / std::sqrt(mean + eps);
    for_blocks(cols, [&](int64_t t, int64_t n) { store_n(o + t, load_n(s + t, n) * scale * load_n(w + t, n), n); });
}

}  // namespace

VM_EXPORT_TARGET_INFO(vm_rms_norm)

extern "C" {

// stream, out: (rows, cols); add: (rows, cols) or null; weight: (cols). Threads only for large inputs: a
// parallel region costs more than a small norm (an image's 197 x 192 takes a few microseconds on one core).
int vm_add_rms_norm(float* stream, const float* add, const float* weight, float eps, float* out, int64_t rows,
                    int64_t cols, int num_threads) {
    if (rows < 0 || cols <= 0) return 1;
    const bool parallel = num_threads > 1 && rows * cols >= (int64_t{1} << 18);
#pragma omp parallel num_threads(num_threads > 0 ? num_threads : 1) if (parallel)
    {
        FlushDenormals ftz;   // as every kernel call (kernels/README.md)
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r)
            add_norm_row(stream + r * cols, add ? add + r * cols : nullptr, weight, eps, out + r * cols, cols);
    }
    return 0;
}

}  // extern "C"
