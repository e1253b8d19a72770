import pytest
import torch

from agiformer.errors import AGIFormerError
from agiformer.models import AGIFormerConfig
from agiformer.nn import ByteNgramEmbedding
from agiformer.ops import ngram_ids
from agiformer.ops import (
    NO_CONTINUATION, continuation_ids, continuation_step, continuation_table, continuation_write,
    initial_continuation_table, naive_continuation_ids,
)


def test_an_ngram_id_depends_on_its_last_bytes_only():
    history = torch.randint(0, 257, (500, 5))
    for order in (1, 2, 3, 5):
        ids = ngram_ids(history, order, 1024)
        assert ids.min() >= 0 and ids.max() < 1024
        changed = history.clone()
        changed[:, : 5 - order] = torch.randint(0, 257, (500, 5 - order))  # bytes older than the n-gram
        assert torch.equal(ngram_ids(changed, order, 1024), ids)
        if order > 1:
            changed[:, 5 - order] = (history[:, 5 - order] + 1) % 257  # the n-gram's oldest byte
            assert (ngram_ids(changed, order, 1 << 20) != ngram_ids(history, order, 1 << 20)).all()


def test_ngram_buckets_spread_every_bigram():
    first, second = torch.meshgrid(torch.arange(257), torch.arange(257), indexing="ij")
    ids = ngram_ids(torch.stack([first.flatten(), second.flatten()], -1), 2, 16384)
    counts = torch.bincount(ids, minlength=16384).float()
    # 66,049 bigrams into 16,384 buckets: about 4 each, as a random function gives
    assert counts.mean() == pytest.approx(66049 / 16384) and counts.max() <= 16


def test_ngram_embedding_sums_one_row_per_order():
    embedding = ByteNgramEmbedding(dim=8, max_order=3, buckets=64)
    history = torch.randint(0, 257, (4, 6, 3))
    expected = embedding.table.weight[ngram_ids(history, 2, 64)] + embedding.table.weight[64 + ngram_ids(history, 3, 64)]
    assert torch.allclose(embedding(history), expected, rtol=0, atol=1e-6)


def test_ngram_head_options_are_checked():
    with pytest.raises(AGIFormerError, match="head_ngrams"):
        AGIFormerConfig.preset("tiny", head_ngrams=1)
    with pytest.raises(AGIFormerError, match="head_ngrams"):
        AGIFormerConfig.preset("tiny", head="mlp", head_ngrams=3)
    with pytest.raises(AGIFormerError, match="head_ngram_buckets"):
        AGIFormerConfig.preset("tiny", head_ngrams=3, head_ngram_buckets=0)


@pytest.mark.parametrize("buckets", [5, 1 << 18])  # 5: contexts collide, and both forms must agree on it
@pytest.mark.parametrize("order", [1, 2, 4, 9])
def test_continuations_parallel_reference_and_streaming_agree(order, buckets):
    alphabet = 3 if order < 9 else 2  # small, so contexts recur: most positions have a continuation
    x = torch.randint(0, alphabet, (3, 200), generator=torch.Generator().manual_seed(order))
    fast = continuation_ids(x, order, buckets)
    assert torch.equal(fast, naive_continuation_ids(x, order, buckets))
    assert (fast != NO_CONTINUATION).float().mean() > 0.1
    table, history, streamed = initial_continuation_table(3, buckets), torch.full((3, order), 256), []
    for t in range(200):
        streamed.append(continuation_step(table, history, order))
        continuation_write(table, history, x[:, t], order)
        history = torch.cat([history[:, 1:], x[:, t:t + 1]], dim=1)
        if t in (0, 57, 199):  # the table built at once from a prefix is the one written byte by byte
            assert torch.equal(continuation_table(x[:, :t + 1], order, buckets), table)
    assert torch.equal(torch.stack(streamed, dim=1), fast)


def test_a_continuation_is_the_byte_after_the_last_earlier_occurrence():
    x = torch.tensor([list(b"abcdefgh abcdefgX abcdefg")])
    found = bytes(b if b != NO_CONTINUATION else ord(".") for b in continuation_ids(x, 4, 1 << 18)[0].tolist())
    assert found == b".............efgh....defg"  # "abcd" → e (twice), "defg" → h, then X after the second one
    assert continuation_ids(x[:, :0], 4, 64).shape == (1, 0)


def test_continuation_head_options_are_checked():
    for bad in [dict(head_continuations=(0,)), dict(head_continuations=(2, 2)),
                dict(head="mlp", head_continuations=(4,))]:
        with pytest.raises(AGIFormerError, match="head_continuations"):
            AGIFormerConfig.preset("tiny", **bad)
