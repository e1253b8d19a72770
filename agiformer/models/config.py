"""AGIFormerConfig: a plain dataclass, stored as config.json next to the weights."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from agiformer.errors import AGIFormerError
from agiformer.serialization import atomic_write_text, read_json
from agiformer.validation import type_problems


class ConfigMixin:
    """JSON round trip for config dataclasses. config.json records `model_type`, so a directory of
    weights says which model it holds."""

    model_type: ClassVar[str]

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            raise AGIFormerError(f"invalid {self.model_type} config: {problem}")

    def check_types(self) -> None:
        """Refuse values of the wrong type (a count given 6.5, a number NaN) before any range check."""
        problems = type_problems(self)
        if problems:
            raise AGIFormerError(f"invalid {self.model_type} config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        values = dict(values)
        model_type = values.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise AGIFormerError(f"config is for a {model_type!r} model, not {cls.model_type!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            guesses = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, known, n=1))
                       else repr(key) for key in unknown]
            raise AGIFormerError(f"unknown config key(s) {', '.join(guesses)} for a {cls.model_type} model; "
                                 f"the keys are the fields of {cls.__module__}.{cls.__name__}")
        try:
            return cls(**values)
        except TypeError as error:
            raise AGIFormerError(f"invalid {cls.model_type} config: {error}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"model_type": self.model_type, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_dict(read_config_values(path))


def read_config_values(path: str | Path) -> dict:
    values = read_json(path)
    if not isinstance(values, dict):
        raise AGIFormerError(f"{path}: expected a JSON object of config values")
    return values


@dataclass
class AGIFormerConfig(ConfigMixin):
    model_type: ClassVar[str] = "agiformer"
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    patch_size: int = 4                 # bytes per latent (P); with dynamic patching, the most a patch holds
    patching: str = "fixed"             # patch ends: "fixed" every P bytes, "space" after words, "entropy", "learned"
    entropy_model: dict = dataclasses.field(default_factory=dict)  # "entropy": the byte LM's config (weights saved with the model)
    entropy_threshold: float = 2.0      # "entropy": bits above which the next byte starts a patch (`agiformer patch calibrate`)
    entropy_rule: str = "global"        # "entropy": "global" (entropy > threshold) or "monotonic" (its rise > threshold)
    target_patch_bytes: float = 4.0     # "learned": the mean patch length the ratio loss holds
    ratio_loss_weight: float = 0.03     # "learned": weight of H-Net's ratio loss
    encoder_overlap: int = 0            # left-context bytes per patch: 0 = seed v1 (kernel P), 2 = seed v2 (kernel P+2)
    window: int = 128                   # attention window, in patches (a query sees itself and window−1 before)
    mixer: str = "hybrid"               # "hybrid": attention and memory; ablations "attention" or "memory" only
    fusion: str = "sum"                 # attention + memory: "sum" (v1) or "gated" (v2)
    memory: str = "hebbian"             # block memory: "hebbian" (fast weights) or "neural" (Titans, agiformer.nn.neural_memory)
    memory_write: str = "gradient"      # neural memory's write: "gradient" (Titans) or "least_squares"
    memory_decay: str = "head"          # "head": learned constant per head (v1); "input": per position (v2)
    memory_chunk_size: int = 64         # chunk length of the chunkwise-parallel memory
    effort_sharpens_memory: bool = True  # low effort → λ^(1.1/(effort+0.1)), faster forgetting
    mlp_ratio: float = 4.0              # SwiGLU hidden size / d_model, in blocks and reasoning
    head: str = "gru"                   # byte head: "gru" (intra-patch autoregressive, v1) or "mlp" (parallel, v2)
    head_hidden: int = 256
    head_ngrams: int = 0                # GRU head: hashed n-grams of orders 2 … head_ngrams of the bytes before each byte; 0 = none
    head_ngram_buckets: int = 16384     # rows of the n-gram table per order (n-grams hashed into as many buckets)
    head_continuations: tuple[int, ...] = ()  # GRU head: for each order n, the byte after the last earlier occurrence of the n bytes before
    reasoning_steps: int = 3            # most refinement steps per position (effort 1); 0 = no reasoning block
    act_threshold: float = 0.99         # cumulative halting probability that stops a position at effort 1
    effort_threshold_shift: float = 0.5  # threshold lowered by (1 − effort)·shift
    halt_bias_init: float = -1.0
    ponder_weight: float = 0.01         # ACT ponder cost weight in the training loss (bits)
    discrepancy_weight: float = 0.0     # MVoT token discrepancy against the encoder's byte embeddings in the loss; 0 = off
    plasticity: float = 0.99            # α used when a call gives none: the last training stage's
    effort: float = 1.0                 # effort used when a call gives none
    train_effort_range: tuple[float, float] = (0.0, 1.0)  # effort is drawn per batch from this range
    dropout: float = 0.0
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        self.check_types()
        self.train_effort_range = tuple(self.train_effort_range)
        self.head_continuations = tuple(self.head_continuations)
        problems = []
        if self.n_heads >= 1 and (self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2):
            problems.append(f"d_model {self.d_model} must split into n_heads {self.n_heads} heads of even size")
        for name, allowed in (("mixer", ("hybrid", "attention", "memory")), ("fusion", ("sum", "gated")), ("memory", ("hebbian", "neural")),
                              ("memory_write", ("gradient", "least_squares")),
                              ("memory_decay", ("head", "input")), ("head", ("gru", "mlp")),
                              ("patching", ("fixed", "space", "entropy", "learned")),
                              ("entropy_rule", ("global", "monotonic"))):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("d_model", "n_layers", "n_heads", "patch_size", "window", "memory_chunk_size", "head_hidden",
                     "head_ngram_buckets"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("mlp_ratio", "rope_base", "norm_eps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1 or self.ponder_weight < 0 or self.discrepancy_weight < 0:
            problems.append(f"dropout must be in [0, 1), ponder_weight and discrepancy_weight ≥ 0, got {self.dropout}, "
                            f"{self.ponder_weight}, {self.discrepancy_weight}")
        if not 0 < self.act_threshold <= 1 or not 0 <= self.effort_threshold_shift < self.act_threshold:
            problems.append(f"act_threshold must be in (0, 1] and effort_threshold_shift in [0, act_threshold), "
                            f"got {self.act_threshold}, {self.effort_threshold_shift}")
        if self.head_ngrams < 0 or self.head_ngrams == 1 or (self.head_ngrams and self.head != "gru"):
            problems.append(f"head_ngrams must be 0 or ≥ 2, with the GRU head, got {self.head_ngrams} ({self.head} head)")
        if self.head_continuations and (self.head != "gru" or min(self.head_continuations) < 1
                                        or len(set(self.head_continuations)) != len(self.head_continuations)):
            problems.append(f"head_continuations must be distinct orders ≥ 1, with the GRU head, got "
                            f"{list(self.head_continuations)} ({self.head} head)")
        if self.patching == "entropy" and not self.entropy_model:
            problems.append("patching 'entropy' needs entropy_model, the config of a trained byte-ngram model "
                            "(a recipe names its directory: [model] entropy_model = \"out/NAME\")")
        if self.patching == "learned" and (self.head != "gru" or not 1 < self.target_patch_bytes <= self.patch_size
                                           or self.ratio_loss_weight < 0):
            problems.append(f"patching 'learned' needs the GRU head, 1 < target_patch_bytes ≤ patch_size and "
                            f"ratio_loss_weight ≥ 0, got {self.head} head, {self.target_patch_bytes}, {self.ratio_loss_weight}")
        if self.reasoning_steps < 0:
            problems.append(f"reasoning_steps must be ≥ 0, got {self.reasoning_steps}")
        if not 0 <= self.encoder_overlap <= self.patch_size:
            problems.append(f"encoder_overlap must be in [0, patch_size], got {self.encoder_overlap}")
        if not 0 < self.plasticity <= 1:
            problems.append(f"plasticity must be in (0, 1], got {self.plasticity}")
        lo, hi = self.train_effort_range
        if not (0 <= self.effort <= 1 and 0 <= lo <= hi <= 1):
            problems.append("effort and train_effort_range must lie in [0, 1]")
        if problems:
            raise AGIFormerError("invalid AGIFormer config: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides) -> "AGIFormerConfig":
        if name not in PRESETS:
            raise AGIFormerError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


PRESETS: dict[str, dict] = {
    # for tests: every v2 feature at toy size, window shorter than a test sequence
    "tiny": dict(d_model=32, n_layers=2, n_heads=2, window=4, encoder_overlap=2, fusion="gated",
                 memory_decay="input", memory_chunk_size=8, mlp_ratio=2.0, head="gru", head_hidden=32),
    # seed v1 (README @25bcaf2): 512/6/8, window 128 patches, summed fusion, per-head decay, GRU head
    "v1": dict(d_model=512, n_layers=6, n_heads=8, window=128, encoder_overlap=0, fusion="sum",
               memory_decay="head", head="gru", head_hidden=256),
    # seed v2 (implementation plan, train_scaled.py): 768/12/12, window 256, gated fusion, input decay, MLP head
    "v2": dict(d_model=768, n_layers=12, n_heads=12, window=256, encoder_overlap=2, fusion="gated",
               memory_decay="input", head="mlp", head_hidden=512),
}
