import torch
from torch import nn
import torch.nn.functional as F
from agiformer.ops import ngram_ids
from agiformer.nn import NO_BYTE
import agiformer.models.agiformer as M

ORDERS = (4, 8, 16)

def continuation_ids(x, order, buckets=1 << 24):
    B, L = x.shape
    hist = F.pad(x, (order, 0), value=NO_BYTE).unfold(1, order, 1)[:, :L]   # bytes t-order..t-1
    key = ngram_ids(hist, order, buckets) + torch.arange(B)[:, None] * buckets
    flat = key.reshape(-1)
    order_idx = torch.sort(flat, stable=True).indices
    sk = flat[order_idx]
    same = torch.zeros_like(sk, dtype=torch.bool); same[1:] = sk[1:] == sk[:-1]
    prev = torch.zeros_like(order_idx); prev[1:] = order_idx[:-1]
    xf = x.reshape(-1)
    out = torch.full_like(flat, 256)
    out[order_idx[same]] = xf[prev[same]]
    return out.view(B, L)

def install(model):
    head = model.head
    head.copy_embed = nn.Embedding(len(ORDERS) * 257, head.byte_embed.embedding_dim)
    nn.init.normal_(head.copy_embed.weight, std=len(ORDERS) ** -0.5)
    orig_embed = head.embed_history
    def embed_history(history):
        e = orig_embed(history)
        if getattr(head, "_copy", None) is not None:
            e = e + head.copy_embed(head._copy).sum(-2)
        return e
    head.embed_history = embed_history
    orig_run = model.run
    def run(x, **kw):
        B, L = x.shape; P = model.config.patch_size; N = -(-L // P)
        ids = torch.stack([continuation_ids(x, o) + i * 257 for i, o in enumerate(ORDERS)], -1)
        ids = F.pad(ids, (0, 0, 0, N * P - L), value=256).view(B, N, P, len(ORDERS))
        head._copy = ids
        try:
            return orig_run(x, **kw)
        finally:
            head._copy = None
    model.run = run
