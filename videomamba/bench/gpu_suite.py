"""Issue 21's GPU checks in one call (~5 minutes on one H100): ``python -m videomamba.bench.gpu_suite --out DIR``.

1. The scan at the three target shapes, bf16 inputs: our Triton scan vs mamba-ssm's CUDA scan (when it
   imports), one direction and the bidirectional pair, forward and forward + backward, with the achieved
   bandwidth (:func:`videomamba.bench.scan.run_detailed`): ``suite-scan.{json,txt,png}``.
2. The model points of the bars (:func:`videomamba.bench.model.run`, bf16 autocast, one process per point):
   VideoMamba-Ti vs TimeSformer-Ti SDPA inference at batch 1 and 1, 8, 64, 256 frames; their training step at
   batch 1 and 64 frames; VideoMamba-Ti and -M training steps at 8x224 and the official per-GPU batch on the
   triton and mamba_ssm scan backends; inference at 1 and 8 frames again under torch.compile
   (reduce-overhead): ``suite-model.{json,txt,png}``. Points are run most important first; those not
   started within the time budget are reported as skipped.
3. Every bar as an ok / MISSED line: ``suite-targets.txt`` and ``suite.json``.

``quick=True`` shrinks everything to a smoke test that also runs on CPU (tiny scan shapes with the C++ and
reference backends, 32px models at 1-8 frames, VideoMamba and TimeSformer cut to 2 blocks, batch 2 for
"official", one step per point, in this process, no compile on CPU).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from . import model as model_bench
from . import scan as scan_bench
from .common import Report, machine_description, target_line, write_json

QUICK_SCAN_SHAPES = [(2, 16, 64, 16)]
SDPA = "timesformer_tiny_sdpa"


def model_points(device: str, quick: bool = False) -> tuple[list[dict], dict]:
    """The model points, most important first, and the clip lengths of the bars (``frames`` for
    :func:`videomamba.bench.model.gpu_target_checks`)."""
    cuda = torch.device(device).type == "cuda"
    ours = "triton" if cuda else "cpu"
    if quick:
        frames = {"train_vs_backend": 2, "infer": 4, "infer_long": 8, "train": 4}
        common = dict(device=device, img_size=32, warmup=0, repeats=1, max_seconds=5)
        vm_kwargs = {"depth": 2}      # VideoMamba-M has 32 blocks, TimeSformer-Ti 12: a smoke test needs two
        short = (1,)
    else:
        frames = dict(model_bench.GPU_TARGET_FRAMES)
        common = dict(device=device, img_size=224, warmup=1, repeats=3, max_seconds=20)
        vm_kwargs = None
        short = (1, 8)
    amp = "bf16" if cuda else None
    P = lambda m, T, mode, **kw: model_bench.point(m, T, mode, amp=amp, vm_kwargs=vm_kwargs,  # noqa: E731
                                                    baseline_kwargs=vm_kwargs, **common, **kw)
    points = []
    for mode, T in (("infer", frames["infer"]), ("infer", frames["infer_long"]), ("train", frames["train"])):
        points += [P("videomamba_tiny", T, mode, scan_backend=ours), P(SDPA, T, mode)]
    for m in ("videomamba_tiny", "videomamba_middle"):
        for sb in (ours, "mamba_ssm"):
            p = P(m, frames["train_vs_backend"], "train", batch="official", scan_backend=sb)
            if quick:
                p["batch"] = 2      # keeps batch_spec "official" (what the bar looks for) at a smoke-test size
            points.append(p)
    for T in short:
        points += [P("videomamba_tiny", T, "infer", scan_backend=ours), P(SDPA, T, "infer")]
    if cuda:      # inductor on CPU would compile C++ for minutes
        for T in short:
            points += [P("videomamba_tiny", T, "infer", scan_backend=ours, compile="reduce-overhead"),
                       P(SDPA, T, "infer", compile="reduce-overhead")]
    return points, frames


def run(out_dir: str, quick: bool = False, device: str | None = None, budget_s: float = 290.0) -> dict:
    """Run the suite, write its files into ``out_dir`` and print the bars; returns
    ``{"targets": [...], "ok": all met, "scan": ..., "model": ...}``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type != "cuda" and not quick:
        raise SystemExit("gpu_suite: the full suite needs a CUDA device (use --quick for the CPU smoke test)")
    start = time.time()
    shapes = QUICK_SCAN_SHAPES if quick else scan_bench.CUDA_TARGET_SHAPES
    scan_payload = scan_bench.run_detailed(device, shapes=shapes, dtypes=("bf16",), repeats=2 if quick else 10,
                                           warmup=1 if quick else 3, out_dir=out_dir, name="suite-scan",
                                           target_shapes=shapes, max_seconds=5 if quick else 20)
    points, frames = model_points(device, quick)
    model_payload = model_bench.run(device=device, points=points, out_dir=out_dir, name="suite-model", targets="gpu",
                                    in_process=quick, timeout=120 if quick else 240,
                                    budget_s=None if quick else max(60.0, budget_s - (time.time() - start)),
                                    gpu_target_frames=frames, memory_limits_mb={} if quick else None,
                                    repeats=points[0]["repeats"])
    targets = scan_payload["targets"] + model_payload["targets"]["issue 21"]
    say = Report()
    say(f"issue 21 targets on {machine_description(device)}"
        + (" (quick smoke test: not the real bars)" if quick else "") + f"; {time.time() - start:.0f} s")
    for t in targets:
        say("  " + target_line(t))
    for line in scan_payload["bandwidth"] + model_bench.compile_lines(model_payload["results"]):
        say("  " + line)
    say.write(f"{out_dir}/suite-targets.txt")
    ok = all(t["ok"] for t in targets)
    write_json(f"{out_dir}/suite.json", dict(device=machine_description(device), quick=quick,
                                             seconds=time.time() - start, targets=targets,
                                             bandwidth=scan_payload["bandwidth"], ok=ok))
    return dict(targets=targets, ok=ok, scan=scan_payload, model=model_payload)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m videomamba.bench.gpu_suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_results", help="folder for the JSON, PNG and txt files")
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test (CPU allowed)")
    ap.add_argument("--device", help="default: cuda when available, else cpu (with --quick)")
    ap.add_argument("--budget-s", type=float, default=290.0, help="model points not started by then are skipped")
    ap.add_argument("--strict", action="store_true", help="exit status 1 when a bar is MISSED")
    args = ap.parse_args(argv)
    res = run(args.out, quick=args.quick, device=args.device, budget_s=args.budget_s)
    return 1 if (args.strict and not res["ok"]) else 0


if __name__ == "__main__":
    sys.exit(main())
