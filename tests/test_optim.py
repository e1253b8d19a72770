"""AdamW on sparse rows (large embedding tables) against torch's AdamW and a textbook loop, and the
gradient clipping that handles sparse rows against torch's clip_grad_norm_."""

import pytest
import torch
from torch import nn

from agiformer import AGIFormer, AGIFormerConfig
from agiformer.nn import ByteNgramEmbedding
from agiformer.ops.adamw_rows import adamw_rows_, naive_adamw_rows_
from agiformer.train.optim import SPARSE_TABLE_ROWS, LazyAdamW, clip_gradients, use_sparse_tables

HYPER = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("lr_control", [False, True])
def test_adamw_rows_matches_the_textbook_loop_and_leaves_other_rows(lr_control):
    torch.manual_seed(0)
    fast = [torch.randn(40, 6, dtype=torch.float64), torch.zeros(40, 6, dtype=torch.float64),
            torch.zeros(40, 6, dtype=torch.float64)]
    slow, initial, never = [t.clone() for t in fast], fast[0].clone(), torch.ones(40, dtype=torch.bool)
    scratch = torch.full((3, 9, 6), float("nan"), dtype=torch.float64)  # larger than the rows, and dirty
    for step in range(1, 5):
        rows = torch.randperm(40)[:8]
        grad = torch.randn(8, 6, dtype=torch.float64)
        adamw_rows_(*fast, rows, grad, step=step, **HYPER, scratch=scratch if step > 2 else None)
        naive_adamw_rows_(*slow, rows, grad, step=step, **{**HYPER, "lr": HYPER["lr"] * (1.01 if lr_control else 1)})
        never[rows] = False
    error = max(relative_error(a, b) for a, b in zip(fast, slow))
    assert (error > 1e-6) if lr_control else (error < 1e-12)
    assert never.any() and torch.equal(fast[0][never], initial[never]) and fast[2][never].abs().max() == 0


@pytest.mark.parametrize("lr_control", [False, True])
def test_lazy_adamw_with_every_row_looked_up_is_adamw(lr_control):
    """A table whose every row is in every step's gradient: lazy and dense AdamW are the same update."""
    torch.manual_seed(0)
    table = nn.Embedding(20, 4, sparse=True).double()
    dense = nn.Parameter(table.weight.detach().clone())
    lazy = LazyAdamW(table.parameters(), **HYPER, fused=True)
    reference = torch.optim.AdamW([dense], **{**HYPER, "lr": HYPER["lr"] * (1.01 if lr_control else 1)}, foreach=False)
    for _ in range(4):
        ids = torch.cat([torch.randperm(20), torch.randint(0, 20, (10,))])  # every row, some twice
        target = torch.randn(30, 4, dtype=torch.float64)
        (table(ids) * target).sum().backward()
        (nn.functional.embedding(ids, dense) * target).sum().backward()
        assert table.weight.grad.is_sparse
        lazy.step()
        reference.step()
        lazy.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
    error = relative_error(table.weight.detach(), dense.detach())
    assert (error > 1e-6) if lr_control else (error < 1e-12)


def test_lazy_adamw_moves_only_the_rows_looked_up_and_dense_parameters_as_adamw():
    torch.manual_seed(0)
    table, linear = nn.Embedding(30, 4, sparse=True).double(), nn.Linear(4, 3).double()
    dense_linear = nn.Linear(4, 3).double()
    dense_linear.load_state_dict(linear.state_dict())
    lazy = LazyAdamW([*table.parameters(), *linear.parameters()], **HYPER, fused=True)
    reference = torch.optim.AdamW(dense_linear.parameters(), **HYPER, foreach=False)
    expected = [table.weight.detach().clone(), torch.zeros(30, 4, dtype=torch.float64),
                torch.zeros(30, 4, dtype=torch.float64)]
    for step in range(1, 4):
        ids = torch.tensor([3, 7, 7, 12]) + step  # rows 4, 8, 13, then 5, 9, 14, then 6, 10, 15
        x = table(ids)
        linear(x).square().sum().backward()
        dense_linear(x.detach()).square().sum().backward()
        grad = table.weight.grad.coalesce()
        naive_adamw_rows_(*expected, grad.indices()[0], grad.values(), step=step, **HYPER)
        lazy.step()
        reference.step()
        lazy.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
    state = lazy.state[table.weight]
    assert relative_error(table.weight.detach(), expected[0]) < 1e-12
    assert relative_error(state["exp_avg"], expected[1]) < 1e-12 and state["step"].item() == 3
    never = [r for r in range(30) if r not in (4, 5, 6, 8, 9, 10, 13, 14, 15)]
    assert state["exp_avg"][never].abs().max() == 0 and state["exp_avg_sq"][never].abs().max() == 0
    assert all(relative_error(p.detach(), q.detach()) < 1e-12 for p, q in zip(linear.parameters(),
                                                                            dense_linear.parameters()))


@pytest.mark.parametrize("max_norm", [0.1, 1e6])  # clipped, and left alone
def test_clip_gradients_with_sparse_rows_is_clip_grad_norm(max_norm):
    torch.manual_seed(0)
    table, linear = nn.Embedding(10, 4, sparse=True).double(), nn.Linear(4, 2).double()
    dense_table = nn.Parameter(table.weight.detach().clone())
    dense_linear = nn.Linear(4, 2).double()
    dense_linear.load_state_dict(linear.state_dict())
    ids = torch.tensor([1, 2, 2, 2, 9])  # row 2 three times: its summed gradient counts once
    linear(table(ids)).square().sum().backward()
    dense_linear(nn.functional.embedding(ids, dense_table)).square().sum().backward()
    norm = clip_gradients([*table.parameters(), *linear.parameters()], max_norm)
    expected = torch.nn.utils.clip_grad_norm_([dense_table, *dense_linear.parameters()], max_norm).item()
    assert abs(norm - expected) < 1e-12 * expected
    assert relative_error(table.weight.grad.to_dense(), dense_table.grad) < 1e-12
    assert relative_error(linear.weight.grad, dense_linear.weight.grad) < 1e-12


def test_sparse_ngram_table_gradient_equals_the_dense_one():
    torch.manual_seed(0)
    ngrams = ByteNgramEmbedding(dim=8, max_order=4, buckets=64).double()
    history = torch.randint(0, 257, (3, 5, 4))
    target = torch.randn(3, 5, 8, dtype=torch.float64)
    (ngrams(history) * target).sum().backward()
    dense = ngrams.table.weight.grad.clone()
    ngrams.table.weight.grad = None
    ngrams.table.sparse = True
    (ngrams(history) * target).sum().backward()
    assert ngrams.table.weight.grad.is_sparse
    assert relative_error(ngrams.table.weight.grad.to_dense(), dense) < 1e-12


def test_only_large_tables_get_sparse_gradients():
    model = AGIFormer(AGIFormerConfig.preset("tiny", head="gru", head_ngrams=6, head_ngram_buckets=SPARSE_TABLE_ROWS // 4))
    tables = use_sparse_tables(model)
    assert tables == [model.head.ngrams.table] and tables[0].num_embeddings == 5 * SPARSE_TABLE_ROWS // 4
    assert not any(m.sparse for m in model.modules() if isinstance(m, nn.Embedding) and m not in tables)
