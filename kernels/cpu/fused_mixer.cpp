// The bidirectional mixer's inner part, forward, fused for CPU: from the x half of in_proj to the gated sum of
// both scan directions, in one OpenMP region. Per scan direction and per sub-chunk of S positions:
//
//   xc   = silu(depthwise conv(x))          causal for the forward direction, anti-causal for the backward one
//   x_dbl = x_proj @ xc                     -> dt_raw (R rows), B, C (N rows each)
//   dt   = softplus(dt_proj @ dt_raw + dt_bias)
//   h    = exp(dt*A) * h + dt*xc*B_t ;  y = <C_t, h> + D*xc      (the state carried from sub-chunk to sub-chunk)
//
// and at the end out = (y_fwd + y_bwd + add) * silu(z) * scale. Every intermediate lives for one sub-chunk in
// buffers that stay in cache; only x, z, add and out have the window's length. The unfused reference is
// videomamba/modules/mixer_math.py (conv, matmuls, the scan kernel in selective_scan.cpp, the gate).
//
// Layouts: conv and x_proj work on channel rows (positions in the vector lanes). dt and the scan work on blocks
// of W channels in the lanes, a tile of 64 positions at a time: u is transposed into lanes, dt computed there,
// and each state of the block is one vector whose recurrence needs no horizontal sum (with the states in the
// lanes, as in selective_scan.cpp, every position ended in one); B_t[n] and C_t[n] are broadcast. y goes back
// to channel rows by a transpose. The 16 decays per channel and position are most of the work: the scan is
// bound by the multiply pipes, so their exp is a table-driven 2^x with few multiplies (simd_math.h).
//
// Window: x is (batch, Di, Lx) and the outputs are its positions [lo, lo + n); the convolutions read x around
// them (K-1 positions before for the causal one, after for the anti-causal one) and treat positions outside
// [0, Lx) as zeros. A chunked caller passes x with the halo it has and the state entering the window.
//
// Parallelism: work items are (batch row, direction). With fewer threads than items each thread takes whole
// items; with more, each item gets a team of threads that split channels (conv, scan) and x_proj rows
// between barriers, so one sequence at batch 1 uses every core.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "simd_math.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VM_PAUSE() _mm_pause()
#else
#define VM_PAUSE() ((void)0)
#endif

namespace {

using namespace vm;

// The tensors of one scan direction (see vm_fused_mixer_fwd for their shapes).
struct Direction {
    const float *conv_w, *conv_b, *x_proj, *dt_proj, *dt_bias, *A_log, *D, *h0;
    float* h_last;
    bool reverse;
};

struct Shape {
    int64_t batch, Di, Lx, lo, n, K, R, N, NP, S, Sp;
    int64_t Dp;   // Di rounded up to the vector width: the scan's channel blocks (lanes past Di stay zero)
};

// A barrier for the threads of one team (a few threads that spin briefly between the phases of a sub-chunk).
struct TeamBarrier {
    std::atomic<int> arrived{0};
    std::atomic<int> generation{0};
    int size = 1;
    void wait() {
        if (size <= 1) return;
        const int gen = generation.load(std::memory_order_acquire);
        if (arrived.fetch_add(1, std::memory_order_acq_rel) == size - 1) {
            arrived.store(0, std::memory_order_relaxed);
            generation.fetch_add(1, std::memory_order_release);
        } else {   // spin briefly, then yield: with more threads than free cores a pure spin starves the rest
            for (int spins = 0; generation.load(std::memory_order_acquire) == gen; ++spins) {
                if (spins < 4096) VM_PAUSE();
                else std::this_thread::yield();
            }
        }
    }
};

// The part [begin, end) of `total` that member m of a team of `size` works on.
inline void share(int64_t total, int m, int size, int64_t& begin, int64_t& end) {
    begin = total * m / size;
    end = total * (m + 1) / size;
}

// Floats per value of B and C in the scan's copies: AVX2 keeps each value broadcast to a whole vector, so that
// the scan reads it as the memory operand of its multiply and multiply-add (no broadcast instruction per state
// and step: the AVX2 scan is bound by how many vector instructions it issues); AVX-512 broadcasts from memory
// within the instruction.
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr int64_t kBCWidth = W;
#else
constexpr int64_t kBCWidth = 1;
#endif

// Team-shared buffers of one work item: the sub-chunk's conv output (Dp rows of Sp; the rows past Di stay
// zero), x_dbl (R + 2N rows of Sp), B and C time-major (Sp rows of NP values of kBCWidth floats, zero beyond
// N), and the carried state in blocks of W channels, state-major within a block (Dp / W blocks of NP rows of W
// lanes).
struct ItemBuffers {
    float *xc, *x_dbl, *Bt, *Ct, *state;
    static int64_t floats(const Shape& s) {
        return s.Dp * s.Sp + (s.R + 2 * s.N) * s.Sp + 2 * s.Sp * s.NP * kBCWidth + s.Dp * s.NP;
    }
    ItemBuffers(float* base, const Shape& s) {
        xc = base;
        x_dbl = xc + s.Dp * s.Sp;
        Bt = x_dbl + (s.R + 2 * s.N) * s.Sp;
        Ct = Bt + s.Sp * s.NP * kBCWidth;
        state = Ct + s.Sp * s.NP * kBCWidth;
    }
};

// Positions per tile of the lane-major scan: its u, dt and y tiles (and B, C rows) stay in L1.
constexpr int64_t kScanTile = 64;

// Per-thread buffers: the conv's zero-padded input, and for the scan of one channel block the lane-major
// (position rows of W channels) u, dt and y, y transposed back to channel rows, and the direction's
// parameters in lanes (dt_proj transposed, the dt bias, A2 = -exp(A_log) * log2(e) as NP rows per block).
struct ThreadBuffers {
    float *pad, *uT, *dtT, *yT, *yrows, *dtpT, *biasT, *A2T, *limT, *flat;
    const Direction* loaded = nullptr;   // whose parameters the lane buffers hold (a thread runs one direction
                                         // for every batch row: they are derived once per call, not per row)
    static int64_t floats(const Shape& s) {
        return (s.Sp + 2 * s.K + W) + 4 * kScanTile * W + s.R * s.Dp + s.Dp + s.Dp * s.NP + s.Dp + s.Di * s.N;
    }
    ThreadBuffers(float* base, const Shape& s) {
        pad = base;
        uT = pad + s.Sp + 2 * s.K + W;
        dtT = uT + kScanTile * W;
        yT = dtT + kScanTile * W;
        yrows = yT + kScanTile * W;
        dtpT = yrows + W * kScanTile;
        biasT = dtpT + s.R * s.Dp;
        A2T = biasT + s.Dp;
        limT = A2T + s.Dp * s.NP;
        flat = limT + s.Dp;
    }
    // The direction's parameters in lanes, zero (A2: -log2(e)) for the padding channels and states. A2 is
    // computed over the contiguous A_log with vector exps into `flat`, then scattered into lanes (at an
    // image's 197 tokens one scalar exp per (channel, state) cost 5% of the call).
    void load_direction(const Shape& s, const Direction& dir) {
        if (loaded == &dir) return;
        loaded = &dir;
        for (int64_t r = 0; r < s.R; ++r)
            for (int64_t d = 0; d < s.Dp; ++d) dtpT[r * s.Dp + d] = d < s.Di ? dir.dt_proj[d * s.R + r] : 0.0f;
        for (int64_t d = 0; d < s.Dp; ++d) biasT[d] = d < s.Di ? dir.dt_bias[d] : 0.0f;
        for_blocks(s.Di * s.N, [&](int64_t i, int64_t nn) {
            store_n(flat + i, -vexp(load_n(dir.A_log + i, nn)) * kLog2e, nn);
        });
        for (int64_t b = 0; b < s.Dp / W; ++b)
            for (int64_t n = 0; n < s.NP; ++n)
                for (int l = 0; l < W; ++l) {
                    const int64_t d = b * W + l;
                    A2T[(b * s.NP + n) * W + l] = d < s.Di && n < s.N ? flat[d * s.N + n] : -kLog2e;
                }
        // the largest dt for which every decay exponent dt * A2 of a channel stays >= -125
        for (int64_t d = 0; d < s.Dp; ++d) {
            float most = 0.0f;
            for (int64_t n = 0; n < s.NP; ++n) most = std::max(most, -A2T[((d / W) * s.NP + n) * W + d % W]);
            limT[d] = 125.0f / most;
        }
    }
};

// conv + SiLU of channels [d0, d1) of batch row bi over window offsets [c0, c0 + m) into xc (row stride Sp).
// pad: a private buffer of Sp + 2K floats holding the inputs around the sub-chunk, zeros outside [0, Lx).
inline void conv_silu(const Shape& s, const Direction& dir, const float* x, int64_t bi, int64_t d0, int64_t d1,
                      int64_t c0, int64_t m, float* pad, float* xc) {
    const int64_t K = s.K, first = s.lo + c0 - (K - 1);   // x position of pad[0]
    const int64_t span = m + 2 * (K - 1);
    const bool inside = first >= 0 && first + span <= s.Lx;   // no zeros needed: read x in place
    for (int64_t d = d0; d < d1; ++d) {
        const float* xr = x + (bi * s.Di + d) * s.Lx;
        const float* in = xr + first;
        if (!inside) {   // pad[j] = x[first + j] inside [0, Lx), zeros outside (a copy, not an element loop:
                         // at an image's 197 tokens every row takes this path)
            const int64_t a = std::clamp<int64_t>(-first, 0, span), e = std::clamp<int64_t>(s.Lx - first, 0, span);
            std::fill(pad, pad + a, 0.0f);
            if (e > a) std::memcpy(pad + a, xr + first + a, static_cast<size_t>(e - a) * sizeof(float));
            std::fill(pad + std::max(a, e), pad + span, 0.0f);
            in = pad;
        }
        const float* w = dir.conv_w + d * K;
        const float b = dir.conv_b ? dir.conv_b[d] : 0.0f;
        float* out = xc + d * s.Sp;
        for_blocks(m, [&](int64_t t, int64_t nn) {
            vf acc = splat(b);
            for (int64_t k = 0; k < K; ++k) {
                // causal: x[t - (K-1) + k] = pad[t + k]; anti-causal: x[t + (K-1) - k] = pad[t + 2(K-1) - k]
                const int64_t tap = dir.reverse ? t + 2 * (K - 1) - k : t + k;
                acc += load_n(in + tap, nn) * w[k];
            }
            store_n(out + t, acc * vsigmoid(acc), nn);
        });
    }
}

// Rows per register block of x_proj: 8 rows x 2 vectors of positions where there are 32 vector registers
// (AVX-512), 5 x 2 otherwise (16 registers hold the 10 sums, 2 inputs and a weight without spilling; fewer row
// blocks re-read the conv outputs fewer times: 3-4% of the AVX2 kernel against 4 x 2 over VideoMamba-Ti's 24
// layers at 197 tokens, the layers' weights each read once per call as in the model).
constexpr int kProjRows = W >= 16 ? 8 : 5;

// Rows [j0, j1) of x_dbl = x_proj (R + 2N, Di) @ xc (Di, Sp), j0 a multiple of kProjRows. Position blocks are
// the outer loop, so that one block of xc (Di x 2 vectors) is read from L2 once and reused from L1 by every row
// block; rows past j1 in the last block repeat a valid row and are not stored. B and C rows are also written
// time-major into Bt / Ct (the scan reads B_t as one vector).
inline void project_x(const Shape& s, const Direction& dir, const float* xc, int64_t j0, int64_t j1, int64_t m,
                      float* x_dbl, float* Bt, float* Ct) {
    constexpr int RB = kProjRows;
    const int64_t Di = s.Di, Sp = s.Sp;
    for (int64_t t = 0; t < m; t += 2 * W) {
        for (int64_t jb = j0; jb < j1; jb += RB) {
            const float* wr[RB];
            for (int r = 0; r < RB; ++r) wr[r] = dir.x_proj + (jb + r < j1 ? jb + r : j1 - 1) * Di;
            vf acc[RB][2] = {};
            for (int64_t d = 0; d < Di; ++d) {
                const vf a0 = load(xc + d * Sp + t), a1 = load(xc + d * Sp + t + W);
#pragma GCC unroll 8
                for (int r = 0; r < RB; ++r) {
                    const vf w = splat(wr[r][d]);
                    acc[r][0] += w * a0;
                    acc[r][1] += w * a1;
                }
            }
            for (int r = 0; r < RB && jb + r < j1; ++r) {
                store(x_dbl + (jb + r) * Sp + t, acc[r][0]);
                store(x_dbl + (jb + r) * Sp + t + W, acc[r][1]);
            }
        }
    }
    const int64_t bc0 = std::max<int64_t>(j0, s.R);
    for (int64_t j = bc0; j < j1; ++j) {   // B / C rows, transposed
        float* dst = j < s.R + s.N ? Bt + (j - s.R) * kBCWidth : Ct + (j - s.R - s.N) * kBCWidth;
        const float* src = x_dbl + j * Sp;
        if constexpr (kBCWidth > 1)
            for (int64_t t = 0; t < m; ++t) store(dst + t * s.NP * kBCWidth, splat(src[t]));
        else
            for (int64_t t = 0; t < m; ++t) dst[t * s.NP] = src[t];
    }
}

// Positions per register block of the lane-major dt product.
constexpr int kDtPositions = 8;

// dtT[t] (W channels in lanes) = softplus(bias + sum_r dt_raw[r][t] * dt_proj[channels][r]) for t < m: per
// dt_raw row one vector of dt_proj (transposed: dtpT, row stride Dp) and a broadcast per position. Returns
// whether every dt is <= its channel's limit `lim` (so the decays may take vexp2_product_bounded; false for NaN).
inline bool dt_lanes(const Shape& s, const float* x_dbl, const float* dtpT, vf bias, vf lim, int64_t m,
                     float* dtT) {
    const int64_t R = s.R, Sp = s.Sp, Dp = s.Dp;
    vi over = vi{};
    auto block = [&](int64_t t, auto npos) {
        constexpr int P = decltype(npos)::value;
        vf acc[P];
        for (int p = 0; p < P; ++p) acc[p] = bias;
        for (int64_t r = 0; r < R; ++r) {
            const vf w = load(dtpT + r * Dp);
            const float* row = x_dbl + r * Sp + t;
            for (int p = 0; p < P; ++p) acc[p] += w * row[p];
        }
        for (int p = 0; p < P; ++p) {
            const vf dt = vsoftplus(acc[p]);
            over |= ~(dt <= lim);
            store(dtT + (t + p) * W, dt);
        }
    };
    int64_t t = 0;
    for (; t + kDtPositions <= m; t += kDtPositions) block(t, std::integral_constant<int, kDtPositions>{});
    for (; t < m; ++t) block(t, std::integral_constant<int, 1>{});
    for (int l = 0; l < W; ++l)
        if (over[l]) return false;
    return true;
}

// The recurrence of W channels (lanes) for the states [n0, n0 + W) over m positions (REV: m-1..0): per state
// h = exp2(dt*A2) * h + dt*u*B_t[n], y_t += C_t[n] * h (B_t[n], C_t[n] broadcast). y is added to yT, or
// written when `first`. The states of one group are W independent chains of one multiply-add per step, and
// nothing is reduced across lanes (with the states in lanes, y needed a horizontal sum per position).
template <bool REV, bool BOUNDED>
inline void scan_group(int64_t m, int64_t NP, const float* Bt, const float* Ct, const float* uT, const float* dtT,
                       const float* A2T, float* hT, float* yT, bool first) {
    constexpr int G = W;
    vf h[G];
    for (int k = 0; k < G; ++k) h[k] = load(hT + k * W);
    for (int64_t i = 0; i < m; ++i) {
        const int64_t t = REV ? m - 1 - i : i;
        const vf dt = load(dtT + t * W), dtu = dt * load(uT + t * W);
        const float* b = Bt + t * NP * kBCWidth;
        const float* c = Ct + t * NP * kBCWidth;
        vf y0 = first ? splat(0.0f) : load(yT + t * W), y1 = splat(0.0f);   // two sums: half the add chain
#pragma GCC unroll 16
        for (int k = 0; k < G; ++k) {
            // dt >= 0, A < 0; BOUNDED: dt * A2 >= -125 (checked by dt_lanes)
            const vf decay = BOUNDED ? vexp2_product_bounded(load(A2T + k * W), dt) : vexp2_nonpos(load(A2T + k * W) * dt);
            const vf bk = kBCWidth > 1 ? load(b + k * kBCWidth) : splat(b[k]);
            const vf ck = kBCWidth > 1 ? load(c + k * kBCWidth) : splat(c[k]);
            h[k] = decay * h[k] + dtu * bk;
            if (k % 2) y1 += h[k] * ck;
            else y0 += h[k] * ck;
        }
        store(yT + t * W, y0 + y1);
    }
    for (int k = 0; k < G; ++k) store(hT + k * W, h[k]);
}

// y + D*u of channel d into its output row, gated when `gate`: (y + D*u + add) * silu(z) * scale.
inline void finish_row(const Direction& dir, int64_t d, int64_t m, const float* y, const float* u, float* dst_row0,
                       int64_t dst_stride, const float* z_row0, const float* add_row0, int64_t zstride, bool gate,
                       float scale) {
    const float Dd = dir.D ? dir.D[d] : 0.0f;
    float* o = dst_row0 + d * dst_stride;
    const float* zr = z_row0 ? z_row0 + d * zstride : nullptr;
    const float* ar = add_row0 ? add_row0 + d * zstride : nullptr;
    for_blocks(m, [&](int64_t t, int64_t nn) {
        vf v = load_n(y + t, nn) + load_n(u + t, nn) * Dd;
        if (gate) {
            if (ar) v += load_n(ar + t, nn);
            if (zr) {
                const vf zz = load_n(zr + t, nn);
                v *= zz * vsigmoid(zz);
            }
            v *= scale;
        }
        store_n(o + t, v, nn);
    });
}

// dt, the scan and D*u for the channel blocks [blk0, blk1) over one sub-chunk of m positions, with W channels
// in the lanes, a tile of positions at a time (in scan order): u is transposed into lanes, dt computed there,
// the states scanned in groups of W, and y transposed back to channel rows for the output, which goes to dst
// (row stride dst_stride, position c0 of the window at column c0), gated when `gate`: (y + add) * silu(z) *
// scale.
template <bool REV>
inline void scan_blocks(const Shape& s, const Direction& dir, const ItemBuffers& buf, const ThreadBuffers& tb,
                        int64_t blk0, int64_t blk1, int64_t m, float* dst_row0, int64_t dst_stride,
                        const float* z_row0, const float* add_row0, int64_t zstride, bool gate, float scale) {
    const int64_t NP = s.NP, Sp = s.Sp, tiles = (m + kScanTile - 1) / kScanTile;
    for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t cb = blk * W;
        float* hT = buf.state + cb * NP;
        const float* A2T = tb.A2T + cb * NP;
        for (int64_t i = 0; i < tiles; ++i) {
            const int64_t p0 = (REV ? tiles - 1 - i : i) * kScanTile, tm = std::min(kScanTile, m - p0);
            const int64_t tw = (tm + W - 1) / W * W;
            for (int64_t t = 0; t < tw; t += W) transpose_block(buf.xc + cb * Sp + p0 + t, Sp, tb.uT + t * W, W);
            const bool bounded = dt_lanes(s, buf.x_dbl + p0, tb.dtpT + cb, load(tb.biasT + cb), load(tb.limT + cb),
                                          tm, tb.dtT);
            for (int64_t n0 = 0; n0 < NP; n0 += W) {
                const float *Bt = buf.Bt + (p0 * NP + n0) * kBCWidth, *Ct = buf.Ct + (p0 * NP + n0) * kBCWidth;
                if (bounded)
                    scan_group<REV, true>(tm, NP, Bt, Ct, tb.uT, tb.dtT, A2T + n0 * W, hT + n0 * W, tb.yT, n0 == 0);
                else
                    scan_group<REV, false>(tm, NP, Bt, Ct, tb.uT, tb.dtT, A2T + n0 * W, hT + n0 * W, tb.yT, n0 == 0);
            }
            for (int64_t t = 0; t < tw; t += W) transpose_block(tb.yT + t * W, W, tb.yrows + t, kScanTile);
            for (int l = 0; l < W && cb + l < s.Di; ++l)
                finish_row(dir, cb + l, tm, tb.yrows + l * kScanTile, buf.xc + (cb + l) * Sp + p0, dst_row0 + p0,
                           dst_stride, z_row0 ? z_row0 + p0 : nullptr, add_row0 ? add_row0 + p0 : nullptr, zstride,
                           gate, scale);
        }
    }
}

// One work item (batch row bi, one direction) by a team of `size` threads (this one is member `member`).
void run_item(const Shape& s, const Direction& dir, const float* x, int64_t bi, const ItemBuffers& buf,
              ThreadBuffers& tb, TeamBarrier& bar, int member, int size, float* dst, const float* z,
              const float* add, bool gate, float scale) {
    const int64_t Di = s.Di, NP = s.NP, rows = s.R + 2 * s.N, blocks = s.Dp / W;
    int64_t d0, d1, jblocks0, jblocks1, b0, b1;
    share(Di, member, size, d0, d1);
    share((rows + kProjRows - 1) / kProjRows, member, size, jblocks0, jblocks1);
    share(blocks, member, size, b0, b1);
    const int64_t j0 = jblocks0 * kProjRows, j1 = std::min<int64_t>(jblocks1 * kProjRows, rows);
    tb.load_direction(s, dir);
    for (int64_t blk = b0; blk < b1; ++blk)   // the entering state, into lanes
        for (int64_t n = 0; n < NP; ++n)
            for (int l = 0; l < W; ++l) {
                const int64_t d = blk * W + l;
                buf.state[(blk * NP + n) * W + l] = dir.h0 && d < Di ? dir.h0[(bi * Di + d) * NP + n] : 0.0f;
            }
    const int64_t chunks = (s.n + s.S - 1) / s.S;
    for (int64_t i = 0; i < chunks; ++i) {
        const int64_t c = dir.reverse ? chunks - 1 - i : i;
        const int64_t c0 = c * s.S, m = std::min(s.S, s.n - c0);
        conv_silu(s, dir, x, bi, d0, d1, c0, m, tb.pad, buf.xc);
        bar.wait();
        project_x(s, dir, buf.xc, j0, j1, m, buf.x_dbl, buf.Bt, buf.Ct);
        bar.wait();
        const int64_t row0 = bi * Di * s.n + c0;
        const float* zr = z ? z + row0 : nullptr;
        const float* ar = add ? add + row0 : nullptr;
        if (dir.reverse)
            scan_blocks<true>(s, dir, buf, tb, b0, b1, m, dst + row0, s.n, zr, ar, s.n, gate, scale);
        else
            scan_blocks<false>(s, dir, buf, tb, b0, b1, m, dst + row0, s.n, zr, ar, s.n, gate, scale);
        bar.wait();   // xc / x_dbl are rewritten by the next sub-chunk
    }
    if (dir.h_last)
        for (int64_t blk = b0; blk < b1; ++blk)
            for (int64_t n = 0; n < NP; ++n)
                for (int l = 0; l < W && blk * W + l < Di; ++l)
                    dir.h_last[(bi * Di + blk * W + l) * NP + n] = buf.state[(blk * NP + n) * W + l];
}

// Scratch memory kept by a thread from one call to the next. Allocating and zeroing the work items' buffers
// on every call wrote about 1 MB per call at an image's 197 tokens (24 calls per forward); kept, they are
// zeroed only when the layout they serve changes. Zeros matter only where the kernel never writes and reads
// into kept results: B and C beyond N states (scanned with the others), which a layout keeps in place;
// everything else is written before it is read, or read only into lanes and columns that are discarded.
struct Scratch {
    std::vector<float> data;
    std::vector<int64_t> layout;
    float* get(int64_t floats, std::vector<int64_t> key) {
        if (key != layout || static_cast<int64_t>(data.size()) < floats) {
            std::vector<float>().swap(data);   // (the old block goes before the new one is allocated)
            data.assign(static_cast<size_t>(floats), 0.0f);
            layout = std::move(key);
        }
        return data.data();
    }
};

Direction direction(const float* const* p, bool reverse) {
    return Direction{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], const_cast<float*>(p[8]), reverse};
}

}  // namespace

VM_EXPORT_TARGET_INFO(vm_fused_mixer)

extern "C" {

int vm_fused_mixer_version() { return 1; }

// x: (batch, Di, Lx), the x half of in_proj; outputs for window positions [lo, lo + n).
// fwd / bwd: the forward / backward direction's 9 pointers, or null to skip the direction:
//   conv_w (Di, K), conv_b (Di) or null, x_proj (R + 2N, Di), dt_proj (Di, R), dt_bias (Di),
//   A_log (Di, N) (A = -exp(A_log); NP is N rounded up to the vector width), D (Di) or null,
//   h0 (batch, Di, NP) or null (the state entering the window in that direction's scan order),
//   h_last (batch, Di, NP) or null (written: the state leaving the window).
// z, add: (batch, Di, n) or null. out: (batch, Di, n) = (y_fwd + y_bwd + add) * silu(z) * scale; with one
// direction out may be z itself (each element of z is read before the same element of out is written).
// scratch: (batch, Di, n), needed when both directions run (the backward direction's output until the sum).
// sub: positions per sub-chunk (the cache-resident working set); num_threads: the OpenMP team.
int vm_fused_mixer_fwd(const float* x, int64_t batch, int64_t Di, int64_t Lx, int64_t lo, int64_t n, int64_t K,
                       int64_t R, int64_t N, int64_t NP, const float* const* fwd, const float* const* bwd,
                       const float* z, const float* add, float scale, float* out, float* scratch, int64_t sub,
                       int num_threads) {
    if (lo < 0 || n < 0 || lo + n > Lx || K < 1 || sub < 1 || (!fwd && !bwd) || N > NP) return 2;
    if (fwd && bwd && !scratch) return 3;
    if (n == 0) return 0;
    const int64_t S = std::min(sub, n), Sp = (S + 2 * W - 1) / (2 * W) * (2 * W);
    const Shape s{batch, Di, Lx, lo, n, K, R, N, NP, S, Sp, (Di + W - 1) / W * W};
    Direction dirs[2];
    int ndir = 0;
    if (fwd) dirs[ndir++] = direction(fwd, false);
    if (bwd) dirs[ndir++] = direction(bwd, true);
    const bool both = ndir == 2;
    const int64_t items = batch * ndir;
    const int nt = num_threads > 0 ? num_threads : 1;
    // Teams: whole items per thread, or a team of threads per item.
    const int64_t teams = std::min<int64_t>(nt, items);
    static thread_local Scratch shared_scratch;   // the calling thread's: its teams' item buffers
    float* const shared = shared_scratch.get(teams * ItemBuffers::floats(s), {teams, s.Dp, s.Sp, s.R, s.N, s.NP});
    std::vector<TeamBarrier> barriers(teams);
    if (NP % W) return 2;
#pragma omp parallel num_threads(nt)
        {
            FlushDenormals ftz;
            const int tid = omp_get_thread_num(), used = omp_get_num_threads();
            static thread_local Scratch private_scratch;   // (needs no zeros: every part is written before use)
            ThreadBuffers tb(private_scratch.get(ThreadBuffers::floats(s), {}), s);
            // the OpenMP runtime may give fewer threads than asked: teams follow the threads that came
            const int64_t my_teams = std::min<int64_t>(used, items);
            const int my_size = used > items ? static_cast<int>(used / items) : 1;
            const int64_t team = tid / my_size;
            const int member = tid % my_size;
#pragma omp single
            for (auto& b : barriers) b.size = my_size;   // (the implicit barrier after it orders this)
            if (team < my_teams) {
                ItemBuffers buf(shared + team * ItemBuffers::floats(s), s);
                for (int64_t it = team; it < items; it += my_teams) {
                    const Direction& dir = dirs[it % ndir];
                    const int64_t bi = it / ndir;
                    // both directions: the backward one goes to scratch, summed and gated below
                    float* dst = both && dir.reverse ? scratch : out;
                    run_item(s, dir, x, bi, buf, tb, barriers[team], member, my_size, dst, z, add, !both, scale);
                }
            }
            if (both) {
#pragma omp barrier
#pragma omp for schedule(static)
                for (int64_t r = 0; r < batch * Di; ++r) {
                    float* o = out + r * n;
                    const float* sc = scratch + r * n;
                    const float* zr = z ? z + r * n : nullptr;
                    const float* ar = add ? add + r * n : nullptr;
                    for_blocks(n, [&](int64_t t, int64_t nn) {
                        vf v = load_n(o + t, nn) + load_n(sc + t, nn);
                        if (ar) v += load_n(ar + t, nn);
                        if (zr) {
                            const vf zz = load_n(zr + t, nn);
                            v = v * zz * vsigmoid(zz);
                        }
                        store_n(o + t, v * scale, nn);
                    });
                }
            }
        }
    return 0;
}

}  // extern "C"
