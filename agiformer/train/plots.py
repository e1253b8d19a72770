"""PNG curves of a run: a train and a validation metric against a running count (bytes or tokens
seen), stages marked. The defaults draw the byte models' bits per byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agiformer.errors import AGIFormerError


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl. A partial last line (a run killed while appending) is dropped with a
    warning; a damaged line before it is an error naming the line."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the write was cut short
                print(f"agiformer: warning: {path}: dropped a partial last line (a write was cut short)",
                      file=sys.stderr)
                break
            raise AGIFormerError(f"{path}, line {number}: not a JSON row; the metrics file is damaged") from None
    return rows


def plot_curves(metrics_path: Path, png_path: Path, *, title: str, x: str = "bytes_seen",
                x_label: str = "bytes seen (millions)", x_scale: float = 1e-6, train: str = "train_bpb",
                val: str = "val_bpb", val_label: str = "validation", y_label: str = "bits per byte",
                y_max: float | None = 8.5) -> None:
    """`x`, `train` and `val` name fields of the metrics rows; x is multiplied by `x_scale`; the y axis
    is cut at `y_max` (None: no cap) so a first high loss does not flatten the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    if not train_rows:
        return
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    seen = [r[x] * x_scale for r in train_rows]
    values = [r[train] for r in train_rows]
    ax.plot(seen, values, color="tab:blue", alpha=0.25, linewidth=0.8)
    span = max(1, len(values) // 50)
    smoothed = [sum(values[max(0, i - span + 1): i + 1]) / len(values[max(0, i - span + 1): i + 1])
                for i in range(len(values))]
    ax.plot(seen, smoothed, color="tab:blue", label=f"train (mean of {span} steps)")
    if val_rows:
        ax.plot([r[x] * x_scale for r in val_rows], [r[val] for r in val_rows], "o-", color="tab:red", label=val_label)
    for previous, row in zip(train_rows, train_rows[1:]):
        if row["stage"] != previous["stage"]:
            ax.axvline(row[x] * x_scale, color="gray", linestyle="--", linewidth=1)
    stage_starts = [train_rows[0]] + [r for p, r in zip(train_rows, train_rows[1:]) if r["stage"] != p["stage"]]
    for n, row in enumerate(stage_starts):  # labels step down in turn, so short stages do not overprint
        label = row["stage"] + (f" (α={row['plasticity']})" if "plasticity" in row else "")
        ax.annotate(label, (row[x] * x_scale, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -14 - 11 * (n % 3)),
                    textcoords="offset points", fontsize=8, color="dimgray")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    low = min(min(smoothed), min((r[val] for r in val_rows), default=smoothed[0]))
    high = max(smoothed[len(smoothed) // 20:] or smoothed) + 0.5
    ax.set_ylim(max(0.0, low - 0.3), high if y_max is None else min(y_max, high))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
