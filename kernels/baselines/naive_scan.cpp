// Benchmark baseline only (not used by the library): the straightforward fused selective-scan forward
// loop, one (batch, channel) row per OpenMP iteration, std::exp, left to the compiler to optimise.
// Inputs as in kernels/cpu/selective_scan.cpp but B/C in their natural (batch, N, L) layout, no D/z/bias.
#include <cmath>
#include <cstdint>

extern "C" void vm_naive_scan_fwd(const float* u, const float* delta, const float* A, const float* B, const float* C,
                                  int64_t batch, int64_t dim, int64_t L, int64_t N, float* out) {
#pragma omp parallel for
    for (int64_t r = 0; r < batch * dim; ++r) {
        const int64_t b = r / dim, d = r % dim;
        float h[256] = {0};
        for (int64_t t = 0; t < L; ++t) {
            const float dt = delta[r * L + t], x = dt * u[r * L + t];
            float y = 0.0f;
            for (int64_t n = 0; n < N; ++n) {
                h[n] = std::exp(dt * A[d * N + n]) * h[n] + x * B[(b * N + n) * L + t];
                y += h[n] * C[(b * N + n) * L + t];
            }
            out[r * L + t] = y;
        }
    }
}
