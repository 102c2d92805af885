"""video_mm data: caption annotations (formats, cleaning, errors with file and index), training pairs and
their idx, images as one-frame clips, retrieval corpora (multi-caption, paragraphs, trimming), the tokenizing
collate and the alternating media loader."""
import json

import numpy as np
import pytest
import torch

from videomamba.data.errors import DataError
from videomamba.data.moving_digits import write_mp4
from videomamba.data.video_text import (CaptionedMediaDataset, MediaTestTransform, MediaTrainTransform,
                                        RetrievalCorpus, TextCollate, read_caption_annotations, read_media)
from videomamba.engine.multi_loader import AlternatingLoader


def write(tmp_path, entries, name="anno.json"):
    p = tmp_path / name
    p.write_text(json.dumps(entries))
    return p


def test_annotations_formats_and_cleaning(tmp_path):
    p = write(tmp_path, [{"video": "a.mp4", "caption": "A Seven, moving-left!"},
                         {"image": "b.png", "caption": ["one", "Two (2)"]}])
    recs = read_caption_annotations(p, prefix="/data")
    assert [r.path for r in recs] == ["/data/a.mp4", "/data/b.png"]
    assert [r.media for r in recs] == ["video", "image"]
    assert recs[0].captions == ["a seven moving left"] and recs[1].captions == ["one", "two 2"]
    para = read_caption_annotations(p, paragraph=True)
    assert para[1].captions == ["one two 2"]
    forced = read_caption_annotations(p, media="video")      # VINDLU lists videos under "image"
    assert {r.media for r in forced} == {"video"}
    assert len(read_caption_annotations(p, limit=1)) == 1


@pytest.mark.parametrize("entries,match", [
    ({"video": "a.mp4"}, "JSON list"),
    ([{"video": "a.mp4", "caption": "ok"}, "oops"], "entry 1: expected an object"),
    ([{"path": "a.mp4", "caption": "x"}], "entry 0: has no \"video\" or \"image\""),
    ([{"video": "a.mp4", "caption": []}], "entry 0: \"caption\""),
    ([{"video": "a.mp4", "caption": "?!"}], "entry 0: a caption is empty"),
    ([], "no entries"),
    ([{"video": "a.mp4", "caption": "x", "group": ["g"]}], "entry 0: \"group\" must be a string or a number"),
])
def test_bad_annotations_name_file_and_entry(tmp_path, entries, match):
    p = write(tmp_path, entries)
    with pytest.raises(DataError, match=match) as err:
        read_caption_annotations(p)
    assert str(p) in str(err.value)


def test_invalid_json_names_the_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n{"video": "a.mp4",\n "caption": }\n]')
    with pytest.raises(DataError, match=r"bad.json:3: not valid JSON"):
        read_caption_annotations(p)


def _video(path, frames=16, fps=8):
    clip = np.stack([np.full((32, 32), 8 * i, dtype=np.uint8) for i in range(frames)])   # frame i has value 8 i
    write_mp4(path, clip, fps=fps)
    return path


def test_training_pairs_idx_and_images(tmp_path):
    from PIL import Image

    _video(tmp_path / "v.mp4")
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    p = write(tmp_path, [{"video": "v.mp4", "caption": ["a", "b"]}, {"video": "v.mp4", "caption": "c"}])
    recs = read_caption_annotations(p, str(tmp_path))
    ds = CaptionedMediaDataset(recs, 4, MediaTrainTransform(32, hflip=0), idx_offset=10)
    assert len(ds) == 3 and [ds[i][1:] for i in range(3)] == [("a", 10), ("b", 10), ("c", 11)]
    assert ds[0][0].shape == (3, 4, 32, 32)
    once = CaptionedMediaDataset(recs, 4, MediaTrainTransform(32, hflip=0), expand_captions=False)
    assert len(once) == 2 and once[0][1] in ("a", "b")
    img = read_caption_annotations(write(tmp_path, [{"image": "i.png", "caption": "x"}], "img.json"), str(tmp_path))
    x, cap, idx = CaptionedMediaDataset(img, 1, MediaTrainTransform(16, hflip=0))[0]
    assert x.shape == (3, 1, 16, 16) and cap == "x" and idx == 0


def test_grouped_entries_share_idx_and_the_next_corpus_starts_after_the_groups(tmp_path):
    """Entries of one ``group`` (the same content) get one idx: VTC positives, never VTM negatives; an entry
    without a group is its own; the next corpus of the media type starts after the groups (3 ids, not 4)."""
    from videomamba.data.video_text_corpora import train_sets
    from videomamba.engine import load_config

    _video(tmp_path / "v.mp4")
    write(tmp_path, [{"video": "v.mp4", "caption": "a", "group": "seven left"},
                     {"video": "v.mp4", "caption": "b", "group": 3},
                     {"video": "v.mp4", "caption": "c", "group": "seven left"},
                     {"video": "v.mp4", "caption": "d"}], "one.json")
    write(tmp_path, [{"video": "v.mp4", "caption": "e"}, {"video": "v.mp4", "caption": "f", "group": 3}], "two.json")
    (tmp_path / "cfg.yaml").write_text(
        "data:\n  num_frames: 2\n  input_size: 32\n  scale: [1.0, 1.0]\n  hflip: 0.0\n  train:\n"
        f"    one: {{anno: {tmp_path}/one.json, prefix: {tmp_path}, media: video}}\n"
        f"    two: {{anno: {tmp_path}/two.json, prefix: {tmp_path}, media: video}}\n")
    ds = train_sets(load_config(tmp_path / "cfg.yaml"))["video"]
    got = sorted(ds[i][1:] for i in range(len(ds)))
    assert got == [("a", 0), ("b", 1), ("c", 0), ("d", 2), ("e", 3), ("f", 4)]


def test_unreadable_training_media_is_replaced_and_counted(tmp_path):
    _video(tmp_path / "v.mp4")
    recs = read_caption_annotations(write(tmp_path, [{"video": "missing.mp4", "caption": "a"},
                                                     {"video": "v.mp4", "caption": "b"}]), str(tmp_path))
    ds = CaptionedMediaDataset(recs, 4, MediaTrainTransform(32, hflip=0))
    assert ds[0][1] == "b" and ds.failures.value == 1


def test_middle_frames_and_trimming(tmp_path):
    rec = read_caption_annotations(write(tmp_path, [{"video": "v.mp4", "caption": "a"}]), str(_video(tmp_path / "v.mp4").parent))[0]
    full = read_media(rec, 4, "middle")[:, 0, 0, 0].astype(int)
    trimmed = read_media(rec, 4, "middle", trim_seconds=1.0)[:, 0, 0, 0].astype(int)   # first 8 frames
    # middle of [0,4),[4,8),[8,12),[12,16) -> frames 1, 5, 9, 13; trimmed: [0,2),... -> 0, 2, 4, 6 (value 8 i)
    assert np.abs(full - 8 * np.array([1, 5, 9, 13])).max() <= 3
    assert np.abs(trimmed - 8 * np.array([0, 2, 4, 6])).max() <= 3


def test_retrieval_corpus_multi_caption(tmp_path):
    _video(tmp_path / "v.mp4")
    recs = read_caption_annotations(write(tmp_path, [{"video": "v.mp4", "caption": ["a", "b"]},
                                                     {"video": "v.mp4", "caption": "c"},
                                                     {"video": "missing.mp4", "caption": "d"}]), str(tmp_path))
    corpus = RetrievalCorpus(recs, 4, MediaTestTransform(16), source="x.json")
    assert corpus.texts == ["a", "b", "c", "d"] and corpus.txt2vid == [0, 0, 1, 2]
    x, i = corpus[1]
    assert x.shape == (3, 4, 16, 16) and i == 1
    with pytest.raises(DataError, match="x.json: entry 2"):
        corpus[2]


def test_text_collate_tokenizes_to_fixed_length():
    from videomamba.data.text import load_tokenizer

    collate = TextCollate(load_tokenizer(), 8)
    x, idx = collate([(torch.zeros(3, 2, 4, 4), "a handwritten seven", 3), (torch.ones(3, 2, 4, 4), "hi", 5)])
    assert x["media"].shape == (2, 3, 2, 4, 4) and x["input_ids"].shape == (2, 8)
    assert x["attention_mask"].sum(1).tolist() == [6, 3]   # [CLS] a hand ##written seven [SEP] and idx.tolist() == [3, 5]


class _Sampler:
    def __init__(self):
        self.epoch = None

    def set_epoch(self, e):
        self.epoch = e


class _Loader(list):
    def __init__(self, items):
        super().__init__(items)
        self.sampler = _Sampler()


def test_alternating_loader_yields_every_batch_in_a_seeded_order():
    loaders = {"video": _Loader([("v", i) for i in range(5)]), "image": _Loader([("i", i) for i in range(3)])}
    al = AlternatingLoader(loaders, seed=1)
    al.set_epoch(2)
    first = list(al)
    assert len(al) == 8 and sorted(first) == sorted(loaders["video"] + loaders["image"])
    assert [b[1] for b in first if b[0] == "v"] == list(range(5))          # each loader in its own order
    assert loaders["video"].sampler.epoch == 2 and al.last_order == [b and ("video" if b[0] == "v" else "image")
                                                                     for b in first]
    assert list(al) == first                                               # a function of (seed, epoch)
    orders = set()
    for epoch in range(3, 8):   # other epochs, other interleavings
        al.set_epoch(epoch)
        orders.add(tuple(al.order()))
    assert len(orders) > 1
