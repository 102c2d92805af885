"""The video-text model of the paper's multi-modal experiments (UMT with a VideoMamba vision encoder,
official ``UMT_VIDEOMAMBA``, docs/design.md §4).

- ``vision_encoder``: :class:`VideoTextVisionEncoder`, the masked-pretraining student plus ``pool_norm``. It
  returns the final-norm **patch** tokens (the CLS split off; the visible ones when masked), the pooled
  feature ``pool_norm(cls + mean(patches))`` (``(B, 1, D)``), or per frame ``pool_norm(cls + spatial mean of
  frame t)`` (``(B, T, D)``, ``keep_temporal``, never with a mask), and the ``clip_decoder`` outputs for UTA.
  A clip of one frame is an image: it gets no temporal position embedding.
- ``text_encoder``: :class:`~videomamba.models.text_bert.BertFusionForMaskedLM` (BERT from ``transformers``,
  cross-attention to the vision tokens from ``fusion_layer`` on).
- ``vision_proj`` / ``text_proj`` to the joint space (512), ``itm_head`` (matched or not, from the fusion CLS),
  ``temp`` (learnable, init 0.07, clamped to [0.001, 0.5] at every forward).
- ``clip_teacher`` (optional, frozen): the CLIP visual tower whose features the visible tokens regress (UTA)
  and whose CLS attention picks the visible tokens.

``forward(media, input_ids, attention_mask, idx)`` is one training step's losses (all in one forward, so DDP
sees one call): VTC, VTM, MLM and UTA, as a dict; the weights are applied by the caller. The retrieval
helpers (``encode_vision``, ``encode_text``, ``itm_scores``) are what evaluation and search use.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import norm_forward
from ..objectives.alignment import alignment_loss, visible_targets
from ..objectives.contrastive import sample_hard_negatives, similarity, vtc_loss, mlm_mask
from ..objectives.masks import make_mask
from .config import STUDENT_FRAMES, VideoTextConfig, VideoTextVisionConfig
from .masked_student import VideoMambaPretrain
from .text_bert import BertFusionForMaskedLM

LOSSES = ("vtc", "vtm", "mlm", "uta")
TEXT_POOLS = ("cls", "mean")
TEMP_RANGE = (0.001, 0.5)


_DEFAULTS = VideoTextConfig()   # the one place of the video-text model's defaults

class VideoTextVisionEncoder(VideoMambaPretrain):
    """The official video_mm ``PretrainVideoMamba``: the masked-pretraining student (same keys, final norm
    ``norm``, ``clip_decoder.{k}``) plus ``pool_norm`` (LayerNorm). Unlike in masked video pretraining every
    block learns here (the text losses reach the last block), so nothing is frozen."""

    config_class = VideoTextVisionConfig

    def __init__(self, config: VideoTextVisionConfig | None = None, **kwargs):
        super().__init__(config, **kwargs)
        self.pool_norm = nn.LayerNorm(self.embed_dim) if self.config.add_pool_norm else nn.Identity()
        if self.config.add_pool_norm:
            nn.init.ones_(self.pool_norm.weight), nn.init.zeros_(self.pool_norm.bias)

    def unused_parameter_names(self) -> list[str]:
        return []

    def embed_media(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` for clips ``(B, C, T, H, W)``; a single frame (an image) gets no temporal position."""
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.shape[2] != 1 or self.num_frames == 1:
            return self.embed(x)
        p = self.patch_embed(x)                                      # (B, D, 1, H, W)
        p = p.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(p.shape[0], -1, -1)
        return torch.cat((cls, p), dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, keep_temporal: bool = False,
                return_clip: bool = True):
        """``(fusion tokens (B, visible, D), pooled (B, 1|T, D), clip features (K, B, 1+visible, C) or None)``;
        the fusion tokens are the patch tokens, or with ``config.fusion_tokens="patches+cls"`` each plus the
        CLS."""
        if x.dim() == 4:
            x = x.unsqueeze(2)
        T = x.shape[2] // self.tubelet_size
        tokens = self.pos_drop(self.embed_media(x))
        B, L, D = tokens.shape
        if mask is not None:
            if keep_temporal:
                raise ValueError("keep_temporal (per-frame pooling) needs every token: it cannot run with a mask")
            if tuple(mask.shape) != (B, L) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor of shape ({B}, {L}), got {tuple(mask.shape)} {mask.dtype}")
            tokens = tokens[~mask].reshape(B, -1, D)
        if return_clip:
            out, feats = self._blocks_with_returns(tokens)
        else:
            out, feats = self.forward_blocks(tokens), None
        cls, patches = out[:, :1], out[:, 1:]
        if keep_temporal:
            pooled = self.pool_norm(cls + patches.reshape(B, T, -1, D).mean(dim=2))
        else:
            pooled = self.pool_norm(cls + patches.mean(dim=1, keepdim=True))
        tokens = patches + cls if self.config.fusion_tokens == "patches+cls" else patches
        clip = None
        if feats is not None:
            pos = self.clip_pos_embed[:, :L].expand(B, -1, -1)   # the fixed table; an image uses its first rows
            if mask is not None:
                pos = pos[~mask].reshape(B, -1, D)
            clip = torch.stack([dec(f + pos.to(f.dtype)) for dec, f in zip(self.clip_decoder, feats)])
        return tokens, pooled, clip

    def _blocks_with_returns(self, tokens: torch.Tensor):
        """All blocks and the final norm, collecting the aligned features on the way (official order: for the
        last layer the un-normalised stream entering the last block, else ``norm(output of block r)``)."""
        last = self.depth - 1
        hidden, residual, feats = tokens, None, []
        for i, layer in enumerate(self.layers):
            hidden, residual = layer(hidden, residual)   # `residual` is now the stream entering block i
            if i - 1 in self.return_index:
                feats.append(norm_forward(self.norm, residual, None, prenorm=False).to(tokens.dtype))
        if last in self.return_index:
            feats.append((residual if residual is not None else tokens).to(tokens.dtype))
        out = norm_forward(self.norm, self.drop_path(hidden), residual, prenorm=False,
                           residual_in_fp32=self.residual_in_fp32).to(tokens.dtype)
        return out, feats


def antisymmetric_(head: nn.Linear) -> nn.Linear:
    """Make a two-class head's class-0 row the negative of its class-1 row (weights and bias), keeping the
    difference of the two rows.

    The cross-entropy sees only ``logit1 - logit0``: the sum of the rows gets no gradient (AdamW's updates of the
    two rows are exact opposites), so under the default init it stays random for ever, and the raw class-1 logit
    that the official re-ranking reads is half the log-odds of a match plus that untrained projection (on the
    embedded pipeline's heads: as large as the trained half). Started at zero the sum stays there, the class-1
    logit is half the log-odds, and training is unchanged (the difference, all the loss sees, keeps the default
    init's distribution). Loaded checkpoints bring their own heads."""
    with torch.no_grad():
        for p in (head.weight, head.bias):
            half = (p[1] - p[0]) / 2
            p.copy_(torch.stack([-half, half]))
    return head


class VideoMambaText(nn.Module):
    """See the module doc. ``token_ids``: ``{"pad", "cls", "mask"}`` ids of the tokenizer (for MLM);
    ``masks``: ``{"video": (type, ratio), "image": (type, ratio)}`` of UTA (official: attention 0.8 / 0.5);
    ``keep_temporal``: per-frame VTC features where no mask is used (official: True); ``mlm_prob`` 0.5;
    ``losses``: which losses ``forward`` computes (the ones with a weight); ``text_pool``: see :meth:`pool_text`;
    ``itm_pool``: the same choice for the fusion output that VTM and re-ranking read (None: ``text_pool``)."""

    def __init__(self, vision_encoder: VideoTextVisionEncoder, text_encoder: BertFusionForMaskedLM,
                 embed_dim: int = _DEFAULTS.embed_dim, temp: float = _DEFAULTS.temp,
                 clip_teacher: nn.Module | None = None, token_ids: dict | None = None, masks: dict | None = None,
                 keep_temporal: bool = _DEFAULTS.keep_temporal, mlm_prob: float = _DEFAULTS.mlm_prob, losses=LOSSES,
                 text_pool: str = "cls", itm_pool: str | None = None):
        super().__init__()
        unknown = set(losses) - set(LOSSES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; known: {LOSSES}")
        if "uta" in losses and clip_teacher is None:
            raise ValueError("the UTA loss needs a clip_teacher")
        if "mlm" in losses and (text_encoder.cls is None or not token_ids):
            raise ValueError("the MLM loss needs a text encoder with its MLM head and the tokenizer's token_ids")
        self.vision_encoder, self.text_encoder = vision_encoder, text_encoder
        vision_width, text_width = vision_encoder.embed_dim, text_encoder.hidden_size
        if text_encoder.bert.encoder_width != vision_width:
            raise ValueError(f"the text encoder cross-attends to {text_encoder.bert.encoder_width}-d tokens, the "
                             f"vision encoder gives {vision_width}")
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(text_width, embed_dim)
        self.itm_head = nn.Linear(text_width, 2)
        antisymmetric_(self.itm_head)
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.clip_teacher = clip_teacher
        self.token_ids = dict(token_ids or {})
        self.masks = {"video": ("attention", 0.8), "image": ("attention", 0.5), **(masks or {})}
        self.keep_temporal, self.mlm_prob, self.losses = keep_temporal, float(mlm_prob), tuple(losses)
        itm_pool = text_pool if itm_pool is None else itm_pool
        for name, value in (("text_pool", text_pool), ("itm_pool", itm_pool)):
            if value not in TEXT_POOLS:
                raise ValueError(f"{name} must be one of {TEXT_POOLS}, got {value!r}")
        self.text_pool, self.itm_pool = text_pool, itm_pool

    def no_weight_decay(self):
        # as officially: only 1-D parameters and biases are excluded (pos / cls embeddings are decayed)
        return set()

    # ------------------------------------------------------------------ encoders
    def clamp_temp(self):
        with torch.no_grad():
            self.temp.clamp_(*TEMP_RANGE)

    def encode_vision(self, media: torch.Tensor, mask: torch.Tensor | None = None, return_clip: bool = False):
        """``(patch tokens, pooled, clip)``; per-frame pooling wherever there is no mask and ``keep_temporal``."""
        return self.vision_encoder(media, mask, keep_temporal=self.keep_temporal and mask is None,
                                   return_clip=return_clip)

    def pool_text(self, hidden: torch.Tensor, attention_mask: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        """The CLS state (official) or, with ``text_pool="mean"``, the mean over the real tokens (for BERTs
        trained as sentence encoders with mean pooling, whose CLS state is the same for every sentence);
        ``pool`` overrides ``text_pool``."""
        if (pool or self.text_pool) == "cls":
            return hidden[:, 0]
        m = attention_mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """``(text tokens (B, L, H), pooled (B, H))`` of the text-only layers."""
        h = self.text_encoder(input_ids, attention_mask, mode="text")
        return h, self.pool_text(h, attention_mask)

    def vision_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Joint-space vision features: ``(B, D)`` or per frame ``(B, T, D)``."""
        f = self.vision_proj(pooled)
        return f[:, 0] if f.shape[1] == 1 else f

    def text_features(self, text_cls: torch.Tensor) -> torch.Tensor:
        return self.text_proj(text_cls)

    def fuse(self, vision_tokens, text_hidden, text_mask, vision_index=None) -> torch.Tensor:
        """The pooled fusion output ``(B, H)`` (CLS, officially) of text hidden states attending to vision tokens
        (text row ``i`` to vision row ``vision_index[i]`` when given, else to row ``i``)."""
        out = self.text_encoder(mode="fusion", hidden_states=text_hidden, attention_mask=text_mask,
                                encoder_hidden_states=vision_tokens, encoder_index=vision_index)
        return self.pool_text(out, text_mask, self.itm_pool)

    def itm_scores(self, vision_tokens, text_hidden, text_mask) -> torch.Tensor:
        """The raw ``itm_head`` logit of "matched" (what the official re-ranking uses)."""
        return self.itm_head(self.fuse(vision_tokens, text_hidden, text_mask))[:, 1]

    # ------------------------------------------------------------------ training
    def forward(self, media: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                idx: torch.Tensor) -> dict[str, torch.Tensor]:
        self.clamp_temp()
        if media.dim() == 4:
            media = media.unsqueeze(2)
        kind = "image" if media.shape[2] == 1 else "video"
        mask = targets = None
        if "uta" in self.losses:
            mask, targets = self._uta_targets(media, kind)
        vision_tokens, pooled, clip = self.encode_vision(media, mask, return_clip="uta" in self.losses)
        text_hidden, text_cls = self.encode_text(input_ids, attention_mask)
        vision_feat, text_feat = self.vision_features(pooled), self.text_features(text_cls)
        out = {}
        if "uta" in self.losses:
            out["uta"] = alignment_loss(clip, targets)
        if "vtc" in self.losses:
            out["vtc"] = vtc_loss(vision_feat, text_feat, idx, self.temp)
        if "vtm" in self.losses:
            out["vtm"] = self._vtm(vision_tokens, text_hidden, attention_mask, vision_feat, text_feat, idx)
        if "mlm" in self.losses:
            out["mlm"] = self._mlm(vision_tokens, input_ids, attention_mask)
        return out

    @torch.no_grad()
    def _uta_targets(self, media, kind):
        mask_type, ratio = self.masks[kind]
        t = self.clip_teacher(media)
        grid = tuple(self.vision_encoder.patch_embed.grid_size)
        mask = make_mask(mask_type, media.shape[0], media.shape[2], grid, ratio, attn=t.attn, device=media.device)
        return mask, visible_targets(t.features, mask)

    def _vtm(self, vision_tokens, text_hidden, text_mask, vision_feat, text_feat, idx):
        """Matching loss on the local batch: each pair, plus one hard negative text per video and one hard
        negative video per text drawn from the (temperature-scaled) similarities."""
        B = vision_tokens.shape[0]
        with torch.no_grad():
            sim = similarity(vision_feat, text_feat) / self.temp
            neg_text, neg_video = sample_hard_negatives(sim, idx)
        # each video's tokens are used three times: their keys and values are projected once (vision_index)
        rows = torch.arange(B, device=vision_tokens.device)
        vision_index = torch.cat([rows, neg_video.to(rows.device), rows])
        text_all = torch.cat([text_hidden, text_hidden, text_hidden[neg_text]])
        mask_all = torch.cat([text_mask, text_mask, text_mask[neg_text]])
        logits = self.itm_head(self.fuse(vision_tokens, text_all, mask_all, vision_index))
        labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(logits.device)
        return F.cross_entropy(logits.float(), labels)

    def _mlm(self, vision_tokens, input_ids, attention_mask):
        ids, labels = mlm_mask(input_ids, self.text_encoder.config.vocab_size, self.token_ids["mask"],
                               self.token_ids["pad"], self.token_ids["cls"], self.mlm_prob)
        hidden = self.text_encoder(ids, attention_mask, mode="text")
        hidden = self.text_encoder(mode="fusion", hidden_states=hidden, attention_mask=attention_mask,
                                   encoder_hidden_states=vision_tokens)
        chosen = labels != -100
        if not chosen.any():   # nothing chosen (tiny batches): a zero that keeps the graph
            return hidden.sum() * 0.0
        # the vocabulary projection only where there is a label: the same mean loss at a fraction of the cost
        logits = self.text_encoder.mlm_logits(hidden[chosen])
        return F.cross_entropy(logits.float(), labels[chosen])





# ---------------------------------------------------------------------------------------------- building
def vision_kwargs(spec: dict) -> dict:
    """Constructor kwargs of the vision encoder: ``variant`` (``videomamba_{tiny,small,middle}``) sizes,
    overridden by ``kwargs``."""
    from .variants import VARIANT_ARGS

    variant = spec.get("variant", "videomamba_middle")
    if variant not in VARIANT_ARGS:
        raise ValueError(f"model.vision.variant must be one of {sorted(VARIANT_ARGS)}, got {variant!r}")
    return {"num_frames": STUDENT_FRAMES, **VARIANT_ARGS[variant], **dict(spec.get("kwargs") or {})}


def build_video_text_model(spec: dict, token_ids: dict | None = None, teacher: nn.Module | None = None,
                           losses=LOSSES, masks: dict | None = None, text_pretrained: bool = True,
                           log=print) -> tuple[VideoMambaText, dict]:
    """The model a ``model:`` config section describes (see ``configs/video_mm/_base_pretrain.yaml``) and the
    plain-data description saved in checkpoints (:func:`video_text_from_meta` rebuilds the model from it).

    ``spec``: ``vision`` {variant, kwargs}, ``text`` {path (a local BERT folder; null = the offline MiniLM
    default), fusion_layer, pool (cls | mean; the VTC text feature), itm_pool (cls | mean; the fusion output VTM
    reads; default: pool), freeze_layers (embeddings + the first N layers fixed), cross_init (bert |
    xavier: the new cross-attention's queries and keys)}, ``embed_dim``, ``temp``, ``keep_temporal``, ``mlm_prob``."""
    from .text_bert import build_text_encoder, text_config_dict, text_encoder_from_config

    vkw = vision_kwargs(spec.get("vision") or {})
    vision = VideoTextVisionEncoder(**vkw)
    text_spec = dict(spec.get("text") or {})
    mlm = "mlm" in losses
    if text_spec.get("config"):   # rebuilt from a checkpoint: the architecture only
        text = text_encoder_from_config(text_spec["config"], text_spec["fusion_layer"], vision.embed_dim, mlm=mlm)
    else:
        text = build_text_encoder(text_spec.get("path"), text_spec.get("fusion_layer"), vision.embed_dim, mlm=mlm,
                                  pretrained=text_pretrained and text_spec.get("pretrained", True),
                                  cross_init=text_spec.get("cross_init", "bert"), log=log)
    freeze = int(text_spec.get("freeze_layers") or 0)
    if freeze:   # embeddings + the first `freeze` layers fixed (a locked pretrained text tower: faster, fewer
        # parameters to fit on small data); they must be text-only layers
        if freeze > text.bert.fusion_layer:
            raise ValueError(f"text.freeze_layers={freeze} would freeze fusion layers (fusion from layer "
                             f"{text.bert.fusion_layer})")
        text.bert.embeddings.requires_grad_(False)
        for layer in text.bert.encoder.layer[:freeze]:
            layer.requires_grad_(False)
    defaults = _DEFAULTS
    model = VideoMambaText(vision, text, embed_dim=int(spec.get("embed_dim", defaults.embed_dim)),
                           temp=float(spec.get("temp", defaults.temp)), clip_teacher=teacher, token_ids=token_ids,
                           masks=masks, keep_temporal=bool(spec.get("keep_temporal", defaults.keep_temporal)),
                           mlm_prob=float(spec.get("mlm_prob", defaults.mlm_prob)), losses=losses,
                           text_pool=text_spec.get("pool", "cls"), itm_pool=text_spec.get("itm_pool"))
    meta = {"vision": {"variant": (spec.get("vision") or {}).get("variant", "videomamba_middle"), "kwargs": vkw},
            "text": {"config": text_config_dict(text), "fusion_layer": text.bert.fusion_layer,
                     "tokenizer": str(text_spec["path"]) if text_spec.get("path") else None,
                     "pool": model.text_pool, "itm_pool": model.itm_pool,
                     "cross_init": text_spec.get("cross_init", "bert")},
            "embed_dim": model.vision_proj.out_features, "temp": float(spec.get("temp", defaults.temp)),
            "keep_temporal": model.keep_temporal, "mlm_prob": model.mlm_prob}
    model.config = VideoTextConfig.from_dict(meta)
    return model, model.config.to_dict()


def video_text_from_meta(meta: dict) -> VideoMambaText:
    """The retrieval model (no teacher, no MLM head) of a training checkpoint's ``extra.video_text_model``."""
    model, _ = build_video_text_model(meta, losses=("vtc", "vtm"), text_pretrained=False, log=lambda s: None)
    return model

__all__ = ["VideoMambaText", "VideoTextVisionEncoder", "build_video_text_model", "video_text_from_meta",
           "vision_kwargs", "LOSSES", "TEMP_RANGE"]
