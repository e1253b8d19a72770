from agiformer.models.agiformer import AGIFormer, ModelOutput
from agiformer.models.byte_gpt import ByteGPT, ByteGPTConfig
from agiformer.models.byte_ngram_lm import ByteNgramLM, ByteNgramLMConfig
from agiformer.models.config import PRESETS, AGIFormerConfig
from agiformer.models.outputs import LossOutput
from agiformer.models.pretrained import build_model, load_model, resolve_checkpoint, save_model, saved_config
from agiformer.models.streaming import ByteStream, sample_byte

__all__ = ["AGIFormer", "AGIFormerConfig", "PRESETS", "ByteGPT", "ByteGPTConfig", "ByteNgramLM",
           "ByteNgramLMConfig", "ModelOutput", "LossOutput", "ByteStream", "sample_byte", "build_model", "load_model",
           "resolve_checkpoint", "save_model", "saved_config"]
