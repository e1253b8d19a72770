"""Every relative link in the README and the docs resolves: to an existing file or directory, and for
`file.md#anchor` (or `#anchor`) links, to a heading of that file under GitHub's anchor rules.
External links (http, https, mailto) are not checked. Links inside code (fenced blocks and `spans`)
are text, not links, and are skipped."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

# docs/results/targets.md is not read on its own: benchmarks/report.py stitches it into docs/results.md,
# so its links are written from docs/.
LINK_BASE = {"docs/results/targets.md": "docs"}

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, …


def markdown_files() -> list[Path]:
    """The README and the other top-level pages, benchmarks/ and experiments/ READMEs and everything under docs/."""
    files = sorted(ROOT.glob("*.md")) + sorted((ROOT / "benchmarks").glob("*.md")) + \
        sorted((ROOT / "experiments").glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    return [path for path in files if path.is_file()]


def prose_lines(text: str, *, blank_code: bool = True):
    """(line number, line) outside fenced code blocks, inline code spans blanked unless told not to."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, CODE_SPAN.sub("", line) if blank_code else line


def links(text: str):
    """(line number, target) of every inline, image and reference-style link outside code."""
    for number, line in prose_lines(text):
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        reference = REFERENCE_LINK.match(line)
        if reference:
            yield number, reference.group(1)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped (letters, digits, `_`, `-` and spaces
    kept), lowercase, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading counts by its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, repeats numbered as GitHub does (`name`, `name-1`, `name-2`, …)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text, blank_code=False):
        match = HEADING.match(line)
        if match:
            slug = anchor(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(text: str, base: Path, *, own_anchors: set[str] | None = None) -> list[str]:
    """One line per link in `text` (a markdown page whose relative links start at directory `base`)
    that does not resolve: 'line N: TARGET (why)'."""
    problems = []
    for number, target in links(text):
        if not target or EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        path_part = unquote(path_part.split("?", 1)[0])
        if path_part:
            resolved = (base / path_part).resolve()
            if not resolved.exists():
                problems.append(f"line {number}: {target} (no such file)")
                continue
        else:
            resolved = None
        if not fragment:
            continue
        if resolved is None:
            headings = own_anchors if own_anchors is not None else anchors(text)
        elif resolved.suffix == ".md" and resolved.is_file():
            headings = anchors(resolved.read_text(encoding="utf-8"))
        else:
            continue  # anchors into other files (line numbers in code, …) are not checked
        if unquote(fragment).lower() not in headings:
            problems.append(f"line {number}: {target} (no heading #{fragment})")
    return problems


def test_every_relative_link_in_the_docs_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and len(files) > 5
    problems = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        base = ROOT / LINK_BASE.get(relative, path.parent.relative_to(ROOT).as_posix())
        problems += [f"{relative} {problem}" for problem in broken_links(path.read_text(encoding="utf-8"), base)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_checker_reports_broken_links(tmp_path):
    """Negative control: the same checker on a page with one good and several broken links."""
    (tmp_path / "there.md").write_text("# A page\n\n## Its second section\n")
    (tmp_path / "sub").mkdir()
    page = "\n".join([
        "# Title",
        "[good](there.md), [good anchor](there.md#its-second-section), [own](#title), [dir](sub/)",
        "[external](https://example.com/missing), `[in code](missing-in-span.md)`",
        "```",
        "[in a fence](missing-in-fence.md)",
        "```",
        "[missing file](nowhere.md) and ![missing image](plots/nothing.png)",
        "[missing heading](there.md#no-such-section) and [missing own](#nothing-here)",
        "[ref]: also-missing.md",
    ])
    problems = broken_links(page, tmp_path)
    assert problems == [
        "line 7: nowhere.md (no such file)",
        "line 7: plots/nothing.png (no such file)",
        "line 8: there.md#no-such-section (no heading #no-such-section)",
        "line 8: #nothing-here (no heading #nothing-here)",
        "line 9: also-missing.md (no such file)",
    ]


def test_anchor_follows_github_rules():
    assert anchor("Two commands") == "two-commands"
    assert anchor("Memory as a Gate (MAG) on a frozen pretrained LM") == "memory-as-a-gate-mag-on-a-frozen-pretrained-lm"
    assert anchor("Recipes (`runs/`)") == "recipes-runs"
    assert anchor("ACT halting: compute saved by early halts") == "act-halting-compute-saved-by-early-halts"
    assert anchors("# Notes\n## Notes\n## Notes\n") == {"notes", "notes-1", "notes-2"}
