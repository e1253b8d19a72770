"""Stitch the full-mode reports into docs/results.md: the targets summary (docs/results/targets.md,
written by hand from the figures below it), then every benchmark's report as it was written, with
its command, date, CPU and torch version, tables and plots.

    python -m benchmarks.report
"""

from __future__ import annotations

import re

from benchmarks.common import RESULTS_DIR, log, write_text

REPORTS = ["quality", "effort", "memory_kernel", "window_attention", "model_scaling", "training_profile", "generation",
           "act_halting"]


def main() -> None:
    parts = [(RESULTS_DIR / "targets.md").read_text().rstrip()]
    missing = []
    for name in REPORTS:
        path = RESULTS_DIR / f"{name}.md"
        if not path.is_file():
            missing.append(name)
            continue
        title, _, body = path.read_text().rstrip().partition("\n")
        body = re.sub(r"^(#{2,5}) ", r"#\1 ", body, flags=re.M)              # its sections go one level down
        body = re.sub(r"\]\((?!http)([^)]+\.png)\)", r"](results/\1)", body)  # its plots live in docs/results/
        parts.append(f"## {title.lstrip('# ')}\n\nFrom `docs/results/{name}.md`.\n{body}")
    if missing:
        parts.append("Not measured in full mode yet: " + ", ".join(f"`{m}`" for m in missing) + ".")
    write_text(RESULTS_DIR.parent / "results.md", "\n\n".join(parts) + "\n")
    log(f"wrote {RESULTS_DIR.parent / 'results.md'}" + (f" (missing: {', '.join(missing)})" if missing else ""))


if __name__ == "__main__":
    main()
