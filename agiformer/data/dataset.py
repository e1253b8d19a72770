"""Reading built corpora and drawing byte windows from them.

Training draws random windows from a ``torch.Generator`` only, so saving and restoring
``generator.get_state()`` resumes a run on exactly the same batches:

>>> data = load_split("data", "en-wiki", "train")                      # doctest: +SKIP
>>> generator = torch.Generator().manual_seed(0)
>>> batch = random_windows(data, 8, 1025, generator)                   # doctest: +SKIP
>>> batch.shape, batch.dtype                                           # doctest: +SKIP
(torch.Size([8, 1025]), torch.int64)

Evaluation walks a split with ``disjoint_windows`` so every byte is scored exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from agiformer.data.manifest import FORMAT_VERSION, MANIFEST_NAME, SPLITS, read_manifest, split_path
from agiformer.errors import AGIFormerError


def list_corpora(data_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the corpora built under ``data_dir`` (those with a manifest), sorted."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if (entry / MANIFEST_NAME).is_file())


def load_split(data_dir: str | os.PathLike[str], name: str, split: str) -> np.memmap:
    """The bytes of one split as a read-only uint8 memmap (documents joined by the manifest's separator)."""
    if split not in SPLITS:
        raise AGIFormerError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    manifest = read_manifest(data_dir, name)
    if manifest is None:
        raise AGIFormerError(f"corpus '{name}' is not built in {data_dir}: run `agiformer data build {name}`")
    rebuild = f"rebuild it with `agiformer data build {name} --force`"
    if manifest.get("format_version") != FORMAT_VERSION:
        raise AGIFormerError(
            f"corpus '{name}' in {data_dir} has format version {manifest.get('format_version')}, "
            f"this agiformer reads {FORMAT_VERSION}: {rebuild}"
        )
    path = split_path(Path(data_dir) / name, split)
    expected = manifest["bytes"][split]
    if not path.is_file() or path.stat().st_size != expected:
        raise AGIFormerError(f"{path} is missing or does not match its manifest: {rebuild}")
    if expected == 0:
        total = sum(manifest["documents"].values())
        raise AGIFormerError(
            f"split '{split}' of corpus '{name}' is empty ({total} documents in all); add text so every split gets documents"
        )
    return np.memmap(path, dtype=np.uint8, mode="r")


def _check_window(data: np.ndarray, seq_len: int) -> int:
    if seq_len < 1:
        raise AGIFormerError(f"sequence length must be at least 1, got {seq_len}")
    if len(data) < seq_len:
        raise AGIFormerError(
            f"the data has {len(data)} bytes, fewer than one window of {seq_len}; use a shorter sequence length or more text"
        )
    return len(data) - seq_len + 1  # number of possible window starts


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise AGIFormerError(f"batch size must be at least 1, got {batch_size}")


def _gather(data: np.ndarray, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
    rows = np.stack([data[start : start + seq_len] for start in starts.tolist()])
    return torch.from_numpy(rows.astype(np.int64))


def random_windows(data: np.ndarray, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """A LongTensor (batch_size, seq_len) of windows at uniform random offsets of ``data``.

    For next-byte training pass ``seq_len = context + 1`` and shift inside the batch.
    """
    _check_batch_size(batch_size)
    starts = torch.randint(0, _check_window(data, seq_len), (batch_size,), generator=generator)
    return _gather(data, starts, seq_len)


def mixture_windows(
    datasets: Sequence[np.ndarray],
    weights: Sequence[float],
    batch_size: int,
    seq_len: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Like ``random_windows``, but each row first picks a dataset with probability proportional to its weight.

    >>> mix = mixture_windows([dictionary, stories], [0.3, 0.7], 8, 1025, generator)   # doctest: +SKIP
    """
    _check_batch_size(batch_size)
    if len(datasets) != len(weights) or not datasets:
        raise AGIFormerError(f"a mixture needs one weight per dataset, got {len(datasets)} datasets and {len(weights)} weights")
    probabilities = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    if not torch.isfinite(probabilities).all() or (probabilities < 0).any() or probabilities.sum() <= 0:
        raise AGIFormerError(f"mixture weights must be non-negative with a positive sum, got {list(weights)}")
    # Checked up front so a too-short dataset fails on the first batch, not when first drawn.
    start_counts = [_check_window(data, seq_len) if p > 0 else 0 for data, p in zip(datasets, probabilities.tolist())]
    choice = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)
    batch = torch.empty(batch_size, seq_len, dtype=torch.int64)
    for index, data in enumerate(datasets):
        rows = (choice == index).nonzero().flatten()
        if len(rows):
            starts = torch.randint(0, start_counts[index], (len(rows),), generator=generator)
            batch[rows] = _gather(data, starts, seq_len)
    return batch


def disjoint_windows(data: np.ndarray, seq_len: int) -> Iterator[torch.Tensor]:
    """Consecutive non-overlapping 1-D LongTensor windows covering ``data`` once; the last may be shorter."""
    if seq_len < 1:
        raise AGIFormerError(f"sequence length must be at least 1, got {seq_len}")
    for start in range(0, len(data), seq_len):
        yield torch.from_numpy(np.asarray(data[start : start + seq_len], dtype=np.int64))
