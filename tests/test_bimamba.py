"""The bidirectional mixer: official parity, direction symmetry, the /2 option, both directions live."""
import torch

from videomamba.modules import BiMamba

from conftest import load_official


def _official_mixer():
    fx = load_official("mixer_dmodel32")
    kwargs = {k: v for k, v in fx["kwargs"].items() if k != "bimamba"}
    m = BiMamba(**kwargs).eval()
    m.load_state_dict(fx["state_dict"], strict=True)
    return m, fx


def test_mixer_matches_official_output():
    m, fx = _official_mixer()
    with torch.no_grad():
        out = m(fx["input"])
    assert out.shape == fx["output"].shape
    assert (out - fx["output"]).abs().max().item() <= 1e-5


def test_mixer_state_dict_order_is_official():
    m, fx = _official_mixer()
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in fx["state_dict"].items()]


def _swap_directions(sd):
    pairs = [("A_log", "A_b_log"), ("D", "D_b")] + [(f"{m}.{p}", f"{m}_b.{p}")
                                                 for m in ("conv1d", "x_proj", "dt_proj") for p in ("weight", "bias")]
    sd = dict(sd)
    for a, b in pairs:
        if a in sd:
            sd[a], sd[b] = sd[b], sd[a]
    return sd


def test_direction_symmetry():
    """Flipping the input and swapping the two directions' weights flips the output."""
    m, fx = _official_mixer()
    swapped = BiMamba(32).eval()
    swapped.load_state_dict(_swap_directions(m.state_dict()))
    x = fx["input"]
    with torch.no_grad():
        torch.testing.assert_close(swapped(x.flip(1)), m(x).flip(1), rtol=1e-5, atol=1e-5)


def test_backward_direction_is_used():
    """Perturbing only the backward direction's weights must change the output (the official slow
    path silently drops that direction; ours never does)."""
    m, fx = _official_mixer()
    with torch.no_grad():
        before = m(fx["input"])
        m.x_proj_b.weight.add_(0.1)
        after = m(fx["input"])
    assert (before - after).abs().max() > 1e-3


def test_divide_output_halves_the_direction_sum():
    m, fx = _official_mixer()
    half = BiMamba(32, divide_output=True).eval()
    half.load_state_dict(m.state_dict())
    with torch.no_grad():
        # out_proj has no bias, so halving before it halves the output.
        torch.testing.assert_close(half(fx["input"]), m(fx["input"]) / 2, rtol=1e-5, atol=1e-6)


def test_mixer_gradients_flow_to_both_directions():
    m = BiMamba(16)
    m(torch.randn(2, 9, 16)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
