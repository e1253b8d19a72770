"""Training recipes: a TOML file naming the model, the curriculum stages and the optimisation.

    name = "demo-en"
    minutes = 20                        # or steps = 2000: the run times its first steps and fixes the count that fits
    batch_size = 16
    seq_len = 1024                      # bytes per training window; ≥ 4 × window × patch_size
    lr = 2e-3
    eval_corpus = "en-wiki"

    [model]
    preset = "v2"
    d_model = 256                       # any AGIFormerConfig field overrides the preset

    [[stages]]
    name = "dictionary"
    corpora = { "en-dict" = 1.0 }       # corpus → sampling weight
    plasticity = 0.1
    share = 0.15                        # fraction of the steps
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.models import AGIFormerConfig, ByteGPTConfig
from agiformer.precision import PRECISIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


MIN_CALIBRATION_STEPS = 4  # a timed budget runs at least 4 steps (and times the later half), within the warmup
DEFAULT_EVALS = 3         # validations over a run whose recipe gives no eval_every (a budgeted run adds one)
DEFAULT_CHECKPOINTS = 10  # saves of `last` over a run whose recipe gives no checkpoint_every


class Schedule:
    """What every recipe shares: stages by share of `steps`, and the learning rate of each step.
    Needs the fields stages (each with a `share`), steps, lr, min_lr_ratio, warmup_steps, eval_every
    and checkpoint_every. A recipe with `minutes` > 0 has its steps fixed by the training loop after
    timing the first ones (`steps`, if also given, is then the most it may take)."""

    minutes = 0.0

    def eval_interval(self, steps: int | None = None) -> int:
        """Steps between validations in a run of `steps` (default: the recipe's)."""
        return self.eval_every or max(1, round((steps or self.steps) / DEFAULT_EVALS))

    def checkpoint_interval(self, steps: int | None = None) -> int:
        return self.checkpoint_every or max(1, round((steps or self.steps) / DEFAULT_CHECKPOINTS))

    def steps_within(self, seconds: float, *, done: int, step_s: float, validation_s: float, save_s: float) -> int:
        """The most steps a run that has done `done` can total so that what remains (steps, the validations
        and saves of `last` its intervals make, and the final ones) takes at most `seconds`."""
        def events(total: int, interval: int) -> int:  # at multiples of the interval, and at the last step
            return total // interval - done // interval + (total % interval != 0)

        def remaining(total: int) -> float:
            return ((total - done) * step_s + events(total, self.eval_interval(total)) * validation_s
                    + events(total, self.checkpoint_interval(total)) * save_s)

        total = done + max(0, int(seconds / step_s))
        while total > done and remaining(total) > seconds:
            total -= max(1, (total - done) // 200)
        return total

    def stage_boundaries(self) -> list[int]:
        """First step of each stage; stages split the steps in proportion to their shares."""
        total = sum(s.share for s in self.stages)
        starts, acc = [], 0.0
        for stage in self.stages:
            starts.append(round(self.steps * acc / total))
            acc += stage.share
        return starts

    def stage_at(self, step: int) -> int:
        return max(i for i, start in enumerate(self.stage_boundaries()) if start <= step)

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine from lr to lr · min_lr_ratio at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "recipe"):
        return from_table(cls, values, source)


@dataclass
class Stage:
    name: str
    corpora: dict[str, float]
    plasticity: float = 0.99
    share: float = 1.0


@dataclass
class Recipe(Schedule):
    name: str
    model: dict
    stages: list[Stage]
    steps: int = 0                   # optimizer steps; with minutes, the most the budget may take (0: no cap)
    minutes: float = 0.0             # wall-clock budget of the whole run (steps, validations, checkpoints)
    batch_size: int = 16
    seq_len: int = 1024
    lr: float = 1e-3
    min_lr_ratio: float = 0.1        # cosine decays to lr · min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1              # micro-batches per optimizer step (batch_size is per micro-batch)
    precision: str = "auto"          # "auto" (bf16 where this machine runs it faster), "bf16" autocast or "fp32"
    eval_corpus: str = ""            # scored every eval_every steps, on its whole val split; default: last stage's first corpus
    eval_every: int = 0              # 0: DEFAULT_EVALS validations spread over the run
    checkpoint_every: int = 0        # 0: DEFAULT_CHECKPOINTS saves of `last` spread over the run
    seed: int = 0
    notes: str = ""

    def __post_init__(self):
        self.stages = [s if isinstance(s, Stage) else from_table(Stage, s, "stage") for s in self.stages]
        if not self.eval_corpus and self.stages:
            self.eval_corpus = next(iter(self.stages[-1].corpora))
        self.validate()

    def model_config(self) -> AGIFormerConfig | ByteGPTConfig:
        """[model] holds `type` ("agiformer", the default, or "byte-gpt"), a `preset` for AGIFORMER, and
        config fields overriding it."""
        overrides = dict(self.model)
        model_type = overrides.pop("type", "agiformer")
        if model_type == "byte-gpt":
            return ByteGPTConfig.from_dict(overrides)
        if model_type != "agiformer":
            raise AGIFormerError(f"recipe '{self.name}': unknown model type {model_type!r}; use 'agiformer' or 'byte-gpt'")
        preset = overrides.pop("preset", "v2")
        return AGIFormerConfig.preset(preset, plasticity=self.stages[-1].plasticity, **overrides)

    def validate(self) -> None:
        where = f"recipe '{self.name}'"
        if not self.stages:
            raise AGIFormerError(f"{where}: needs at least one [[stages]] entry")
        for stage in self.stages:
            if not stage.corpora or any(w < 0 for w in stage.corpora.values()) or sum(stage.corpora.values()) <= 0:
                raise AGIFormerError(f"{where}: stage '{stage.name}' needs corpora with non-negative weights summing > 0")
            if not 0 < stage.plasticity <= 1:
                raise AGIFormerError(f"{where}: stage '{stage.name}' plasticity must be in (0, 1], got {stage.plasticity}")
            if stage.share <= 0:
                raise AGIFormerError(f"{where}: stage '{stage.name}' share must be > 0")
        for name in ("batch_size", "seq_len", "grad_accum"):
            if getattr(self, name) < 1:
                raise AGIFormerError(f"{where}: {name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise AGIFormerError(f"{where}: {name} must be ≥ 0, got {getattr(self, name)}")
        if self.minutes < 0 or not self.minutes and self.steps < 1:
            raise AGIFormerError(f"{where}: give steps ≥ 1 or a time budget minutes > 0 (got steps {self.steps}, "
                                 f"minutes {self.minutes})")
        if self.minutes and self.warmup_steps < MIN_CALIBRATION_STEPS:
            raise AGIFormerError(f"{where}: a recipe with minutes times its warmup steps to fix the step count; "
                                 f"use warmup_steps ≥ {MIN_CALIBRATION_STEPS}, got {self.warmup_steps}")
        if self.precision not in PRECISIONS:
            raise AGIFormerError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise AGIFormerError(f"{where}: lr must be > 0 and min_lr_ratio in [0, 1]")
        config = self.model_config()
        span = 4 * config.window * config.patch_size if isinstance(config, AGIFormerConfig) else 0
        if self.seq_len < span:
            raise AGIFormerError(f"{where}: seq_len {self.seq_len} is shorter than 4 × the attention span "
                                 f"({config.window} patches × {config.patch_size} bytes): the memory would have "
                                 f"nothing to do; use seq_len ≥ {span} or a smaller window")


def from_table(cls, values: dict, where: str):
    """A recipe dataclass from a TOML table, refusing unknown and missing keys in one line."""
    if not isinstance(values, dict):
        raise AGIFormerError(f"{where}: expected a table of values")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AGIFormerError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values)
    if missing:
        raise AGIFormerError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**values)


def read_toml(path: str | Path, **overrides) -> dict:
    """A recipe file's values, `name` defaulting to the file's stem; `overrides` replace top-level values."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in Path("runs").glob("*.toml")) if Path("runs").is_dir() else []
        hint = f"; recipes in runs/: {', '.join(known)}" if known else ""
        raise AGIFormerError(f"recipe {path} not found{hint}")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AGIFormerError(f"{path}: not valid TOML ({str(error).splitlines()[0]})") from None
    values.setdefault("name", path.stem)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def load_recipe(path: str | Path, **overrides) -> Recipe:
    """Read a recipe; `overrides` replace top-level values (e.g. steps=10 for a smoke run)."""
    return Recipe.from_dict(read_toml(path, **overrides), source=str(path))
