"""Samples on disk (JSONL, written atomically) and their summary."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.mag.data.format import SAMPLE_KEYS


def _dumps(sample: Mapping) -> str:
    return json.dumps(sample, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(samples: Iterable[Mapping], path: str | Path) -> None:
    """One sample per line, written atomically (a reader never sees half a file)."""
    from agiformer.serialization import atomic_write_text

    atomic_write_text(path, "".join(_dumps(sample) + "\n" for sample in samples))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise AGIFormerError(f"{path}: file not found")
    samples = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                raise AGIFormerError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(sample, dict) or any(key not in sample for key in SAMPLE_KEYS):
                missing = [key for key in SAMPLE_KEYS if not isinstance(sample, dict) or key not in sample]
                raise AGIFormerError(f"{path}:{number}: not a MAG sample (missing {', '.join(missing)})")
            samples.append(sample)
    return samples


def summary(samples: Sequence[Mapping], bins: int = 5) -> dict:
    """Counts, prompt-length statistics per context length and a histogram of needle depths."""
    by_length: dict[int, list[int]] = {}
    for s in samples:
        by_length.setdefault(s["metadata"]["context_tokens"], []).append(s["prompt_tokens"])
    histogram = [0] * bins
    for s in samples:
        histogram[min(bins - 1, int(s["metadata"]["depth"] * bins))] += 1
    return {
        "samples": len(samples),
        "tasks": dict(sorted(Counter(s["task"] for s in samples).items())),
        "hops": dict(sorted(Counter(s["metadata"]["hops"] for s in samples).items())),
        "tokenizers": sorted({s["metadata"]["tokenizer"] for s in samples}),
        "windows": sorted({s["metadata"]["window"] for s in samples}),
        "lengths": {length: {"samples": len(v), "min": min(v), "mean": round(sum(v) / len(v), 1), "max": max(v)}
                    for length, v in sorted(by_length.items())},
        "depth_histogram": {f"[{i / bins:.1f}, {(i + 1) / bins:.1f}{']' if i == bins - 1 else ')'}": n
                            for i, n in enumerate(histogram)},
        "answer_tokens_mean": round(sum(s["metadata"]["answer_tokens"] for s in samples) / max(1, len(samples)), 2),
    }


def format_summary(stats: Mapping) -> str:
    lines = [f"{stats['samples']} samples: " + ", ".join(f"{t} {n}" for t, n in stats["tasks"].items())
             + f"; hops {', '.join(f'{h}×{n}' for h, n in stats['hops'].items())}; tokenizer "
             + ", ".join(stats["tokenizers"]) + f"; window {', '.join(map(str, stats['windows']))} tokens; "
             + f"answers {stats['answer_tokens_mean']} tokens on average"]
    for length, row in stats["lengths"].items():
        lines.append(f"  context {length:>7,}: {row['samples']:>5} samples, prompt tokens min {row['min']:,} / "
                     f"mean {row['mean']:,} / max {row['max']:,}")
    lines.append("  needle depth: " + "  ".join(f"{k} {n}" for k, n in stats["depth_histogram"].items()))
    return "\n".join(lines)
