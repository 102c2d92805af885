"""``videomamba bench scan``: every selective-scan backend against the reference, forward and fwd+bwd.

On CPU (fp32; issue 9's table): baselines when installed: mambapy's parallel scan (``pip install mambapy``),
mamba-ssm's reference (slow: quadratic backward, skipped above ``--slow-max-len``), and a naive fused C++
forward loop (``kernels/baselines/naive_scan.cpp``, built here).

On CUDA (:func:`run_detailed`, issue 21): our Triton scan, mamba-ssm's CUDA scan when it imports and the
PyTorch reference (only up to ``ref_max_len`` / ``ref_max_elements``), with the inputs the model feeds
(bf16 or fp32 u/delta/B/C/z; A, D, delta_bias fp32; z gating, D, delta_bias and softplus on), one direction
and the bidirectional pair of a mixer (forward + reverse scan, two independent input sets), forward alone
and forward + backward. Median of CUDA-event timings, peak CUDA memory per measurement, and the achieved
bandwidth: the bytes a scan must move (:func:`scan_bytes`) over its time, as a share of
``peak_bandwidth_gbs`` (H100 SXM: ~3,000 GB/s).
"""
from __future__ import annotations

import ctypes
import functools
import math

import torch
import torch.nn.functional as F

from ..ops import selective_scan_fn, selective_scan_ref
from ..ops._build import ARCH_ENV, load_native
from ..ops.selective_scan import backend_available
from .common import (PeakMemory, Report, event_time, format_table, kernel_build, machine_description, median_time,
                     target_line, temporary_env, try_plot, write_json)

SHAPES = [(1, 384, 197, 16), (1, 384, 1569, 16), (2, 384, 3137, 16), (1, 1152, 1569, 16)]


def make_inputs(shape, device, dtype=torch.float32, seed=0):
    b, d, L, n = shape
    g = torch.Generator().manual_seed(seed)
    t = dict(u=torch.randn(b, d, L, generator=g), delta=0.5 * torch.rand(b, d, L, generator=g),
             A=-0.5 * torch.rand(d, n, generator=g), B=torch.randn(b, n, L, generator=g),
             C=torch.randn(b, n, L, generator=g), D=torch.randn(d, generator=g), z=torch.randn(b, d, L, generator=g),
             delta_bias=0.5 * torch.rand(d, generator=g))
    return {k: v.to(device=device, dtype=dtype if k in ("u", "delta", "B", "C", "z") else torch.float32)
            for k, v in t.items()}


def _mambapy_scan(u, delta, A, B, C, D, z, delta_bias):
    from mambapy.pscan import pscan

    delta = F.softplus(delta + delta_bias[:, None])
    dA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])                       # (b, d, L, N)
    dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)          # (b, d, L, N)
    h = pscan(dA.transpose(1, 2), dBu.transpose(1, 2))                        # (b, L, d, N)
    y = (h @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)     # (b, d, L)
    return (y + u * D[:, None]) * F.silu(z)


def _mamba_ssm_ref(u, delta, A, B, C, D, z, delta_bias):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref as ref

    return ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)


def _naive_loop():
    lib = load_native("baselines/naive_scan.cpp")
    if lib is None:
        return None
    f = ctypes.POINTER(ctypes.c_float)
    lib.vm_naive_scan_fwd.argtypes = [f] * 5 + [ctypes.c_int64] * 4 + [f]

    def run(u, delta, A, B, C, **_):
        out = torch.empty_like(u)
        p = [ctypes.cast(t.contiguous().data_ptr(), f) for t in (u, delta, A, B, C)]
        lib.vm_naive_scan_fwd(*p, *u.shape, A.shape[1], ctypes.cast(out.data_ptr(), f))
        return out
    return run


def implementations(device: str, slow_max_len: int):
    """name -> (callable(**inputs), supports_backward, max length or None)."""
    impls = {"reference": (lambda **t: selective_scan_ref(**t, delta_softplus=True), True, None)}
    for backend in ("cpu", "triton", "mamba_ssm"):
        if backend_available(backend, torch.device(device).type):
            impls[backend] = (lambda b=backend, **t: selective_scan_fn(**t, delta_softplus=True, backend=b), True, None)
    try:
        import mambapy.pscan  # noqa: F401
        impls["mambapy_pscan"] = (lambda **t: _mambapy_scan(**t), True, None)
    except ImportError:
        pass
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
        impls["mamba_ssm_ref"] = (lambda **t: _mamba_ssm_ref(**t), True, slow_max_len)
    except Exception:
        pass
    if torch.device(device).type == "cpu":
        naive = _naive_loop()
        if naive is not None:
            impls["naive_fused_loop"] = (naive, False, None)
    return impls


CONV_SHAPES = [(1, 384, 197, 4), (1, 384, 1569, 4), (1, 768, 1569, 4), (1, 1152, 1569, 4)]

# (what, shape, baseline impl, timing key, the speed-up the kernel must reach): issue 9's bars.
TARGETS = [
    ("scan fwd speed-up over the naive fused loop", (1, 384, 1569, 16), "naive_fused_loop", "fwd_ms", 3.0),
    ("scan fwd+bwd speed-up over mambapy pscan", (1, 384, 1569, 16), "mambapy_pscan", "fwd_bwd_ms", 40.0),
    ("scan fwd+bwd speed-up over the reference", (1, 384, 197, 16), "reference", "fwd_bwd_ms", 5.0),
]


def kernel_arch(arch: str | None):
    """Build and use the native kernels for ``-march=arch`` inside the block (None: leave as is)."""
    return temporary_env(ARCH_ENV, arch)


def run(device: str = "cpu", shapes=None, repeats: int = 5, out_dir: str = "bench_results",
        slow_max_len: int = 1569, archs=None, conv_shapes=CONV_SHAPES, detailed: bool | None = None, **gpu) -> dict:
    """Benchmark every backend; on CPU once per kernel build in ``archs`` (default: the current one).
    Returns ``{arch: payload}`` on CPU with several builds, else the one payload.
    On CUDA (or with ``detailed=True``) the issue-21 benchmark instead: :func:`run_detailed`, which takes
    the keywords in ``gpu`` (dtypes, peak_bandwidth_gbs, ref_max_len, ref_max_elements, ...)."""
    if torch.device(device).type == "cuda" if detailed is None else detailed:
        return run_detailed(device, shapes=shapes, repeats=repeats, out_dir=out_dir, **gpu)
    shapes = SHAPES if shapes is None else shapes
    if torch.device(device).type != "cpu" or not archs:
        return _run_one(device, shapes, repeats, out_dir, slow_max_len, conv_shapes, suffix="")
    return {arch: _run_one(device, shapes, repeats, out_dir, slow_max_len, conv_shapes, suffix=f"-{arch}", arch=arch)
            for arch in archs}


def _run_one(device, shapes, repeats, out_dir, slow_max_len, conv_shapes, suffix, arch=None) -> dict:
    lines: list[str] = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    with kernel_arch(arch):
        cpu = torch.device(device).type == "cpu"
        impls = implementations(device, slow_max_len)
        say(f"selective scan benchmark on {machine_description(device)}; median of {repeats}, fp32")
        records = _time_scan(impls, shapes, device, repeats)
        rows = [[str(tuple(r["shape"])), r["impl"], r["fwd_ms"], r["fwd_bwd_ms"], r["fwd_vs_ref"], r["fwd_bwd_vs_ref"]]
                for r in records]
        say(format_table(["(B,D,L,N)", "impl", "fwd ms", "fwd+bwd ms", "fwd speed-up vs ref",
                          "fwd+bwd speed-up vs ref"], rows))
        conv = _time_conv(conv_shapes, repeats) if cpu and conv_shapes else []
        if conv:
            say()
            say(format_table(["(B,D,L,K)", "direction", "torch conv1d fwd ms", "kernel fwd ms", "fwd speed-up",
                              "torch conv1d bwd ms", "kernel bwd ms", "bwd speed-up"],
                             [[str(tuple(c["shape"])), c["direction"], c["torch_fwd_ms"], c["kernel_fwd_ms"],
                               c["fwd_speedup"], c["torch_bwd_ms"], c["kernel_bwd_ms"], c["bwd_speedup"]]
                              for c in conv]))
        targets = check_targets(records, conv)
        say()
        for t in targets:
            verdict = "ok" if t["met"] else "MISSED"
            say(f"{t['what']} at {tuple(t['shape'])}: {t['value']:.2f}x (target >= {t['target']:g}x) {verdict}")
        payload = dict(device=machine_description(device), build=kernel_build() if cpu else None,
                       repeats=repeats, records=records, conv=conv, targets=targets)
        path = write_json(f"{out_dir}/scan{suffix}.json", payload)
        (path.parent / f"scan{suffix}.txt").write_text("\n".join(lines) + "\n")
        png = try_plot(f"{out_dir}/scan{suffix}.png", lambda plt: _plot(plt, records))
        print(f"wrote {path}, scan{suffix}.txt" + (f" and {png}" if png else ""))
    return payload


def _time_scan(impls, shapes, device, repeats) -> list[dict]:
    records = []
    for shape in shapes:
        inputs = make_inputs(shape, device)
        ref_fwd = ref_fb = None
        for name, (fn, has_bwd, max_len) in impls.items():
            if max_len is not None and shape[2] > max_len:
                continue
            t = dict(inputs)
            if name == "naive_fused_loop":
                t = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
            with torch.no_grad():
                fwd = median_time(lambda: fn(**t), device, repeats=repeats, max_seconds=60)
            fb = None
            if has_bwd:
                tg = {k: v.clone().requires_grad_(True) for k, v in t.items()}
                fb = median_time(lambda: fn(**tg).sum().backward(), device, repeats=repeats, max_seconds=60)
            if name == "reference":
                ref_fwd, ref_fb = fwd, fb
            records.append(dict(shape=list(shape), impl=name, fwd_ms=fwd * 1e3,
                                fwd_bwd_ms=None if fb is None else fb * 1e3,
                                fwd_vs_ref=ref_fwd / fwd if ref_fwd else None,
                                fwd_bwd_vs_ref=(ref_fb / fb) if (ref_fb and fb) else None))
    return records


def _time_conv(shapes, repeats) -> list[dict]:
    """The causal conv kernel against PyTorch's conv1d path (the reference), forward and backward
    separately (the backward timed on a retained graph), both scan directions, with SiLU as in the models."""
    from ..ops import causal_conv1d_fn

    out = []
    for shape in shapes:
        b, d, L, K = shape
        g = torch.Generator().manual_seed(0)
        x, w, bias = torch.randn(b, d, L, generator=g), torch.randn(d, K, generator=g), torch.randn(d, generator=g)
        dy = torch.randn(b, d, L, generator=g)
        for reverse in (False, True):
            rec = dict(shape=list(shape), direction="reverse" if reverse else "forward")
            for name, backend in (("torch", "reference"), ("kernel", "cpu")):
                def fwd():
                    return causal_conv1d_fn(x, w, bias, "silu", reverse=reverse, backend=backend)
                with torch.no_grad():
                    rec[f"{name}_fwd_ms"] = median_time(fwd, repeats=repeats) * 1e3
                xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, bias))
                y = causal_conv1d_fn(xs, ws, bs, "silu", reverse=reverse, backend=backend)
                rec[f"{name}_bwd_ms"] = median_time(
                    lambda: torch.autograd.grad(y, (xs, ws, bs), dy, retain_graph=True), repeats=repeats) * 1e3
            rec["fwd_speedup"] = rec["torch_fwd_ms"] / rec["kernel_fwd_ms"]
            rec["bwd_speedup"] = rec["torch_bwd_ms"] / rec["kernel_bwd_ms"]
            out.append(rec)
    return out


def check_targets(records, conv) -> list[dict]:
    def get(shape, impl, key):
        return next((r[key] for r in records if tuple(r["shape"]) == shape and r["impl"] == impl), None)

    out = []
    for fast in ("cpu", "triton"):
        for what, shape, base, key, target in TARGETS:
            mine, theirs = get(shape, fast, key), get(shape, base, key)
            if mine and theirs:
                out.append(dict(what=f"{fast} {what}", shape=list(shape), value=theirs / mine, target=target,
                                met=theirs / mine >= target))
    for c in conv:
        for kind in ("fwd", "bwd"):
            v = c[f"{kind}_speedup"]
            out.append(dict(what=f"conv kernel {kind} ({c['direction']}) speed-up over torch conv1d",
                            shape=c["shape"], value=v, target=1.0, met=v > 1.0))
    return out


def _plot(plt, records):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    shapes = sorted({tuple(r["shape"]) for r in records}, key=lambda s: s[0] * s[1] * s[2])
    impls = sorted({r["impl"] for r in records})
    for ax, key, title in ((axes[0], "fwd_ms", "forward"), (axes[1], "fwd_bwd_ms", "forward + backward")):
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            vals = [next((r[key] for r in records if tuple(r["shape"]) == s and r["impl"] == impl), None) or 0
                    for s in shapes]
            ax.bar([j + i * width for j in range(len(shapes))], vals, width, label=impl)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
        ax.set_xticklabels([str(s) for s in shapes], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"selective scan {title}")
    axes[1].legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------------------
# The GPU benchmark (issue 21): ours vs mamba-ssm vs the reference, bf16 / fp32, one direction and the pair.

CUDA_TARGET_SHAPES = [(64, 384, 1569, 16), (16, 1152, 1569, 16), (1, 384, 12545, 16)]
CUDA_SHAPES = CUDA_TARGET_SHAPES + [(1, 384, 197, 16), (1, 384, 1569, 16)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
H100_PEAK_GBS = 3000.0
BYTES_FORMULA = ("bytes moved: fwd = s*(4*B*D*L + 2*B*G*N*L) [reads u, delta, z (B*D*L each), B, C (B*G*N*L each); "
                 "writes out (B*D*L)]; fwd+bwd = s*(8*B*D*L + 4*B*G*N*L) [the fwd's, plus reads dout, writes du, "
                 "ddelta, dz, dB, dC]; s = bytes per input element, G = 1; A, D, delta_bias (fp32, D*(N+2) each "
                 "way) left out; pair rows x2")


def scan_bytes(shape, dtype="bf16", backward: bool = False, groups: int = 1, directions: int = 1) -> int:
    """The bytes one scan must read and write at least (:data:`BYTES_FORMULA`); ``backward``: fwd + bwd."""
    b, d, L, n = shape
    s = torch.empty((), dtype=DTYPES[dtype] if isinstance(dtype, str) else dtype).element_size()
    return s * (4 * b * d * L + 2 * b * groups * n * L) * (2 if backward else 1) * directions


def bandwidth(nbytes: int, ms: float | None, peak_gbs: float = H100_PEAK_GBS) -> tuple[float | None, float | None]:
    """``(GB/s, share of peak_gbs)`` of moving ``nbytes`` in ``ms`` milliseconds."""
    if not ms:
        return None, None
    gbs = nbytes / (ms * 1e-3) / 1e9
    return gbs, gbs / peak_gbs


def _scan_call(backend, reverse=False, **t):
    return selective_scan_fn(**t, delta_softplus=True, backend=backend, reverse=reverse)


def ours(device) -> str:
    """Our kernel on this device type: the Triton scan on CUDA, the C++ one on CPU."""
    return "triton" if torch.device(device).type == "cuda" else "cpu"


def detailed_impls(device, names=None) -> tuple[dict, dict]:
    """``({name: fn(reverse=..., **inputs)}, {name: why it cannot run})`` for the scan backends ``names``
    (default: ours, mamba_ssm, reference), all through ``selective_scan_fn(..., backend=name)``."""
    dev = torch.device(device).type
    names = names or (ours(device), "mamba_ssm", "reference")
    impls, missing = {}, {}
    for name in names:
        if backend_available(name, dev):
            impls[name] = functools.partial(_scan_call, name)
        elif name == "mamba_ssm":
            from ..ops.selective_scan import _mamba_ssm_importable

            missing[name] = ("mamba_ssm not importable" if not _mamba_ssm_importable()
                             else f"mamba_ssm needs CUDA, not {dev}")
        else:
            missing[name] = f"{name} backend not available on {dev}"
    return impls, missing


def _measure_scan(fn, sets, device, repeats, warmup, max_seconds) -> dict:
    """Forward alone (no grad) and forward + backward (``autograd.grad`` of every input) of one direction
    (one input set) or the pair (two sets: the first scanned forward, the second in reverse)."""
    def fwd():
        return [fn(reverse=bool(i), **t) for i, t in enumerate(sets)]

    with torch.no_grad(), PeakMemory(device) as m_fwd:
        t_fwd = event_time(fwd, device, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    leaves = [{k: v.clone().requires_grad_(True) for k, v in t.items()} for t in sets]
    flat = [v for t in leaves for v in t.values()]
    g = torch.Generator().manual_seed(2)
    douts = [torch.randn(t["u"].shape, generator=g).to(t["u"]) for t in sets]

    def fwd_bwd():
        outs = [fn(reverse=bool(i), **t) for i, t in enumerate(leaves)]
        torch.autograd.grad(outs, flat, douts)

    with PeakMemory(device) as m_fb:
        t_fb = event_time(fwd_bwd, device, warmup=warmup, repeats=repeats, max_seconds=max_seconds)
    return dict(fwd_ms=t_fwd * 1e3, fwd_bwd_ms=t_fb * 1e3, fwd_peak_mb=m_fwd.mb, fwd_bwd_peak_mb=m_fb.mb)


def reference_fits(shape, ref_max_len: int, ref_max_elements: int) -> bool:
    """The reference (a loop over L on (L, B, D, N) states) runs only up to these sizes."""
    return shape[2] <= ref_max_len and math.prod(shape) <= ref_max_elements


def time_detailed(impls, shapes, dtypes, device, repeats=10, warmup=2, pair=True, ref_max_len=1569,
                  ref_max_elements=2 ** 27, peak_gbs=H100_PEAK_GBS, max_seconds=30.0, log=print) -> list[dict]:
    """One record per (shape, dtype, impl, one direction / the pair); an impl that fails (OOM, error) gives
    a record with that status and no times."""
    records = []
    for shape in shapes:
        for dname in dtypes:
            sets = [make_inputs(shape, device, DTYPES[dname], seed=s) for s in (0, 1)]
            for impl, fn in impls.items():
                if impl == "reference" and not reference_fits(shape, ref_max_len, ref_max_elements):
                    continue
                for n_dir in ((1, 2) if pair else (1,)):
                    rec = dict(shape=list(shape), dtype=dname, impl=impl, directions="fwd" if n_dir == 1 else "fwd+rev",
                               status="ok", fwd_ms=None, fwd_bwd_ms=None, fwd_peak_mb=None, fwd_bwd_peak_mb=None)
                    try:
                        rec.update(_measure_scan(fn, sets[:n_dir], device, repeats, warmup, max_seconds))
                    except Exception as err:   # noqa: BLE001 - one failing backend must not end the benchmark
                        oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)
                        first = str(err).splitlines()[0][:100] if str(err) else ""
                        rec["status"] = "OOM" if oom else f"error: {type(err).__name__}: {first}"
                        if torch.device(device).type == "cuda":
                            torch.cuda.empty_cache()
                    for key, bwd in (("fwd", False), ("fwd_bwd", True)):
                        rec[f"{key}_bytes"] = scan_bytes(shape, dname, backward=bwd, directions=n_dir)
                        rec[f"{key}_gbs"], rec[f"{key}_bw_share"] = bandwidth(rec[f"{key}_bytes"], rec[f"{key}_ms"],
                                                                              peak_gbs)
                    records.append(rec)
                    log(f"  {tuple(shape)} {dname} {impl} {rec['directions']}: " + (
                        f"fwd {rec['fwd_ms']:.3g} ms, fwd+bwd {rec['fwd_bwd_ms']:.3g} ms" if rec["status"] == "ok"
                        else rec["status"]))
            del sets
    return records


def _get(records, shape, impl, dtype, directions, key):
    for r in records:
        if (tuple(r["shape"]), r["impl"], r["dtype"], r["directions"]) == (tuple(shape), impl, dtype, directions):
            return r.get(key)
    return None


def _status(records, shape, impl, dtype, directions="fwd"):
    for r in records:
        if (tuple(r["shape"]), r["impl"], r["dtype"], r["directions"]) == (tuple(shape), impl, dtype, directions):
            return r["status"]
    return "not measured"


def detailed_rows(records, base="mamba_ssm") -> list[list]:
    """Table rows: times, bandwidth (GB/s and % of peak), peak MB, and the speed-up of each row over ``base``."""
    rows = []
    for r in records:
        ok = r["status"] == "ok"
        vs = []
        for key in ("fwd_ms", "fwd_bwd_ms"):
            theirs = _get(records, r["shape"], base, r["dtype"], r["directions"], key)
            vs.append(theirs / r[key] if (ok and theirs and r[key]) else None)
        pct = lambda v: None if v is None else 100 * v   # noqa: E731
        rows.append([str(tuple(r["shape"])), r["dtype"], r["impl"], r["directions"],
                     r["fwd_ms"] if ok else r["status"], r["fwd_bwd_ms"], r["fwd_gbs"], pct(r["fwd_bw_share"]),
                     r["fwd_bwd_gbs"], pct(r["fwd_bwd_bw_share"]), r["fwd_peak_mb"], r["fwd_bwd_peak_mb"], *vs])
    return rows


DETAILED_HEADERS = ["(B,D,L,N)", "dtype", "impl", "dirs", "fwd ms", "fwd+bwd ms", "fwd GB/s", "fwd % peak",
                    "f+b GB/s", "f+b % peak", "fwd MB", "f+b MB"]


def gpu_targets(records, mine: str = "triton", base: str = "mamba_ssm", shapes=CUDA_TARGET_SHAPES,
                dtype: str = "bf16", missing: dict | None = None) -> list[dict]:
    """Issue 21's scan bars: ``mine`` >= 1.0x ``base`` (time ratio base / mine), forward and forward +
    backward, one direction, at each of ``shapes``. Each ``{what, value, ok, shape, ratio, target}``; a
    missing measurement is MISSED with the reason (``missing[base]``, e.g. "mamba_ssm not importable")."""
    missing = missing or {}
    out = []
    for shape in shapes:
        for key, label in (("fwd_ms", "forward"), ("fwd_bwd_ms", "forward+backward")):
            what = f"scan {label} {mine} vs {base} at {tuple(shape)} {dtype}: >= 1.0x"
            a, b = _get(records, shape, mine, dtype, "fwd", key), _get(records, shape, base, dtype, "fwd", key)
            ratio = b / a if (a and b) else None
            if ratio is not None:
                value = f"{ratio:.2f}x ({a:.3g} vs {b:.3g} ms)"
            elif base in missing:
                value = missing[base]
            elif mine in missing:
                value = missing[mine]
            else:
                value = "; ".join(f"{n}: {_status(records, shape, n, dtype)}" for n in (mine, base)
                                  if _get(records, shape, n, dtype, "fwd", key) is None)
            out.append(dict(what=what, value=value, ok=ratio is not None and ratio >= 1.0, shape=list(shape),
                            ratio=ratio, target=1.0))
    return out


def bandwidth_lines(records, impls, shapes, dtype="bf16", peak_gbs=H100_PEAK_GBS) -> list[str]:
    """``info`` lines: each impl's achieved bandwidth at the target shapes (one direction)."""
    lines = []
    for shape in shapes:
        for impl in impls:
            for key, label in (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd")):
                gbs = _get(records, shape, impl, dtype, "fwd", f"{key}_gbs")
                if gbs is None:
                    continue
                nbytes = _get(records, shape, impl, dtype, "fwd", f"{key}_bytes")
                ms = _get(records, shape, impl, dtype, "fwd", key + "_ms")
                lines.append(f"info    {impl} {label} at {tuple(shape)} {dtype}: {nbytes / 1e9:.3g} GB in {ms:.3g} ms = "
                             f"{gbs:,.0f} GB/s, {100 * gbs / peak_gbs:.1f}% of {peak_gbs:,.0f} GB/s "
                             f"(floor {nbytes / peak_gbs / 1e6:.3g} ms)")
    return lines


def run_detailed(device: str = "cuda", shapes=None, dtypes=("bf16", "fp32"), impls=None, repeats: int = 10,
                 warmup: int = 2, out_dir: str = "bench_results", name: str = "scan", pair: bool = True,
                 peak_bandwidth_gbs: float = H100_PEAK_GBS, ref_max_len: int = 1569, ref_max_elements: int = 2 ** 27,
                 target_shapes=None, max_seconds: float = 30.0) -> dict:
    """The GPU scan benchmark (any device: on CPU "ours" is the C++ kernel); writes ``name``.json/.txt/.png.
    ``impls``: backend names (default ours, mamba_ssm, reference); ``target_shapes`` (default the issue's
    three) are where the ok/MISSED lines are drawn."""
    shapes = [tuple(s) for s in (CUDA_SHAPES if shapes is None else shapes)]
    target_shapes = [tuple(s) for s in (CUDA_TARGET_SHAPES if target_shapes is None else target_shapes)]
    dtypes = list(dtypes or ("bf16", "fp32"))
    say = Report()
    fns, missing = detailed_impls(device, impls)
    mine = ours(device)
    cuda = torch.device(device).type == "cuda"
    say(f"selective scan benchmark on {machine_description(device)}; median of {repeats}"
        f"{' (CUDA events)' if cuda else ''}, "
        f"{', '.join(dtypes)} inputs (A, D, delta_bias fp32), z gating, D, delta_bias, softplus on; impls: "
        f"{', '.join(fns)}" + (f"; not run: {', '.join(f'{k} ({v})' for k, v in missing.items())}" if missing else "")
        + f"; reference only up to L={ref_max_len} and B*D*L*N={ref_max_elements:,}")
    records = time_detailed(fns, shapes, dtypes, device, repeats=repeats, warmup=warmup, pair=pair,
                            ref_max_len=ref_max_len, ref_max_elements=ref_max_elements, peak_gbs=peak_bandwidth_gbs,
                            max_seconds=max_seconds, log=say)
    base = "mamba_ssm"
    say()
    say(format_table(DETAILED_HEADERS + [f"fwd vs {base}", f"f+b vs {base}"], detailed_rows(records, base),
                     title=f"{BYTES_FORMULA}; % of --peak-bandwidth-gbs {peak_bandwidth_gbs:,.0f}; MB: peak CUDA "
                           f"memory above the inputs; 'vs {base}': its time / this row's (> 1: faster)"))
    targets = gpu_targets(records, mine, base, target_shapes, dtypes[0], missing)
    info = bandwidth_lines(records, [i for i in (mine, base) if i in fns], target_shapes, dtypes[0], peak_bandwidth_gbs)
    say()
    say("TARGETS (issue 21, scan):")
    for t in targets:
        say("  " + target_line(t))
    for line in info:
        say("  " + line)
    payload = dict(device=machine_description(device), repeats=repeats, warmup=warmup, dtypes=dtypes,
                   peak_bandwidth_gbs=peak_bandwidth_gbs, byte_formula=BYTES_FORMULA, not_run=missing,
                   ref_max_len=ref_max_len, ref_max_elements=ref_max_elements, records=records, targets=targets,
                   bandwidth=info)
    path = write_json(f"{out_dir}/{name}.json", payload)
    say.write(path.parent / f"{name}.txt")
    png = try_plot(f"{out_dir}/{name}.png", lambda plt: _plot_detailed(plt, records, peak_bandwidth_gbs))
    print(f"wrote {path}, {name}.txt" + (f" and {png}" if png else ""))
    return payload


def _plot_detailed(plt, records, peak_gbs):
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in records))
    series = list(dict.fromkeys((r["impl"], r["dtype"], r["directions"]) for r in records))
    width = 0.8 / max(len(series), 1)
    for ax, key, title in ((axes[0], "fwd_ms", "forward, ms"), (axes[1], "fwd_bwd_ms", "forward + backward, ms"),
                           (axes[2], "fwd_bw_share", f"forward bandwidth, share of {peak_gbs:,.0f} GB/s")):
        for i, (impl, dtype, dirs) in enumerate(series):
            vals = [_get(records, s, impl, dtype, dirs, key) or 0 for s in shapes]
            ax.bar([j + i * width for j in range(len(shapes))], vals, width, label=f"{impl} {dtype} {dirs}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
        ax.set_xticklabels([str(s) for s in shapes], fontsize=6, rotation=15)
        if key != "fwd_bw_share":
            ax.set_yscale("log")
        ax.set_title(f"selective scan {title}", fontsize=9)
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    return fig
