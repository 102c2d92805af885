"""Caption cleaning (the official pre_text) and the offline BERT tokenizer."""
import pytest

from videomamba.data.text import clean_caption, default_text_encoder_dir, load_tokenizer


def test_clean_caption():
    assert clean_caption("A Man's dog, jumping!  Over (the) fence...") == "a mans dog jumping over the fence"
    assert clean_caption("left-to-right / up\tand\n down") == "left to right up and down"
    assert clean_caption('"Quoted"* #tag: x; y~ z?') == "quoted tag x y z"
    assert clean_caption("one two three four", max_words=2) == "one two"
    assert clean_caption("   ") == ""


def test_offline_tokenizer_has_its_vocabulary():
    pytest.importorskip("transformers")
    path = default_text_encoder_dir()
    tok = load_tokenizer(path)
    assert len(tok) == sum(1 for _ in open(path / "vocab.txt", encoding="utf-8"))
    ids = tok("a handwritten seven moving left")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids[1:-1]) == "a handwritten seven moving left"


def test_not_a_tokenizer_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a BERT tokenizer folder"):
        load_tokenizer(tmp_path)
