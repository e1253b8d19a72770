"""SIGKILL at the worst moments of a run, then `agiformer train --resume`: the resumed run must end with
the losses, weights and metrics history of a run that was never interrupted.

The kill comes from inside the process (a patched function sends SIGKILL to its own process at its
n-th call), so it lands at an exact point of a checkpoint save or of a metrics append.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from agiformer import AGIFormer
from agiformer.train.plots import read_metrics


# patches the named function to SIGKILL this process at its n-th call, then runs the CLI
KILLER = r"""
import os, signal, sys
from pathlib import Path
import agiformer.train.checkpoint as checkpoint
import agiformer.train.loop as loop
from agiformer.cli import main

point, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = [0]

def due():
    calls[0] += 1
    return calls[0] == nth

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "save_tensors":  # inside a save of last: the weights (odd calls) or the optimizer state (even)
    original_save = checkpoint.save_tensors
    def save_tensors(path, tensors):
        if path.parent.name == "last.new" and due():
            path.write_bytes(b"half a file")
            die()
        original_save(path, tensors)
    checkpoint.save_tensors = save_tensors
elif point == "rename":  # the swap: last -> last.old, then last.new -> last
    original_rename = Path.rename
    def rename(self, target):
        if self.name.startswith("last") and due():
            die()
        return original_rename(self, target)
    Path.rename = rename
elif point == "metrics":  # an append to metrics.jsonl cut in the middle of its line
    def log(self, row):
        line = __import__("json").dumps(row) + "\n"
        with self.metrics_path.open("a") as f:
            f.write(line[: len(line) // 2] if due() else line)
        if calls[0] == nth:
            die()
    loop.TrainingLoop.log = log
sys.exit(main(argv))
"""


def comparable(rows: list[dict]) -> list[tuple]:
    """What a repeat must reproduce: kinds, steps and losses (not the timings)."""
    return [(r["kind"], r["step"], r.get("train_bpb"), r.get("val_bpb")) for r in rows]


@pytest.fixture(scope="module")
def setup(toy_data, tmp_path_factory, write_toy_recipe):
    root = tmp_path_factory.mktemp("faults")
    write_toy_recipe(root / "faults.toml", name="faults", steps=9, warmup_steps=2, eval_every=3, checkpoint_every=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = root / "straight"
    subprocess.run([sys.executable, "-m", "agiformer", *train_args(root, toy_data, straight)], check=True, env=env,
                   capture_output=True)
    return root, env, straight


def train_args(root, toy_data, out) -> list[str]:
    return ["train", str(root / "faults.toml"), "--data-dir", str(toy_data), "--device", "cpu", "--quiet",
            "--out", str(out)]


@pytest.mark.parametrize("point, nth", [
    ("save_tensors", 3),  # the second save, writing its weights
    ("save_tensors", 4),  # the second save, writing its optimizer state
    ("rename", 2),        # the second save, before last moves to last.old
    ("rename", 3),        # between the two renames: only last.old and last.new exist
    ("metrics", 5),       # in the middle of the fifth metrics row (step 3's validation, before the first save)
    ("metrics", 7),       # step 6's training row, after the first save
    ("metrics", 9),       # step 6's validation, before that step's save
])
def test_sigkill_then_resume_equals_an_uninterrupted_run(setup, toy_data, point, nth):
    root, env, straight = setup
    out = root / f"{point}-{nth}"
    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(nth), *train_args(root, toy_data, out)], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "agiformer", *train_args(root, toy_data, out), "--resume"],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable(read_metrics(out / "metrics.jsonl")) == comparable(read_metrics(straight / "metrics.jsonl"))
    expected = AGIFormer.from_pretrained(straight / "last").state_dict()
    got = AGIFormer.from_pretrained(out / "last").state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert json.loads((out / "summary.json").read_text())["steps"] == 9
    assert not (out / "last.old").exists() and not (out / "last.new").exists()
