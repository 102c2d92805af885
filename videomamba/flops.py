"""Analytic multiply-accumulate (MAC) counts for :class:`~videomamba.models.VisionMamba`.

``flops(model, input)`` walks the model with forward hooks during one ``torch.no_grad`` forward pass
and reads the *actual* shapes, so it works for any variant, batch size, frame count, resolution and
either layout. Counts are MACs, as fvcore counts them (the paper's "FLOPs" are fvcore MACs): a
``Linear`` costs ``prod(input.shape[:-1]) * in * out``, a convolution ``out.numel() * in/groups *
prod(kernel)``; biases are free.

Modes
-----
``"paper"`` counts only what fvcore sees in the official code (the selective scan and causal conv
are custom CUDA ops it skips, ``x_proj``/``dt_proj`` are ``F.linear`` calls on sliced weights): the
patch-embedding conv, every mixer's ``in_proj`` and ``out_proj``, and the head. This reproduces the
official MODEL_ZOO numbers (e.g. videomamba_tiny at 224: 1.07 G vs the table's 1.1 G).

``"full"`` counts everything, per category (``B`` batch, ``L`` tokens, ``D`` width, ``Di`` inner
width, ``R`` dt rank, ``N`` state size, ``K`` conv width; per mixer, the two scan directions each):

=============  ==============================================================================
patch_embed    Conv2d / Conv3d: ``B * tokens * D * C * kernel`` (CLS excluded: it is not convolved)
in_proj        ``B*L*D*2Di`` (shared by both directions)
conv1d         ``B*Di*K*L`` per direction (depthwise causal conv; only the ``L`` kept outputs)
x_proj         ``B*L*Di*(R+2N)`` per direction
dt_proj        ``B*L*R*Di`` per direction
scan           ``9*B*L*Di*N`` per direction (mamba-ssm's ``flops_selective_scan_ref`` convention:
               discretisation ``exp(dt*A)``, ``dt*B*u``, the state update and the ``C`` readout)
out_proj       ``B*L*Di*D`` (shared)
norm           RMSNorm 4 per element (square, mean, scale by rsqrt, scale by weight); LayerNorm 5
               per element with affine, 4 without (fvcore's rule); one per block plus ``norm_f``
elementwise    per direction ``B*L*Di`` for the ``D*u`` skip and ``B*L*Di`` for the ``silu(z)``
               gating (mamba-ssm's ``with_D`` / ``with_Z`` terms, 1 each); per mixer ``B*L*Di`` for
               the direction sum (plus ``B*L*Di`` if ``divide_output``); ``B*L*D`` per residual add
               (``depth`` of them: blocks 1.. and the final add-norm)
head           ``B*D*num_classes`` (on the pooled token)
other          any further ``nn.Linear`` / ``nn.Conv*`` module called in the forward pass
=============  ==============================================================================

Not counted (as in fvcore): activations (SiLU, softplus), ``exp(A_log)``, the ``dt`` bias add,
flips, transposes, position-embedding adds, pooling, dropout.

Each mixer's work (its projections included: it uses its weights functionally, so module hooks would
not see them) is computed from its input shape and its own modules (``in_proj``/``out_proj`` sizes,
``conv1d.kernel_size``, ``x_proj.out_features``, ``dt_proj.in_features``, ``A_log.shape``). By default
(``fast=True``) the mixers run a shape-only forward while counting, so nothing is computed, notably
on the ``meta`` device. Build the model on ``meta``
(``with torch.device("meta"): m = videomamba.create_model(...)``) to count without allocating or
computing anything; a shape tuple as ``input`` is allocated on the model's device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .modules import BiMamba, Block
from .ops import RMSNorm

__all__ = ["flops", "FlopReport", "MODES", "CATEGORIES"]

MODES = ("full", "paper")
#: Category names, in table order. ``paper`` mode only fills :data:`PAPER_CATEGORIES`.
CATEGORIES = ("patch_embed", "in_proj", "conv1d", "x_proj", "dt_proj", "scan", "out_proj", "norm",
              "elementwise", "head", "other")
PAPER_CATEGORIES = ("patch_embed", "in_proj", "out_proj", "head")

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class FlopReport:
    """Result of :func:`flops`: ``total`` MACs, split ``by_category`` (see the module doc)."""

    total: int
    by_category: dict[str, int] = field(default_factory=dict)
    mode: str = "full"
    input_shape: tuple[int, ...] = ()
    tokens: int | None = None          # sequence length L seen by the mixers (1 + T*H*W/p^2)

    @property
    def gmacs(self) -> float:
        return self.total / 1e9

    def __getitem__(self, category: str) -> int:
        return self.by_category.get(category, 0)

    def __str__(self) -> str:
        width = max([len("category")] + [len(k) for k in self.by_category])
        head = (f"FLOPs (fvcore MACs), mode={self.mode}, input={tuple(self.input_shape)}"
                + (f", L={self.tokens}" if self.tokens is not None else ""))
        lines = [head, f"{'category':<{width}}  {'GMACs':>10}  {'share':>6}"]
        for name, n in self.by_category.items():
            share = n / self.total if self.total else 0.0
            lines.append(f"{name:<{width}}  {n / 1e9:>10.4f}  {share:>6.1%}")
        lines.append(f"{'total':<{width}}  {self.total / 1e9:>10.4f}  {1.0 if self.total else 0.0:>6.1%}")
        return "\n".join(lines)


def _linear_macs(inp: torch.Tensor, m: nn.Linear) -> int:
    return math.prod(inp.shape[:-1]) * m.in_features * m.out_features


def _conv_macs(out: torch.Tensor, m: nn.Module) -> int:
    return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _norm_macs_per_element(norm: nn.Module) -> int:
    if isinstance(norm, nn.LayerNorm):
        return 5 if norm.elementwise_affine else 4
    if isinstance(norm, RMSNorm):
        return 4 if norm.weight is not None else 3
    return 4


def _mixer_macs(mixer: BiMamba, hidden: torch.Tensor) -> dict[str, int]:
    """Everything in one BiMamba, from the shape of its input (the mixer uses its weights functionally,
    so module hooks would not see these products)."""
    b, L = math.prod(hidden.shape[:-2]), hidden.shape[-2]
    di = mixer.d_inner
    out: dict[str, int] = {"in_proj": b * L * mixer.in_proj.in_features * mixer.in_proj.out_features,
                           "out_proj": b * L * mixer.out_proj.in_features * mixer.out_proj.out_features}
    directions = ((mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log),
                  (mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b, mixer.A_b_log))
    elementwise = 0
    for conv, x_proj, dt_proj, A_log in directions:
        k = math.prod(conv.kernel_size)
        n_state = A_log.shape[-1]
        out["conv1d"] = out.get("conv1d", 0) + b * di * (conv.in_channels // conv.groups) * k * L
        out["x_proj"] = out.get("x_proj", 0) + b * L * x_proj.in_features * x_proj.out_features
        out["dt_proj"] = out.get("dt_proj", 0) + b * L * dt_proj.in_features * dt_proj.out_features
        out["scan"] = out.get("scan", 0) + 9 * b * L * di * n_state
        elementwise += 2 * b * L * di                 # D*u skip + silu(z) gating
    elementwise += b * L * di                         # y_fwd + flip(y_bwd)
    if mixer.divide_output:
        elementwise += b * L * di
    out["elementwise"] = elementwise
    return out


def _make_input(model: nn.Module, input) -> torch.Tensor:
    if isinstance(input, torch.Tensor):
        return input
    shape = tuple(int(s) for s in input)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("meta")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros(shape, device=device, dtype=dtype)


def flops(model: nn.Module, input, mode: str = "full", fast: bool = True) -> FlopReport:
    """Count the MACs of ``model(input)``.

    Args:
        model: a :class:`~videomamba.models.VisionMamba` (any module containing :class:`BiMamba`
            mixers works: Linear/Conv modules and mixers are found by walking it). It may live on the
            ``meta`` device. Its train/eval state is restored afterwards.
        input: a tensor ``(B, C, H, W)`` / ``(B, C, T, H, W)`` or just its shape (allocated with
            zeros on the model's device, so a meta model costs nothing).
        mode: ``"full"`` (everything) or ``"paper"`` (patch embed, in_proj, out_proj, head: the
            official MODEL_ZOO convention).
        fast: run the mixers shape-only while counting (default); ``False`` runs the real forward
            (same counts, slower, needs a backend that supports the input's device).
    """
    if mode not in MODES:
        raise ValueError(f"flops: mode must be one of {MODES}, got {mode!r}")
    x = _make_input(model, input)

    # Which hooked module feeds which category. The mixers' per-direction modules are counted
    # analytically from the mixer's input (the real forward calls them functionally).
    category: dict[nn.Module, str] = {}
    analytic: set[nn.Module] = set()
    mixers = [m for m in model.modules() if isinstance(m, BiMamba)]
    for m in mixers:
        analytic.update((m.in_proj, m.out_proj, m.conv1d, m.x_proj, m.dt_proj, m.conv1d_b, m.x_proj_b,
                         m.dt_proj_b))
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(patch_embed, nn.Module):
        for m in patch_embed.modules():
            if isinstance(m, (nn.Linear, *_CONV_TYPES)):
                category[m] = "patch_embed"
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        for m in head.modules():
            if isinstance(m, nn.Linear):
                category[m] = "head"

    counts: dict[str, int] = {}
    tokens: list[int] = []

    def add(cat: str, n: int):
        counts[cat] = counts.get(cat, 0) + int(n)

    def linear_hook(m, args, out):
        add(category.get(m, "other"), _linear_macs(args[0], m))

    def conv_hook(m, args, out):
        add(category.get(m, "other"), _conv_macs(out, m))

    def mixer_pre_hook(m, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens.append(hidden.shape[-2])
        for cat, n in _mixer_macs(m, hidden).items():
            if mode == "full" or cat in PAPER_CATEGORIES:
                add(cat, n)

    def block_pre_hook(m, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        residual = args[1] if len(args) > 1 else kwargs.get("residual")
        add("norm", hidden.numel() * _norm_macs_per_element(m.norm))
        if residual is not None:
            add("elementwise", hidden.numel())

    def final_norm_hook(m, args, out):
        hidden = out[0] if isinstance(out, (tuple, list)) else out
        add("norm", hidden.numel() * _norm_macs_per_element(model.norm_f))
        add("elementwise", hidden.numel())            # the final residual add

    handles = []
    originals: dict[nn.Module, object] = {}
    was_training = model.training
    try:
        for m in model.modules():
            if m in analytic:
                continue
            if isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear_hook))
            elif isinstance(m, _CONV_TYPES):
                handles.append(m.register_forward_hook(conv_hook))
        for m in mixers:
            handles.append(m.register_forward_pre_hook(mixer_pre_hook, with_kwargs=True))
        if mode == "full":
            for m in model.modules():
                if isinstance(m, Block):
                    handles.append(m.register_forward_pre_hook(block_pre_hook, with_kwargs=True))
            layers = getattr(model, "layers", None)
            if isinstance(getattr(model, "norm_f", None), nn.Module) and layers is not None and len(layers):
                handles.append(layers[-1].register_forward_hook(final_norm_hook))
        if fast:
            for m in mixers:
                originals[m] = m.__dict__.get("forward")
                m.forward = _shape_only_forward(m)
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, orig in originals.items():
            if orig is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = orig
        model.train(was_training)

    order = PAPER_CATEGORIES if mode == "paper" else CATEGORIES
    by_category = {c: counts[c] for c in order if c in counts}
    if mode == "paper":
        by_category.pop("other", None)
    else:
        by_category.update({c: n for c, n in counts.items() if c not in by_category})
    return FlopReport(total=sum(by_category.values()), by_category=by_category, mode=mode,
                      input_shape=tuple(x.shape), tokens=tokens[0] if tokens else None)


def _shape_only_forward(mixer: BiMamba):
    """A stand-in for ``BiMamba.forward`` that only produces an output of the right shape; the mixer
    hook counts its work analytically."""

    def forward(hidden_states, *args, **kwargs):
        return hidden_states.new_zeros(*hidden_states.shape[:-1], mixer.out_proj.out_features)

    return forward
