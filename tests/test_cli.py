"""The command line as a user meets it: every mistake is one line on stderr, exit code 2, no traceback."""

import json
import random
import subprocess
import sys

import pytest

from agiformer import AGIFormer, AGIFormerConfig
from agiformer.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt") / "model"
    AGIFormer(AGIFormerConfig.preset("tiny")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, checkpoint):
    root = tmp_path_factory.mktemp("bad")
    (root / "binary.bin").write_bytes(b"\x00\x01\x02" * 100)
    (root / "empty.txt").write_text("")
    (root / "one.txt").write_text("a single document: val and test would be empty")
    (root / "huge-prompt.txt").write_bytes(b"a" * 1_000_001)
    (root / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (root / "nofield.jsonl").write_text('{"body": "x"}\n')
    (root / "bad.toml").write_text("name = [unclosed")
    (root / "short.toml").write_text('name="s"\nsteps=1\nseq_len=8\n[model]\npreset="tiny"\n'
                                     '[[stages]]\nname="a"\ncorpora={toy=1.0}\n')
    (root / "unknown-corpus.toml").write_text('name="u"\nsteps=1\nseq_len=64\n[model]\npreset="tiny"\n'
                                              '[[stages]]\nname="a"\ncorpora={"no-such-corpus"=1.0}\n')
    truncated = root / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    (truncated / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:500])
    wrong = root / "wrong-config"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({**AGIFormerConfig.preset("tiny").to_dict(), "n_layers": 5}))
    (wrong / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    garbage = root / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{]")
    (garbage / "model.safetensors").write_bytes(b"garbage")
    (root / "run").mkdir()  # a directory with no checkpoint in it
    return root


def bad_invocations(root, checkpoint, toy_data):
    d = ["--data-dir", str(toy_data)]
    return [
        [],
        ["frobnicate"],
        ["train"],
        ["train", str(root / "missing.toml")],
        ["train", str(root / "bad.toml")],
        ["train", str(root / "short.toml"), *d],
        ["train", str(root / "unknown-corpus.toml"), *d],
        ["train", str(root / "short.toml"), "--steps", "0"],
        ["eval", str(root / "nope"), "--corpus", "toy", *d],
        ["eval", str(checkpoint), "--corpus", "no-such-corpus", *d],
        ["eval", str(checkpoint)],
        ["eval", str(checkpoint), "--corpus", "toy", "--split", "dev", *d],
        ["eval", str(root / "truncated"), "--corpus", "toy", *d],
        ["eval", str(root / "wrong-config"), "--corpus", "toy", *d],
        ["eval", str(root / "garbage"), "--corpus", "toy", *d],
        ["eval", str(root / "run"), "--corpus", "toy", *d],
        ["eval", str(checkpoint), "--corpus", "toy", "--seq-len", "-5", *d],
        ["generate", str(checkpoint)],
        ["generate", str(checkpoint), "--prompt", "a", "--prompt-file", "x"],
        ["generate", str(checkpoint), "--prompt-file", str(root / "missing.bin")],
        ["generate", str(checkpoint), "--prompt", "hi", "--temperature", "-1"],
        ["generate", str(checkpoint), "--prompt", "hi", "--top-p", "1.5"],
        ["generate", str(checkpoint), "--prompt", "hi", "--effort", "2"],
        ["generate", str(checkpoint), "--prompt", "hi", "--plasticity", "0"],
        ["generate", str(checkpoint), "--prompt", "hi", "--max-bytes", "abc"],
        ["generate", str(root / "garbage"), "--prompt", "hi"],
        ["data", "build", "no-such-corpus", *d],
        ["data", "build", "--name", "x", *d],
        ["data", "build", "--name", "x", str(root / "missing-dir"), *d],
        ["data", "build", "--name", "x", str(root / "binary.bin"), *d],
        ["data", "build", "--name", "x", str(root / "empty.txt"), *d],
        ["data", "build", "--name", "x", str(root / "one.txt"), *d],
        ["data", "build", "--name", "x", str(root / "bad.jsonl"), *d],
        ["data", "build", "--name", "x", str(root / "nofield.jsonl"), *d],
        ["data", "baselines", "no-such-corpus", *d],
        ["recall", str(checkpoint), "--corpus", "no-such-corpus", *d],
        ["recall", str(checkpoint), "--corpus", "toy", "--distances", "100000000", *d],
        ["inspect", str(checkpoint)],
        ["inspect", str(root / "nope"), "--prompt", "hi"],
        ["inspect", str(checkpoint), "--prompt", ""],
        ["generate", str(checkpoint), "--prompt-file", str(root / "huge-prompt.txt")],
        ["generate", str(checkpoint), "--prompt", "hi", "--temperature", "nan"],
        ["generate", str(checkpoint), "--prompt", "hi", "--temperature", "inf"],
        ["generate", str(checkpoint), "--prompt", "hi", "--top-p", "0"],
        ["generate", str(checkpoint), "--prompt", "hi", "--seed", str(2 ** 64)],
        ["generate", str(checkpoint), "--prompt", "hi", "--seed", "one"],
        ["generate", str(checkpoint), "--prompt", "hi", "--device", "tpu"],
        ["generate", str(checkpoint), "--prompt", "hi", "--device", "cuda:7"],
        ["eval", str(checkpoint), "--corpus", "toy", "--json", str(root), *d],
        ["train", str(root / "short.toml"), "--minutes", "nan", *d],
        ["train", str(root / "short.toml"), "--out", str(root / "binary.bin"), *d],
        ["mag", "data", "hash-hop", "--samples", "1", "--out", str(root)],
        ["mag", "data", "hash-hop", "--samples", "1", "--recalls", "1000000", "--out", str(root / "r.jsonl")],
        ["mag", "data", "hash-hop", "--samples", "1", "--recalls", "-1", "--out", str(root / "r.jsonl")],
    ]


def test_fuzz_bad_inputs_give_one_line_errors(bad_files, checkpoint, toy_data, capsys):
    cases = bad_invocations(bad_files, checkpoint, toy_data)
    assert len(cases) >= 20
    for argv in cases:
        code = main(argv)  # an unexpected exception would propagate here with its traceback
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("agiformer: error: "), (argv, err)
        assert "Traceback" not in err
    assert not (toy_data / "x").exists()  # every refused `data build --name x` left nothing behind


def test_a_real_process_exits_2_without_traceback(checkpoint):
    done = subprocess.run([sys.executable, "-m", "agiformer", "eval", str(checkpoint) + "-missing", "--corpus", "x"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_generate_streams_any_prompt_bytes(checkpoint, tmp_path, capsys):
    prompt = tmp_path / "prompt.bin"
    prompt.write_bytes(bytes([0xFF, 0xFE, 0x41, 0xC3]) * 100)  # not UTF-8, longer than the attention span
    command = ["generate", str(checkpoint), "--prompt-file", str(prompt), "--max-bytes", "20", "--seed", "1"]
    assert main([*command, "--no-echo"]) == 0
    continuation = capsys.readouterr().out
    assert main(command) == 0
    echoed = capsys.readouterr().out
    # the same 20 sampled bytes, once after the prompt (decoded with replacement) and once alone
    assert echoed == prompt.read_bytes().decode("utf-8", errors="replace") + continuation
    assert 1 <= len(continuation.rstrip("\n")) <= 20


def test_eval_recall_inspect_run_and_write_files(checkpoint, toy_data, tmp_path, capsys):
    d = ["--data-dir", str(toy_data)]
    assert main(["eval", str(checkpoint), "--corpus", "toy", "--json", str(tmp_path / "e.json"), *d]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["bytes"] > 0 and 0 < result["bpb"] < 9
    assert main(["recall", str(checkpoint), "--corpus", "toy", "--samples", "2", "--out", str(tmp_path / "r"), *d]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())["results"][str(checkpoint)]) == 5
    assert main(["inspect", str(checkpoint), "--prompt", "hello world, hello", "--out", str(tmp_path / "i")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 5000 and (tmp_path / "i.png").stat().st_size > 5000
    assert "attention share" in capsys.readouterr().out


def test_inspect_says_when_the_blocks_have_no_memory(tmp_path, capsys):
    directory = tmp_path / "attention-only"
    AGIFormer(AGIFormerConfig.preset("tiny", mixer="attention")).save_pretrained(directory)
    assert main(["inspect", str(directory), "--prompt", "hello world, hello", "--out", str(tmp_path / "i")]) == 0
    out = capsys.readouterr().out
    assert "mixer attention" in out and "layer 0" not in out and "attention share" not in out
    assert json.loads((tmp_path / "i.json").read_text())["mixer"] == "attention"
    assert (tmp_path / "i.png").stat().st_size > 5000


def test_edge_values_that_are_valid_work(checkpoint, toy_data, tmp_path, capsys):
    """A JSON path in a folder not made yet is written (not refused after the work), and a temperature
    of 1e-45 samples like greedy decoding instead of dividing into inf - inf."""
    target = tmp_path / "new" / "folder" / "result.json"
    assert main(["eval", str(checkpoint), "--corpus", "toy", "--data-dir", str(toy_data), "--max-bytes", "300",
                 "--json", str(target)]) == 0
    assert json.loads(target.read_text())["bpb"] > 0
    capsys.readouterr()
    outputs = []
    for temperature in ("0", "1e-45"):
        assert main(["generate", str(checkpoint), "--prompt", "the ", "--max-bytes", "20", "--temperature",
                     temperature, "--seed", "3"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


CLI_FUZZ_VALUES = ["x", "", "nan", "inf", "-inf", "0", "-1", "1e-45", "6.5", str(2 ** 64), str(2 ** 70), "--", "1,2"]


def generated_flag_values(seed: int, count: int) -> list[str]:
    """The fixed values above and `count` generated ones: random numbers of any scale and sign, printed as
    integers or floats, and random short strings."""
    rng = random.Random(seed)
    made = [rng.choice([lambda: str(rng.randint(-2 ** 66, 2 ** 66)),
                        lambda: repr(rng.uniform(-1, 1) * 10.0 ** rng.randint(-50, 50)),
                        lambda: "".join(rng.choices("0123456789.-+eE x", k=rng.randint(1, 5)))])() for _ in range(count)]
    return CLI_FUZZ_VALUES + made


@pytest.mark.parametrize("command, flag", [
    ("generate", "--temperature"), ("generate", "--top-k"), ("generate", "--top-p"), ("generate", "--seed"),
    ("generate", "--effort"), ("generate", "--plasticity"), ("generate", "--max-bytes"),
    ("eval", "--seq-len"), ("eval", "--batch-size"), ("eval", "--max-bytes"), ("eval", "--effort"),
])
def test_fuzzed_flag_values_give_a_one_line_error_or_a_result(checkpoint, toy_data, capsys, command, flag):
    base = {"generate": ["generate", str(checkpoint), "--prompt", "ab", "--max-bytes", "2", "--no-echo"],
            "eval": ["eval", str(checkpoint), "--corpus", "toy", "--data-dir", str(toy_data), "--max-bytes", "200"]}
    for value in generated_flag_values(seed=len(command + flag), count=10):
        if flag == "--max-bytes" and value.strip().isdigit() and int(value) > 1000:
            continue  # valid, and slow to generate: the bound (MAX_GENERATED_BYTES) is tested by the fixed values
        code = main([*base[command], f"{flag}={value}"])  # an unexpected exception propagates with its traceback
        err = capsys.readouterr().err.strip()
        assert code in (0, 2), (flag, value, code, err)
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith("agiformer: error: "), (flag, value, err)
