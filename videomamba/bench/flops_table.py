"""``videomamba bench flops``: GMACs of every variant, projection-only (``paper``) and everything
(``full``), next to the official MODEL_ZOO figures."""
from __future__ import annotations

import torch

from ..factory import create_model
from ..flops import flops
from .common import print_table, try_plot, write_json

# image_sm MODEL_ZOO "FLOPs" (projection-only, fvcore MACs)
MODEL_ZOO_G = {("videomamba_tiny", 224): 1.1, ("videomamba_small", 224): 4.3, ("videomamba_middle", 224): 12.7,
               ("videomamba_base", 224): 16.9, ("videomamba_tiny", 448): 4.3, ("videomamba_tiny", 576): 7.1,
               ("videomamba_small", 448): 16.9, ("videomamba_small", 576): 28.0, ("videomamba_middle", 448): 50.4,
               ("videomamba_middle", 576): 83.1}

IMAGE_CASES = [(m, r) for m in ("videomamba_tiny", "videomamba_small", "videomamba_middle", "videomamba_base")
               for r in (224, 448, 576) if not (m == "videomamba_base" and r != 224)]
VIDEO_CASES = [(m, t) for m in ("videomamba_tiny", "videomamba_small", "videomamba_middle") for t in (8, 16, 32, 64)]


def run(out_dir: str = "bench_results") -> dict:
    rows, records = [], []
    for name, res in IMAGE_CASES:
        with torch.device("meta"):
            m = create_model(name, img_size=res)
        p, f = flops(m, (1, 3, res, res), mode="paper"), flops(m, (1, 3, res, res), mode="full")
        zoo = MODEL_ZOO_G.get((name, res))
        records.append(dict(model=name, input=f"image {res}", paper_g=p.gmacs, full_g=f.gmacs, model_zoo_g=zoo))
        rows.append([name, f"image {res}", p.gmacs, zoo, f.gmacs, f["scan"] / 1e9])
    for name, T in VIDEO_CASES:
        with torch.device("meta"):
            m = create_model(name, num_frames=T, num_classes=400)
        p, f = flops(m, (1, 3, T, 224, 224), mode="paper"), flops(m, (1, 3, T, 224, 224), mode="full")
        records.append(dict(model=name, input=f"video {T}x224", paper_g=p.gmacs, full_g=f.gmacs, model_zoo_g=None))
        rows.append([name, f"video {T}x224", p.gmacs, None, f.gmacs, f["scan"] / 1e9])
    print_table(["model", "input", "paper GMACs", "MODEL_ZOO", "full GMACs", "of which scan"], rows,
                title="FLOPs (fvcore MACs, batch 1). paper = in/out proj + patch embed + head; full = everything, "
                      "scan at 9*B*L*D*N per direction")
    path = write_json(f"{out_dir}/flops.json", dict(records=records))
    png = try_plot(f"{out_dir}/flops.png", lambda plt: _plot(plt, records))
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return dict(records=records)


def _plot(plt, records):
    fig, ax = plt.subplots(figsize=(11, 4))
    labels = [f"{r['model'].split('_')[1]} {r['input']}" for r in records]
    xs = range(len(records))
    ax.bar([x - 0.2 for x in xs], [r["paper_g"] for r in records], 0.4, label="paper (projections)")
    ax.bar([x + 0.2 for x in xs], [r["full_g"] for r in records], 0.4, label="full (incl. scan, conv, x/dt proj)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("GMACs")
    ax.legend()
    return fig
