"""Training recipes: a TOML file naming the model, the curriculum stages and the optimisation.

    name = "demo-en"
    steps = 2000
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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Schedule:
    """What every recipe shares: stages by share of `steps`, and the learning rate of each step.
    Needs the fields stages (each with a `share`), steps, lr, min_lr_ratio and warmup_steps."""

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
    steps: int
    batch_size: int = 16
    seq_len: int = 1024
    lr: float = 1e-3
    min_lr_ratio: float = 0.1        # cosine decays to lr · min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1              # micro-batches per optimizer step (batch_size is per micro-batch)
    precision: str = "bf16"          # "bf16" autocast or "fp32"
    eval_corpus: str = ""            # scored every eval_every steps, on its whole val split; default: last stage's first corpus
    eval_every: int = 500
    checkpoint_every: int = 500
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
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AGIFormerError(f"{where}: {name} must be ≥ 1, got {getattr(self, name)}")
        if self.precision not in ("bf16", "fp32"):
            raise AGIFormerError(f"{where}: precision must be 'bf16' or 'fp32', got {self.precision!r}")
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
