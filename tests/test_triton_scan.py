"""The Triton scan at its production launch shape, run by Triton's interpreter on CPU (conftest sets
TRITON_INTERPRET=1 without a GPU): 64-channel blocks, several blocks per B/C group (the dB/dC partial sums
reduced across blocks), a length across the backward's chunk boundary, bf16 inputs, both directions."""
import pytest
import torch

from videomamba.ops import selective_scan_fn, selective_scan_ref
from videomamba.ops.selective_scan import backend_available

from test_kernels_cpu import _close, _grads, scan_inputs

triton_scan = pytest.importorskip("videomamba.ops.selective_scan_triton")


def test_production_block_width_is_used():
    assert triton_scan._block_d(256, 2) == 64            # 128 channels per group: two blocks of 64
    assert triton_scan._block_d(384, 1) == 64            # VideoMamba-Ti's d_inner


@pytest.mark.parametrize("dtype,reverse", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)],
                         ids=["fp32-forward", "fp32-reverse", "bf16-forward"])
def test_triton_scan_at_production_width(dtype, reverse):
    assert backend_available("triton", "cpu")
    t = scan_inputs(16, 2, dtype, L=19, batch=1, dim=256)   # 2 groups x 2 blocks of 64; chunks of 16: 2
    gen = torch.Generator().manual_seed(1)
    g_out = torch.randn(1, 256, 19, generator=gen, dtype=torch.float64)
    g_last = torch.randn(1, 256, 16, generator=gen, dtype=torch.float64)
    out, last, grads = _grads(lambda x: selective_scan_fn(**x, delta_softplus=True, return_last_state=True,
                                                          reverse=reverse, backend="triton"), t, g_out, g_last)
    e_out, e_last, e_grads = _grads(lambda x: selective_scan_ref(**{k: v.double() for k, v in x.items()},
                                                                 delta_softplus=True, return_last_state=True,
                                                                 reverse=reverse), t, g_out, g_last)
    rtol, atol = (2e-5, 2e-5) if dtype == torch.float32 else (1e-2, 1e-2)
    assert out.dtype == dtype
    _close(out, e_out, rtol, atol, "out")
    _close(last, e_last, 2e-5, 2e-5, "last")
    for name, g in grads.items():
        assert g.dtype == t[name].dtype, name
        _close(g, e_grads[name], rtol, atol, f"d{name}")
