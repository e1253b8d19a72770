import pytest
import torch

from agiformer.errors import AGIFormerError
from agiformer.models import AGIFormerConfig
from agiformer.nn import ByteNgramEmbedding
from agiformer.ops import ngram_ids


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
