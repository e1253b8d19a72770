"""The byte models' trainer: curriculum stages, AdamW with warmup + cosine, the precision this machine
runs fastest (`agiformer.precision`), ACT ponder cost, effort sampled per batch, whole-split validation; checkpoints, metrics and resume come from
the shared loop (`agiformer.train.loop`).

Exact resume: every random draw (batches, effort, dropout) comes from generators whose states are
checkpointed, and the learning rate and stage are functions of the step, so a resumed run repeats
the uninterrupted run's losses bit for bit on the same machine.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn

from agiformer.data import load_split, mixture_windows, plant_facts
from agiformer.errors import AGIFormerError
from agiformer.eval.bpb import count_characters, evaluate_bpb
from agiformer.models import build_model, load_model
from agiformer.models.config import read_config_values
from agiformer.precision import autocast
from agiformer.train.adapt import AdapterConfig, TrainedParameters, adapted_base
from agiformer.train.distributed import Distributed
from agiformer.train.loop import TrainingLoop
from agiformer.train.optim import SparseRowGradients, optimizer_for, scheduled_lr
from agiformer.train.recipe import Recipe


class _LossModule(nn.Module):
    """DistributedDataParallel synchronises gradients only through a module's forward: this one's is the loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, plasticity, effort):
        out = self.model.loss(x, plasticity=plasticity, effort=effort)
        return out.loss, out.bpb


class Trainer(TrainingLoop):
    def __init__(self, recipe: Recipe, *, data_dir: str | Path = "data", out_dir: str | Path | None = None,
                 device: str = "auto", resume: bool = False, allow_recipe_change: bool = False, progress: bool = True):
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
        # an [adapt] recipe trains an adapter on its frozen base, and its checkpoints hold the adapter only
        self.adapter = AdapterConfig.for_base(recipe.adapt) if recipe.adapt is not None else None
        self.model = adapted_base(self.adapter, map_location=self.device) if self.adapter is not None \
            else build_model(self.config).to(self.device)
        if self.adapter is None and recipe.entropy_model_dir() is not None:  # the frozen LM that places patches
            self.model.patcher.model.load_state_dict(load_model(recipe.entropy_model_dir()).state_dict())
        self.optimizer = optimizer_for(self.model, recipe)
        # CUDA's caching allocator reuses a dense gradient's memory; several processes reduce dense gradients
        self.row_gradients = SparseRowGradients(self.model) \
            if self.device.type == "cpu" and self.dist.world_size == 1 else None
        self.generators = {"data": torch.Generator().manual_seed(recipe.seed),
                           "effort": torch.Generator().manual_seed(recipe.seed + 1)}
        self.state = {"step": 0, "bytes_seen": 0, "best_val_bpb": math.inf, "elapsed_s": 0.0,
                      "seq_len": recipe.seq_len}
        self.saved_module = TrainedParameters(self.model) if self.adapter is not None else self.model
        self.open_run(resume=resume, recipe=recipe.to_dict(), allow_recipe_change=allow_recipe_change)
        self.precision = self.run_precision(recipe.precision, width=self.config.d_model)
        wrapped = _LossModule(self.model)
        self.step_module = nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True) \
            if self.dist.world_size > 1 else wrapped

    # ---- one optimisation step --------------------------------------------------------------------

    def sample_effort(self) -> float:
        low, high = getattr(self.config, "train_effort_range", (1.0, 1.0))  # byte GPT: no effort
        return low + (high - low) * torch.rand(1, generator=self.generators["effort"]).item()

    def train_step(self, step: int) -> dict:
        recipe, stage_index = self.recipe, self.recipe.stage_at(step)
        stage = recipe.stages[stage_index]
        lr = recipe.lr_at(step)
        scheduled_lr(self.optimizer, lr)
        effort = self.sample_effort()
        bpb_sum = 0.0
        for micro in range(recipe.grad_accum):
            # every process draws the same global batch and keeps its own rows: the result does not
            # depend on the number of processes
            batch = mixture_windows(self.stage_data[stage_index], list(stage.corpora.values()), recipe.batch_size,
                                    recipe.seq_len, self.generators["data"])
            batch = plant_facts(batch, stage.facts, self.generators["data"])
            rows = batch.chunk(self.dist.world_size)[self.dist.rank].to(self.device)
            sync = micro == recipe.grad_accum - 1 or self.dist.world_size == 1
            with self.step_module.no_sync() if not sync else contextlib.nullcontext():
                with autocast(self.device, self.precision.precision):
                    loss, bpb = self.step_module(rows, stage.plasticity, effort)
                (loss / recipe.grad_accum).backward()
            bpb_sum += bpb.item()
        if self.row_gradients is not None:
            self.row_gradients.densify()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip).item()
        train_bpb = self.dist.sum([bpb_sum / recipe.grad_accum])[0] / self.dist.world_size
        self.check_finite(step, train_bpb=train_bpb, grad_norm=grad_norm)
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
                              plasticity=plasticity, precision=self.precision.precision, rank=self.dist.rank,
                              world_size=self.dist.world_size)
        bits, n_bytes = self.dist.sum([result["bits"], result["bytes"]])
        return {"kind": "val", "step": self.state["step"], "bytes_seen": self.state["bytes_seen"],
                "corpus": recipe.eval_corpus, "plasticity": plasticity, "effort": getattr(self.config, "effort", None),
                "val_bpb": bits / n_bytes, "val_bpc": bits / max(1, count_characters(self.val_data))}

    def checkpoint_config(self):
        """The config saved with the weights: plasticity set to the stage being trained (an adapter's: its own)."""
        if self.adapter is not None:
            return self.adapter
        stage = self.trained_stage()
        if not hasattr(self.config, "plasticity"):
            return self.config
        return type(self.config).from_dict({**self.config.to_dict(), "plasticity": stage.plasticity})

    def check_config(self, path: Path) -> None:
        """The recipe's model config, except plasticity (the checkpoint records the stage trained last); an
        adapter's config as this run made it (the same base weights)."""
        if self.adapter is not None:
            if read_config_values(path) != {"model_type": self.adapter.model_type, **self.adapter.to_dict()}:
                raise AGIFormerError(f"{path.parent}: the checkpoint is an adapter of another base or method "
                                     "than the recipe's")
            return
        trained_as = type(self.config).load(path).to_dict()
        if trained_as != {**self.config.to_dict(), **{k: v for k, v in trained_as.items() if k == "plasticity"}}:
            raise AGIFormerError(f"{path.parent}: the checkpoint's model config differs from the recipe's; "
                                 "resume with the recipe that started the run")

    # ---- what the shared loop reports -------------------------------------------------------------

    def count_step(self, row: dict, seconds: float) -> None:
        bytes_per_step = self.recipe.batch_size * self.recipe.seq_len * self.recipe.grad_accum
        self.state["bytes_seen"] += bytes_per_step
        row.update(bytes_seen=self.state["bytes_seen"], bytes_per_s=bytes_per_step / seconds)

    def progress_text(self, row: dict, last_val: dict | None) -> str:
        return (f"{row['stage']} α={row['plasticity']} bpb={row['train_bpb']:.3f} {row['bytes_per_s'] / 1e3:.1f} kB/s"
                + (f" val={last_val['val_bpb']:.3f}" if last_val else ""))

    def summary_fields(self) -> dict:
        return {"bytes_seen": self.state["bytes_seen"], "parameters": self.model.num_parameters(),
                "trained_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                "precision": self.state["precision"]}

    def curve_options(self) -> dict:
        return {"val_label": f"validation ({self.recipe.eval_corpus}, whole split)"}
