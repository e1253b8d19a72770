"""PNG curves of a run: train and validation bits per byte against bytes seen, stages marked."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    seen = [r["bytes_seen"] / 1e6 for r in train]
    bpb = [r["train_bpb"] for r in train]
    ax.plot(seen, bpb, color="tab:blue", alpha=0.25, linewidth=0.8)
    span = max(1, len(bpb) // 50)
    smoothed = [sum(bpb[max(0, i - span + 1): i + 1]) / len(bpb[max(0, i - span + 1): i + 1]) for i in range(len(bpb))]
    ax.plot(seen, smoothed, color="tab:blue", label=f"train (mean of {span} steps)")
    if val:
        ax.plot([r["bytes_seen"] / 1e6 for r in val], [r["val_bpb"] for r in val], "o-", color="tab:red",
                label=f"validation ({val[-1]['corpus']}, whole split)")
    for previous, row in zip(train, train[1:]):
        if row["stage"] != previous["stage"]:
            ax.axvline(row["bytes_seen"] / 1e6, color="gray", linestyle="--", linewidth=1)
    stage_starts = [train[0]] + [r for p, r in zip(train, train[1:]) if r["stage"] != p["stage"]]
    for row in stage_starts:
        ax.annotate(f"{row['stage']} (α={row['plasticity']})", (row["bytes_seen"] / 1e6, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(4, -14), textcoords="offset points", fontsize=8,
                    color="dimgray")
    ax.set_xlabel("bytes seen (millions)")
    ax.set_ylabel("bits per byte")
    ax.set_title(title)
    low = min(min(smoothed), min((r["val_bpb"] for r in val), default=9))
    ax.set_ylim(max(0.0, low - 0.3), min(8.5, max(smoothed[len(smoothed) // 20:] or smoothed) + 0.5))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
