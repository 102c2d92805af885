"""Evaluation preprocessing (videomamba/data/video_transforms.py VideoEvalTransform, the short-side resize and
the test crops of videomamba/data/sampling.py) on synthetic frames whose pixels say where they came from:
channel R holds the column, G the row, B a constant. The expected crop positions are the official protocol's
(docs/design.md §3.2: validation = one centre crop; test = ``crops`` squares of the short side along the
long side, crop ``j`` at ``int(j * (long - short) / (crops - 1))``; the short side resized with the long side
truncated, as the official ``Resize``), written out by hand; the normalisation constants are ImageNet's,
typed in here, R first."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videomamba.data.sampling import short_side_resize, test_crop_offsets
from videomamba.data.video_transforms import VideoEvalTransform

MEAN = (0.485, 0.456, 0.406)   # R, G, B
STD = (0.229, 0.224, 0.225)


def position_frames(h, w, t=2, blue=200):
    """uint8 (t, h, w, 3): R = column, G = row, B = ``blue`` (+ frame number, so frames differ)."""
    rows, cols = np.mgrid[0:h, 0:w]
    f = np.stack([cols, rows, np.full((h, w), blue)], axis=-1).astype(np.uint8)
    return np.stack([f + np.array([0, 0, k], dtype=np.uint8) for k in range(t)])


def pixels(out, mean=MEAN, std=STD):
    """Normalised (3, T, S, S) -> the uint8 values it came from, inverting the normalisation by hand."""
    m = torch.tensor(mean).view(3, 1, 1, 1)
    s = torch.tensor(std).view(3, 1, 1, 1)
    return ((out * s + m) * 255).round().to(torch.int64)


def where(out):
    """(top, left) of the crop in the original frame, from the pixels' R (column) and G (row) values."""
    px = pixels(out)
    top, left = int(px[1, 0, 0, 0]), int(px[0, 0, 0, 0])
    side = out.shape[-1]
    # the whole crop is the block [top, top+side) x [left, left+side) of every frame
    assert torch.equal(px[0, :, :, :], (left + torch.arange(side)).view(1, 1, side).expand(out.shape[1], side, side))
    assert torch.equal(px[1, :, :, :], (top + torch.arange(side)).view(1, side, 1).expand(out.shape[1], side, side))
    assert torch.equal(px[2, :, 0, 0], 200 + torch.arange(out.shape[1]))
    return top, left


# ------------------------------------------------------------------------------------------ validation crop
@pytest.mark.parametrize("h,w,size,short,want", [
    (32, 56, 32, 32, (0, 12)),     # landscape, no resize: (56 - 32) / 2 = 12
    (56, 32, 32, 32, (12, 0)),     # portrait
    (32, 57, 32, 32, (0, 12)),     # (57 - 32) / 2 = 12.5: the official int(round(12.5)) = 12
    (32, 40, 24, 32, (4, 8)),      # a crop smaller than the short side: centred both ways
    (32, 32, 32, 32, (0, 0)),
])
def test_validation_takes_the_centre_crop(h, w, size, short, want):
    t = VideoEvalTransform(size, short_side_size=short)
    out = t(position_frames(h, w))
    assert out.shape == (3, 2, size, size) and out.dtype == torch.float32
    assert where(out) == want


def test_validation_centre_rounds_half_as_the_official_center_crop():
    # official video_transforms.CenterCrop: x1 = int(round((im_w - w) / 2.)); (59 - 32) / 2 = 13.5 -> 14
    out = VideoEvalTransform(32, short_side_size=32)(position_frames(32, 59))
    assert where(out) == (0, 14)


# ------------------------------------------------------------------------------------------------ test crops
@pytest.mark.parametrize("h,w,want", [
    (32, 59, [(0, 0), (0, 13), (0, 27)]),    # step (59 - 32) / 2 = 13.5: left 0, centre int(13.5) = 13, right 27
    (59, 32, [(0, 0), (13, 0), (27, 0)]),    # portrait: top, centre, bottom
    (32, 56, [(0, 0), (0, 12), (0, 24)]),
    (32, 32, [(0, 0), (0, 0), (0, 0)]),      # a square frame: the same crop three times
])
def test_three_test_crops_are_left_centre_right_of_the_long_side(h, w, want):
    t = VideoEvalTransform(32, short_side_size=32, num_crops=3)
    frames = position_frames(h, w)
    got = []
    for j in range(3):
        out = t(frames, crop=j)
        assert out.shape == (3, 2, 32, 32)
        got.append(where(out))
    assert got == want
    # the last crop ends at the far edge of the long side
    assert max(got[-1]) + 32 == max(h, w)


def test_two_test_crops_are_the_two_ends():
    t = VideoEvalTransform(32, short_side_size=32, num_crops=2)
    assert [where(t(position_frames(32, 50), crop=j)) for j in range(2)] == [(0, 0), (0, 18)]


# ------------------------------------------------------------------------------------------ short-side resize
def test_short_side_resize_truncates_the_long_side():
    # 320x240 (w x h) -> short side 224: the long side is 224 * 320 / 240 = 298.67 -> 298 (int), not 299
    assert short_side_resize(240, 320, 224) == (224, 298)
    assert short_side_resize(320, 240, 224) == (298, 224)
    assert short_side_resize(1080, 1920, 224) == (224, 398)    # 398.2
    assert short_side_resize(128, 171, 224) == (224, 299)      # 299.25
    assert short_side_resize(224, 300, 224) == (224, 300)      # the short side is already 224: untouched
    # the crops of a 320x240 frame: step (298 - 224) / 2 = 37
    assert test_crop_offsets(240, 320, 224, 3) == [(0, 0), (0, 37), (0, 74)]


def test_resized_test_crops_equal_a_direct_bilinear_resize():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)   # noise: any other size shows at once
    t = VideoEvalTransform(224, short_side_size=224, num_crops=3)
    # the resize by hand: bilinear, half-pixel centres, no antialiasing, to (224, 298), rounded back to uint8
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    resized = F.interpolate(x, size=(224, 298), mode="bilinear", align_corners=False).round().clamp(0, 255)
    for j, left in enumerate([0, 37, 74]):
        got = t.crop(frames, crop=j)
        assert got.shape == (2, 3, 224, 224) and got.dtype == torch.uint8
        want = resized[..., left:left + 224]
        assert (got.float() - want).abs().max() <= 1   # torchvision's uint8 kernel rounds in fixed point
    # the validation crop of the same frames: the centre (298 - 224) / 2 = 37
    got = t.crop(frames, crop=None)
    assert (got.float() - resized[..., 37:37 + 224]).abs().max() <= 1


# ------------------------------------------------------------------------------------------- normalisation
def test_normalisation_uses_each_channels_own_mean_and_std():
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 0, 51   # R = 1.0, G = 0.0, B = 0.2
    out = VideoEvalTransform(32)(frames)
    want = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    assert out.shape == (3, 2, 32, 32)
    for c in range(3):
        assert torch.allclose(out[c], torch.full((2, 32, 32), want[c]), atol=1e-5), c
    # other statistics, all different, keep their order too
    out = VideoEvalTransform(32, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))(frames)
    want = [(1.0 - 0.1) / 0.5, (0.0 - 0.2) / 0.25, (0.2 - 0.3) / 0.125]
    for c in range(3):
        assert torch.allclose(out[c], torch.full((2, 32, 32), want[c]), atol=1e-5), c


def test_layout_is_channels_then_time():
    frames = position_frames(32, 32, t=3)
    out = VideoEvalTransform(32)(frames)
    assert out.shape == (3, 3, 32, 32)
    assert pixels(out)[2, :, 5, 5].tolist() == [200, 201, 202]   # frame k has B = 200 + k
