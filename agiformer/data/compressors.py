"""Bits per byte of standard compressors: the floor a byte-level model has to beat.

Two figures per compressor:

* ``bpb``: ``8 * len(compress(target)) / len(target)``, the target alone;
* ``conditional_bpb``: ``8 * (len(compress(context + target)) - len(compress(context))) / len(target)``,
  the target given the training text, which is what a trained model is compared against.

zstd and brotli are run through their command-line tools only when these are on PATH; otherwise
the entry says it was skipped and carries no number.

>>> rows = corpus_compression_baselines("data", "en-wiki")                       # doctest: +SKIP
>>> [(r["name"], round(r["conditional_bpb"], 2)) for r in rows if r["bpb"]]      # doctest: +SKIP
[('gzip -9', 3.01), ('bzip2 -9', 2.39), ('xz -9e', 2.05), ('zstd --ultra -22', 2.09)]
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np

from agiformer.data.dataset import load_split
from agiformer.errors import AGIFormerError

# Conditioning on more than this much training text makes xz -9e / zstd -22 slow (about 1 MB/s)
# for little gain: the last bytes of train are the most useful ones to a windowed compressor.
DEFAULT_CONTEXT_CAP_BYTES = 8 * 2**20

_IN_PROCESS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("gzip -9", lambda data: gzip.compress(data, compresslevel=9, mtime=0)),
    ("bzip2 -9", lambda data: bz2.compress(data, compresslevel=9)),
    ("xz -9e", lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
]
_COMMAND_LINE: list[tuple[str, list[str]]] = [
    ("zstd --ultra -22", ["zstd", "--ultra", "-22", "-c", "-q"]),
    ("brotli -q 11", ["brotli", "-c", "-q", "11", "-w", "24"]),
]


def _run_tool(command: list[str]) -> Callable[[bytes], bytes]:
    def compress(data: bytes) -> bytes:
        return subprocess.run(command, input=data, capture_output=True, check=True).stdout

    return compress


def compression_baselines(
    target: bytes | np.ndarray,
    *,
    context: bytes | np.ndarray | None = None,
    context_cap_bytes: int | None = DEFAULT_CONTEXT_CAP_BYTES,
) -> list[dict[str, Any]]:
    """One dict ``{name, bpb, conditional_bpb, note}`` per compressor for ``target``.

    ``context`` (the training split) is cut to its last ``context_cap_bytes`` bytes (None: all of it);
    the note says how much was used. ``conditional_bpb`` is None without a context.
    """
    target_bytes = bytes(target)
    if not target_bytes:
        raise AGIFormerError("cannot measure compression of empty text; pass a non-empty split")
    context_note = ""
    context_bytes = b""
    if context is not None:
        full_size = len(context)
        used = full_size if context_cap_bytes is None else min(full_size, context_cap_bytes)
        context_bytes = bytes(context[full_size - used :])
        context_note = (
            f"conditioned on all {full_size:,} bytes of the training text"
            if used == full_size
            else f"conditioned on the last {used:,} of {full_size:,} bytes of the training text"
        )

    compressors: list[tuple[str, Callable[[bytes], bytes] | None, str]] = [
        (name, compress, "") for name, compress in _IN_PROCESS
    ]
    for name, command in _COMMAND_LINE:
        found = shutil.which(command[0])
        compressors.append((name, _run_tool(command) if found else None, f"skipped: {command[0]} is not on PATH"))

    results = []
    for name, compress, skip_note in compressors:
        if compress is None:
            results.append({"name": name, "bpb": None, "conditional_bpb": None, "note": skip_note})
            continue
        try:
            alone = len(compress(target_bytes))
            conditional = (
                len(compress(context_bytes + target_bytes)) - len(compress(context_bytes)) if context is not None else None
            )
        except subprocess.CalledProcessError as error:
            message = error.stderr.decode(errors="replace").strip().splitlines()
            results.append({"name": name, "bpb": None, "conditional_bpb": None,
                             "note": f"failed: {message[-1] if message else f'exit code {error.returncode}'}"})
            continue
        results.append({
            "name": name,
            "bpb": 8 * alone / len(target_bytes),
            "conditional_bpb": None if conditional is None else 8 * conditional / len(target_bytes),
            "note": context_note,
        })
    return results


def corpus_compression_baselines(
    data_dir: str | os.PathLike[str],
    name: str,
    *,
    split: str = "test",
    context_cap_bytes: int | None = DEFAULT_CONTEXT_CAP_BYTES,
) -> list[dict[str, Any]]:
    """Compressor baselines for a split of a built corpus, conditioned on (the end of) its train split."""
    target = load_split(data_dir, name, split)
    context = load_split(data_dir, name, "train") if split != "train" else None
    return compression_baselines(target, context=context, context_cap_bytes=context_cap_bytes)
