"""The training loop: curriculum stages, AdamW with warmup + cosine, bf16 autocast, ACT ponder cost,
effort sampled per batch, whole-split validation, atomic checkpoints and exact resume.

Exact resume: every random draw (batches, effort, dropout) comes from generators whose states are
checkpointed, and the learning rate and stage are functions of the step, so a resumed run repeats
the uninterrupted run's losses bit for bit on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

from agiformer.data import load_split, mixture_windows
from agiformer.errors import AGIFormerError
from agiformer.eval.bpb import autocast, count_characters, evaluate_bpb
from agiformer.models.pretrained import model_classes
from agiformer.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from agiformer.train.distributed import Distributed
from agiformer.train.plots import plot_curves, read_metrics
from agiformer.train.recipe import Recipe


class _LossModule(nn.Module):
    """DistributedDataParallel synchronises gradients only through a module's forward: this one's is the loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, plasticity, effort):
        out = self.model.loss(x, plasticity=plasticity, effort=effort)
        return out.loss, out.bpb


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """Weight decay on matrices only, not on biases, norms, embeddings' padding or scalars per head."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))


class Trainer:
    def __init__(self, recipe: Recipe, *, data_dir: str | Path = "data", out_dir: str | Path | None = None,
                 device: str = "auto", resume: bool = False, progress: bool = True):
        self.recipe = recipe
        self.dist = Distributed.setup(device)
        self.device = self.dist.device
        self.out_dir = Path(out_dir or Path("out") / recipe.name)
        self.progress = progress and self.dist.is_main
        if recipe.batch_size % self.dist.world_size:
            raise AGIFormerError(f"batch_size {recipe.batch_size} must divide evenly among {self.dist.world_size} processes")
        self.stage_data = [[load_split(data_dir, name, "train") for name in stage.corpora] for stage in recipe.stages]
        self.val_data = load_split(data_dir, recipe.eval_corpus, "val")

        torch.manual_seed(recipe.seed)
        self.config = recipe.model_config()
        self.model = model_classes()[self.config.model_type](self.config).to(self.device)
        self.optimizer = optimizer_for(self.model, recipe)
        self.generators = {"data": torch.Generator().manual_seed(recipe.seed),
                           "effort": torch.Generator().manual_seed(recipe.seed + 1)}
        self.state = {"step": 0, "bytes_seen": 0, "best_val_bpb": math.inf, "elapsed_s": 0.0,
                      "seq_len": recipe.seq_len}
        self.metrics_path = self.out_dir / "metrics.jsonl"
        if resume:
            self._resume()
        elif self.dist.is_main:
            if find_checkpoint(self.out_dir / "last") is not None:
                raise AGIFormerError(f"{self.out_dir} already holds a run: pass --resume to continue it, "
                                     "or choose another --out directory")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.metrics_path.write_text("")
            (self.out_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))
        wrapped = _LossModule(self.model)
        self.step_module = nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True) \
            if self.dist.world_size > 1 else wrapped
        self.stop_requested = False

    def _resume(self) -> None:
        found = find_checkpoint(self.out_dir / "last")
        if found is None:
            raise AGIFormerError(f"nothing to resume: no checkpoint in {self.out_dir / 'last'}")
        self.state = load_checkpoint(found, model=self.model, optimizer=self.optimizer, generators=self.generators)
        if self.dist.is_main:  # drop metrics logged after the checkpoint: they will be produced again
            kept = [r for r in read_metrics(self.metrics_path) if r["step"] <= self.state["step"]]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    # ---- one optimisation step --------------------------------------------------------------------

    def sample_effort(self) -> float:
        low, high = getattr(self.config, "train_effort_range", (1.0, 1.0))  # byte GPT: no effort
        return low + (high - low) * torch.rand(1, generator=self.generators["effort"]).item()

    def train_step(self, step: int) -> dict:
        recipe, stage_index = self.recipe, self.recipe.stage_at(step)
        stage = recipe.stages[stage_index]
        lr = recipe.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        effort = self.sample_effort()
        bpb_sum = 0.0
        for micro in range(recipe.grad_accum):
            # every process draws the same global batch and keeps its own rows: the result does not
            # depend on the number of processes
            batch = mixture_windows(self.stage_data[stage_index], list(stage.corpora.values()), recipe.batch_size,
                                    recipe.seq_len, self.generators["data"])
            rows = batch.chunk(self.dist.world_size)[self.dist.rank].to(self.device)
            sync = micro == recipe.grad_accum - 1 or self.dist.world_size == 1
            with self.step_module.no_sync() if not sync else contextlib.nullcontext():
                with autocast(self.device, recipe.precision):
                    loss, bpb = self.step_module(rows, stage.plasticity, effort)
                (loss / recipe.grad_accum).backward()
            bpb_sum += bpb.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip).item()
        train_bpb = self.dist.sum([bpb_sum / recipe.grad_accum])[0] / self.dist.world_size
        if not (math.isfinite(train_bpb) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise AGIFormerError(f"non-finite loss at step {step + 1} (train bpb {train_bpb}, grad norm {grad_norm}); "
                                 f"stopped without saving: the last good checkpoint in {self.out_dir / 'last'} "
                                 "is kept; resume with a lower lr")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"kind": "train", "step": step + 1, "stage": stage.name, "plasticity": stage.plasticity,
                "effort": round(effort, 4), "lr": lr, "train_bpb": train_bpb, "grad_norm": grad_norm}

    # ---- evaluation and checkpoints ---------------------------------------------------------------

    def trained_stage(self):
        """The stage of the last completed step: its α is what the weights were last trained with."""
        return self.recipe.stages[self.recipe.stage_at(max(0, self.state["step"] - 1))]

    def validate(self) -> dict:
        recipe = self.recipe
        plasticity = self.trained_stage().plasticity
        result = evaluate_bpb(self.model, self.val_data, seq_len=recipe.seq_len, batch_size=recipe.batch_size,
                              plasticity=plasticity, precision=recipe.precision, rank=self.dist.rank,
                              world_size=self.dist.world_size)
        bits, n_bytes = self.dist.sum([result["bits"], result["bytes"]])
        return {"kind": "val", "step": self.state["step"], "bytes_seen": self.state["bytes_seen"],
                "corpus": recipe.eval_corpus, "plasticity": plasticity, "effort": getattr(self.config, "effort", None),
                "val_bpb": bits / n_bytes, "val_bpc": bits / max(1, count_characters(self.val_data))}

    def checkpoint_config(self):
        """The config saved with the weights: plasticity set to the stage being trained."""
        stage = self.trained_stage()
        if not hasattr(self.config, "plasticity"):
            return self.config
        return type(self.config).from_dict({**self.config.to_dict(), "plasticity": stage.plasticity})

    def save(self, name: str = "last") -> None:
        if self.dist.is_main:
            save_checkpoint(self.out_dir / name, model=self.model, config=self.checkpoint_config(),
                            optimizer=self.optimizer, generators=self.generators, trainer_state=self.state)
        self.dist.barrier()

    def log(self, row: dict) -> None:
        if self.dist.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    # ---- the loop ---------------------------------------------------------------------------------

    def _request_stop(self, signum, frame) -> None:
        if self.stop_requested:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def train(self, *, max_steps: int | None = None) -> dict:
        """Run to the recipe's last step (or stop after `max_steps` more, for tests); returns a summary."""
        recipe = self.recipe
        end = recipe.steps if max_steps is None else min(recipe.steps, self.state["step"] + max_steps)
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if _in_main_thread() else {}
        bar = _progress_bar(self.progress, total=recipe.steps, initial=self.state["step"], name=recipe.name)
        bytes_per_step = recipe.batch_size * recipe.seq_len * recipe.grad_accum
        started, last_val = time.perf_counter(), None
        try:
            while self.state["step"] < end:
                tick = time.perf_counter()
                row = self.train_step(self.state["step"])
                self.state["step"] += 1
                self.state["bytes_seen"] += bytes_per_step
                row.update(bytes_seen=self.state["bytes_seen"], bytes_per_s=bytes_per_step / (time.perf_counter() - tick))
                self.log(row)
                step, last = self.state["step"], self.state["step"] == recipe.steps
                if step % recipe.eval_every == 0 or last:
                    last_val = self.validate()
                    self.log(last_val)
                    if last_val["val_bpb"] < self.state["best_val_bpb"]:
                        self.state["best_val_bpb"] = last_val["val_bpb"]
                        self.save("best")
                    if self.dist.is_main:
                        plot_curves(self.metrics_path, self.out_dir / "curves.png", title=f"{recipe.name}")
                stop = self.dist.sum([float(self.stop_requested)])[0] > 0
                if step % recipe.checkpoint_every == 0 or last or stop or step == end:
                    self.state["elapsed_s"] += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save("last")
                bar.update(1)
                bar.set_postfix_str(f"{row['stage']} α={row['plasticity']} bpb={row['train_bpb']:.3f} "
                                    f"{row['bytes_per_s'] / 1e3:.1f} kB/s"
                                    + (f" val={last_val['val_bpb']:.3f}" if last_val else ""))
                if stop:
                    bar.close()
                    print(f"stopped by signal at step {step}; checkpoint saved in {self.out_dir / 'last'} "
                          f"(continue with --resume)", file=sys.stderr)
                    break
        finally:
            bar.close()
            for s, handler in previous_handlers.items():
                signal.signal(s, handler)
        summary = {"recipe": recipe.name, "steps": self.state["step"], "bytes_seen": self.state["bytes_seen"],
                   "elapsed_s": round(self.state["elapsed_s"], 1), "parameters": self.model.num_parameters(),
                   "best_val_bpb": self.state["best_val_bpb"], "last_val": last_val,
                   "checkpoint": str(self.out_dir / "last"), "stopped_early": self.stop_requested}
        if self.dist.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress_bar(enabled: bool, *, total: int, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)
