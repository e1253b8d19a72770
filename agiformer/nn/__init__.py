"""Layers built on `agiformer.ops`."""

from agiformer.nn.attention import WindowAttention
from agiformer.nn.block import BlockState, HybridBlock
from agiformer.nn.encoder import NO_BYTE, PatchEncoder, Patches
from agiformer.nn.heads import GRUByteHead, MLPByteHead
from agiformer.nn.memory import HebbianMemory
from agiformer.nn.mlp import SwiGLU
from agiformer.nn.ngram import ByteNgramEmbedding
from agiformer.nn.neural_memory import NeuralMemory
from agiformer.nn.reasoning import AdaptiveReasoning, ReasoningOutput

__all__ = [
    "PatchEncoder", "Patches", "NO_BYTE", "HebbianMemory", "WindowAttention", "HybridBlock", "BlockState",
    "AdaptiveReasoning", "ReasoningOutput", "GRUByteHead", "MLPByteHead", "SwiGLU",
    "NeuralMemory", "ByteNgramEmbedding",
]
