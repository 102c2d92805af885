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
// Window: x is (batch, Di, Lx) and the outputs are its positions [lo, lo + n); the convolutions read x around
// them (K-1 positions before for the causal one, after for the anti-causal one) and treat positions outside
// [0, Lx) as zeros. A chunked caller passes x with the halo it has and the state entering the window.
//
// Parallelism: work items are (batch row, direction). With fewer threads than items each thread takes whole
// items; with more, each item gets a team of threads that split channels (conv, scan) and x_proj rows
// between barriers, so one sequence at batch 1 uses every core.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "scan_steps.h"
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

// Team-shared buffers of one work item: the sub-chunk's conv output (Di rows of Sp), x_dbl (R + 2N rows of
// Sp), B and C time-major (Sp rows of NP, zero beyond N), and the carried state (Di rows of NP).
struct ItemBuffers {
    float *xc, *x_dbl, *Bt, *Ct, *state;
    static int64_t floats(const Shape& s) {
        return s.Di * s.Sp + (s.R + 2 * s.N) * s.Sp + 2 * s.Sp * s.NP + s.Di * s.NP;
    }
    ItemBuffers(float* base, const Shape& s) {
        xc = base;
        x_dbl = xc + s.Di * s.Sp;
        Bt = x_dbl + (s.R + 2 * s.N) * s.Sp;
        Ct = Bt + s.Sp * s.NP;
        state = Ct + s.Sp * s.NP;
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
        if (!inside) {
            for (int64_t j = 0; j < span; ++j) {
                const int64_t q = first + j;
                pad[j] = (q >= 0 && q < s.Lx) ? xr[q] : 0.0f;
            }
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
// (AVX-512), 4 x 2 otherwise (16 registers hold the 8 sums, 2 inputs and a weight without spilling).
constexpr int kProjRows = W >= 16 ? 8 : 4;

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
        float* dst = j < s.R + s.N ? Bt + (j - s.R) : Ct + (j - s.R - s.N);
        const float* src = x_dbl + j * Sp;
        for (int64_t t = 0; t < m; ++t) dst[t * s.NP] = src[t];
    }
}

// Channels per block of the dt product, and position vectors per register block (4 x 4 sums with 32 vector
// registers, 4 x 2 with 16).
constexpr int kDtChannels = 4;
constexpr int kDtVecs = W >= 16 ? 4 : 2;

// dt rows of channels [d, d + kDtChannels) (those < d1): softplus(dt_proj @ dt_raw + bias) over the first
// `cols` positions (a multiple of W; the padding columns compute harmless values) into dt (row stride Sp).
// A block of channels at a time, so each dt_raw vector loaded serves kDtChannels channels: one channel at a
// time, the R rows of dt_raw were streamed from L2 once per channel.
inline void dt_block(const Shape& s, const Direction& dir, const float* x_dbl, int64_t d, int64_t d1,
                     int64_t cols, float* dt) {
    constexpr int CB = kDtChannels;
    const int64_t Sp = s.Sp, R = s.R;
    const float* wrow[CB];
    float bias[CB];
    for (int c = 0; c < CB; ++c) {
        const int64_t dc = d + c < d1 ? d + c : d1 - 1;   // past d1: repeat a valid channel, not stored
        wrow[c] = dir.dt_proj + dc * R;
        bias[c] = dir.dt_bias[dc];
    }
    const int rows = static_cast<int>(std::min<int64_t>(CB, d1 - d));
    auto block = [&](int64_t t, auto nvecs) {
        constexpr int V = decltype(nvecs)::value;
        vf acc[CB][V];
        for (int c = 0; c < CB; ++c)
            for (int v = 0; v < V; ++v) acc[c][v] = splat(bias[c]);
        for (int64_t r = 0; r < R; ++r) {
            const float* row = x_dbl + r * Sp + t;
            vf a[V];
            for (int v = 0; v < V; ++v) a[v] = load(row + v * W);
#pragma GCC unroll 4
            for (int c = 0; c < CB; ++c) {
                const vf w = splat(wrow[c][r]);
                for (int v = 0; v < V; ++v) acc[c][v] += w * a[v];
            }
        }
        for (int c = 0; c < rows; ++c)
            for (int v = 0; v < V; ++v) store(dt + c * Sp + t + v * W, vsoftplus(acc[c][v]));
    };
    int64_t t = 0;
    for (; t + kDtVecs * W <= cols; t += kDtVecs * W) block(t, std::integral_constant<int, kDtVecs>{});
    for (; t < cols; t += W) block(t, std::integral_constant<int, 1>{});
}

// dt, the scan and D*u for channels [d0, d1) over one sub-chunk of m positions; y rows go to dst (row stride
// dst_stride, position c0 of the window at column c0), gated when `gate`: (y + add) * silu(z) * scale.
template <int NV, bool REV>
inline void scan_channels(const Shape& s, const Direction& dir, const ItemBuffers& buf, int64_t d0, int64_t d1,
                          int64_t m, float* dt, float* y, float* dst_row0, int64_t dst_stride, const float* z_row0,
                          const float* add_row0, int64_t zstride, bool gate, float scale) {
    const int64_t NP = s.NP, nv = NV > 0 ? NV : NP / W, Sp = s.Sp;
    const int64_t cols = (m + W - 1) / W * W;
    for (int64_t d = d0; d < d1; ++d) {
        const int64_t in_block = (d - d0) % kDtChannels;
        if (in_block == 0) dt_block(s, dir, buf.x_dbl, d, d1, cols, dt);
        const float* dtr = dt + in_block * Sp;
        const float* u = buf.xc + d * Sp;
        vf A2[NV > 0 ? NV : kMaxNV], h[NV > 0 ? NV : kMaxNV];
        float* state = buf.state + d * NP;
        for (int64_t k = 0; k < nv; ++k) {
            // A = -exp(A_log), from the parameter itself (nothing cached between calls can go stale); lanes past
            // N get a finite value, and their B = C = 0 keep their states at 0
            const int64_t n_left = s.N - k * W;
            const vf a_log = load_n(dir.A_log + d * s.N + k * W, n_left < W ? (n_left > 0 ? n_left : 0) : W);
            A2[k] = -vexp(a_log) * kLog2e;
            h[k] = load(state + k * W);
        }
        scan_steps<NV, REV, true>(m, NP, buf.Bt, buf.Ct, u, dtr, A2, h, y, nullptr, nullptr);   // dt >= 0, A < 0
        for (int64_t k = 0; k < nv; ++k) store(state + k * W, h[k]);
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
}

// One work item (batch row bi, one direction) by a team of `size` threads (this one is member `member`).
template <int NV>
void run_item(const Shape& s, const Direction& dir, const float* x, int64_t bi, const ItemBuffers& buf,
              TeamBarrier& bar, int member, int size, float* pad, float* dt, float* y, float* dst,
              const float* z, const float* add, bool gate, float scale) {
    const int64_t Di = s.Di, NP = s.NP, rows = s.R + 2 * s.N;
    int64_t d0, d1, jblocks0, jblocks1;
    share(Di, member, size, d0, d1);
    share((rows + kProjRows - 1) / kProjRows, member, size, jblocks0, jblocks1);
    const int64_t j0 = jblocks0 * kProjRows, j1 = std::min<int64_t>(jblocks1 * kProjRows, rows);
    for (int64_t d = d0; d < d1; ++d) {   // the entering state
        const float* h0 = dir.h0 ? dir.h0 + (bi * Di + d) * NP : nullptr;
        for (int64_t k = 0; k < NP; ++k) buf.state[d * NP + k] = h0 ? h0[k] : 0.0f;
    }
    const int64_t chunks = (s.n + s.S - 1) / s.S;
    for (int64_t i = 0; i < chunks; ++i) {
        const int64_t c = dir.reverse ? chunks - 1 - i : i;
        const int64_t c0 = c * s.S, m = std::min(s.S, s.n - c0);
        conv_silu(s, dir, x, bi, d0, d1, c0, m, pad, buf.xc);
        bar.wait();
        project_x(s, dir, buf.xc, j0, j1, m, buf.x_dbl, buf.Bt, buf.Ct);
        bar.wait();
        const int64_t row0 = bi * Di * s.n + c0;
        const float* zr = z ? z + row0 : nullptr;
        const float* ar = add ? add + row0 : nullptr;
        if (dir.reverse)
            scan_channels<NV, true>(s, dir, buf, d0, d1, m, dt, y, dst + row0, s.n, zr, ar, s.n, gate, scale);
        else
            scan_channels<NV, false>(s, dir, buf, d0, d1, m, dt, y, dst + row0, s.n, zr, ar, s.n, gate, scale);
        bar.wait();   // xc / x_dbl are rewritten by the next sub-chunk
    }
    if (dir.h_last)
        for (int64_t d = d0; d < d1; ++d)
            std::memcpy(dir.h_last + (bi * Di + d) * NP, buf.state + d * NP, NP * sizeof(float));
}

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
    const Shape s{batch, Di, Lx, lo, n, K, R, N, NP, S, Sp};
    Direction dirs[2];
    int ndir = 0;
    if (fwd) dirs[ndir++] = direction(fwd, false);
    if (bwd) dirs[ndir++] = direction(bwd, true);
    const bool both = ndir == 2;
    const int64_t items = batch * ndir;
    const int nt = num_threads > 0 ? num_threads : 1;
    // Teams: whole items per thread, or a team of threads per item.
    const int64_t teams = std::min<int64_t>(nt, items);
    std::vector<float> shared(static_cast<size_t>(teams * ItemBuffers::floats(s)), 0.0f);
    std::vector<TeamBarrier> barriers(teams);
    return dispatch_nv(NP, [&](auto nvc) {
        constexpr int NV = decltype(nvc)::value;
#pragma omp parallel num_threads(nt)
        {
            FlushDenormals ftz;
            const int tid = omp_get_thread_num(), used = omp_get_num_threads();
            std::vector<float> priv(static_cast<size_t>((2 + kDtChannels) * Sp + 2 * K + W), 0.0f);
            float *pad = priv.data(), *dt = pad + Sp + 2 * K, *y = dt + kDtChannels * Sp;
            // the OpenMP runtime may give fewer threads than asked: teams follow the threads that came
            const int64_t my_teams = std::min<int64_t>(used, items);
            const int my_size = used > items ? static_cast<int>(used / items) : 1;
            const int64_t team = tid / my_size;
            const int member = tid % my_size;
#pragma omp single
            for (auto& b : barriers) b.size = my_size;   // (the implicit barrier after it orders this)
            if (team < my_teams) {
                ItemBuffers buf(shared.data() + team * ItemBuffers::floats(s), s);
                for (int64_t it = team; it < items; it += my_teams) {
                    const Direction& dir = dirs[it % ndir];
                    const int64_t bi = it / ndir;
                    // both directions: the backward one goes to scratch, summed and gated below
                    float* dst = both && dir.reverse ? scratch : out;
                    run_item<NV>(s, dir, x, bi, buf, barriers[team], member, my_size, pad, dt, y, dst, z, add,
                                 !both, scale);
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
    });
}

}  // extern "C"
