"""Token discrepancy against a codebook (MVoT): the expected distance between the embedding of the
predicted token and that of the target, Σₖ pₖ · ‖eₖ − e_target‖, under the predicted distribution p.

Cross-entropy scores a wrong prediction the same whichever wrong token it is; this loss charges less
for a token whose embedding lies near the target's. It needs a real codebook (a table of the tokens'
embeddings, K × d): there is no default, and random distances would teach nothing.
"""

from __future__ import annotations

import torch

from agiformer.errors import AGIFormerError

Tensor = torch.Tensor


def codebook_distances(codebook: Tensor) -> Tensor:
    """(K, K) Euclidean distances between the codebook's rows, a constant of the loss: the codebook's
    own gradient would pull its rows together, shrinking every distance (and the loss) to nothing."""
    rows = codebook.detach()
    squared = (rows * rows).sum(-1)
    gram = rows @ rows.T
    # |a|² + |b|² − 2a·b can round below zero for equal rows; the diagonal is exactly 0
    distances = (squared[:, None] + squared[None, :] - 2 * gram).clamp_min(0).sqrt()
    return distances.fill_diagonal_(0)


def token_discrepancy(logits: Tensor, targets: Tensor, codebook: Tensor | None) -> Tensor:
    """Mean over positions of Σₖ softmax(logits)ₖ · distance(k, target): logits (..., K), targets (...)
    of token ids in [0, K), codebook (K, d). One K × K distance matrix, one row gather per position."""
    distances = checked_distances(logits, targets, codebook)
    probabilities = torch.softmax(logits, dim=-1)
    return (probabilities * distances[targets].to(probabilities.dtype)).sum(-1).mean()


def naive_token_discrepancy(logits: Tensor, targets: Tensor, codebook: Tensor | None) -> Tensor:
    """Reference: a loop over positions and tokens, each distance computed on its own."""
    checked_distances(logits, targets, codebook)
    rows, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    embeddings = codebook.detach()
    total = logits.new_zeros(())
    for row, target in zip(rows, flat_targets):
        probabilities = torch.softmax(row, dim=-1)
        for k in range(len(row)):
            total = total + probabilities[k] * torch.linalg.vector_norm(embeddings[k] - embeddings[target])
    return total / len(rows)


def checked_distances(logits: Tensor, targets: Tensor, codebook: Tensor | None) -> Tensor:
    if codebook is None:
        raise AGIFormerError("the token discrepancy loss needs a codebook (K × d embeddings of the tokens); "
                             "without one it has no distances to use")
    if codebook.dim() != 2 or codebook.shape[0] != logits.shape[-1]:
        raise AGIFormerError(f"codebook of shape {tuple(codebook.shape)} does not match logits over "
                             f"{logits.shape[-1]} tokens: expected ({logits.shape[-1]}, d)")
    if targets.shape != logits.shape[:-1]:
        raise AGIFormerError(f"targets of shape {tuple(targets.shape)} do not match logits of shape "
                             f"{tuple(logits.shape)}: expected {tuple(logits.shape[:-1])}")
    if targets.numel() and not 0 <= int(targets.min()) <= int(targets.max()) < logits.shape[-1]:
        raise AGIFormerError(f"targets must be token ids in [0, {logits.shape[-1]})")
    return codebook_distances(codebook)
