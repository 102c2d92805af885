"""Do the kernel tests catch broken kernels? Plant one bug at a time in a copy of ``kernels/`` and run
the kernel tests against it (``VIDEOMAMBA_KERNEL_SOURCES`` points the build at the copy; a fresh cache).
Bugs in the Triton kernels (``videomamba/ops/*_triton.py``) go into a copy of the package that the test run
imports instead of the checkout's (and run the Triton tests, in Triton's interpreter on CPU).

    python scripts/mutation_check.py            # every mutation; exit 1 if any survives
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --match multiview:   # only those whose name contains the text

A mutation with a fifth element (a list of test files) is a bug in a package file checked by those tests
(the "numbers" tests, tests/test_numbers_*.py: the multi-view test, evaluation preprocessing, LVU windows and time control,
video-text hard negatives and re-ranking, model folders, the masked-pretraining validation cosine); the run
names every test that catches it.

Each mutation is a bug a kernel change could plausibly introduce, several of them invisible to the
tests this project had before issue 9 (an all-ones conv gradient, N=8 only, no reverse last state).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRITON_SCAN = "videomamba/ops/selective_scan_triton.py"
TRITON_CONV = "videomamba/ops/causal_conv1d_triton.py"

# (name, file under kernels/ or the package, exact text, replacement)
MUTATIONS = [
    ("scan bwd: dB misses the u factor", "cpu/selective_scan.cpp",
     "gn * (dtt * ut)", "gn * dtt"),
    ("scan bwd: gradient of the last state ignored", "cpu/selective_scan.cpp",
     "gst[k] = dlast ? load(dlast + (bi * a.dim + d) * NP + k * W) : splat(0.0f);", "gst[k] = splat(0.0f);"),
    ("scan bwd: ddelta row sums written in the wrong order", "cpu/selective_scan.cpp",
     "ddt_sum(ddelta + row, !a.reverse)", "ddt_sum(ddelta + row, a.reverse)"),
    ("scan bwd: dA accumulated without dt", "cpu/selective_scan.cpp",
     "dA_acc[k] += gh * dtt;", "dA_acc[k] += gh;"),
    ("scan bwd: first step's previous state taken from the buffer", "cpu/selective_scan.cpp",
     "s > 0 ? load(hs + os - NP) : (h0row", "load(hs + (s > 0 ? os - NP : os)) + 0.0f * (h0row"),
    ("scan fwd: last state of the wrong vector", "cpu/selective_scan.cpp",
     "store(last + (bi * a.dim + d) * NP + k * W, h[k]);", "store(last + (bi * a.dim + d) * NP + k * W, h[0]);"),
    ("row sums: partial descending block misplaced", "cpu/simd_math.h",
     "if (descending) dst[first - k] = r[W - 1 - k];", "if (descending) dst[first - k] = r[W - 1];"),
    ("exp2: polynomial coefficient off", "cpu/simd_math.h",
     "5.550332471162809e-2f", "5.560332471162809e-2f"),
    ("softplus: log1p polynomial coefficient off", "cpu/simd_math.h",
     "-1.358388215303421e-1f", "-1.368388215303421e-1f"),
    ("conv bwd: anti-causal dx shifted by one", "cpu/causal_conv1d.cpp",
     "reverse ? -(K - 1) + k : (K - 1) - k", "reverse ? -(K - 2) + k : (K - 1) - k"),
    ("conv bwd: dw tap mirrored in the causal direction", "cpu/causal_conv1d.cpp",
     "const int64_t tap = reverse ? K - 1 - k : k;\n                vf acc",
     "const int64_t tap = reverse ? K - 1 - k : K - 1 - k;\n                vf acc"),
    ("conv bwd: SiLU derivative without the second term", "cpu/causal_conv1d.cpp",
     "gv = gv * s * (1.0f + v * (1.0f - s));", "gv = gv * s;"),
    # issue 10: what the chunked / recomputing model paths rely on
    ("scan fwd: initial state ignored", "cpu/selective_scan.cpp",
     "h[k] = h0 ? load(h0 + k * W) : splat(0.0f);", "h[k] = splat(0.0f);"),
    ("scan fwd: addend before the gate ignored", "cpu/selective_scan.cpp",
     "if (add) o += load_n(add + row + t, n);", ""),
    ("scan bwd: initial-state gradient is the last step's adjoint input", "cpu/selective_scan.cpp",
     "store(dh0 + (bi * a.dim + d) * NP + k * W, gst[k]);", "store(dh0 + (bi * a.dim + d) * NP + k * W, dA_acc[k]);"),
    ("scan: reverse blocks of W row sums stored at the forward place", "cpu/scan_steps.h",
     "store(y + (REV ? L - s - W : s), hsum_rows(acc));", "store(y + s, hsum_rows(acc));"),
    ("conv window: causal halo offset by one", "cpu/causal_conv1d.cpp",
     "const int64_t shift = reverse ? 0 : L_in - L_out;",
     "const int64_t shift = reverse ? 0 : L_in - L_out + (L_in > L_out ? 1 : 0);"),
    # issue 24: the fused mixer
    # the block loop's add + norm
    ("rms norm: the addend is not kept in the stream", "cpu/rms_norm.cpp",
     "            store(s + i, v0);\n", ""),
    ("rms norm: the mean of squares over cols - 1", "cpu/rms_norm.cpp",
     "hsum(sq0 + sq1) / static_cast<float>(cols)", "hsum(sq0 + sq1) / static_cast<float>(cols - 1)"),
    ("rms norm: the weight of the tail ignored", "cpu/rms_norm.cpp",
     "load_n(s + t, n) * scale * load_n(w + t, n)", "load_n(s + t, n) * scale * (n == W ? load(w + t) : splat(1.0f))"),
    ("fused mixer: the conv ignores the halo the caller passes", "cpu/fused_mixer.cpp",
     "std::clamp<int64_t>(-first, 0, span), e = std::clamp<int64_t>(s.Lx - first, 0, span);",
     "std::clamp<int64_t>(s.lo - first, 0, span), e = std::clamp<int64_t>(s.lo + s.n - first, 0, span);"),
    ("fused mixer: the state is not carried from one tile or sub-chunk to the next", "cpu/fused_mixer.cpp",
     "for (int k = 0; k < G; ++k) store(hT + k * W, h[k]);", ""),
    ("fused mixer: the backward direction visits its sub-chunks first to last", "cpu/fused_mixer.cpp",
     "const int64_t c = dir.reverse ? chunks - 1 - i : i;", "const int64_t c = i;"),
    ("fused mixer: the gate of the direction sum dropped", "cpu/fused_mixer.cpp",
     "v = v * zz * vsigmoid(zz);", "v = v + 0.0f * zz;"),
    ("fused mixer: the gate of a single direction dropped", "cpu/fused_mixer.cpp",
     "v *= zz * vsigmoid(zz);", "v += 0.0f * zz;"),
    ("fused mixer: B and C swapped in the transposition", "cpu/fused_mixer.cpp",
     "float* dst = j < s.R + s.N ? Bt + (j - s.R) * kBCWidth : Ct + (j - s.R - s.N) * kBCWidth;",
     "float* dst = j < s.R + s.N ? Ct + (j - s.R) * kBCWidth : Bt + (j - s.R - s.N) * kBCWidth;"),
    ("fused mixer (AVX2): the broadcast copies of B and C a position apart only by NP floats", "cpu/fused_mixer.cpp",
     "store(dst + t * s.NP * kBCWidth, splat(src[t]));", "store(dst + t * s.NP, splat(src[t]));"),
    ("fused mixer (AVX2): the scan reads every state's C from the first state's copy", "cpu/fused_mixer.cpp",
     "const vf ck = kBCWidth > 1 ? load(c + k * kBCWidth) : splat(c[k]);",
     "const vf ck = kBCWidth > 1 ? load(c) : splat(c[k]);"),
    ("fused mixer: the kept scratch not zeroed when its layout changes", "cpu/fused_mixer.cpp",
     "if (key != layout || static_cast<int64_t>(data.size()) < floats) {",
     "if (static_cast<int64_t>(data.size()) < floats) {"),
    ("fused mixer: the kept scratch's layout ignores the state count", "cpu/fused_mixer.cpp",
     "{teams, s.Dp, s.Sp, s.R, s.N, s.NP}", "{teams, s.Dp, s.Sp, s.R, s.NP}"),
    ("fused mixer: the last row block's repeated row is stored", "cpu/fused_mixer.cpp",
     "for (int r = 0; r < RB && jb + r < j1; ++r) {\n                store(",
     "for (int r = 0; r < RB; ++r) {\n                store("),
    ("fused mixer: every channel block's dt reads the first block's dt_proj columns", "cpu/fused_mixer.cpp",
     "dt_lanes(s, buf.x_dbl + p0, tb.dtpT + cb,", "dt_lanes(s, buf.x_dbl + p0, tb.dtpT,"),
    ("fused mixer: the backward direction visits the tiles of a sub-chunk first to last", "cpu/fused_mixer.cpp",
     "const int64_t p0 = (REV ? tiles - 1 - i : i) * kScanTile", "const int64_t p0 = i * kScanTile"),
    ("fused mixer: every state group after the first overwrites y", "cpu/fused_mixer.cpp",
     "A2T + n0 * W, hT + n0 * W, tb.yT, n0 == 0);\n                else",
     "A2T + n0 * W, hT + n0 * W, tb.yT, true);\n                else"),
    ("fused mixer: decays beyond the bounded range take the bounded exp", "cpu/fused_mixer.cpp",
     "over |= ~(dt <= lim);", ""),
    ("fused mixer: a thread keeps the first direction's parameters for the other", "cpu/fused_mixer.cpp",
     "if (loaded == &dir) return;", "if (loaded != nullptr) return;"),
    ("fused mixer: the bound on dt is A's smallest, not its largest", "cpu/fused_mixer.cpp",
     "most = std::max(most, -A2T[", "most = std::min(most + 1e30f, -A2T["),
    ("transpose (AVX2): the 128-bit halves swapped in the last step", "cpu/simd_math.h",
     "r[i] = (vf)_mm256_permute2f128_ps(u[i], u[i + 4], 0x20);", "r[i] = (vf)_mm256_permute2f128_ps(u[i], u[i + 4], 0x02);"),
    ("transpose (AVX-512, SSE): the high zip takes the low halves' second source", "cpu/simd_math.h",
     "(J % 2 ? W + W / 2 + J / 2 : W / 2 + J / 2)", "(J % 2 ? W + J / 2 : W / 2 + J / 2)"),
    ("exp for x <= 0 (SSE): 2^k added one bit low", "cpu/simd_math.h",
     "pbits += kbits << 23;", "pbits += kbits << 22;"),
    ("exp for x <= 0 (AVX2 table): 2^k added one bit low", "cpu/simd_math.h",
     "pbits += (kbits << 20) & static_cast<int32_t>(0xFF800000u);", "pbits += (kbits << 19) & static_cast<int32_t>(0xFF800000u);"),
    ("exp for x <= 0 (AVX-512 table): 2^k off by one", "cpu/simd_math.h",
     "(__m512)(p * t), 0xFFFF, (__m512)(p * t), (__m512)kj);", "(__m512)(p * t), 0xFFFF, (__m512)(p * t), (__m512)(kj + 1.0f));"),
    ("exp for x <= 0 (AVX2 table): a table entry off", "cpu/simd_math.h",
     "1.090507746e+00f, 1.189207077e+00f, 1.296839595e+00f,", "1.090507746e+00f, 1.189307077e+00f, 1.296839595e+00f,"),
    ("tail store (AVX): the last odd lane not stored", "cpu/simd_math.h",
     "    if (n >= 1) _mm_store_ss(p, part);", "    (void)part;"),
    ("tail store (AVX): two lanes stored from the low half after four", "cpu/simd_math.h",
     "        part = _mm256_extractf128_ps((__m256)v, 1);\n", ""),
    ("splat (AVX): lane 0 only", "cpu/simd_math.h",
     "    return (vf)_mm256_set1_ps(x);", "    return (vf)_mm256_setr_ps(x, 0, 0, 0, 0, 0, 0, 0);"),
    ("bounded exp: 2^k shifted one bit low (AVX2 and AVX-512)", "cpu/simd_math.h",
     "tbits += kbits << kShift;", "tbits += kbits << (kShift - 1);"),
    ("bounded exp: two table entries swapped (AVX-512)", "cpu/simd_math.h",
     "0x3f79c3d3, 0x3f7837f0,", "0x3f7837f0, 0x3f79c3d3,"),
    ("bounded exp: the remainder dropped (AVX2 and AVX-512)", "cpu/simd_math.h",
     "const vf r = x - (shifted - kRound);", "const vf r = 0.0f * (x - (shifted - kRound));"),
    ("sigmoid: the Newton step of the reciprocal dropped", "cpu/simd_math.h",
     "return r * (2.0f - d * r);", "return r;"),
    ("sigmoid: negative inputs take 1/(1 + e)", "cpu/simd_math.h",
     "return x >= 0.0f ? s : e * s;", "return s;"),
    # issue 21: the chunk-parallel Triton scan and the Triton conv
    ("triton scan: carry not passed across chunks", TRITON_SCAN,
     "leaving = local + decay * carry[None, :]", "leaving = local"),
    ("triton scan: chunks past the end are not identity links of the carry", TRITON_SCAN,
     "p = tl.load(P_ptr + at, mask=both, other=1.0)", "p = tl.load(P_ptr + at, mask=both, other=0.0)"),
    ("triton scan: adjoint carried left to right", TRITON_SCAN,
     "n_chunks - 1 - gi * GROUP, -1,", "n_chunks - 1 - gi * GROUP, 1,"),
    ("triton scan: each chunk starts from the previous chunk's entering state", TRITON_SCAN,
     "hin = tl.load(hin_ptr + carried,", "hin = tl.load(hin_ptr + carried - (tl.program_id(1) > 0) * dim * N,"),
    ("triton scan: chunk summary counts its own step as decayed", TRITON_SCAN,
     "after = total[:, None] - cum ", "after = total[:, None] - cum + dt "),
    ("triton scan: adjoint crosses the chunk end twice", TRITON_SCAN,
     "nmask_t = (npos < L) & (nsteps < (pid_c + 1) * T)", "nmask_t = npos < L"),
    ("triton scan: decayed state not reversed for the adjoint", TRITON_SCAN,
     "decayed_prev = tl.flip(h - b, 2)", "decayed_prev = h - b"),
    ("triton scan: padded steps/channels get a non-zero dt", TRITON_SCAN,
     "return tl.where(mask, dt, 0.0)", "return dt"),
    ("triton scan: softplus derivative dropped", TRITON_SCAN,
     "ddt = tl.where(raw > 20.0, ddt, ddt * _sigmoid(raw))", "ddt = ddt"),
    ("triton scan: B/C gradient shares of two programs collide", TRITON_SCAN,
     "share = ((pid_b * G + g) * n_cb + pid_gd % n_cb) * N", "share = ((pid_b * G + g) * n_cb) * N"),
    ("triton scan pair: reverse output not flipped into position order", TRITON_SCAN,
     "y += tl.flip(yb, 1)", "y += yb"),
    ("triton scan pair: reverse direction reads the mirrored chunk", TRITON_SCAN,
     "_direction_output(n_chunks - 1 - pid_c,", "_direction_output(pid_c,"),
    ("triton conv: causal dx halo shifted by one", TRITON_CONV,
     "pos = offs_t + (K - 1 - j)", "pos = offs_t + (K - 2 - j)"),
    ("triton conv: SiLU derivative without its second term", TRITON_CONV,
     "g = g * s * (1.0 + v * (1.0 - s))", "g = g * s"),
    ("triton conv: weight-gradient partial rows of two programs collide", TRITON_CONV,
     "part = (pid_b * tl.num_programs(0) + pid_l).to(tl.int64) * dim + offs_c",
     "part = (pid_b + pid_l).to(tl.int64) * dim + offs_c"),
]

# bugs in numbers the tests compute by hand (tests/test_numbers_*.py): (name, package file, text, replacement, tests)
MULTIVIEW = "videomamba/tasks/classification/multiview.py"
EVAL_TRANSFORM = "videomamba/data/video_transforms.py"
SAMPLING = "videomamba/data/sampling.py"
VIDEO_SET = "videomamba/data/video_dataset.py"
CONTRASTIVE = "videomamba/objectives/contrastive.py"
RETRIEVAL = "videomamba/tasks/video_text/retrieval.py"
MODEL_FOLDER = "videomamba/checkpoint/model_folder.py"
ALIGNMENT = "videomamba/objectives/alignment.py"
_MV, _TR, _LVU = ["tests/test_numbers_multiview.py"], ["tests/test_numbers_eval_transforms.py"], ["tests/test_numbers_lvu.py"]
_VT, _MF, _AL = ["tests/test_numbers_video_text.py"], ["tests/test_numbers_model_folder.py"], ["tests/test_numbers_alignment.py"]
_OPT = ["tests/test_engine_basics.py", "tests/test_engine_run.py"]
MANUAL, _MB = "videomamba/modules/mixer_recompute.py", ["tests/test_manual_backward.py"]
_LEAN = ["tests/test_lean.py", "tests/test_fused_mixer.py"]
MUTATIONS += [
    # the multi-view test
    ("multiview: logits averaged instead of probabilities", MULTIVIEW,
     "scores.append(out.softmax(-1))", "scores.append(out)", _MV),
    ("multiview: top-4 reported as top-5", MULTIVIEW,
     "k = min(5, probs.shape[1])", "k = min(4, probs.shape[1])", _MV),
    ("multiview: accuracy denominator counts unreadable videos", MULTIVIEW,
     "n = max(int(have.sum()), 1)", "n = max(num_videos, 1)", _MV),
    ("multiview: num_videos counts unreadable videos", MULTIVIEW,
     '"num_videos": int(have.sum())', '"num_videos": num_videos', _MV),
    ("multiview: de-duplication key ignores the crop", MULTIVIEW,
     "for i, key in enumerate(map(tuple, keys.tolist())):",
     "for i, key in enumerate(map(lambda k: tuple(k[:2]), keys.tolist())):", _MV),
    ("multiview: duplicates across ranks each counted", MULTIVIEW,
     "    for keys in keys_per_rank:\n", "    for keys in keys_per_rank:\n        seen = set()\n", _MV),
    # evaluation preprocessing
    ("eval transform: validation centre crop off by one", EVAL_TRANSFORM,
     "(nw - self.size) // 2", "(nw - self.size + 1) // 2", _TR),
    ("eval transform: mean/std channels reversed", EVAL_TRANSFORM,
     "self.num_crops = num_crops\n        self.mean = torch.tensor(mean).view(1, 3, 1, 1)\n"
     "        self.std = torch.tensor(std).view(1, 3, 1, 1)",
     "self.num_crops = num_crops\n        self.mean = torch.tensor(mean[::-1]).view(1, 3, 1, 1)\n"
     "        self.std = torch.tensor(std[::-1]).view(1, 3, 1, 1)", _TR),
    ("eval transform: nearest instead of bilinear resize", EVAL_TRANSFORM,
     "x = TF.resize(x, [nh, nw], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)",
     "x = TF.resize(x, [nh, nw], interpolation=TF.InterpolationMode.NEAREST)", _TR),
    ("eval transform: antialiased resize (torchvision's default, not the official cv2 resize)", EVAL_TRANSFORM,
     "x = TF.resize(x, [nh, nw], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)",
     "x = TF.resize(x, [nh, nw], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)", _TR),
    ("sampling: short-side resize rounds the long side instead of truncating", SAMPLING,
     "return size, int(size * width / height)", "return size, round(size * width / height)", _TR),
    ("sampling: test crop starts rounded instead of truncated", SAMPLING,
     "starts = [int(j * step) for j in range(num_crops)]", "starts = [round(j * step) for j in range(num_crops)]", _TR),
    ("sampling: test crops moved along the short side", SAMPLING,
     "return [(s, 0) if h >= w else (0, s) for s in starts]", "return [(0, s) if h >= w else (s, 0) for s in starts]", _TR),
    # LVU windows and time control
    ("lvu: window key collides across views", VIDEO_SET,
     "key = (clip.video, clip.window * self.num_views + view, crop)", "key = (clip.video, clip.window + view, crop)", _LVU),
    ("lvu: window key spaced by crops instead of views", VIDEO_SET,
     "key = (clip.video, clip.window * self.num_views + view, crop)",
     "key = (clip.video, clip.window * self.num_crops + view, crop)", _LVU),
    ("lvu: a tail window needs a full trimmed length", SAMPLING,
     "if duration - start < trimmed / 2:", "if duration - start < trimmed:", _LVU),
    ("lvu: windows start every trimmed seconds instead of every stride", SAMPLING,
     "for start in range(0, int(duration), int(time_stride)):", "for start in range(0, int(duration), int(trimmed)):",
     _LVU),
    ("lvu: window seconds not turned into frames with the fps", SAMPLING,
     "first = max(0, min(int(start_s * fps), video_len - 1))", "first = max(0, min(int(start_s), video_len - 1))", _LVU),
    ("time_control: repeat shows the first frame", VIDEO_SET,
     "frames = np.repeat(frames[len(frames) // 2][None], len(frames), axis=0)",
     "frames = np.repeat(frames[0][None], len(frames), axis=0)", _LVU),
    ("time_control: shuffle only in training", VIDEO_SET,
     'if self.time_control == "shuffle":', 'if self.time_control == "shuffle" and self.mode == "train":', _LVU),
    # video-text hard negatives and re-ranking
    ("hard negatives: a positive with another index may be drawn", CONTRASTIVE,
     "pos = idx.view(-1, 1) == idx.view(1, -1)", "pos = torch.eye(len(idx), dtype=torch.bool, device=idx.device)", _VT),
    ("hard negatives: text-to-video weights from the untransposed matrix", CONTRASTIVE,
     "w_t2v = F.softmax(sim_v2t.t().float() + 1e-4, dim=1)", "w_t2v = F.softmax(sim_v2t.float() + 1e-4, dim=1)", _VT),
    ("hard negatives: the two directions returned swapped", CONTRASTIVE,
     "return neg_text, neg_video", "return neg_video, neg_text", _VT),
    ("hard negatives: video-to-text softmax over the wrong axis", CONTRASTIVE,
     "w_v2t = F.softmax(sim_v2t.float() + 1e-4, dim=1)", "w_v2t = F.softmax(sim_v2t.float() + 1e-4, dim=0)", _VT),
    ("hard negatives: positives zeroed before the softmax instead of after", CONTRASTIVE,
     "w_v2t = F.softmax(sim_v2t.float() + 1e-4, dim=1).masked_fill(pos, 0)",
     "w_v2t = F.softmax((sim_v2t.float() + 1e-4).masked_fill(pos, 0), dim=1)", _VT),
    ("rerank: ITM metrics computed from the ITC scores", RETRIEVAL,
     'out["itm"] = retrieval_metrics(v2t.numpy(), t2v.numpy(), corpus.txt2vid)',
     'out["itm"] = retrieval_metrics(itc.numpy(), None, corpus.txt2vid)', _VT),
    ("rerank: text-to-video taken from the video-to-text matrix", RETRIEVAL,
     'out["itm"] = retrieval_metrics(v2t.numpy(), t2v.numpy(), corpus.txt2vid)',
     'out["itm"] = retrieval_metrics(v2t.numpy(), None, corpus.txt2vid)', _VT),
    ("rerank: ITM logit added to the ITC score", RETRIEVAL,
     "row[top] = scores(vision_tokens[v:v + 1]", "row[top] = itc[v][top] + scores(vision_tokens[v:v + 1]", _VT),
    ("rerank: items outside the top k not pushed below the re-ranked ones", RETRIEVAL,
     "row = itc[v] - OUTSIDE_TOP_K", "row = itc[v] + 0.0", _VT),
    ("rerank: every rank re-ranks every video", RETRIEVAL,
     "for v in range(rank, V, world):", "for v in range(V):", _VT),
    ("rerank: top k off by one", RETRIEVAL,
     "kv, kt = min(k, T), min(k, V)", "kv, kt = min(k, T) - 1, min(k, V)", _VT),
    ("retrieval: gathered videos not put back in data-set order", RETRIEVAL,
     "order = torch.cat([p[0] for p in parts]).argsort()", "order = torch.arange(sum(len(p[0]) for p in parts))", _VT),
    # model folders
    ("model folder: norm_epsilon dropped", MODEL_FOLDER,
     "args = {k: v for k, v in config.kwargs().items() if v != defaults.get(k)}",
     'args = {k: v for k, v in config.kwargs().items() if v != defaults.get(k) and k != "norm_epsilon"}', _MF),
    ("model folder: boolean options (divide_output) dropped", MODEL_FOLDER,
     "args = {k: v for k, v in config.kwargs().items() if v != defaults.get(k)}",
     "args = {k: v for k, v in config.kwargs().items() if v != defaults.get(k) and not isinstance(v, bool)}", _MF),
    ("model folder: timm's global_pool key always 'token'", MODEL_FOLDER,
     '"global_pool": getattr(model, "global_pool", "token"),', '"global_pool": "token",', _MF),
    ("model folder: an explicit source ignored", MODEL_FOLDER,
     '"source": source if source is not None else getattr(model, "pretrained_source", None),',
     '"source": getattr(model, "pretrained_source", None),', _MF),
    ("model folder: index-object label names taken in file order", MODEL_FOLDER,
     'names = [names.get(str(i), names.get(i, f"class {i}")) for i in range(n)]', "names = list(names.values())", _MF),
    ("model folder: std written as the mean", MODEL_FOLDER,
     'd["mean"], d["std"] = list(self.mean), list(self.std)', 'd["mean"], d["std"] = list(self.mean), list(self.mean)',
     _MF),
    ("model folder: preprocessing sampler not read back", MODEL_FOLDER,
     "kw = {k: v for k, v in d.items() if k in known and v is not None}",
     'kw = {k: v for k, v in d.items() if k in known and v is not None and k != "sampler"}', _MF),
    # the masked-pretraining validation cosine
    ("alignment: val cos without undoing the loss weight", ALIGNMENT,
     '"cos": 1 - mean / (2 * step.loss_ratio)', '"cos": 1 - mean / 2', _AL),
    ("alignment: val cos reported as the loss", ALIGNMENT,
     '"cos": 1 - mean / (2 * step.loss_ratio)', '"cos": mean', _AL),
    ("alignment: validation batches averaged without their sizes", ALIGNMENT,
     "total += loss.item() * x.shape[0]", "total += loss.item()", _AL),
    ("alignment: align_cos without undoing the loss weight", ALIGNMENT,
     '{"align_cos": 1 - loss.detach() / (2 * self.loss_ratio)}', '{"align_cos": 1 - loss.detach() / 2}', _AL),
    ("alignment: loss from the mean over channels instead of the dot product", ALIGNMENT,
     "(2 - 2 * (student.float() * target.float()).sum(dim=-1)).mean()",
     "(2 - 2 * (student.float() * target.float()).mean(dim=-1)).mean()", _AL),
    ("alignment: validation masks not from the seeded generator", ALIGNMENT,
     "loss, _ = step(model, x, None, generator=gen)", "loss, _ = step(model, x, None)", _AL),
    # the recomputing mixer's hand-written backward
    ("scan bwd: buffers given, sequence-long outputs allocated anyway", "videomamba/ops/selective_scan_cpu.py",
     "return buffers[key] if key in buffers else torch.empty_like(uu)", "return buffers.get(key, torch.empty_like(uu))", _MB),
    ("manual bwd: A_log gradient without the chain factor A", MANUAL, "dbias, dA * A, dD]", "dbias, dA, dD]", _MB),
    ("manual bwd: the backward direction's dz dropped", MANUAL, "            dz.add_(dzd)\n", "            pass\n", _MB),
    ("manual bwd: the scan's own input gradient dropped", MANUAL, "_weight_matmul(p.x_proj_weight.t(), dxdbl, out=dxc).add_(du)",
     "_weight_matmul(p.x_proj_weight.t(), dxdbl, out=dxc)", _MB),
    ("manual bwd: RMSNorm backward without its mean term", MANUAL,
     "dr = torch.addcmul(g, xhat, mean, value=-1.0).mul_(rstd)", "dr = g.clone().mul_(rstd)", _MB),
    ("manual bwd: halved output not halved in backward", MANUAL, "        dy.mul_(0.5)", "        dy.mul_(1.0)", _MB),
    ("manual bwd: conv backward in the wrong direction", MANUAL, "p.conv_bias, reverse,\n", "p.conv_bias, not reverse,\n", _MB),
    ("stream in place: a hooked block's output overwritten", "videomamba/models/vision_mamba.py",
     "consume = torch.is_grad_enabled() and not self._blocks_hooked()", "consume = torch.is_grad_enabled()", _MB),
    ("stream in place: drop path not scaled by the keep probability", "videomamba/modules/block.py",
     "            random_tensor.div_(keep)", "            pass", _MB),
    # per-module learning rates (train.module_lr)
    ("optim: module_lr ignored", "videomamba/engine/optim.py",
     "scale *= module_lr[module] / lr", "scale *= 1.0", _OPT),
    ("optim: module_lr matches bare prefixes", "videomamba/engine/optim.py",
     'hits = [p for p in prefixes if name == p or name.startswith(p + ".")]',
     "hits = [p for p in prefixes if name.startswith(p)]", _OPT),
    # the block loop's per-forward caches (issue 24)
    ("lean loop: the stack of packed pairs kept whatever the parameters", "videomamba/modules/mixer_chunked.py",
     "    signature = (conditions, tuple(_parameters_signature(tensors) for tensors in stack))",
     "    signature = (conditions,)", _LEAN),
    ("in_proj blocks: every block written to the first columns", "videomamba/modules/mixer_math.py",
     "out=out[..., start:start + size])", "out=out[..., :x[..., start:start + size].shape[-1]])", _LEAN),
    ("in_proj blocks: the last short block dropped", "videomamba/modules/mixer_math.py",
     "    for start in range(0, L, size):", "    for start in range(0, L - size + 1, size):", _LEAN),
    ("workspace: a view with autograd history handed out again", "videomamba/modules/workspace.py",
     "if last is not None and last[0] == request and not last[1].requires_grad:",
     "if last is not None and last[0] == request:", _LEAN),
    ("workspace: the last view reused for another dtype", "videomamba/modules/workspace.py",
     "        request = (shape, dtype, device)\n", "        request = (shape, device)\n", _LEAN),
]

TESTS = ["tests/test_kernels_cpu.py", "tests/test_fused_mixer.py", "tests/test_lean.py", "tests/test_rms_norm_cpu.py"]
TRITON_TESTS = {TRITON_SCAN: ["tests/test_triton_scan.py"], TRITON_CONV: ["tests/test_conv_triton.py"]}


def run_one(name, rel, old, new, tests, own_tests=None) -> bool | list[str]:
    """True when the tests fail on the mutated kernel (the mutation is caught). A mutation with its own tests
    returns the list of the tests that catch it (empty: it survived)."""
    if own_tests is not None:
        return run_one_python(name, rel, old, new, own_tests, first_failure=False)
    if rel.startswith("videomamba/"):
        return run_one_python(name, rel, old, new, TRITON_TESTS[rel])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernels"
        shutil.copytree(ROOT / "kernels", src)
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutation {name!r}: expected exactly one {old!r} in kernels/{rel}")
        path.write_text(text.replace(old, new))
        env = dict(os.environ, VIDEOMAMBA_KERNEL_SOURCES=str(src), VIDEOMAMBA_KERNEL_CACHE=str(Path(tmp) / "cache"))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        return r.returncode != 0


def run_one_python(name, rel, old, new, tests, first_failure: bool = True) -> bool | list[str]:
    """A package file mutated in a copy of the checkout's package, imported first by a pytest run in a
    scratch folder that links the tests, kernels and configs of the checkout (no bytecode is written, so
    nothing lands in the checkout's tests/). ``first_failure=False``: every test runs, and the tests that
    fail on an assertion are returned."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "videomamba", root / "videomamba")
        for linked in ("tests", "kernels", "configs"):
            (root / linked).symlink_to(ROOT / linked)
        path = root / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutation {name!r}: expected exactly one {old!r} in {rel}")
        path.write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
        where = subprocess.run([sys.executable, "-c", "import videomamba; print(videomamba.__file__)"], cwd=root,
                               env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(root)):   # else the run would test the checkout, and catch nothing
            raise SystemExit(f"mutation {name!r}: the test run imports {where!r}, not the mutated copy")
        if not first_failure:
            return _catching_tests(name, root, env, tests)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=root, env=env, capture_output=True, text=True)
        if r.returncode != 0 and "AssertionError" not in r.stdout:   # a crash is not a test catching a bug
            raise SystemExit(f"mutation {name!r} made the tests crash instead of fail:\n{r.stdout[-2000:]}")
        return r.returncode != 0


def _catching_tests(name, root, env, tests) -> list[str]:
    """Run every test of ``tests``; the ids of those that fail on an assertion (pytest's summary line of a
    failed assert starts with ``assert`` or ``AssertionError``, of a ``pytest.raises`` that saw nothing with
    ``Failed:``, of a strict xfail that passes with ``[XPASS(strict)]``).
    A test that fails with another exception is a crash, not a catch: the run stops naming it."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEX", "-p", "no:cacheprovider", *tests],
                       cwd=root, env=dict(env, COLUMNS="1000"), capture_output=True, text=True)
    caught, crashed = [], []   # (a wide terminal: the summary lines keep their message)
    for line in r.stdout.splitlines():
        if not line.startswith(("FAILED ", "ERROR ")):
            continue
        test, _, why = line.split(" ", 1)[1].partition(" - ")
        test = test.split("/")[-1]
        (caught if why.startswith(("assert", "AssertionError", "Failed:", "[XPASS(strict)]")) else crashed).append(test)
    if crashed:
        raise SystemExit(f"mutation {name!r} made tests crash instead of fail ({', '.join(crashed)}):\n"
                         f"{r.stdout[-3000:]}")
    if r.returncode not in (0, 1):   # 1 = some tests failed; anything else is a broken run
        raise SystemExit(f"mutation {name!r}: pytest exited with {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    if r.returncode == 1 and not caught:
        raise SystemExit(f"mutation {name!r}: the run failed but names no failing test:\n{r.stdout[-3000:]}")
    return caught


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true")
    p.add_argument("--tests", nargs="*", default=TESTS, help="tests run against the native-kernel mutations")
    p.add_argument("--match", default="", help="only the mutations whose name contains this text")
    args = p.parse_args()
    if args.list:
        for name, rel, *_ in MUTATIONS:
            print(f"{rel}: {name}")
        return 0
    survived = []
    chosen = [m for m in MUTATIONS if args.match in m[0]]
    for name, rel, old, new, *own in chosen:
        caught = run_one(name, rel, old, new, args.tests, *own)
        by = f"  <- {', '.join(caught)}" if isinstance(caught, list) and caught else ""
        print(f"{'caught  ' if caught else 'SURVIVED'}  {rel}: {name}{by}", flush=True)
        if not caught:
            survived.append(name)
    print(f"{len(chosen) - len(survived)}/{len(chosen)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
