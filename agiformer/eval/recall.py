"""Needle in a haystack on held-out text: can the model recall a key–value pair placed far back?

Each sample is: filler, a needle " The secret number of KEY is VALUE. ", more filler, then the
question " What is the secret number of KEY? The secret number of KEY is " and the answer VALUE.
The needle distance (bytes from the end of the needle to the answer) is swept from inside the
attention window to many windows away, where only the memory can carry it. A sample counts as
recalled when greedy decoding reproduces every byte of VALUE; computed with one teacher-forced
forward (greedy decoding matches the answer exactly iff every answer byte is the argmax).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from agiformer.data.facts import RECALL_TEMPLATE, SYLLABLES, fact_key, fact_text
from agiformer.errors import AGIFormerError


def needle_sample(filler: np.ndarray, distance: int, rng: random.Random, *, lead: int = 64) -> tuple[bytes, bytes]:
    """(context ending right before the answer, answer) with the needle `distance` bytes before the answer."""
    key = fact_key([rng.randrange(len(SYLLABLES)) for _ in range(3)])
    value = f"{rng.randrange(10000, 100000)}"
    needle, question = fact_text(RECALL_TEMPLATE, key, value)
    gap = max(0, distance - len(question))
    need = lead + gap
    if len(filler) < need + 1:
        raise AGIFormerError(f"the filler text has {len(filler)} bytes, fewer than the {need} a needle distance of "
                             f"{distance} needs; use a larger split or smaller distances")
    start = rng.randrange(0, len(filler) - need)
    text = bytes(filler[start: start + need])
    return text[:lead] + needle + text[lead:] + question, value.encode()


@torch.no_grad()
def recall_accuracy(model, filler: np.ndarray, distances: list[int], *, samples: int = 20, seed: int = 0,
                    plasticity: float | None = None, effort: float | None = None) -> list[dict]:
    """Exact-match and per-byte accuracy of the answer at each needle distance.

    Samples have different lengths, so each gets its own forward: no padding that could leak in.
    """
    device = next(model.parameters()).device
    model.eval()
    results = []
    for distance in distances:
        rng = random.Random(seed * 1_000_003 + distance)
        exact, correct_bytes, total_bytes = 0, 0, 0
        for _ in range(samples):
            context, answer = needle_sample(filler, distance, rng)
            x = torch.tensor([list(context + answer)], device=device)
            predicted = model(x, plasticity=plasticity, effort=effort)[0, len(context):].argmax(-1)
            hits = (predicted == x[0, len(context):]).tolist()
            exact += all(hits)
            correct_bytes += sum(hits)
            total_bytes += len(hits)
        results.append({"distance": distance, "exact_match": exact / samples,
                        "byte_accuracy": correct_bytes / total_bytes, "samples": samples})
    return results


def default_distances(span_bytes: int) -> list[int]:
    """From half the attention span (inside the window) to 8 spans away."""
    return [span_bytes // 2, span_bytes, 2 * span_bytes, 4 * span_bytes, 8 * span_bytes]


def plot_recall(reports: dict[str, list[dict]], span_bytes: int, png_path: Path) -> None:
    """Accuracy against needle distance, one pair of lines (exact, per byte) per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for label, rows in reports.items():
        ax.plot([r["distance"] for r in rows], [100 * r["exact_match"] for r in rows], "o-", label=f"{label} exact")
        ax.plot([r["distance"] for r in rows], [100 * r["byte_accuracy"] for r in rows], "x--", alpha=0.6,
                label=f"{label} per byte")
    ax.axvline(span_bytes, color="gray", linestyle=":", label=f"attention span ({span_bytes} B)")
    ax.axhline(10, color="lightgray", linestyle="-", linewidth=0.8, label="chance per digit (10%)")
    ax.set_xscale("log")
    distances = sorted({r["distance"] for rows in reports.values() for r in rows})
    ax.set_xticks(distances, [f"{d:,}" for d in distances])
    ax.minorticks_off()
    ax.set_xlabel("needle distance (bytes before the answer)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title("recall of a key–value needle in held-out text")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)


def write_report(reports: dict[str, list[dict]], span_bytes: int, out_prefix: Path) -> None:
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    out_prefix.with_suffix(".json").write_text(json.dumps({"attention_span_bytes": span_bytes, "results": reports},
                                                          indent=1))
    plot_recall(reports, span_bytes, out_prefix.with_suffix(".png"))
