"""The video-text model a config describes: tokenizer, optional CLIP teacher, vision / text encoders, and the
weights it starts from (``model.vision.pretrained``: a masked-pretraining student or any VideoMamba file for
the vision encoder; ``model.pretrained``: a whole video-text checkpoint, official or ours)."""
from __future__ import annotations

from ...checkpoint import load_checkpoint
from ...checkpoint.video_text import load_video_text_checkpoint
from ...data.text import load_tokenizer
from ...engine.task import resolve_checkpoint
from ...models.clip_teacher import load_clip_teacher
from ...models.video_text import LOSSES, build_video_text_model, vision_kwargs


def active_losses(cfg) -> tuple[str, ...]:
    weights = cfg.get("loss") or {}
    unknown = set(weights) - set(LOSSES)
    if unknown:
        raise ValueError(f"loss: unknown losses {sorted(unknown)}; known: {LOSSES}")
    active = tuple(k for k in LOSSES if float(weights.get(k, 0) or 0) > 0)
    if not active:
        raise ValueError("loss: every weight is 0")
    return active


def token_ids(tokenizer) -> dict:
    return {"pad": tokenizer.pad_token_id, "cls": tokenizer.cls_token_id, "mask": tokenizer.mask_token_id}


def build_teacher(cfg, vkw: dict, log=print):
    path = (cfg.get("teacher") or {}).get("path")
    if not path:
        raise ValueError("loss.uta > 0 needs teacher.path: the CLIP visual tower file (videomamba convert-clip "
                         "IN OUT writes one), or set loss.uta=0")
    teacher = load_clip_teacher(path)
    out_dim = vkw.get("clip_output_dim", 512)
    if teacher.out_dim != out_dim:
        raise ValueError(f"teacher {path} gives {teacher.out_dim}-d features, model.vision.kwargs.clip_output_dim "
                         f"is {out_dim}")
    log(f"teacher {path}: {teacher.describe()}")
    return teacher


# Model options without parameters of their own: a checkpoint loads under any value of them without a
# complaint, and scores differently. (name, where in a config's `model` section, the value when absent)
OUTPUT_OPTIONS = (("fusion_tokens", ("vision", "kwargs"), "patches"), ("pool", ("text",), "cls"),
                  ("itm_pool", ("text",), None), ("keep_temporal", (), True))


def effective_options(model: dict) -> dict:
    """The :data:`OUTPUT_OPTIONS` a ``model`` config section (or a checkpoint's saved description) sets, with the
    defaults filled in."""
    out = {}
    for name, path, default in OUTPUT_OPTIONS:
        section = model
        for key in path:
            section = section.get(key) or {}
        out[name] = section.get(name, default)
    if out["itm_pool"] is None:
        out["itm_pool"] = out["pool"]
    return out


def adopt_checkpoint_options(cfg, meta: dict | None, source: str, log=print):
    """``cfg``, changed in place, with the model's :data:`OUTPUT_OPTIONS` taken from a checkpoint's saved
    description ``meta`` (``extra.video_text_model``; None, as in official files: ``cfg`` unchanged), each
    change logged: a checkpoint is evaluated as it was trained. Training from ``model.pretrained`` does not
    call it: there the config may change an option on purpose."""
    if not meta:
        return cfg
    want, have = effective_options(meta), effective_options(cfg.model)
    for name, path, _ in OUTPUT_OPTIONS:
        if want[name] == have[name]:
            continue
        section = cfg.model
        for key in path:
            if section.get(key) is None:
                section[key] = {}
            section = section[key]
        section[name] = want[name]
        log(f"model.{'.'.join((*path, name))} = {want[name]} from {source} (the config says {have[name]})")
    return cfg


def build(cfg, losses=None, load_weights: bool = True, log=print, text_pretrained: bool = True):
    """``(model, tokenizer, meta)``; ``meta`` goes into checkpoints (it rebuilds the model)."""
    m = cfg.model
    losses = active_losses(cfg) if losses is None else tuple(losses)
    tokenizer = load_tokenizer((m.get("text") or {}).get("path"))
    vkw = vision_kwargs(m.vision)
    teacher = build_teacher(cfg, vkw, log) if "uta" in losses else None
    mask = cfg.get("mask") or {}
    masks = {k: (v["type"], float(v["ratio"])) for k, v in mask.items()}
    model, meta = build_video_text_model(m, token_ids(tokenizer), teacher, losses, masks,
                                         text_pretrained=text_pretrained and load_weights, log=log)
    if teacher is not None and tuple(teacher.vit.patch_embed.grid_size) != tuple(model.vision_encoder.patch_embed.grid_size):
        raise ValueError(f"teacher {cfg.teacher.path} has a {teacher.vit.patch_embed.grid_size} patch grid, the vision "
                         f"encoder {model.vision_encoder.patch_embed.grid_size}: masks and targets are per patch")
    if load_weights and m.vision.get("pretrained"):
        report = load_checkpoint(model.vision_encoder, resolve_checkpoint(m.vision.pretrained), strict=False,
                                 verbose=False)
        log(f"vision encoder from {m.vision.pretrained}:\n{report}")
    if load_weights and m.get("pretrained"):
        report = load_video_text_checkpoint(model, resolve_checkpoint(m.pretrained), strict=False, log=None)
        log(f"video-text model from {m.pretrained}:\n{report}")
    if m.get("grad_checkpointing"):
        model.vision_encoder.set_grad_checkpointing(True)
    return model, tokenizer, meta
