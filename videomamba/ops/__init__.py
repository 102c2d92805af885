"""Low-level ops: selective scan, causal depthwise conv, fused add+norm. Every op runs on any device."""
from .causal_conv1d import causal_conv1d_fn, causal_conv1d_ref
from .norm import RMSNorm, add_norm, add_norm_into, norm_forward, norm_into, rms_norm_ref
from .selective_scan import selective_scan_fn
from .selective_scan_ref import linear_recurrence, selective_scan_ref
from .selective_scan_cpu import flush_denormals
from . import fused_mixer_cpu  # noqa: F401
from . import scan_op  # noqa: F401,E402  (registers torch.ops.videomamba.* at import, e.g. for torch.export.load)

__all__ = ["selective_scan_fn", "selective_scan_ref", "linear_recurrence", "causal_conv1d_fn", "causal_conv1d_ref",
           "RMSNorm", "add_norm", "add_norm_into", "norm_forward", "norm_into", "rms_norm_ref", "flush_denormals"]
