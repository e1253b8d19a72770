"""Atomic writes and validated reads of JSON and safetensors files. No pickle anywhere.

Weights carry a sha256 of their tensor contents in the safetensors metadata, so a file whose
bytes were damaged after writing is refused rather than loaded as garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from agiformer.errors import AGIFormerError

CONTENT_HASH_KEY = "agiformer_sha256"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise AGIFormerError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AGIFormerError(f"{path}: not valid JSON ({_one_line(error)})") from None


def _content_hash(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata={CONTENT_HASH_KEY: _content_hash(tensors)}))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AGIFormerError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:  # safetensors raises its own error types for every kind of damage
        raise AGIFormerError(f"{path}: unreadable safetensors file, truncated or corrupt ({_one_line(error)})") from None
    expected = metadata.get(CONTENT_HASH_KEY)
    if expected is not None and expected != _content_hash(tensors):
        raise AGIFormerError(f"{path}: tensor contents do not match their checksum; the file is corrupt")
    return tensors


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
