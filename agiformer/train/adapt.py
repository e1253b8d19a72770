"""Adapting a trained byte model to other text: singular-value fine-tuning (SVF), LoRA or a full
fine-tune of a frozen checkpoint, trained by the byte trainer from a recipe's `[adapt]` table
(`agiformer adapt` writes that recipe), saving only what it trained.

An adapter's checkpoint holds its config (`model_type = "adapter"`: the base checkpoint, the SHA-256 of
the base's weights file, the method) and the trained tensors only: the z-vectors for SVF, the A and B
factors for LoRA, every weight for a full fine-tune. Loading one loads its base, refuses a base whose
weights are not the ones it was trained on, and puts the adapter on it (`load_trained`); several SVF
adapters of one base are experts to mix (`load_experts`, `agiformer.eval.dispatch`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from agiformer.errors import AGIFormerError
from agiformer.models.config import ConfigMixin, read_config_values
from agiformer.models.pretrained import (
    CONFIG_FILE, WEIGHTS_FILE, check_weights_match, load_model, resolve_checkpoint,
)
from agiformer.nn.lora import add_lora
from agiformer.nn.svf import add_svf, expert_vectors, set_expert_vectors
from agiformer.serialization import load_tensors

Tensor = torch.Tensor
METHODS = ("svf", "lora", "full")


@dataclass
class Adaptation:
    """A recipe's [adapt] table: what to adapt and how."""
    base: str                        # the trained model: a run directory (its best checkpoint) or a checkpoint
    method: str = "svf"              # "svf" (z-vectors), "lora" (rank-`lora_rank` factors) or "full"
    lora_rank: int = 1
    layers: list[str] = field(default_factory=list)  # svf / lora: the linear layers adapted, by name; [] = all


@dataclass
class AdapterConfig(ConfigMixin):
    model_type: ClassVar[str] = "adapter"
    base: str = ""                   # the base checkpoint directory
    base_sha256: str = ""            # of the base's weights file: the adapter loads onto those weights only
    method: str = "svf"
    lora_rank: int = 1
    layers: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.check_types()
        self.check(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        self.check(self.lora_rank >= 1, f"lora_rank must be ≥ 1, got {self.lora_rank}")

    @classmethod
    def for_base(cls, adaptation: Adaptation) -> "AdapterConfig":
        checkpoint = resolve_checkpoint(adaptation.base)
        return cls(base=str(checkpoint), base_sha256=weights_digest(checkpoint), method=adaptation.method,
                   lora_rank=adaptation.lora_rank, layers=list(adaptation.layers))


def weights_digest(checkpoint: Path) -> str:
    digest = hashlib.sha256()
    with open(Path(checkpoint) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapted_base(config: AdapterConfig, *, map_location="cpu") -> nn.Module:
    """The base model with the adapter's trainable parts added (SVF z = 1, LoRA B = 0: still exactly the
    base) and everything else frozen; refuses a base whose weights changed since the adapter was made."""
    base = Path(config.base)
    if not (base / WEIGHTS_FILE).is_file():
        raise AGIFormerError(f"the adapter's base {base} is missing (no {WEIGHTS_FILE})")
    if weights_digest(base) != config.base_sha256:
        raise AGIFormerError(f"the adapter was trained on other weights than {base} now holds (SHA-256 "
                             f"{config.base_sha256[:12]}…); it cannot be used with this base")
    model = load_model(base, map_location=map_location).train()
    where = None
    if config.layers:
        known = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        unknown = sorted(set(config.layers) - known)
        if unknown:
            raise AGIFormerError(f"adapter layers {unknown[:3]} are not linear layers of {base}")

        def where(name: str, layer: nn.Linear) -> bool:
            return name in config.layers
    if config.method == "svf":
        add_svf(model, where=where)
    elif config.method == "lora":
        add_lora(model, rank=config.lora_rank, where=where)
    return model


class TrainedParameters(nn.Module):
    """The model's trainable parameters and nothing else, under their names: what an adapter's
    checkpoint holds (the same tensors as the model's, so loading it updates the model)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.trained = nn.ParameterDict({name.replace(".", ":"): p for name, p in model.named_parameters()
                                         if p.requires_grad})


def load_trained(checkpoint: Path, *, map_location="cpu") -> nn.Module:
    """The model in a checkpoint directory, in eval mode: a byte model, or an adapter on its base."""
    if read_config_values(checkpoint / CONFIG_FILE).get("model_type") != AdapterConfig.model_type:
        return load_model(checkpoint, map_location=map_location)
    model = adapted_base(AdapterConfig.load(checkpoint / CONFIG_FILE), map_location=map_location)
    trained = TrainedParameters(model)
    tensors = load_tensors(checkpoint / WEIGHTS_FILE)
    check_weights_match(trained.state_dict(), tensors, checkpoint / WEIGHTS_FILE)
    trained.load_state_dict(tensors)
    return model.eval()


def load_experts(adapters: dict[str, Path], *, map_location="cpu") -> tuple[nn.Module, dict[str, dict[str, Tensor]]]:
    """The base every SVF adapter in `adapters` (name → checkpoint) shares, with SVF layers at z = 1, and
    each adapter's z-vectors under its name."""
    configs = [AdapterConfig.load(Path(a) / CONFIG_FILE) for a in adapters.values()]
    if any(c.method != "svf" for c in configs) or len({(c.base, c.base_sha256) for c in configs}) != 1:
        raise AGIFormerError("experts must be SVF adapters (agiformer adapt --method svf) of one and the same base")
    model = adapted_base(configs[0], map_location=map_location).eval()
    ones, experts = expert_vectors(model), {}
    trained = TrainedParameters(model)
    for name, adapter in adapters.items():
        tensors = load_tensors(Path(adapter) / WEIGHTS_FILE)
        check_weights_match(trained.state_dict(), tensors, Path(adapter) / WEIGHTS_FILE)
        trained.load_state_dict(tensors)
        experts[name] = expert_vectors(model)
    set_expert_vectors(model, ones)
    return model, experts
