"""``videomamba bench scan``: every selective-scan backend against the reference, forward and fwd+bwd.

Baselines when installed: mambapy's parallel scan (``pip install mambapy``), mamba-ssm's reference
(slow: quadratic backward, skipped above ``--slow-max-len``), and a naive fused C++ forward loop
(``kernels/baselines/naive_scan.cpp``, built here).
"""
from __future__ import annotations

import contextlib
import ctypes
import os

import torch
import torch.nn.functional as F

from ..ops import selective_scan_fn, selective_scan_ref
from ..ops._build import ARCH_ENV, load_native
from ..ops.selective_scan import backend_available
from .common import format_table, kernel_build, machine_description, median_time, try_plot, write_json

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


@contextlib.contextmanager
def kernel_arch(arch: str | None):
    """Build and use the native kernels for ``-march=arch`` inside the block (None: leave as is)."""
    if arch is None:
        yield
        return
    old = os.environ.get(ARCH_ENV)
    os.environ[ARCH_ENV] = arch
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ARCH_ENV, None)
        else:
            os.environ[ARCH_ENV] = old


def run(device: str = "cpu", shapes=SHAPES, repeats: int = 5, out_dir: str = "bench_results",
        slow_max_len: int = 1569, archs=None, conv_shapes=CONV_SHAPES) -> dict:
    """Benchmark every backend; on CPU once per kernel build in ``archs`` (default: the current one).
    Returns ``{arch: payload}`` on CPU with several builds, else the one payload."""
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
