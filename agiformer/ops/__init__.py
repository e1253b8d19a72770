"""The math: framework-level functions, each fast form beside its plain reference and its one-step form."""

from agiformer.ops.byte_continuation import (
    NO_CONTINUATION,
    continuation_ids,
    continuation_step,
    continuation_table,
    continuation_write,
    initial_continuation_table,
    naive_continuation_ids,
)
from agiformer.ops.byte_ngrams import NO_BYTE, histories, ngram_ids
from agiformer.ops.embedding_sum import embedding_sum, naive_embedding_sum
from agiformer.ops.hebbian import chunked_hebbian, hebbian_step, initial_hebbian_state, naive_hebbian
from agiformer.ops.token_discrepancy import codebook_distances, naive_token_discrepancy, token_discrepancy
from agiformer.ops.window_attention import (
    RollingKV,
    apply_rotary,
    blockwise_window_attention,
    naive_window_attention,
    rolling_kv_from_sequence,
    rotary_angles,
    window_attention_step,
)

__all__ = [
    "chunked_hebbian", "naive_hebbian", "hebbian_step", "initial_hebbian_state",
    "blockwise_window_attention", "naive_window_attention", "window_attention_step",
    "RollingKV", "rolling_kv_from_sequence", "rotary_angles", "apply_rotary", "ngram_ids", "NO_BYTE", "histories",
    "continuation_ids", "naive_continuation_ids", "continuation_step", "continuation_write", "continuation_table",
    "initial_continuation_table", "NO_CONTINUATION", "embedding_sum", "naive_embedding_sum",
    "token_discrepancy", "naive_token_discrepancy", "codebook_distances",
]
