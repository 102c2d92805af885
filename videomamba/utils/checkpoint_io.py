"""Reading checkpoint files (.pth / .safetensors), unwrapping containers, atomic writing."""
from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .files import atomic_write  # noqa: F401  (re-exported: checkpoint.io was its old home)

DEFAULT_MODEL_KEYS = ("model", "module", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, said in one line: ``"<path>: <problem>"``.

    ``path`` is the file (or ``"state_dict"`` for an in-memory dict), ``problem`` the one-line reason;
    ``report`` holds the full :class:`~videomamba.checkpoint.LoadReport` where a load got that far.
    Subclasses keep older ``except`` clauses working: :class:`CheckpointNotFoundError` is also a
    ``FileNotFoundError``, :class:`CheckpointMismatchError` also a ``RuntimeError``.
    """

    def __init__(self, path: str | os.PathLike, problem: str, report: Any = None):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        self.report = report
        super().__init__(f"{self.path}: {self.problem}")

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # picklable across processes despite the two-argument constructor
        return (type(self), (self.path, self.problem), {"report": self.report})


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (also a ``FileNotFoundError``)."""

    def __init__(self, path, problem="file not found", report=None):
        super().__init__(path, problem, report)
        self.errno, self.strerror, self.filename = errno.ENOENT, self.problem, self.path


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """The weights do not fit the model: another architecture, or a strict load that is not clean
    (also a ``RuntimeError``, which ``strict=True`` raised before). ``.report`` has the details."""


class CheckpointKeyError(CheckpointError, KeyError):
    """None of the requested container keys is in the checkpoint (also a ``KeyError``)."""


class CheckpointTypeError(CheckpointError, TypeError):
    """The checkpoint holds no dict (also a ``TypeError``)."""


# ----------------------------------------------------------------------------- format sniffing
_TORCH_LEGACY_MAGIC = (b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19", b"L119547037146038801333356")


def sniff_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(kind, description)`` of a file from its first bytes.

    kind is one of ``empty``, ``zip`` (torch >= 1.6), ``torch-legacy``, ``tar`` (pre-1.0 torch),
    ``safetensors``, or, for files no checkpoint reader takes: ``pickle``, ``text``, ``other``.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty", "an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4096)
        tar_magic = b""
        if size > 262:
            f.seek(257)
            tar_magic = f.read(5)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip", "a zip archive"
    # safetensors: u64 little-endian header length, then the JSON header (at most 100 MB); a length past
    # the end of the file still marks a safetensors file, one cut short.
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] <= 100_000_000:
        return "safetensors", "a safetensors file"
    if any(m in head[:40] for m in _TORCH_LEGACY_MAGIC):
        return "torch-legacy", "a legacy-format torch file"
    if tar_magic == b"ustar":
        return "tar", "a tar archive"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle", "a plain Python pickle, not written by torch.save"
    for magic, what in ((b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"), (b"\x93NUMPY", "a NumPy .npy array"),
                        (b"\x1f\x8b", "a gzip file"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                        (b"\x1aE\xdf\xa3", "a Matroska/WebM video"), (b"GGUF", "a GGUF file")):
        if head.startswith(magic):
            return "other", what
    if head[4:8] == b"ftyp":
        return "other", "an MP4/MOV video"
    if head.startswith(b"RIFF"):
        return "other", "a RIFF (AVI/WAV/WebP) file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        text = head[:err.start].decode("utf-8") if err.start > len(head) - 4 else None
    if text is not None and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        low = text.lstrip().lower()
        if low.startswith("version https://git-lfs"):
            return "text", "a Git LFS pointer, not the weights (run `git lfs pull`)"
        if low.startswith(("<!doctype html", "<html")):
            return "text", "an HTML page (a failed download?)"
        return "text", f"a text file (starts with {first!r})"
    return "other", f"unrecognised binary content (starts with {head[:8].hex(' ')})"


def _first_line(err: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    return f"{type(err).__name__}: {msg[:limit]}" if msg else type(err).__name__


def _refused_object(err: BaseException) -> str | None:
    """The global a weights_only load refused (``'__main__.Foo'``), or None if that is not the error."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return m.group(1) if m else None


def _looks_corrupt(err: BaseException) -> bool:
    if isinstance(err, (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError,
                        KeyError, ValueError, struct.error)):
        return True
    return isinstance(err, RuntimeError) and bool(re.search(
        r"PytorchStreamReader|corrupt|unexpected EOF|central directory|magic number|zip archive|"
        r"file not fully covered|failed reading|invalid header", str(err), re.I))


def _torch_load(path: Path, map_location, weights_only: bool | None, kind: str) -> Any:
    what = {"zip": "torch checkpoint", "torch-legacy": "legacy-format torch checkpoint",
            "tar": "legacy tar-format torch checkpoint"}[kind]

    def error(err: BaseException) -> CheckpointError:
        if isinstance(err, (ImportError, AttributeError)):  # a pickled class that is not importable here
            return CheckpointError(path, f"holds pickled Python objects that cannot be rebuilt here ({_first_line(err)})")
        if _looks_corrupt(err):
            return CheckpointError(path, f"truncated or corrupt {what} ({_first_line(err)})")
        return CheckpointError(path, f"torch.load failed on this {what} ({_first_line(err)})")

    def load(safe: bool) -> Any:
        # A file object, not the path: recent torch sends a path ending in .safetensors to its own reader.
        with open(path, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=safe)

    try:
        if weights_only is not None:
            return load(weights_only)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return load(True)
    except pickle.UnpicklingError as err:
        obj = _refused_object(err)
        if obj is None or weights_only is False:
            raise error(err) from err
        if weights_only:
            raise CheckpointError(path, f"holds Python objects beyond tensors (GLOBAL {obj}), refused with "
                                  "weights_only=True; pass weights_only=False only for a file you trust") from err
        warnings.warn(f"{path}: holds Python objects beyond tensors ({obj}); "
                      "unpickling it fully - only do this for files you trust", stacklevel=3)
    except Exception as err:
        raise error(err) from err
    try:
        return load(False)
    except Exception as err:
        raise error(err) from err


def _read_safetensors(path: Path, map_location) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(map_location))
    except Exception as err:
        if type(err).__name__ == "SafetensorError" or isinstance(err, (OSError, ValueError)):
            raise CheckpointError(path, f"truncated or corrupt safetensors file ({_first_line(err)})") from err
        raise


def _check_torch_zip(path: Path) -> None:
    """Cheap structural checks before torch.load: the zip's central directory and a ``data.pkl`` member."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(path, "truncated or corrupt torch checkpoint (the zip archive has no end "
                              "record: was the download or copy cut short?)")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(path, f"truncated or corrupt torch checkpoint ({_first_line(err)})") from err
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise CheckpointError(path, "not a torch checkpoint: a zip archive without data.pkl "
                              f"(holds {', '.join(repr(n) for n in names[:3]) or 'nothing'}"
                              f"{', ...' if len(names) > 3 else ''})")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    weights_only: bool | None = None) -> Any:
    """Load a ``.safetensors`` file or a torch checkpoint (``.pth``/``.pt``/``.bin``/..., zip or legacy).

    The format is told from the file's first bytes (the suffix only breaks ties), so a file that is no
    checkpoint, or one cut short, raises :class:`CheckpointError` with one line ``"<path>: <problem>"``
    (a missing file: :class:`CheckpointNotFoundError`, also a ``FileNotFoundError``).

    ``weights_only=None`` first tries the safe loader (tensors, containers, and the ``argparse``
    namespace the official training scripts store); if the file holds other Python objects it warns
    and unpickles it fully. Pass ``weights_only=True`` to refuse that (a CheckpointError naming the object).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(path, "checkpoint file not found")
    if path.is_dir():   # a model folder (videomamba.save_pretrained / the Hub layout): its weights file
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_checkpoint(path / name, map_location, weights_only)
        raise CheckpointNotFoundError(path, "a directory without model.safetensors: not a model folder "
                                      "(config.json + model.safetensors) nor a checkpoint file")
    if not path.is_file():
        raise CheckpointNotFoundError(path, "not a regular file")
    try:
        kind, desc = sniff_format(path)
    except OSError as err:
        raise CheckpointError(path, f"cannot read the file ({_first_line(err)})") from err
    if kind == "empty":
        raise CheckpointError(path, f"not a checkpoint: {desc}")
    if kind == "safetensors" or (path.suffix == ".safetensors" and kind == "other" and desc.startswith("unrec")):
        return _read_safetensors(path, map_location)
    if kind in ("zip", "torch-legacy", "tar"):
        if kind == "zip":
            _check_torch_zip(path)
        return _torch_load(path, map_location, weights_only, kind)
    if path.suffix == ".safetensors":
        raise CheckpointError(path, f"not a safetensors file: {desc}")
    raise CheckpointError(path, f"not a torch or safetensors checkpoint: {desc}")


def extract_state_dict(obj: Any, model_key: str | tuple[str, ...] | None = None,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap a training container (``{'model': sd, 'optimizer': ...}``) or accept a flat state dict.

    ``model_key`` is a key or ``'a|b'`` list tried in order (default ``model|module|state_dict``).
    Non-tensor entries of a flat dict (``epoch``, ``args``...) are dropped. Errors are
    :class:`CheckpointError` (``source`` names the file).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointTypeError(source, f"expected a dict-like checkpoint, got {type(obj).__name__}")
    keys = DEFAULT_MODEL_KEYS if model_key is None else (
        tuple(model_key.split("|")) if isinstance(model_key, str) else tuple(model_key))
    for k in keys:
        if k in obj and isinstance(obj[k], Mapping):
            obj = obj[k]
            break
    else:
        if model_key is not None and not any(torch.is_tensor(v) for v in obj.values()):
            raise CheckpointKeyError(source, f"none of the container keys {list(keys)} found; "
                                     f"top-level keys are {sorted(map(str, obj))[:20]}")
    sd = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not sd:
        raise CheckpointError(source, f"no tensors found (top-level keys: {sorted(map(str, obj))[:20]})")
    return sd


def save_checkpoint(model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
                    path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a model's weights atomically: ``.safetensors`` (default for any other suffix) or ``.pth``.

    ``metadata`` values are stored as JSON strings in the safetensors header.
    """
    path = Path(path)
    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) else model_or_state_dict
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items() if torch.is_tensor(v)}
    if path.suffix.lower() in (".pth", ".pt", ".bin"):
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))
        return path
    from safetensors.torch import save_file

    meta = {"format": "pt", "producer": "videomamba"}
    meta.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    # safetensors refuses tensors sharing storage; clone any that do.
    seen, unique = set(), {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        unique[k] = v.clone() if key is not None and key in seen else v
        if key is not None:
            seen.add(key)
    atomic_write(path, lambda tmp: save_file(unique, tmp, metadata=meta))
    return path
