"""Memory as a Gate (MAG): a trainable neural memory gated into chosen layers of a frozen Hugging Face
causal LM. An optional extra: only `agiformer.mag.base` (loading the base) and the curricula's
smollm2-135m tokenizer need transformers."""

from agiformer.mag.config import MAGConfig, parse_layers
from agiformer.mag.model import MAGModel, MAGState, load_mag, save_mag

__all__ = ["MAGConfig", "MAGModel", "MAGState", "load_mag", "parse_layers", "save_mag"]
