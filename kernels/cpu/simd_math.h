// SIMD helpers shared by the CPU kernels: a float vector as wide as the target's registers (GCC/Clang
// vector extensions), branch-free exp/log (Cephes polynomials), row sums of W vectors, tail-safe loops.
//
// The width follows the instruction set the file is compiled for (-march): 16 lanes with AVX-512,
// 8 with AVX/AVX2, 4 with SSE or NEON. A vector type wider than the registers would be lowered
// piecewise (a 16-lane type on AVX2 made the scan slower than a naive scalar loop); building with
// -Wvector-operation-performance reports any operation that still is (tests/test_kernel_builds.py).
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>
#if defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#else   // built without OpenMP (e.g. a cross-compiler without its runtime): one thread, same code
inline int omp_get_thread_num() { return 0; }
inline int omp_get_num_threads() { return 1; }
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace vm {

// Subnormal floats (|x| < 1.2e-38) cost ~100x a normal operation on x86 and appear in training
// (gradients near zero, decays of long rows). FTZ + DAZ treat them as 0: results change by < 1.2e-38.
// FlushDenormals sets that for its scope on one thread (the kernels use it in every OpenMP thread);
// set_flush_denormals leaves it on (videomamba.ops.flush_denormals, for torch's ops on the same threads).
#if defined(__x86_64__) || defined(__i386__)
inline unsigned fp_mode() { return _mm_getcsr(); }
inline void set_fp_mode(unsigned m) { _mm_setcsr(m); }
constexpr unsigned kFlushBits = 0x8040;   // MXCSR FTZ (bit 15) | DAZ (bit 6)
#elif defined(__aarch64__)
inline uint64_t fp_mode() { uint64_t m; asm volatile("mrs %0, fpcr" : "=r"(m)); return m; }
inline void set_fp_mode(uint64_t m) { asm volatile("msr fpcr, %0" : : "r"(m)); }
constexpr uint64_t kFlushBits = 1ull << 24;   // FPCR FZ
#else
inline unsigned fp_mode() { return 0; }
inline void set_fp_mode(unsigned) {}
constexpr unsigned kFlushBits = 0;
#endif
inline void set_flush_denormals(bool on) { set_fp_mode(on ? (fp_mode() | kFlushBits) : (fp_mode() & ~kFlushBits)); }
struct FlushDenormals {
    decltype(fp_mode()) saved = fp_mode();
    FlushDenormals() { set_fp_mode(saved | kFlushBits); }
    ~FlushDenormals() { set_fp_mode(saved); }
};

// The helpers are tiny and sit in hot loops: GCC left some out of line on AVX2 (a call per vector).
#define VM_INLINE inline __attribute__((always_inline))

#if defined(__AVX512F__)
constexpr int W = 16;
#define VM_ISA "AVX-512"
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int W = 8;
#define VM_ISA "AVX2+FMA"
#elif defined(__AVX__)
constexpr int W = 8;
#define VM_ISA "AVX"
#elif defined(__ARM_NEON) || defined(__aarch64__)
constexpr int W = 4;
#define VM_ISA "NEON"
#elif defined(__SSE4_1__)
constexpr int W = 4;
#define VM_ISA "SSE4"
#elif defined(__SSE2__)
constexpr int W = 4;
#define VM_ISA "SSE2"
#else
constexpr int W = 4;
#define VM_ISA "generic"
#endif

typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t))));

// Every lane x, as one broadcast (from memory where x is loaded). Not `vf{} + x`: adding +0.0 is no identity
// for -0.0, so GCC kept a scalar add before each broadcast (32 per step of the AVX-512 scan); a lane loop
// became inserts lane by lane.
VM_INLINE vf splat(float x) {
#if defined(__AVX512F__)
    return (vf)_mm512_set1_ps(x);
#elif defined(__AVX__)
    return (vf)_mm256_set1_ps(x);
#elif defined(__SSE2__)
    return (vf)_mm_set1_ps(x);
#else
    return x - vf{};   // x - (+0.0) is x for every x, -0.0 included, so the subtraction folds away
#endif
}
VM_INLINE vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof(v)); return v; }
VM_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

namespace detail {
// Lane j of the result: lane (j + shift) mod W of v (a rotation).
template <int shift, std::size_t... J>
VM_INLINE vf rotate(vf v, std::index_sequence<J...>) {
    return __builtin_shufflevector(v, v, static_cast<int>((J + shift) % W)...);
}
template <int half>
VM_INLINE float hsum_steps(vf v) {
    if constexpr (half == 0) {
        return v[0];
    } else {
        return hsum_steps<half / 2>(v + rotate<half>(v, std::make_index_sequence<W>{}));
    }
}
// One level of the transposing reduction. a and b each hold chunks of 2c lanes, every chunk partial sums
// of one source vector; the result holds chunks of c lanes: the two halves of every chunk added.
template <int c, std::size_t... J>
VM_INLINE vf fold(vf a, vf b, std::index_sequence<J...>) {
    return __builtin_shufflevector(a, b, static_cast<int>((J / c) * 2 * c + J % c)...) +
           __builtin_shufflevector(a, b, static_cast<int>((J / c) * 2 * c + J % c + c)...);
}
template <int c>
VM_INLINE vf fold_all(vf* v, int n) {   // n vectors in, n/2 out (in place)
    for (int i = 0; i < n / 2; ++i) v[i] = fold<c>(v[2 * i], v[2 * i + 1], std::make_index_sequence<W>{});
    if constexpr (c == 1) {
        return v[0];
    } else {
        return fold_all<c / 2>(v, n / 2);
    }
}
}  // namespace detail

namespace detail {
// Perfect shuffles of two vectors: the low (high) halves of a and b interleaved, a's lane first.
template <std::size_t... J>
VM_INLINE vf zip_lo(vf a, vf b, std::index_sequence<J...>) {
    return __builtin_shufflevector(a, b, static_cast<int>(J % 2 ? W + J / 2 : J / 2)...);
}
template <std::size_t... J>
VM_INLINE vf zip_hi(vf a, vf b, std::index_sequence<J...>) {
    return __builtin_shufflevector(a, b, static_cast<int>(J % 2 ? W + W / 2 + J / 2 : W / 2 + J / 2)...);
}
}  // namespace detail

// Transpose of W vectors in place (lane j of r[i] <-> lane i of r[j]). AVX2: the in-lane unpack / shuffle
// and 128-bit lane permute sequence (24 instructions; the generic zips cost about three each there).
// Elsewhere log2(W) rounds, each zipping row i with row i + W/2 into rows 2i and 2i+1, rotate the row bits into
// the lane bits one at a time (one two-source permute per zip with AVX-512).
VM_INLINE void transpose_regs(vf* r) {
#if defined(__AVX__) && !defined(__AVX512F__)
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps((__m256)r[2 * i], (__m256)r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps((__m256)r[2 * i], (__m256)r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = (vf)_mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = (vf)_mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
#else
    for (int round = 1; round < W; round *= 2) {
        vf t[W];
        for (int i = 0; i < W / 2; ++i) {
            t[2 * i] = detail::zip_lo(r[i], r[i + W / 2], std::make_index_sequence<W>{});
            t[2 * i + 1] = detail::zip_hi(r[i], r[i + W / 2], std::make_index_sequence<W>{});
        }
        for (int i = 0; i < W; ++i) r[i] = t[i];
    }
#endif
}

// dst[j * ds + i] = src[i * ss + j] for i, j < W: one W x W block transposed.
VM_INLINE void transpose_block(const float* src, int64_t ss, float* dst, int64_t ds) {
    vf r[W];
    for (int i = 0; i < W; ++i) r[i] = load(src + i * ss);
    transpose_regs(r);
    for (int i = 0; i < W; ++i) store(dst + i * ds, r[i]);
}

// Sum of the W lanes: log2(W) rotate+add steps (a plain loop is W-1 dependent scalar adds).
VM_INLINE float hsum(vf v) { return detail::hsum_steps<W / 2>(v); }

// Horizontal sums of W vectors at once: lane i of the result is the sum of v[i]. The shuffle tree costs
// ~2 instructions per vector, against ~2·log2(W) for one hsum.
VM_INLINE vf hsum_rows(const vf* v) {
    vf t[W];
    for (int i = 0; i < W; ++i) t[i] = v[i];
    return detail::fold_all<W / 2>(t, W);
}

// Collects one vector per scan step and writes its horizontal sum to dst[position]. The steps visit
// consecutive positions, ascending or descending, so every W steps end in one transposing reduction and one
// contiguous vector store (a scalar scatter per step cost 10% of the backward on AVX2).
struct RowSums {
    float* dst;
    bool descending;
    vf buf[W];
    int n = 0;
    int64_t first = 0;   // position of the first step in buf
    RowSums(float* d, bool desc) : dst(d), descending(desc) {}
    VM_INLINE void push(vf v, int64_t t) {
        if (n == 0) first = t;
        buf[descending ? W - 1 - n : n] = v;
        if (++n == W) {
            store(dst + (descending ? first - (W - 1) : first), hsum_rows(buf));
            n = 0;
        }
    }
    void flush() {   // the last, partial block
        if (n == 0) return;
        for (int k = 0; k < W - n; ++k) buf[descending ? k : n + k] = vf{};   // the unused slots
        const vf r = hsum_rows(buf);
        for (int k = 0; k < n; ++k) {
            if (descending) dst[first - k] = r[W - 1 - k];
            else dst[first + k] = r[k];
        }
        n = 0;
    }
};

// c0*r^(n-1) + c1*r^(n-2) + ... + c(n-1), by Horner's rule (highest coefficient first).
VM_INLINE vf horner_from(vf, vf acc) { return acc; }
template <typename... Cs>
VM_INLINE vf horner_from(vf r, vf acc, float c, Cs... rest) { return horner_from(r, acc * r + c, rest...); }
template <typename... Cs>
VM_INLINE vf horner(vf r, float c0, Cs... rest) { return horner_from(r, splat(c0), rest...); }
// p * 2^k for integer vectors k in [-127, 127], built in the exponent field (k = -127 gives exactly 0).
VM_INLINE vf times_pow2(vf p, vi k) {
    const vi bits = (k + 127) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// exp as a branch-free polynomial (Cephes coefficients), written for vectors and scalars.
VM_INLINE vf vexp(vf x) {
    x = x < -87.3f ? splat(-87.3f) : x;
    x = x > 88.3f ? splat(88.3f) : x;
    vf t = x * 1.44269504088896341f;
    vi ki = __builtin_convertvector(t + (t >= 0.0f ? splat(0.5f) : splat(-0.5f)), vi);  // round half away
    vf k = __builtin_convertvector(ki, vf);
    vf r = x - k * 0.693359375f + k * 2.12194440e-4f;
    const vf p = horner(r, 1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                        1.6666665459e-1f, 5.0000001201e-1f);
    return times_pow2(p * r * r + r + 1.0f, ki);
}

// max(c, x) and min(c, x) as one instruction where the ISA has it (a compare and a blend otherwise); a NaN x
// stays NaN (the instructions return their second operand when either is NaN).
VM_INLINE vf vmax(float c, vf x) {
#if defined(__AVX512F__)
    return (vf)_mm512_mask_max_ps((__m512)x, 0xFFFF, (__m512)splat(c), (__m512)x);   // (mask form: see vexp2)
#elif defined(__AVX__)
    return (vf)_mm256_max_ps((__m256)splat(c), (__m256)x);
#elif defined(__SSE2__)
    return (vf)_mm_max_ps((__m128)splat(c), (__m128)x);
#else
    return x < c ? splat(c) : x;
#endif
}
VM_INLINE vf vmin(float c, vf x) {
#if defined(__AVX512F__)
    return (vf)_mm512_mask_min_ps((__m512)x, 0xFFFF, (__m512)splat(c), (__m512)x);
#elif defined(__AVX__)
    return (vf)_mm256_min_ps((__m256)splat(c), (__m256)x);
#elif defined(__SSE2__)
    return (vf)_mm_min_ps((__m128)splat(c), (__m128)x);
#else
    return x > c ? splat(c) : x;
#endif
}

// 2^r for x = k + r, k = round(x) by the 1.5*2^23 trick (add and subtract; the integer lands in the low
// mantissa bits of `shifted`), by a degree-6 polynomial on [-0.5, 0.5] (Cephes exp2f, relative error ~2e-7);
// the caller multiplies by 2^k. x must lie in [-2^22, 2^22] (the callers clamp it).
VM_INLINE vf exp2_fraction(vf x, vf& shifted, vf& k) {
    shifted = x + 12582912.0f;
    k = shifted - 12582912.0f;
    return horner(x - k, 1.535336188319500e-4f, 1.339887440266574e-3f, 9.618437357674640e-3f,
                  5.550332471162809e-2f, 2.402264791363012e-1f, 6.931472028550421e-1f, 1.0f);
}

// 2^x: 2^r (exp2_fraction) times 2^k. About half the operations of vexp, which is why the scan's decays
// exp(dt*A) are computed as 2^(dt * A*log2(e)). With AVX-512 one vscalefps does the 2^k (and its overflow /
// underflow), otherwise it is built in the exponent field from the bits of the shifted value (x clamped to
// [-127, 127]; -127 gives 0).
VM_INLINE vf vexp2(vf x) {
#if defined(__AVX512F__)
    x = vmin(150.0f, vmax(-150.0f, x));   // keeps the rounding trick exact; 2^-150 flushes to 0, 2^150 is inf
#else
    x = vmin(127.0f, vmax(-127.0f, x));
#endif
    vf shifted, k;
    const vf p = exp2_fraction(x, shifted, k);
#if defined(__AVX512F__)
    static_assert(sizeof(vf) == 64, "AVX-512 builds use 16 lanes");
    return (vf)_mm512_mask_scalef_ps((__m512)p, 0xFFFF, (__m512)p, (__m512)k);   // (mask form: no undefined src)
#else
    // The bits of `shifted` are those of 1.5*2^23 plus k: one subtraction gives the biased exponent k + 127.
    vi bits;
    std::memcpy(&bits, &shifted, sizeof(bits));
    bits = (bits - (0x4b400000 - 127)) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
#endif
}
constexpr float kLog2e = 1.44269504088896341f;

// p * 2^k for the integer k = shifted - 1.5*2^23 in [-126, 0] and p in [0.7, 1.42] (vexp2_nonpos where the ISA
// has no lane permute): k is added to p's exponent field as an integer (the low bits of `shifted` are
// 1.5*2^23 + k, and shifted left by 23 only k << 23 remains), which keeps the result a normal number or, at
// k = -126, a denormal that the flushed-denormal mode reads as 0: 2 operations instead of building 2^k and
// multiplying by it.
VM_INLINE vf times_pow2_nonpos(vf p, vf shifted) {
    vi kbits, pbits;
    std::memcpy(&kbits, &shifted, sizeof(kbits));
    std::memcpy(&pbits, &p, sizeof(pbits));
    pbits += kbits << 23;
    vf out;
    std::memcpy(&out, &pbits, sizeof(out));
    return out;
}

// 2^x for x <= 0 (or NaN), the scan's decays (dt >= 0, A < 0): 16 of them per channel and position, the
// largest cost of the scan. Where the ISA has a one-instruction lane permute (AVX2, AVX-512) the fraction is
// split as x = k + j/T + r with a table of T = 8 (16) values 2^(j/T) held in one register, so that |r| <=
// 1/(2T) and a degree-3 polynomial reaches a relative error of 3e-8 (2.6e-9): three multiply-adds and a
// multiply by the table value instead of six multiply-adds (the scan is bound by the multiply-add pipes).
// The rounding trick adds 1.5 * 2^(23 - log2 T), so the low bits of `shifted` hold the integer T*k + j and
// the permute reads j from them. Elsewhere: vexp2 without the upper clamp, with times_pow2_nonpos.
// 2^r for the remainder r of the table-driven exps below, |r| <= 1/16 (AVX2's 8-entry table) or 1/32
// (AVX-512's 16): degree 3, minimax for the relative error on that interval.
#if defined(__AVX512F__)
VM_INLINE vf exp2_remainder(vf r) { return horner(r, 5.550389364e-2f, 2.402342558e-1f, 6.931471825e-1f, 1.0f); }
#elif defined(__AVX2__) && defined(__FMA__)
VM_INLINE vf exp2_remainder(vf r) { return horner(r, 5.550323054e-2f, 2.402575314e-1f, 6.931471825e-1f, 1.0f); }
#endif

#if defined(__AVX512F__)
VM_INLINE vf vexp2_nonpos(vf x) {
    x = vmax(-150.0f, x);
    const vf shifted = x + 786432.0f;   // 1.5 * 2^19: x rounded to a multiple of 1/16
    const vf kj = shifted - 786432.0f;  // k + j/16
    const vf r = x - kj;                // [-1/32, 1/32]
    const vf p = exp2_remainder(r);
    const __m512 table = _mm512_setr_ps(
        1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f, 1.189207077e+00f,
        1.241857767e+00f, 1.296839595e+00f, 1.354255557e+00f, 1.414213538e+00f, 1.476826191e+00f,
        1.542210817e+00f, 1.610490322e+00f, 1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f,
        1.915206552e+00f);
    // 2^(j/16): j = the low 4 bits (mask form: no undefined source, see vmax)
    const vf t = (vf)_mm512_mask_permutexvar_ps(table, 0xFFFF, (__m512i)shifted, table);
    // vscalefps multiplies by 2^floor(kj) = 2^k (and flushes what underflows)
    return (vf)_mm512_mask_scalef_ps((__m512)(p * t), 0xFFFF, (__m512)(p * t), (__m512)kj);
}
#elif defined(__AVX2__) && defined(__FMA__)
VM_INLINE vf vexp2_nonpos(vf x) {
    x = vmax(-126.0f, x);
    const vf shifted = x + 1572864.0f;  // 1.5 * 2^20: x rounded to a multiple of 1/8
    const vf r = x - (shifted - 1572864.0f);   // [-1/16, 1/16]
    const vf p = exp2_remainder(r);
    const __m256 table = _mm256_setr_ps(1.000000000e+00f, 1.090507746e+00f, 1.189207077e+00f, 1.296839595e+00f,
                                        1.414213538e+00f, 1.542210817e+00f, 1.681792855e+00f, 1.834008098e+00f);
    const vf t = (vf)_mm256_permutevar8x32_ps(table, (__m256i)shifted);   // 2^(j/8): j = the low 3 bits
    // 2^k into the exponent field: k = (8k + j) >> 3 shifted to bit 23 is (bits << 20) with the j bits masked
    // (modulo 2^32 only k's low 9 bits matter, which the shift keeps); the result stays normal for k > -126,
    // at k = -126 a denormal that the flushed-denormal mode reads as 0
    vi kbits, pbits;
    std::memcpy(&kbits, &shifted, sizeof(kbits));
    const vf pt = p * t;
    std::memcpy(&pbits, &pt, sizeof(pbits));
    pbits += (kbits << 20) & static_cast<int32_t>(0xFF800000u);
    vf out;
    std::memcpy(&out, &pbits, sizeof(out));
    return out;
}
#else
VM_INLINE vf vexp2_nonpos(vf x) {
    x = vmax(-126.0f, x);
    vf shifted, k;
    const vf p = exp2_fraction(x, shifted, k);
    return times_pow2_nonpos(p, shifted);
}
#endif

// 2^(a*b) where the caller guarantees a*b in [-125, 0] (the scan checks dt * A per tile; vexp2_nonpos is
// the path for the rest). The scan is bound by the multiply pipes (half of the vector pipes on the cores
// measured), so this form keeps the multiplies few: x = a*b once, the rounding x -> k + j/T and the remainder
// r in [-1/(2T), 1/(2T)] by additions, three multiply-adds for 2^r, and 2^(j/T) * 2^k from the table by
// integer operations: the table holds 2^(j/T) with j << (23 - log2 T) subtracted from its bits, so adding the
// low bits of `shifted` (T*k + j) shifted by 23 - log2 T gives the bits of 2^(j/T) * 2^k (a normal number for
// k >= -125). One multiply by 2^r remains. T = 8 on AVX2 (one 8-lane permute), 16 on AVX-512.
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
VM_INLINE vf vexp2_product_bounded(vf a, vf b) {
#if defined(__AVX512F__)
    constexpr float kRound = 786432.0f;   // 1.5 * 2^19: x rounded to a multiple of 1/16
    constexpr int kShift = 19;
    const __m512i table = _mm512_setr_epi32(0x3f800000, 0x3f7daac3, 0x3f7b95c2, 0x3f79c3d3, 0x3f7837f0,
                                            0x3f76f532, 0x3f75fed7, 0x3f75583f, 0x3f7504f3, 0x3f7508a4,
                                            0x3f75672a, 0x3f76248c, 0x3f7744fd, 0x3f78ccdf, 0x3f7ac0c7,
                                            0x3f7d257d);
    auto lookup = [&](vf shifted) { return _mm512_mask_permutexvar_epi32(table, 0xFFFF, (__m512i)shifted, table); };
#else
    constexpr float kRound = 1572864.0f;   // 1.5 * 2^20: x rounded to a multiple of 1/8
    constexpr int kShift = 20;
    const __m256i table = _mm256_setr_epi32(0x3f800000, 0x3f7b95c2, 0x3f7837f0, 0x3f75fed7, 0x3f7504f3,
                                            0x3f75672a, 0x3f7744fd, 0x3f7ac0c7);
    auto lookup = [&](vf shifted) { return _mm256_permutevar8x32_epi32(table, (__m256i)shifted); };
#endif
    vf x = a * b;
    asm("" : "+v"(x));   // x stays one multiply: contracting both uses into multiply-adds would make two
    const vf shifted = x + kRound;
    const vf r = x - (shifted - kRound);
    const vf p = exp2_remainder(r);
    const auto t = lookup(shifted);
    vi tbits, kbits;
    std::memcpy(&tbits, &t, sizeof(tbits));
    std::memcpy(&kbits, &shifted, sizeof(kbits));
    tbits += kbits << kShift;
    vf scale;
    std::memcpy(&scale, &tbits, sizeof(scale));
    return p * scale;
}
#else
VM_INLINE vf vexp2_product_bounded(vf a, vf b) { return vexp2_nonpos(a * b); }
#endif

// softplus = max(x, 0) + log1p(u), u = exp(-|x|) in (0, 1] (the table-driven vexp2_nonpos): no cancellation for
// very negative x (where it is ~exp(x)). log1p(u) = u * Q(u) with Q a degree-8 polynomial fitted to
// log1p(u)/u on [0, 1] (Chebyshev least squares; relative error <= 2.5e-7 over all x, as the log-based form),
// about twice as fast as log1p through a log and a division.
VM_INLINE vf vsoftplus(vf x) {
    const vf ax = x < 0.0f ? -x : x;
    const vf u = vexp2_nonpos(ax * -kLog2e);
    // q(u) by Estrin's scheme: the same polynomial with a dependency chain of 4 multiply-adds instead of 8 (the
    // dt pass was latency-bound on Horner's chain)
    const vf u2 = u * u, u4 = u2 * u2;
    const vf p01 = u * -4.999925494194031e-1f + 9.999999403953552e-1f;
    const vf p23 = u * -2.482563853263855e-1f + 3.331601023674011e-1f;
    const vf p45 = u * -1.358388215303421e-1f + 1.905592381954193e-1f;
    const vf p67 = u * -2.920990064740181e-2f + 7.753974199295044e-2f;
    const vf p47 = p45 + u2 * (p67 + u2 * 5.185917019844055e-3f);
    const vf q = (p01 + u2 * p23) + u4 * p47;
    const vf sp = (x > 0.0f ? x : splat(0.0f)) + u * q;
    return x > 20.0f ? x : sp;
}
// 1/d to about 1e-7: the hardware estimate (12 bits with AVX, 14 with AVX-512) and one Newton step, instead of
// a division (several times the cost on the cores measured).
VM_INLINE vf vrecip(vf d) {
#if defined(__AVX512F__)
    const vf r = (vf)_mm512_mask_rcp14_ps((__m512)d, 0xFFFF, (__m512)d);   // (mask form: see vmax)
#elif defined(__AVX__)
    const vf r = (vf)_mm256_rcp_ps((__m256)d);
#else
    return 1.0f / d;
#endif
#if defined(__AVX512F__) || defined(__AVX__)
    return r * (2.0f - d * r);
#endif
}

// sigmoid(x) = 1 / (1 + exp(-x)) from e = exp(-|x|) in (0, 1] (the table-driven vexp2_nonpos): 1/(1 + e) for
// x >= 0, e/(1 + e) below; d = 1 + e lies in [1, 2], where vrecip is accurate. NaN stays NaN.
VM_INLINE vf vsigmoid(vf x) {
    const vf ax = x < 0.0f ? -x : x;
    const vf e = vexp2_nonpos(ax * -kLog2e);
    const vf s = vrecip(1.0f + e);
    return x >= 0.0f ? s : e * s;
}

// Apply f to [0, n) in vector blocks; the tail goes through a zero-padded vector.
template <typename F>
VM_INLINE void for_blocks(int64_t n, F&& f) {
    int64_t i = 0;
    for (; i + W <= n; i += W) f(i, W);
    if (i < n) f(i, n - i);
}
// Partial blocks (a row's tail): masked loads and stores where the ISA has them (AVX-512, AVX2), else element
// by element. (A variable-length memcpy is a library call, which made short rows (L = 17 tokens) several times
// slower per element; lanes written one by one and read back as a vector stall on store forwarding.)
VM_INLINE vf load_n(const float* p, int64_t n) {
    if (n == W) return load(p);
#if defined(__AVX512F__)
    return (vf)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
#elif defined(__AVX2__)
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return (vf)_mm256_maskload_ps(p, lanes);
#else
    vf v = splat(0.0f);
    for (int64_t i = 0; i < n; ++i) v[i] = p[i];
    return v;
#endif
}
VM_INLINE void store_n(float* p, vf v, int64_t n) {
    if (n == W) return store(p, v);
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), (__m512)v);
#elif defined(__AVX__)
    // 4, 2 and 1 lanes by plain stores: AMD cores microcode the masked store (vmaskmovps: 3.3 against 0.9 ns on
    // Zen 4), and every row of an image's 197 positions ends in a partial vector (the AVX2 fused mixer: 0.975x)
    __m128 part = _mm256_castps256_ps128((__m256)v);
    if (n >= 4) {
        _mm_storeu_ps(p, part);
        part = _mm256_extractf128_ps((__m256)v, 1);
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
        part = _mm_movehl_ps(part, part);
        p += 2;
        n -= 2;
    }
    if (n >= 1) _mm_store_ss(p, part);
#else
    for (int64_t i = 0; i < n; ++i) p[i] = v[i];
#endif
}

}  // namespace vm

// The instruction set a build targets, for benchmarks and bug reports (each kernel exports it).
#define VM_EXPORT_TARGET_INFO(prefix)                                   \
    extern "C" const char* prefix##_target_isa() { return VM_ISA; } \
    extern "C" int prefix##_lanes() { return vm::W; }

