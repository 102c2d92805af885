// SIMD helpers shared by the CPU kernels: a 16-lane float vector (GCC/Clang vector extensions lower it
// to AVX-512, 2x AVX2 or 4x SSE/NEON), branch-free exp/log (Cephes polynomials), row sums of 16 vectors,
// and tail-safe block loops.
#pragma once
#include <cstdint>
#include <cstring>

namespace vm {

constexpr int W = 16;
typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t))));

inline vf splat(float x) { return vf{} + x; }
inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)

// Sum of the 16 lanes as a tree of 4 shuffle+add steps (a plain loop is 15 dependent scalar adds,
// which dominated short rows: 5 row sums per row in the conv backward).
inline float hsum(vf v) {
    v += SHUF(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += SHUF(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += SHUF(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += SHUF(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}

// Horizontal sums of 16 vectors at once: lane i of the result is the sum of v[i]. A shuffle tree
// costs ~2 instructions per vector, against ~8 for one hsum.
inline vf hsum16(const vf* v) {
    vf a[8], b[4], c[2];
    for (int i = 0; i < 8; ++i)
        a[i] = SHUF(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               SHUF(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; ++i)
        b[i] = SHUF(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               SHUF(a[2 * i], a[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int i = 0; i < 2; ++i)
        c[i] = SHUF(b[2 * i], b[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
               SHUF(b[2 * i], b[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return SHUF(c[0], c[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           SHUF(c[0], c[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
#undef SHUF

// Collects one vector per time step and writes its horizontal sum to dst[t], 16 steps at a time.
struct RowSums {
    float* dst;
    vf buf[W];
    int64_t idx[W];
    int n = 0;
    explicit RowSums(float* d) : dst(d) {}
    inline void push(vf v, int64_t t) {
        buf[n] = v;
        idx[n] = t;
        if (++n == W) flush();
    }
    inline void flush() {
        if (n == 0) return;
        for (int k = n; k < W; ++k) buf[k] = vf{};
        const vf r = hsum16(buf);
        for (int k = 0; k < n; ++k) dst[idx[k]] = r[k];
        n = 0;
    }
};

// exp and log as branch-free polynomials (Cephes coefficients), written for vectors and scalars.
template <typename V>
inline V vexp(V x);

template <>
inline vf vexp(vf x) {
    x = x < -87.3f ? splat(-87.3f) : x;
    x = x > 88.3f ? splat(88.3f) : x;
    vf t = x * 1.44269504088896341f;
    vi ki = __builtin_convertvector(t + (t >= 0.0f ? splat(0.5f) : splat(-0.5f)), vi);  // round half away
    vf k = __builtin_convertvector(ki, vf);
    vf r = x - k * 0.693359375f + k * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi bits = (ki + 127) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

inline vf vlog(vf x) {  // x > 0, finite
    vi bits;
    std::memcpy(&bits, &x, sizeof(bits));
    vf e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, vf);
    bits = (bits & 0x807fffff) | 0x3f000000;
    vf m;
    std::memcpy(&m, &bits, sizeof(m));  // m in [0.5, 1)
    auto small = m < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    vf z = m * m;
    vf y = splat(7.0376836292e-2f);
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return m + y + 0.693359375f * e;
}

// torch.nn.functional.softplus (beta 1, threshold 20) and the logistic sigmoid, on vectors.
// log(1 + y) accurate for small y (Goldberg's trick: the rounding of 1 + y cancels in the ratio).
inline vf vlog1p(vf y) {
    const vf u = 1.0f + y, d = u - 1.0f;
    const vf r = vlog(u) * (y / (d == 0.0f ? splat(1.0f) : d));
    return d == 0.0f ? y : r;
}
// softplus = max(x, 0) + log1p(exp(-|x|)): no cancellation for very negative x (where it is ~exp(x)).
inline vf vsoftplus(vf x) {
    const vf ax = x < 0.0f ? -x : x;
    const vf sp = (x > 0.0f ? x : splat(0.0f)) + vlog1p(vexp(-ax));
    return x > 20.0f ? x : sp;
}
inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// Apply f to [0, n) in vector blocks; the tail goes through a zero-padded vector.
template <typename F>
inline void for_blocks(int64_t n, F&& f) {
    int64_t i = 0;
    for (; i + W <= n; i += W) f(i, W);
    if (i < n) f(i, n - i);
}
// Partial blocks (a row's tail) element by element: a variable-length memcpy is a library call, which
// made short rows (L = 17 tokens) several times slower per element than long ones.
inline vf load_n(const float* p, int64_t n) {
    if (n == W) return load(p);
    vf v = splat(0.0f);
    for (int64_t i = 0; i < n; ++i) v[i] = p[i];
    return v;
}
inline void store_n(float* p, vf v, int64_t n) {
    if (n == W) return store(p, v);
    for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

}  // namespace vm
