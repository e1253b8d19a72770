"""The user's own text: files, directories, glob patterns and JSONL, as byte documents.

A text file is one document, kept byte for byte; each line of a ``.jsonl`` file is one JSON
object whose text field is one document.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from agiformer.errors import AGIFormerError

BINARY_PROBE_BYTES = 1024
_GLOB_CHARACTERS = frozenset("*?[")


def _inside(path: Path, directory: Path | None) -> bool:
    return directory is not None and path.resolve().is_relative_to(directory)


def _directory_files(directory: Path, skip_dir: Path | None) -> list[Path]:
    """Every file below ``directory`` in a stable order; hidden entries (.git, .DS_Store) are skipped."""
    found: list[Path] = []
    for parent, subdirectories, names in os.walk(directory):
        subdirectories[:] = sorted(
            d for d in subdirectories if not d.startswith(".") and not _inside(Path(parent) / d, skip_dir)
        )
        found.extend(Path(parent) / name for name in sorted(names) if not name.startswith("."))
    return found


def _expand(path_or_pattern: str | os.PathLike[str], skip_dir: Path | None) -> list[Path]:
    text = os.fspath(path_or_pattern)
    path = Path(text).expanduser()
    if path.is_dir():
        files = _directory_files(path, skip_dir)
        if not files:
            raise AGIFormerError(f"directory {text} contains no files (hidden files are skipped); point at your text files")
        return files
    if path.is_file():
        return [path]
    if _GLOB_CHARACTERS & set(text):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
        files = [
            file
            for match in matches
            if not _inside(match, skip_dir)
            for file in (_directory_files(match, skip_dir) if match.is_dir() else [match])
        ]
        if not files:
            raise AGIFormerError(f"pattern {text} matched no files; check the pattern (quote it so the shell leaves it alone)")
        return files
    if path.exists():
        raise AGIFormerError(f"{text} is neither a file nor a directory; pass text files, directories or glob patterns")
    raise AGIFormerError(f"{text} does not exist; check the path")


def resolve_user_files(paths: Sequence[str | os.PathLike[str]], *, skip_dir: Path | None = None) -> dict[str, Path]:
    """Absolute path (the manifest key) -> file, in the order given, each file once.

    Directories and patterns never pick up files inside ``skip_dir`` (the build's output
    directory, so that building ``.`` into ``./data`` does not swallow earlier builds).
    Raises AGIFormerError for a missing path, an empty pattern or directory, and binary files.
    """
    if not paths:
        raise AGIFormerError("no input paths given; pass text files, directories, glob patterns or .jsonl files")
    files: dict[str, Path] = {}
    for item in paths:
        for path in _expand(item, skip_dir.resolve() if skip_dir is not None else None):
            files.setdefault(str(path.resolve()), path)
    for key, path in files.items():
        with path.open("rb") as handle:
            if b"\0" in handle.read(BINARY_PROBE_BYTES):
                raise AGIFormerError(
                    f"{key} looks binary (NUL byte in its first {BINARY_PROBE_BYTES} bytes); "
                    "pass only text files or .jsonl files"
                )
    return files


def is_jsonl(path: Path) -> bool:
    return path.suffix.lower() == ".jsonl"


def _jsonl_documents(path: Path, text_field: str) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            # surrogateescape: invalid UTF-8 inside a JSON string survives as the original bytes.
            line = raw_line.decode("utf-8", "surrogateescape")
            if not line.strip():
                continue
            try:
                record = json.loads(line, strict=False)
            except json.JSONDecodeError as error:
                raise AGIFormerError(
                    f"{path}:{number}: not valid JSON ({error.msg}); each line of a .jsonl file must be one JSON object"
                ) from None
            if not isinstance(record, dict) or text_field not in record:
                keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
                raise AGIFormerError(
                    f"{path}:{number}: no '{text_field}' field (found: {keys}); set text_field to the field that holds the text"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise AGIFormerError(
                    f"{path}:{number}: field '{text_field}' is {type(text).__name__}, not a string; it must hold the text"
                )
            yield encode_document(text)


def encode_document(text: str) -> bytes:
    """UTF-8 bytes of ``text``, restoring raw bytes that were decoded with surrogateescape."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A JSON escape such as "\ud800" is a lone surrogate that was never a byte: keep it as
        # its (invalid) 3-byte encoding rather than dropping text.
        return text.encode("utf-8", "surrogatepass")


def user_documents(files: dict[str, Path], *, text_field: str) -> Iterator[bytes]:
    for path in files.values():
        if is_jsonl(path):
            yield from _jsonl_documents(path, text_field)
        else:
            yield path.read_bytes()
