"""torch.compile and torch.export see the scan as one custom op (CPU)."""
import pytest
import torch

import videomamba


def small():
    torch.manual_seed(0)
    return videomamba.VisionMamba(img_size=32, depth=2, embed_dim=32, num_classes=3, num_frames=2,
                                  drop_path_rate=0.0).eval()


def test_torch_compile_matches_eager():
    m = small()
    x = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_torch_compile_training_step_gradients_match():
    m = small().train()
    x = torch.randn(2, 3, 2, 32, 32)
    m(x).square().sum().backward()
    eager = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    torch.compile(m, backend="aot_eager")(x).square().sum().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, eager[n], rtol=1e-4, atol=1e-5, msg=n)


def test_torch_export_video_model():
    m = small()
    x = torch.randn(1, 3, 2, 32, 32)
    ep = torch.export.export(m, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("videomamba.selective_scan" in t for t in targets), targets
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_with_inductor_forward_and_backward():
    """The real compiler once (inductor generates and builds C++ around the two custom-op nodes)."""
    m = videomamba.VisionMamba(img_size=16, patch_size=8, depth=1, embed_dim=16, num_classes=3, num_frames=2,
                               drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 2, 16, 16)
    m(x).square().sum().backward()
    eager = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    compiled = torch.compile(m, backend="inductor")
    out = compiled(x)
    torch.testing.assert_close(out, m(x), rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, eager[n], rtol=1e-4, atol=1e-5, msg=n)
