"""RMSNorm with fused add+norm semantics, and the causal depthwise conv."""
import torch
import torch.nn as nn

from videomamba.ops import RMSNorm, add_norm, causal_conv1d_fn, norm_forward


def test_rmsnorm_formula():
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    norm = RMSNorm(16).double()
    nn.init.normal_(norm.weight)
    expect = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expect)


def test_add_norm_keeps_fp32_residual_and_input_dtype_output():
    x = torch.randn(2, 7, 32).bfloat16()
    res = torch.randn(2, 7, 32)  # fp32 residual stream
    w = torch.rand(32) + 0.5
    y, r = add_norm(x, w, residual=res, prenorm=True, residual_in_fp32=True)
    assert r.dtype == torch.float32 and y.dtype == torch.bfloat16
    torch.testing.assert_close(r, x.float() + res)  # exact fp32 sum, no bf16 rounding
    expect = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(y.float(), expect, rtol=1e-2, atol=1e-2)
    # As mamba-ssm: an incoming residual keeps its dtype; a new one follows residual_in_fp32.
    _, r_keep = add_norm(x, w, residual=res, prenorm=True, residual_in_fp32=False)
    assert r_keep.dtype == torch.float32
    _, r_new = add_norm(x, w, residual=None, prenorm=True, residual_in_fp32=False)
    assert r_new.dtype == torch.bfloat16
    _, r_new32 = add_norm(x, w, residual=None, prenorm=True, residual_in_fp32=True)
    assert r_new32.dtype == torch.float32


def test_norm_forward_layernorm_matches_torch():
    ln = nn.LayerNorm(16, eps=1e-5)
    nn.init.normal_(ln.weight), nn.init.normal_(ln.bias)
    x, res = torch.randn(4, 16), torch.randn(4, 16)
    y, r = norm_forward(ln, x, res, prenorm=True, residual_in_fp32=True)
    torch.testing.assert_close(r, x + res)
    torch.testing.assert_close(y, ln(x + res))


def test_causal_conv_matches_loop():
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    y = causal_conv1d_fn(x, w, b, activation="silu")
    pad = torch.nn.functional.pad(x, (3, 0))
    expect = torch.stack([(pad[..., t:t + 4] * w).sum(-1) + b for t in range(10)], dim=-1)
    torch.testing.assert_close(y, torch.nn.functional.silu(expect))
    # Causality: changing a future input never changes an earlier output.
    x2 = x.clone()
    x2[..., 6:] += 1
    torch.testing.assert_close(causal_conv1d_fn(x2, w, b)[..., :6], causal_conv1d_fn(x, w, b)[..., :6])


def test_reverse_conv_is_flipped_causal_conv():
    from videomamba.ops import causal_conv1d_ref

    x = torch.randn(2, 3, 9, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    got = causal_conv1d_ref(x, w, None, reverse=True)
    # anti-causal: y[t] = sum_k w[k] x[t + 3 - k]
    pad = torch.nn.functional.pad(x, (0, 3))
    expect = torch.stack([sum(w[:, k] * pad[..., t + 3 - k] for k in range(4)) for t in range(9)], dim=-1)
    torch.testing.assert_close(got, expect)
