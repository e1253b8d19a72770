"""MAG training recipes: a TOML file naming the frozen base, the MAG layers, the curriculum and the
optimisation (`runs/mag/hashhop.toml`; not in runs/ itself, whose *.toml are byte-model recipes).

    name = "mag-hashhop"
    base = "smollm2-135m"               # or a local Hugging Face model directory
    steps = 1200
    lr = 3e-4
    base_dtype = "auto"                 # the frozen layers under bf16 autocast where this machine runs it faster

    [mag]                               # a preset (mag/config.py PRESETS) and MAGConfig fields over it
    preset = "hash-hop"
    window = 256                        # attention window in tokens: the needles lie beyond it

    [data]
    task = "hash-hop"
    context_tokens = [1024, 2048]       # cycled over the samples
    recalls = 8                         # hash-hop: answered far queries per sample, more targets per step

    [[stages]]                          # which MAG parameters train, by share of the steps
    name = "gates"
    share = 0.1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.mag.config import DEFAULT_WINDOW, MAGConfig, preset_values
from agiformer.mag.data import TASKS
from agiformer.precision import PRECISIONS
from agiformer.train.recipe import Schedule, from_table, read_toml
from agiformer.validation import type_problems

# Stage name → prefixes of the MAG parameter names (after the layer index) that train in it. Each
# stage adds to the one before: the gates first (the memory as it was initialised, let in or kept
# out), then how a read enters the stream (its norm and output projection), then what the memory is
# asked, then everything (what it writes and how it forgets).
_GATES = ("gate.",)
_READOUT = _GATES + ("memory_norm.", "memory.out_proj.")
STAGES = {"gates": _GATES, "readout": _READOUT, "queries": _READOUT + ("refiner.", "memory.q_proj."), "all": ("",)}
_IDENTITY_FIELDS = ("base_architecture", "base_hidden_size", "base_num_layers")


@dataclass
class MAGStage:
    name: str                           # one of STAGES
    share: float = 1.0


@dataclass
class MAGData:
    task: str = "hash-hop"
    context_tokens: list[int] = field(default_factory=lambda: [1024, 2048])  # sample i has context_tokens[i % n]
    hops: int | None = None             # None: the task's default
    recalls: int = 0                    # hash-hop: answered queries about other far chains opening each query
    answer_end: bool = True             # also train what follows each answer (its line's end): where to stop
    seed: int = 0                       # training sample i is generate_sample(task, i, seed=seed, ...)
    val_seed: int = 1                   # validation samples come from their own seed, never from training's
    val_samples: int = 32


@dataclass
class MAGRecipe(Schedule):
    name: str
    stages: list[MAGStage]
    steps: int
    base: str = "smollm2-135m"
    mag: dict = field(default_factory=dict)
    data: MAGData = field(default_factory=MAGData)
    batch_size: int = 1                 # samples per step (one forward each: their lengths differ)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # the memories' write weight θ (`lr_proj`) learns at lr times this: its gradient comes only from the
    # few stored pairs that the answers' queries resemble, and at 1 θ stayed barely selective
    write_gate_lr_scale: float = 1.0
    base_dtype: str = "auto"            # "auto" (measured: agiformer.precision), "bf16" autocast or "fp32"
    eval_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0                       # initialises the MAG parameters
    notes: str = ""

    def __post_init__(self):
        if not isinstance(self.stages, list):
            raise AGIFormerError(f"recipe '{self.name}': stages must be [[stages]] tables, got {self.stages!r}")
        self.stages = [s if isinstance(s, MAGStage) else from_table(MAGStage, s, "stage") for s in self.stages]
        self.data = self.data if isinstance(self.data, MAGData) else from_table(MAGData, self.data, "[data]")
        self.validate()

    def validate(self) -> None:
        where = f"recipe '{self.name}'"
        problems = type_problems(self) + [f"stage {stage.name!r}: {problem}" for stage in self.stages
                                          for problem in type_problems(stage)]
        problems += [f"[data] {problem}" for problem in type_problems(self.data)]
        if problems:
            raise AGIFormerError(f"{where}: " + "; ".join(problems))
        if not self.grad_clip > 0 or self.weight_decay < 0:
            raise AGIFormerError(f"{where}: grad_clip must be > 0 and weight_decay ≥ 0, got {self.grad_clip}, "
                                 f"{self.weight_decay}")
        if not self.stages:
            raise AGIFormerError(f"{where}: needs at least one [[stages]] entry")
        for stage in self.stages:
            if stage.name not in STAGES:
                raise AGIFormerError(f"{where}: stage '{stage.name}' is not one of {', '.join(STAGES)}")
            if stage.share <= 0:
                raise AGIFormerError(f"{where}: stage '{stage.name}' share must be > 0")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AGIFormerError(f"{where}: {name} must be ≥ 1, got {getattr(self, name)}")
        if self.base_dtype not in PRECISIONS:
            raise AGIFormerError(f"{where}: base_dtype must be one of {', '.join(PRECISIONS)}, got {self.base_dtype!r}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise AGIFormerError(f"{where}: lr must be > 0, min_lr_ratio in [0, 1] and warmup_steps ≥ 0")
        if not self.write_gate_lr_scale > 0:
            raise AGIFormerError(f"{where}: write_gate_lr_scale must be > 0, got {self.write_gate_lr_scale}")
        known = {f.name for f in dataclasses.fields(MAGConfig)} - set(_IDENTITY_FIELDS) | {"preset"}
        unknown = sorted(set(self.mag) - known)
        if unknown:
            raise AGIFormerError(f"{where}: unknown [mag] key(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        try:
            window = self.mag_values()["window"]
        except AGIFormerError as error:
            raise AGIFormerError(f"{where}: [mag] {error}") from None
        if not isinstance(window, int) or window < 1:
            raise AGIFormerError(f"{where}: [mag] window must be a number of tokens ≥ 1 (the needles lie beyond "
                                 f"it), got {window!r}")
        data = self.data
        if data.task not in TASKS:
            raise AGIFormerError(f"{where}: [data] task must be one of {', '.join(TASKS)}, got {data.task!r}")
        if not data.context_tokens or not all(isinstance(n, int) and n > 0 for n in data.context_tokens):
            raise AGIFormerError(f"{where}: [data] context_tokens must be a list of token counts like [1024, 2048]")
        if data.recalls < 0 or data.recalls and data.task != "hash-hop":
            raise AGIFormerError(f"{where}: [data] recalls must be ≥ 0, and only hash-hop has them")
        if not isinstance(data.answer_end, bool):
            raise AGIFormerError(f"{where}: [data] answer_end must be true or false, got {data.answer_end!r}")
        if data.val_samples < 1:
            raise AGIFormerError(f"{where}: [data] val_samples must be ≥ 1, got {data.val_samples}")
        if data.val_seed == data.seed:
            raise AGIFormerError(f"{where}: [data] val_seed must differ from seed, or validation would repeat "
                                 "training samples")

    def mag_values(self) -> dict:
        """[mag] over its preset's values; layers "every_4" and window DEFAULT_WINDOW unless given."""
        fields = {key: value for key, value in self.mag.items() if key != "preset"}
        return {"window": DEFAULT_WINDOW, **preset_values(self.mag.get("preset"), fields)}

    def mag_config(self, base) -> MAGConfig:
        """The MAGConfig for this base (`mag_values`)."""
        return MAGConfig.for_base(base, **self.mag_values())


def load_mag_recipe(path: str | Path, **overrides) -> MAGRecipe:
    """Read a MAG recipe; `overrides` replace top-level values (e.g. steps=2 for a smoke run)."""
    return MAGRecipe.from_dict(read_toml(path, **overrides), source=str(path))
