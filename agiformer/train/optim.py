"""The optimizer every trainer uses: AdamW in parameter groups, with sparse-row updates for large
embedding tables, and the gradient clipping that goes with it."""

from __future__ import annotations

import torch
from torch import nn

from agiformer.ops.adamw_rows import adamw_rows_

# an embedding table with at least this many rows gets sparse gradients when the trainer asks for them
# (`use_sparse_tables`): a step of runs/en-wiki-baseline.toml looks up at most 41 k of the 328 k rows of
# its n-gram table, and AdamW over the whole table, its dense gradient written, clipped and cleared,
# took 200 ms of a 1.3 s step on an AMD EPYC Zen 4 (sparse rows: 27 ms; benchmarks.embedding_sum)
SPARSE_TABLE_ROWS = 65536


class LazyAdamW(torch.optim.AdamW):
    """torch's AdamW, except that a parameter whose gradient is sparse rows (an embedding table looked
    up with sparse gradients) gets AdamW's update on those rows only: a row no step has looked up since
    keeps its weights and moments, where AdamW would move every row of the table by its momentum and
    weight decay at every step (TensorFlow's LazyAdam, torch's SparseAdam with decoupled weight decay).
    Bias corrections count every step of the parameter. Dense gradients take AdamW's own kernels."""

    def __init__(self, params, **options):
        super().__init__(params, **options)
        self.scratch: dict[torch.Tensor, torch.Tensor] = {}  # per table, what adamw_rows_ works in; not state

    @torch.no_grad()
    def step(self, closure=None):
        sparse = [(group, p) for group in self.param_groups for p in group["params"]
                  if p.grad is not None and p.grad.is_sparse]
        grads = [p.grad for _, p in sparse]
        for _, p in sparse:
            p.grad = None  # AdamW skips parameters without a gradient
        try:
            loss = super().step(closure)
        finally:
            for (_, p), grad in zip(sparse, grads):
                p.grad = grad
        for (group, p), grad in zip(sparse, grads):
            if group["amsgrad"] or group["maximize"]:
                raise ValueError("LazyAdamW's sparse rows support neither amsgrad nor maximize")
            state = self.state[p]
            if not state:
                state.update(step=torch.zeros((), dtype=torch.float32), exp_avg=torch.zeros_like(p),
                             exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
            grad = grad.coalesce()
            rows = grad.indices()[0]
            scratch = self.scratch.get(p)
            if scratch is None or scratch.shape[1] < len(rows):
                scratch = self.scratch[p] = p.new_empty(3, len(rows) + len(rows) // 4, p.shape[1])
            adamw_rows_(p, state["exp_avg"], state["exp_avg_sq"], rows, grad.values(), step=int(state["step"].item()),
                        lr=float(group["lr"]), betas=group["betas"], eps=group["eps"],
                        weight_decay=group["weight_decay"], scratch=scratch)
        return loss


def use_sparse_tables(model: nn.Module) -> list[nn.Embedding]:
    """Give every embedding table of at least SPARSE_TABLE_ROWS rows sparse gradients; returns them."""
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings >= SPARSE_TABLE_ROWS]
    for table in tables:
        table.sparse = True
    return tables


def optimizer_for(model: nn.Module, recipe, *, lr_scales: dict[str, float] | None = None) -> LazyAdamW:
    """Weight decay on matrices only, not on biases, norms, embeddings' padding or scalars per head.
    lr_scales: parameters whose names end with a key train at the recipe's learning rate times its
    value, in groups of their own (`scheduled_lr` applies each group's "lr_scale")."""
    groups = {}
    for name, p in model.named_parameters():
        scale = next((s for suffix, s in (lr_scales or {}).items() if name.endswith(suffix)), 1.0)
        groups.setdefault((p.dim() >= 2, scale), []).append(p)
    order = sorted(groups, key=lambda key: (key[1] != 1.0, not key[0], key[1]))  # unscaled first, as before
    # fused: one kernel per parameter instead of torch's default loop of elementwise ops on CPU, which took
    # 205 ms of a ~1.2 s step on the 19.7 M parameters of runs/en-wiki-baseline.toml (fused: 19 ms)
    return LazyAdamW([{"params": groups[key], "weight_decay": recipe.weight_decay if key[0] else 0.0,
                       **({"lr_scale": key[1]} if key[1] != 1.0 else {})} for key in order],
                     lr=recipe.lr, betas=(0.9, 0.95), fused=True)


def scheduled_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to `lr`, times the group's "lr_scale" where it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@torch.no_grad()
def clip_gradients(parameters, max_norm: float) -> float:
    """torch's clip_grad_norm_ (the 2-norm over every gradient, all scaled down to `max_norm` when above
    it), for gradients that may be sparse rows: those are coalesced first, so that a row looked up twice
    counts once with its summed gradient. Returns the norm before clipping."""
    grads = []
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        elif p.grad is not None:
            grads.append(p.grad)
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return norm.item()
