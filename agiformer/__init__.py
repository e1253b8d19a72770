"""agiformer: byte-level language models with fast-weight memory and adaptive computation."""

from agiformer.errors import AGIFormerError
from agiformer.models import AGIFormer, AGIFormerConfig

__all__ = ["AGIFormer", "AGIFormerConfig", "AGIFormerError"]
__version__ = "0.1.0"
