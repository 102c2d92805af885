"""``videomamba bench scan``: every selective-scan backend against the reference, forward and fwd+bwd.

Baselines when installed: mambapy's parallel scan (``pip install mambapy``), mamba-ssm's reference
(slow: quadratic backward, skipped above ``--slow-max-len``), and a naive fused C++ forward loop
(``kernels/baselines/naive_scan.cpp``, built here).
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from ..ops import selective_scan_fn, selective_scan_ref
from ..ops._build import load_native
from ..ops.selective_scan import backend_available
from .common import machine_description, median_time, print_table, try_plot, write_json

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


def run(device: str = "cpu", shapes=SHAPES, repeats: int = 5, out_dir: str = "bench_results",
        slow_max_len: int = 1569) -> dict:
    impls = implementations(device, slow_max_len)
    print(f"selective scan benchmark on {machine_description(device)}; median of {repeats}, fp32")
    rows, records = [], []
    for shape in shapes:
        inputs = make_inputs(shape, device)
        ref_fwd = ref_fb = None
        for name, (fn, has_bwd, max_len) in impls.items():
            if max_len is not None and shape[2] > max_len:
                continue
            t = {k: v for k, v in inputs.items()}
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
            rec = dict(shape=list(shape), impl=name, fwd_ms=fwd * 1e3, fwd_bwd_ms=None if fb is None else fb * 1e3)
            records.append(rec)
            rows.append([str(shape), name, fwd * 1e3, None if fb is None else fb * 1e3,
                         ref_fwd / fwd if ref_fwd else None, (ref_fb / fb) if (ref_fb and fb) else None])
    print_table(["(B,D,L,N)", "impl", "fwd ms", "fwd+bwd ms", "fwd speed-up vs ref", "fwd+bwd speed-up vs ref"], rows)
    ratios = _headline_ratios(records)
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    payload = dict(device=machine_description(device), repeats=repeats, records=records, ratios=ratios)
    path = write_json(f"{out_dir}/scan.json", payload)
    png = try_plot(f"{out_dir}/scan.png", lambda plt: _plot(plt, records))
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return payload


def _headline_ratios(records) -> dict:
    def get(shape, impl, key):
        for r in records:
            if tuple(r["shape"]) == shape and r["impl"] == impl:
                return r[key]
        return None
    out = {}
    s = (1, 384, 1569, 16)
    for fast in ("cpu", "triton"):
        base = get(s, "mambapy_pscan", "fwd_bwd_ms")
        mine = get(s, fast, "fwd_bwd_ms")
        if base and mine:
            out[f"{fast} fwd+bwd speed-up over mambapy pscan at {s}"] = base / mine
        naive = get(s, "naive_fused_loop", "fwd_ms")
        mine_f = get(s, fast, "fwd_ms")
        if naive and mine_f:
            out[f"{fast} fwd time / naive fused loop at {s}"] = mine_f / naive
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
