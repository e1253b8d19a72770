"""The command line as a user meets it: every mistake is one line on stderr, exit code 2, no traceback."""

import json
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
        ["data", "build", "--name", "x", str(root / "bad.jsonl"), *d],
        ["data", "build", "--name", "x", str(root / "nofield.jsonl"), *d],
        ["data", "baselines", "no-such-corpus", *d],
        ["recall", str(checkpoint), "--corpus", "no-such-corpus", *d],
        ["recall", str(checkpoint), "--corpus", "toy", "--distances", "100000000", *d],
        ["inspect", str(checkpoint)],
        ["inspect", str(root / "nope"), "--prompt", "hi"],
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


def test_a_real_process_exits_2_without_traceback(checkpoint):
    done = subprocess.run([sys.executable, "-m", "agiformer", "eval", str(checkpoint) + "-missing", "--corpus", "x"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_generate_streams_any_prompt_bytes(checkpoint, tmp_path, capsys):
    prompt = tmp_path / "prompt.bin"
    prompt.write_bytes(bytes([0xFF, 0xFE, 0x41, 0xC3]) * 100)  # not UTF-8, longer than the attention span
    assert main(["generate", str(checkpoint), "--prompt-file", str(prompt), "--max-bytes", "20", "--seed", "1",
                 "--no-echo"]) == 0
    assert len(capsys.readouterr().out) > 0


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
