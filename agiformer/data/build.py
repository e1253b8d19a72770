"""Build a corpus into ``OUT_DIR/NAME/{train,val,test}.bin`` (uint8) plus ``manifest.json``.

>>> result = build_corpus("en-wiki", "data")                  # doctest: +SKIP
>>> result.status, result.manifest["bytes"]                    # doctest: +SKIP
('built', {'train': 4562628, 'val': 242466, 'test': 234767})
>>> build_corpus("en-wiki", "data").status                     # doctest: +SKIP
'up to date'

User text goes through ``build_user_corpus("notes", ["notes/**/*.txt", "chat.jsonl"], "data")``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from agiformer.data.corpora import CORPORA, get_corpus
from agiformer.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    check_corpus_name,
    read_manifest,
    split_path,
    write_atomically,
    write_manifest,
)
from agiformer.data.splits import DEFAULT_FRACTIONS, SPLIT_RULE, assign_splits, check_fractions, document_digest
from agiformer.data.user_text import encode_document, resolve_user_files, user_documents
from agiformer.errors import AGIFormerError

SEPARATOR = b"\n\n"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    corpus_dir: Path
    manifest: dict[str, Any]
    up_to_date: bool  # True when the existing build matched and nothing was written

    @property
    def status(self) -> str:
        return "up to date" if self.up_to_date else "built"


def build_corpus(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build the named corpus ``name`` (see ``agiformer.data.corpora.CORPORA``) under ``out_dir``."""
    corpus = get_corpus(name)
    source = corpus.resolve()
    documents = (encode_document(text) for text in corpus.documents(source))
    return _build(name, out_dir, source.provenance, source.files, documents, fractions, force, progress)


def build_user_corpus(
    name: str,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    text_field: str = "text",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build a corpus from text files, directories (recursive), glob patterns or ``.jsonl`` files.

    A text file is one document, byte for byte; each JSONL line contributes its ``text_field``.
    """
    check_corpus_name(name)
    if name in CORPORA:
        raise AGIFormerError(f"corpus name '{name}' is reserved for a packaged corpus; choose another name")
    path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = resolve_user_files(path_list, skip_dir=Path(out_dir))
    provenance = {"paths": [os.fspath(path) for path in path_list], "text_field": text_field}
    documents = user_documents(files, text_field=text_field)
    return _build(name, out_dir, provenance, files, documents, fractions, force, progress)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_up_to_date(corpus_dir: Path, name: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    manifest = read_manifest(corpus_dir.parent, name)
    if manifest is None or any(manifest.get(key) != value for key, value in fingerprint.items()):
        return None
    for split in SPLITS:
        path = split_path(corpus_dir, split)
        if not path.is_file() or path.stat().st_size != manifest.get("bytes", {}).get(split):
            return None
    return manifest


def _build(
    name: str,
    out_dir: str | os.PathLike[str],
    provenance: dict[str, Any],
    files: dict[str, Path],
    documents: Iterable[bytes],
    fractions: Sequence[float],
    force: bool,
    progress: bool,
) -> BuildResult:
    checked_fractions = check_fractions(fractions)
    corpus_dir = Path(out_dir) / name
    fingerprint = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source": provenance,
        "source_files": {key: _sha256_file(path) for key, path in files.items()},
        "split": {"rule": SPLIT_RULE, "fractions": dict(zip(SPLITS, checked_fractions))},
        "separator": SEPARATOR.decode("ascii"),
    }
    if not force and (manifest := _is_up_to_date(corpus_dir, name, fingerprint)) is not None:
        _log.info("corpus %s in %s is up to date", name, corpus_dir)
        return BuildResult(corpus_dir, manifest, up_to_date=True)

    # the corpus folder is made only once the sources passed their checks: a refused build leaves nothing behind
    corpus_dir.parent.mkdir(parents=True, exist_ok=True)
    show_bar = progress and sys.stderr.isatty()
    with tempfile.TemporaryFile(dir=corpus_dir.parent) as spool:
        bar = tqdm(desc=f"reading {name}", unit=" docs", disable=not show_bar, file=sys.stderr)
        spans, stats = _spool_documents(documents, spool, bar)
        if not spans:
            raise AGIFormerError(f"corpus '{name}' has no text: every document read from {_describe(files)} is empty")
        distinct = len({digest for _, _, digest in spans})
        if distinct < len(SPLITS):
            raise AGIFormerError(f"corpus '{name}' has {distinct} distinct document(s); train, val and test need one "
                                 "each at least: give more files, or split the text into .jsonl rows")
        splits = assign_splits([digest for _, _, digest in spans], checked_fractions)
        # The sources were read without error; from here on the old build is replaced, and
        # its manifest goes first so it never describes .bin files of a different build.
        corpus_dir.mkdir(exist_ok=True)
        (corpus_dir / MANIFEST_NAME).unlink(missing_ok=True)
        counts = {split: _write_split(corpus_dir, split, spool, spans, splits) for split in SPLITS}

    if stats["invalid_utf8"]:
        warnings.warn(
            f"corpus '{name}': {stats['invalid_utf8']} of {len(spans)} documents are not valid UTF-8; "
            "their bytes were kept as they are",
            stacklevel=3,
        )
    manifest = {
        **fingerprint,
        "documents": {split: counts[split][0] for split in SPLITS},
        "bytes": {split: counts[split][1] for split in SPLITS},
        "invalid_utf8_documents": stats["invalid_utf8"],
        "empty_documents_skipped": stats["empty"],
    }
    write_manifest(corpus_dir, manifest)
    _log.info("built corpus %s in %s: %s", name, corpus_dir, manifest["bytes"])
    return BuildResult(corpus_dir, manifest, up_to_date=False)


def _describe(files: dict[str, Path]) -> str:
    keys = list(files)
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more files" if len(keys) > 3 else "")


def _spool_documents(
    documents: Iterable[bytes], spool: BinaryIO, bar: tqdm
) -> tuple[list[tuple[int, int, bytes]], dict[str, int]]:
    """Write non-empty documents back to back into ``spool``; return their (offset, length, sha256)."""
    spans: list[tuple[int, int, bytes]] = []
    stats = {"invalid_utf8": 0, "empty": 0}
    offset = 0
    with bar:
        for document in documents:
            bar.update()
            if not document:
                stats["empty"] += 1
                continue
            try:
                document.decode("utf-8")
            except UnicodeDecodeError:
                stats["invalid_utf8"] += 1
            spool.write(document)
            spans.append((offset, len(document), document_digest(document)))
            offset += len(document)
    spool.flush()
    return spans, stats


def _write_split(
    corpus_dir: Path, split: str, spool: BinaryIO, spans: list[tuple[int, int, bytes]], splits: list[str]
) -> tuple[int, int]:
    """Write the documents of ``split`` in source order, joined by SEPARATOR; return (documents, bytes)."""
    chosen = [(offset, length) for (offset, length, _), assigned in zip(spans, splits) if assigned == split]

    def write(handle: BinaryIO) -> None:
        for index, (offset, length) in enumerate(chosen):
            if index:
                handle.write(SEPARATOR)
            spool.seek(offset)
            handle.write(spool.read(length))

    write_atomically(split_path(corpus_dir, split), write)
    size = sum(length for _, length in chosen) + len(SEPARATOR) * max(len(chosen) - 1, 0)
    return len(chosen), size
