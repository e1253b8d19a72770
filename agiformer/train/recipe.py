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
    facts = 0.25                        # fraction of rows carrying a planted fact (data/facts.py)
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from agiformer.data import LONGEST_FACT
from agiformer.errors import AGIFormerError
from agiformer.models import AGIFormerConfig, resolve_checkpoint
from agiformer.models.config import ConfigMixin
from agiformer.models.pretrained import model_classes, saved_config
from agiformer.train.adapt import METHODS, Adaptation
from agiformer.precision import PRECISIONS
from agiformer.validation import type_problems

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

    def stage_boundaries(self, steps: int | None = None) -> list[int]:
        """First step of each stage in a run of `steps` (default: the recipe's); stages split the steps in
        proportion to their shares."""
        total, steps = sum(s.share for s in self.stages), steps or self.steps
        starts, acc = [], 0.0
        for stage in self.stages:
            starts.append(round(steps * acc / total))
            acc += stage.share
        return starts

    def stage_at(self, step: int, steps: int | None = None) -> int:
        return max(i for i, start in enumerate(self.stage_boundaries(steps)) if start <= step)

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
    facts: float = 0.0               # fraction of rows carrying a planted fact: a statement, later its question and answer


@dataclass
class Recipe(Schedule):
    name: str
    stages: list[Stage]
    model: dict = dataclasses.field(default_factory=dict)  # [model]; an [adapt] recipe's model is its base's
    adapt: Adaptation | None = None  # [adapt]: train an adapter of a trained model instead of a new model
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
        if not isinstance(self.stages, list):
            raise AGIFormerError(f"recipe '{self.name}': stages must be [[stages]] tables, got {self.stages!r}")
        self.stages = [s if isinstance(s, Stage) else from_table(Stage, s, f"recipe '{self.name}': stages entry {i + 1}")
                       for i, s in enumerate(self.stages)]
        if isinstance(self.adapt, dict):
            self.adapt = from_table(Adaptation, self.adapt, f"recipe '{self.name}': [adapt]")
        if not self.eval_corpus and self.stages and isinstance(self.stages[-1].corpora, dict) and self.stages[-1].corpora:
            self.eval_corpus = next(iter(self.stages[-1].corpora))
        self.validate()

    def model_config(self) -> ConfigMixin:
        """[model] holds `type` ("agiformer", the default, "byte-gpt" or "byte-ngram"), a `preset` for
        AGIFORMER, and config fields overriding it; an [adapt] recipe's model is its base's, read from the
        checkpoint."""
        if self.adapt is not None:
            if self.model:
                raise AGIFormerError(f"recipe '{self.name}': an [adapt] recipe takes its model from the base "
                                     f"checkpoint; remove the [model] table")
            return saved_config(resolve_checkpoint(self.adapt.base))
        overrides = dict(self.model)
        model_type = overrides.pop("type", "agiformer")
        classes = model_classes()
        if not isinstance(model_type, str) or model_type not in classes:
            raise AGIFormerError(f"recipe '{self.name}': unknown model type {model_type!r}; use one of "
                                 f"{', '.join(map(repr, classes))}")
        if model_type != "agiformer":
            return classes[model_type].config_class.from_dict(overrides)
        preset = overrides.pop("preset", "v2")
        if not isinstance(preset, str):
            raise AGIFormerError(f"recipe '{self.name}': [model] preset must be a preset's name, got {preset!r}")
        if "plasticity" in overrides:
            raise AGIFormerError(f"recipe '{self.name}': [model] plasticity is not a recipe key: each stage gives its "
                                 f"plasticity, and the model keeps the last stage's")
        if "entropy_model" in overrides:  # a directory: the model's config here, its weights by `entropy_model_dir`
            overrides["entropy_model"] = self.entropy_model_config().to_dict()
        return AGIFormerConfig.preset(preset, plasticity=self.stages[-1].plasticity, **overrides)

    def entropy_model_dir(self) -> Path | None:
        """The trained byte LM that an entropy-patching model reads ([model] entropy_model), if any."""
        if "entropy_model" not in self.model:
            return None
        path = self.model["entropy_model"]
        if not isinstance(path, str):
            raise AGIFormerError(f"recipe '{self.name}': [model] entropy_model must name a trained byte-ngram "
                                 f"model's directory, got {path!r}")
        try:
            return resolve_checkpoint(path)
        except AGIFormerError as error:
            raise AGIFormerError(f"recipe '{self.name}': [model] entropy_model: {error}") from None

    def entropy_model_config(self):
        config = saved_config(self.entropy_model_dir())
        if config.model_type != "byte-ngram":
            raise AGIFormerError(f"recipe '{self.name}': [model] entropy_model {self.model['entropy_model']} holds a "
                                 f"{config.model_type} model, not a byte-ngram one (train one with "
                                 f"runs/entropy-en-wiki.toml)")
        return config

    def validate(self) -> None:
        """Every problem of the recipe in one error: types first (a later check would trip on them), then ranges."""
        where = f"recipe '{self.name}'"
        problems = type_problems(self)
        for i, stage in enumerate(self.stages):
            problems += [f"stage {i + 1} ({stage.name!r}): {problem}" for problem in type_problems(stage)]
        if not problems:
            problems = self.range_problems()
        if problems:
            raise AGIFormerError(f"{where}: " + "; ".join(problems))
        config = self.model_config()
        # fixed patches only: a dynamic patching's patch_size is a cap, and its spans are shorter
        span = 4 * config.window * config.patch_size if isinstance(config, AGIFormerConfig) \
            and config.patching == "fixed" else 0
        if self.seq_len < span:
            raise AGIFormerError(f"{where}: seq_len {self.seq_len} is shorter than 4 × the attention span "
                                 f"(window {config.window} patches × patch_size {config.patch_size} bytes): the memory would have "
                                 f"nothing to do; use seq_len ≥ {span} or a smaller window")

    def range_problems(self) -> list[str]:
        problems = [] if self.stages else ["needs at least one [[stages]] entry"]
        if self.adapt is None and not self.model:
            problems.append("needs a [model] table (or an [adapt] table naming a trained model)")
        for stage in self.stages:
            if not stage.corpora or any(w < 0 for w in stage.corpora.values()) or sum(stage.corpora.values()) <= 0:
                problems.append(f"stage '{stage.name}' needs corpora with non-negative weights summing > 0")
            if not 0 < stage.plasticity <= 1:
                problems.append(f"stage '{stage.name}' plasticity must be in (0, 1], got {stage.plasticity}")
            if stage.share <= 0:
                problems.append(f"stage '{stage.name}' share must be > 0, got {stage.share}")
            if not 0 <= stage.facts <= 1:
                problems.append(f"stage '{stage.name}' facts must be in [0, 1] (a fraction of the rows), got {stage.facts}")
            elif stage.facts and self.seq_len < LONGEST_FACT:
                problems.append(f"stage '{stage.name}' plants facts of up to {LONGEST_FACT} bytes: "
                                f"use seq_len ≥ {LONGEST_FACT} or facts = 0")
        for name in ("batch_size", "seq_len", "grad_accum"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("steps", "eval_every", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.minutes < 0 or not self.minutes and self.steps < 1:
            problems.append(f"give steps ≥ 1 or a time budget minutes > 0 (got steps {self.steps}, minutes {self.minutes})")
        if self.minutes and self.warmup_steps < MIN_CALIBRATION_STEPS:
            problems.append(f"a recipe with minutes times its warmup steps to fix the step count; "
                            f"use warmup_steps ≥ {MIN_CALIBRATION_STEPS}, got {self.warmup_steps}")
        if not self.minutes and self.steps and self.warmup_steps > self.steps:  # with minutes, steps is only a cap
            problems.append(f"warmup_steps {self.warmup_steps} is longer than the run's {self.steps} steps")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if self.grad_clip <= 0:
            problems.append(f"grad_clip must be > 0 (the largest gradient norm a step may take), got {self.grad_clip}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be ≥ 0, got {self.weight_decay}")
        if self.adapt is not None and (self.adapt.method not in METHODS or self.adapt.lora_rank < 1):
            problems.append(f"[adapt] method must be one of {', '.join(METHODS)} and lora_rank ≥ 1, got "
                            f"{self.adapt.method!r}, {self.adapt.lora_rank}")
        if not 0 <= self.seed < 2 ** 63:
            problems.append(f"seed must be in [0, 2^63), got {self.seed}")
        return problems


def from_table(cls, values: dict, where: str):
    """A recipe dataclass from a TOML table, refusing unknown and missing keys in one line."""
    if not isinstance(values, dict):
        raise AGIFormerError(f"{where}: expected a table of values, got {values!r}")
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
