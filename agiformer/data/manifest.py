"""On-disk layout of a built corpus: ``DATA_DIR/NAME/{train,val,test}.bin`` plus ``manifest.json``.

The manifest is written last, so a corpus directory without one is not built (or a build was
interrupted) and is never read.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

from agiformer.errors import AGIFormerError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
# Corpus names become directory names, so keep them to a safe, portable alphabet.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_corpus_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise AGIFormerError(
            f"invalid corpus name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def split_path(corpus_dir: Path, split: str) -> Path:
    return corpus_dir / f"{split}.bin"


def read_manifest(data_dir: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """The manifest of corpus ``name`` under ``data_dir``, or None when it is not built."""
    check_corpus_name(name)
    path = Path(data_dir) / name / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError:
        raise AGIFormerError(
            f"{path} is not valid JSON: rebuild the corpus with `agiformer data build {name} --force`"
        ) from None
    if not isinstance(manifest, dict):
        raise AGIFormerError(f"{path} is not a corpus manifest: rebuild with `agiformer data build {name} --force`")
    return manifest


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` through a temporary file in the same directory, so readers never see half a file."""
    # A random sibling name opened exclusively (not mkstemp, whose 0600 mode ignores the umask).
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with temp_path.open("xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def write_manifest(corpus_dir: Path, manifest: dict[str, Any]) -> None:
    payload = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomically(corpus_dir / MANIFEST_NAME, lambda handle: handle.write(payload))
