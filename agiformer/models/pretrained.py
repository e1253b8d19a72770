"""Saving and loading any of the project's byte models: config.json (with its model_type) next to
model.safetensors, both written atomically, both validated on load with one-line errors."""

from __future__ import annotations

from pathlib import Path

import torch

from agiformer.errors import AGIFormerError
from agiformer.models.config import read_config_values
from agiformer.serialization import load_tensors, save_tensors

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def model_classes() -> dict:
    from agiformer.models.agiformer import AGIFormer
    from agiformer.models.byte_gpt import ByteGPT
    from agiformer.models.byte_ngram_lm import ByteNgramLM

    return {cls.config_class.model_type: cls for cls in (AGIFormer, ByteGPT, ByteNgramLM)}


def saved_config(directory: str | Path):
    """The config saved in a model directory, as its model_type's config class (a config.json without
    model_type is an AGIFORMER's, as the first checkpoints were)."""
    path = Path(directory) / CONFIG_FILE
    values = read_config_values(path)
    classes = model_classes()
    model_type = values.get("model_type", "agiformer")
    if model_type == "adapter":  # agiformer.train.adapt writes these: weights that load onto a base model
        raise AGIFormerError(f"{path.parent} holds an adapter of {values.get('base', 'another model')}, not a model: "
                             "adapt or train from its base; eval and generate load adapters onto their base")
    if not isinstance(model_type, str) or model_type not in classes:
        raise AGIFormerError(f"{path}: unknown model_type {model_type!r}; known: {', '.join(classes)}")
    return classes[model_type].config_class.from_dict(values)


def build_model(config):
    """The model a config describes; a config too large to allocate is a one-line error, not a traceback."""
    try:
        return model_classes()[config.model_type](config)
    except (RuntimeError, TypeError, OverflowError, MemoryError) as error:
        if isinstance(error, (RuntimeError, TypeError)) and not any(
                word in str(error) for word in ("allocate", "Overflow", "overflow")):
            raise
        raise AGIFormerError(f"the {config.model_type} model of this config does not fit in memory ("
                             f"{str(error).splitlines()[0][:160]}); choose smaller sizes") from None


def save_model(model, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, model.state_dict())
    model.config.save(directory / CONFIG_FILE)


def resolve_checkpoint(path: str | Path) -> Path:
    """A model directory, or a run directory (its `best`, else `last`, checkpoint)."""
    directory = Path(path)
    if not directory.exists():
        raise AGIFormerError(f"checkpoint {directory} does not exist; pass a run directory (out/NAME) "
                             "or one of its checkpoints (out/NAME/best)")
    if (directory / CONFIG_FILE).is_file() or not directory.is_dir():
        return directory
    for name in ("best", "best.old", "last", "last.old"):  # .old: the previous save, if a save's swap was cut short
        if (directory / name / CONFIG_FILE).is_file():
            return directory / name
    raise AGIFormerError(f"{directory} holds no checkpoint (no config.json, best/ or last/)")


def load_model(directory: str | Path, *, expected: type | None = None, map_location="cpu"):
    """The model saved in `directory`, in eval mode; `expected` restricts the model class."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AGIFormerError(f"{directory}: no such model directory")
    config = saved_config(directory)
    if expected is not None and config.model_type != expected.config_class.model_type:
        raise AGIFormerError(f"{directory} holds a {config.model_type} model, not {expected.config_class.model_type}")
    tensors = load_tensors(directory / WEIGHTS_FILE)
    model = build_model(config)
    check_weights_match(model.state_dict(), tensors, directory / WEIGHTS_FILE)
    model.load_state_dict(tensors)
    return model.to(map_location).eval()


def check_weights_match(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise AGIFormerError(f"{path}: weights do not match config.json ({detail}); "
                             "the config and weights come from different models")
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape:
            raise AGIFormerError(f"{path}: weights do not match config.json ({name} has shape "
                                 f"{tuple(found[name].shape)}, the config needs {tuple(tensor.shape)})")
