"""MAGConfig: which decoder layers of a frozen causal LM get a neural memory, and how it is built.

The base model's identity (architecture, hidden size, layer count) is recorded when the config is
made for a base, so trained MAG weights are never loaded onto a base they were not trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from agiformer.errors import AGIFormerError
from agiformer.models.config import ConfigMixin
from agiformer.nn.neural_memory import memory_problems

DEFAULT_WINDOW = 256  # tokens a windowed layer attends to when a recipe or a command gives no window
MEMORY_CONV_KERNEL = 4  # taps of the memory's causal q/k/v convolution
# fields no recipe set and no measurement needed, removed; the values the memory now always uses
RETIRED_FIELDS = {"memory_heads": 1, "grad_chunks": None, "max_lr": 0.1, "memory_conv_kernel": MEMORY_CONV_KERNEL}
MEMORY_VALUES = ("state", "embeddings")
MEMORY_READ_SCALES = ("unit", "residual")


def parse_layers(spec: str | list[int] | tuple[int, ...], num_layers: int) -> list[int]:
    """Decoder-layer indices from "all", "every_N" (0, N, 2N, …), "last_N", "0,4,8" or a list."""
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if text == "all":
                indices = list(range(num_layers))
            elif text.startswith("every_"):
                step = int(text[len("every_"):])
                if step < 1:
                    raise ValueError
                indices = list(range(0, num_layers, step))
            elif text.startswith("last_"):
                count = int(text[len("last_"):])
                if not 1 <= count <= num_layers:
                    raise ValueError
                indices = list(range(num_layers - count, num_layers))
            else:
                indices = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise AGIFormerError(f"MAG layers {spec!r}: expected 'all', 'every_N', 'last_N' (1 ≤ N ≤ "
                                 f"{num_layers}) or comma-separated indices like '0,4,8'") from None
    else:
        indices = [int(i) for i in spec]
    bad = [i for i in indices if not 0 <= i < num_layers]
    if bad:
        raise AGIFormerError(f"MAG layers {bad} out of range: the base has decoder layers 0…{num_layers - 1}")
    return sorted(set(indices))


# Named starting points, measured on SmolLM2-135M (30 decoder layers) with hash-hop at window 256
# (docs/mag.md, docs/results/mag-history.md): `MAGConfig.for_base(base, preset=NAME)`, or `preset = NAME`
# in a recipe's [mag] table; fields given beside a preset replace its values.
PRESETS: dict[str, dict] = {
    # what recalls: one least-squares memory at layer 24, keyed by layer 4's states over the 4 tokens
    # before a value, storing token embeddings; 92 % of the recall grid (runs/mag/hashhop.toml)
    "hash-hop": {"layers": "24", "window": DEFAULT_WINDOW, "memory_write": "least_squares", "memory_ridge": 1e-3,
                 "memory_chunk_size": 64, "memory_key_span": 4, "memory_key_form": "concat",
                 "memory_source_layer": 4, "memory_values": "embeddings", "memory_read_scale": "residual",
                 "gate_bias_init": -2.0},
    # Titans' setup for comparison: a gradient-written memory beside every 4th layer (at layers 12, 16, 20, 24
    # it recalled 0 % of the same grid after 1,200 steps)
    "titans": {"layers": "every_4", "window": DEFAULT_WINDOW},
}


@dataclass
class MAGConfig(ConfigMixin):
    model_type: ClassVar[str] = "mag"
    layers: list[int] = field(default_factory=list)  # decoder layers with a memory (empty: the plain base)
    window: int | None = None           # attention window in tokens (a query sees itself and W−1 before); None = full
    memory_depth: int = 1               # layers of the memory MLP (2 diverged in training on SmolLM2, see NeuralMemory)
    memory_chunk_size: int = 16         # tokens per memory write
    memory_key_span: int = 1            # q and k start from this many tokens (sum: at most 3, the convolution's 4 taps − 1)
    memory_key_form: str = "sum"        # "sum" or "concat": the key_span tokens side by side (least squares only)
    memory_write: str = "gradient"      # "gradient" (Titans) or "least_squares" (the ridge map over all pairs, depth 1)
    memory_ridge: float = 1e-2          # λ of the least-squares write
    memory_source_layer: int | None = None  # decoder layer whose normed input every memory's q and k see (None: its own)
    memory_values: str = "state"        # what a memory stores: "state" (what its q, k see) or "embeddings" (token rows)
    memory_read_scale: str = "unit"     # the normed read enters as is ("unit") or times the residual's RMS ("residual")
    gate_bias_init: float = -4.0        # σ(−4) ≈ 0.018: the gate starts nearly closed, the base's behaviour kept
    query_refinement: bool = True       # memory queries also see the previous MAG layer's memory output
    base_architecture: str = ""         # e.g. "LlamaForCausalLM"; "" until made for a base
    base_hidden_size: int = 0
    base_num_layers: int = 0

    def __post_init__(self):
        if isinstance(self.layers, str):
            # "every_4" means nothing without the layer count; a bare config cannot resolve it
            self.check(self.base_num_layers > 0, f"layers {self.layers!r} needs base_num_layers; "
                       "use MAGConfig.for_base(model, layers=...) or list the indices")
            self.layers = parse_layers(self.layers, self.base_num_layers)
        self.layers = list(self.layers)
        self.check(all(isinstance(i, int) and i >= 0 for i in self.layers),
                   f"layers must be decoder-layer indices ≥ 0, got {self.layers}")
        self.check(len(set(self.layers)) == len(self.layers) and self.layers == sorted(self.layers),
                   f"layers must be increasing without repeats, got {self.layers}")
        if self.base_num_layers:
            self.check(all(i < self.base_num_layers for i in self.layers),
                       f"layers {self.layers} out of range for a base with {self.base_num_layers} layers")
        self.check(self.window is None or self.window >= 1, f"window must be ≥ 1 or None, got {self.window}")
        problems = memory_problems(depth=self.memory_depth, chunk_size=self.memory_chunk_size,
                                   conv_kernel=MEMORY_CONV_KERNEL, key_span=self.memory_key_span,
                                   key_form=self.memory_key_form, write=self.memory_write, ridge=self.memory_ridge)
        self.check(not problems, "memory: " + "; ".join(problems))
        self.check(self.memory_values in MEMORY_VALUES, f"memory_values must be one of {', '.join(MEMORY_VALUES)}, "
                   f"got {self.memory_values!r}")
        self.check(self.memory_read_scale in MEMORY_READ_SCALES, f"memory_read_scale must be one of "
                   f"{', '.join(MEMORY_READ_SCALES)}, got {self.memory_read_scale!r}")
        if self.memory_source_layer is not None:
            self.check(isinstance(self.memory_source_layer, int) and self.memory_source_layer >= 0
                       and (not self.layers or self.memory_source_layer <= self.layers[0]),
                       f"memory_source_layer must be a decoder layer at or below the first MAG layer "
                       f"{self.layers[:1]}, got {self.memory_source_layer}")
        self.check(math.isfinite(self.gate_bias_init), f"gate_bias_init must be finite, got {self.gate_bias_init}")
        self.check(self.base_hidden_size >= 0 and self.base_num_layers >= 0,
                   "base_hidden_size and base_num_layers must be ≥ 0 (0: not recorded yet)")

    @classmethod
    def from_dict(cls, values: dict) -> "MAGConfig":
        values = dict(values)
        for key, fixed in RETIRED_FIELDS.items():  # saved by earlier versions: loadable where they held the fixed value
            if key in values and (value := values.pop(key)) != fixed:
                raise AGIFormerError(f"this MAG config sets {key} = {value!r}, a field that no longer exists: "
                                     f"the memory now always uses {fixed!r}")
        return super().from_dict(values)

    @property
    def has_base_identity(self) -> bool:
        return bool(self.base_architecture)

    def base_identity(self) -> tuple[str, int, int]:
        return self.base_architecture, self.base_hidden_size, self.base_num_layers

    @classmethod
    def for_base(cls, base, *, preset: str | None = None, **overrides) -> "MAGConfig":
        """A config for this Hugging Face causal LM: its identity recorded, `layers` resolved; a `preset`
        (see PRESETS) gives the starting values, `overrides` replace them; layers "every_4" unless given."""
        architecture, hidden, num_layers = base_identity(base)
        values = preset_values(preset, overrides)
        return cls(**{**values, "layers": parse_layers(values["layers"], num_layers)},
                   base_architecture=architecture, base_hidden_size=hidden, base_num_layers=num_layers)


def preset_values(preset: str | None, overrides: dict) -> dict:
    """A preset's fields with `overrides` on top; without a preset, the field defaults and layers "every_4"."""
    if preset is not None and preset not in PRESETS:
        raise AGIFormerError(f"unknown MAG preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"layers": "every_4", **PRESETS.get(preset, {}), **overrides}


def base_identity(base) -> tuple[str, int, int]:
    """(class name, hidden size, decoder-layer count) of a loaded causal LM."""
    try:
        return type(base).__name__, int(base.config.hidden_size), len(base.model.layers)
    except AttributeError as error:
        raise AGIFormerError(f"{type(base).__name__} is not a supported causal LM: {error}") from None
