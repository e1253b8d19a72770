"""How a patching cuts a corpus: the entropy threshold that gives a target mean patch length, and the
patch-length histogram of any mode."""

from __future__ import annotations

import numpy as np
import torch

from agiformer.errors import AGIFormerError
from agiformer.ops.patching import cap_patch_length, patch_layout, threshold_ends, word_ends

ROW_BYTES = 4096  # the sample is scored in rows of this length (the entropy model reads ≤ a few dozen bytes back)


def sample_rows(data: np.ndarray, sample_bytes: int) -> torch.Tensor:
    """The first `sample_bytes` bytes of a split (at most all of it) as rows of ROW_BYTES."""
    rows = min(len(data), sample_bytes) // ROW_BYTES
    if rows < 1:
        raise AGIFormerError(f"the split has {len(data):,} bytes; calibration needs at least {ROW_BYTES:,}")
    return torch.from_numpy(np.array(data[:rows * ROW_BYTES], dtype=np.int64)).view(rows, ROW_BYTES)


@torch.no_grad()
def entropies(entropy_model, rows: torch.Tensor, batch_rows: int = 16) -> torch.Tensor:
    """(R, L + 1) bits, as an entropy patcher reads them: [:, t] is the entropy of byte t given those before."""
    with torch.autocast(rows.device.type, enabled=False):  # float32, as the patcher runs it
        return torch.cat([entropy_model.entropies(rows[i:i + batch_rows]) for i in range(0, len(rows), batch_rows)])


def mean_patch_bytes(ends: torch.Tensor) -> float:
    return ends.numel() / max(1, int(ends.sum()))


def entropy_ends(entropy: torch.Tensor, threshold: float, rule: str, max_bytes: int) -> torch.Tensor:
    return cap_patch_length(threshold_ends(entropy[:, 1:], entropy[:, :-1], threshold, rule), max_bytes)


def calibrate_threshold(entropy: torch.Tensor, *, mean_bytes: float, rule: str, max_bytes: int) -> tuple[float, float]:
    """The threshold whose patches average `mean_bytes` bytes on these entropies, and the mean it gives.

    The mean patch length grows with the threshold, so a bisection finds it; a target the cap
    (max_bytes) or the rule cannot reach is a one-line error naming the range that is reachable.
    """
    rises = entropy[:, 1:] - entropy[:, :-1]
    scores = entropy[:, 1:] if rule == "global" else rises
    low, high = float(scores.min()) - 1, float(scores.max()) + 1
    shortest = mean_patch_bytes(entropy_ends(entropy, low, rule, max_bytes))
    longest = mean_patch_bytes(entropy_ends(entropy, high, rule, max_bytes))
    if not shortest <= mean_bytes <= longest:
        raise AGIFormerError(f"a mean of {mean_bytes} bytes per patch is out of reach with the {rule} rule and patches "
                             f"of at most {max_bytes} bytes: thresholds give {shortest:.2f} to {longest:.2f}")
    for _ in range(50):
        middle = (low + high) / 2
        if mean_patch_bytes(entropy_ends(entropy, middle, rule, max_bytes)) < mean_bytes:
            low = middle
        else:
            high = middle
    return high, mean_patch_bytes(entropy_ends(entropy, high, rule, max_bytes))


def length_histogram(ends: torch.Tensor, max_bytes: int) -> list[int]:
    """Count of patches of each length 1 … max_bytes (a row's unfinished last patch left out)."""
    layout = patch_layout(ends)
    finished = layout.lengths[torch.arange(layout.lengths.shape[1]) < layout.counts.unsqueeze(1) - 1]
    return torch.bincount(finished, minlength=max_bytes + 1)[1:].tolist()


def space_ends(rows: torch.Tensor, max_bytes: int) -> torch.Tensor:
    return cap_patch_length(word_ends(rows), max_bytes)
