"""Training checkpoints: a directory with the trained weights and their config (model.safetensors +
config.json, the files a model directory has), the optimizer state (optimizer.safetensors) and
everything else needed to continue exactly (trainer.json: step, stage, RNG states, metrics so far).

What is stored is the state_dict of the module passed in: a whole byte model, or only the MAG
parameters of a frozen base (whose identity is in the MAG config, never its weights).

A checkpoint is written to a fresh directory and swapped in by renames, so an interruption at any
moment leaves either the old or the new checkpoint complete, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import torch

from agiformer.errors import AGIFormerError
from agiformer.models.pretrained import CONFIG_FILE, WEIGHTS_FILE, check_weights_match
from agiformer.serialization import atomic_write_text, load_tensors, read_json, save_tensors

TRAINER_FILE, OPTIMIZER_FILE = "trainer.json", "optimizer.safetensors"
LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None


def lock_run_directory(directory: Path):
    """Take `directory`'s lock (created if need be), or refuse naming the process that holds it. The lock
    is an flock on DIRECTORY/.lock: the kernel drops it when the holder exits, even by SIGKILL. Returns
    the open lock file; closing it releases the lock."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise AGIFormerError(f"--out {directory} is a file, not a run directory; choose another path")
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_FILE, "a+", encoding="utf-8")
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise AGIFormerError(f"{directory} is in use by another run ({holder}); wait for it to end or choose "
                             "another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]):
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in state.items():  # torch would find a wrong shape only at the first step
        for key, value in values.items():
            if value.dim() and index < len(params) and value.shape != params[index].shape:
                raise AGIFormerError(f"optimizer state {index}.{key} has shape {tuple(value.shape)}, its parameter "
                                     f"{tuple(params[index].shape)}: the checkpoint is damaged or from another model")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as error:
        raise AGIFormerError(f"optimizer state does not fit this model ({error}); start a new run instead of --resume") from None


def rng_to_tensors(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    tensors = {f"rng.{name}": g.get_state() for name, g in generators.items()}
    tensors["rng.torch_global"] = torch.get_rng_state()
    return tensors


def save_checkpoint(directory: Path, *, module: torch.nn.Module, config, optimizer: torch.optim.Optimizer,
                    generators: dict[str, torch.Generator], trainer_state: dict) -> None:
    """`module`'s weights, `config` (saved with its .save), optimizer, RNG and trainer state, swapped in atomically."""
    directory = Path(directory)
    fresh = directory.with_name(directory.name + ".new")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    save_tensors(fresh / WEIGHTS_FILE, module.state_dict())
    config.save(fresh / CONFIG_FILE)
    tensors, groups = optimizer_to_tensors(optimizer)
    save_tensors(fresh / OPTIMIZER_FILE, {**tensors, **rng_to_tensors(generators)})
    atomic_write_text(fresh / TRAINER_FILE, json.dumps({**trainer_state, "optimizer_param_groups": groups}, indent=1))
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    fresh.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at `directory`, or the previous one if a swap was interrupted."""
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / TRAINER_FILE).is_file():
            return candidate
    return None


def load_checkpoint(directory: Path, *, module: torch.nn.Module, check_config: Callable[[Path], None],
                    optimizer: torch.optim.Optimizer, generators: dict[str, torch.Generator]) -> dict:
    """Restore module, optimizer and RNG states in place; return the trainer state. `check_config(path)`
    reads the checkpoint's config.json and raises AGIFormerError unless it is the run's own config."""
    trainer_state = read_json(directory / TRAINER_FILE)
    if not isinstance(trainer_state, dict) or "step" not in trainer_state:
        raise AGIFormerError(f"{directory / TRAINER_FILE}: not a trainer state file")
    check_config(directory / CONFIG_FILE)
    weights = load_tensors(directory / WEIGHTS_FILE)
    check_weights_match(module.state_dict(), weights, directory / WEIGHTS_FILE)
    module.load_state_dict(weights)
    tensors = load_tensors(directory / OPTIMIZER_FILE)
    rng = {k: tensors.pop(k) for k in list(tensors) if k.startswith("rng.")}
    optimizer_from_tensors(optimizer, tensors, trainer_state.pop("optimizer_param_groups"))
    for name, generator in generators.items():
        generator.set_state(rng[f"rng.{name}"])
    torch.set_rng_state(rng["rng.torch_global"])
    return trainer_state
