from agiformer.models.agiformer import AGIFormer, LossOutput, ModelOutput
from agiformer.models.config import PRESETS, AGIFormerConfig
from agiformer.models.streaming import ByteStream, sample_byte

__all__ = ["AGIFormer", "AGIFormerConfig", "PRESETS", "ModelOutput", "LossOutput", "ByteStream", "sample_byte"]
