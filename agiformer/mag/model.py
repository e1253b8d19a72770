"""Memory as a Gate (MAG) around a frozen Hugging Face causal LM (Llama / Qwen3 layout).

The decoder runs here, not through the base's own forward, so attention can be windowed without an
L×L mask and every piece of state is explicit. Per decoder layer ℓ, with h̃ = input_layernorm(h):

    a = attention(h̃)                                   frozen q/k/v/o, the base's rotary, GQA
    MAG layer:   h ← h + (1 − g)⊙a + g⊙m,  m = norm(NeuralMemory(q_in)),  g = σ(W_g h̃ + b)
    other layer: h ← h + a
    h ← h + mlp(post_attention_layernorm(h))            frozen

W_g starts at zero and b at gate_bias_init (−4), so the gate starts nearly closed. q_in is h̃ or, with
query refinement, h̃ mixed with the previous MAG layer's m at the same positions (passed along in
the forward, never kept on a module: MemoryMAG defect M10).

Where the memory looks and what it stores can be moved (`memory_source_layer`, `memory_values`): q_in
from the normed input of an earlier layer s instead of h̃ (the keys that find a hash-hop needle are
early), values the tokens' embedding rows instead of q_in (what the head reads as that token, so a
late MAG layer's read can name the answer; `python -m experiments.mag_oracle` measures both).
With `memory_read_scale = "residual"`, m is multiplied by the RMS of the residual h it joins (measured,
no gradient): the residual grows through the layers (RMS ≈ 4 at SmolLM2's layer 4, 17 at layer 24:
`python -m experiments.mag_oracle`), and a unit read behind a nearly closed gate is under 1 % of it
late, too little to move the prediction and more than Adam at a small learning rate can scale up in
a short run.

Attention window W: a query sees itself and the W − 1 positions before it (the semantics of
`agiformer.ops.window_attention`); W = None is full causal attention.

The state (`MAGState`) holds per layer the rotated keys/values a later token can still see (all of
them, or the last W − 1), per MAG layer the memory's fast weights (one copy per sequence: defect
M2), and the number of tokens seen, so a sequence continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.errors import AGIFormerError
from agiformer.mag.config import MEMORY_CONV_KERNEL, MAGConfig, base_identity
from agiformer.models.config import read_config_values
from agiformer.models.pretrained import CONFIG_FILE, WEIGHTS_FILE, check_weights_match
from agiformer.nn.neural_memory import MemoryState, NeuralMemory
from agiformer.ops.window_attention import apply_rotary, blockwise_window_attention
from agiformer.serialization import load_tensors, save_tensors

Tensor = torch.Tensor


class KVCache(NamedTuple):
    """Rotated keys and values (B, KV heads, n, head_dim) that later queries can still attend to."""
    keys: Tensor
    values: Tensor


class MAGState(NamedTuple):
    """Everything a sequence needs to continue. Made with gradients on, it carries the graph of the
    call that made it; `detach()` it between truncated-backpropagation segments."""

    length: int                                         # tokens seen: the next token's rotary position
    window: int | None                                  # the attention window the caches were made for
    attention: tuple[KVCache, ...]                      # per decoder layer
    memory: tuple[MemoryState, ...] | None              # per MAG layer; None when run with use_memory=False

    def detach(self) -> "MAGState":
        """The same state cut from the autograd graph (truncated backpropagation across calls)."""
        return MAGState(self.length, self.window, _detach(self.attention), _detach(self.memory))


def _detach(x):
    if x is None or isinstance(x, Tensor):
        return None if x is None else x.detach()
    items = [_detach(item) for item in x]
    return type(x)(*items) if hasattr(x, "_fields") else tuple(items)


class _ConfigWindow:
    def __repr__(self) -> str:
        return "<config window>"


CONFIG_WINDOW = _ConfigWindow()  # forward's default: the state's window, else config.window

_REQUIRED = ("model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head")
_LAYER_REQUIRED = ("input_layernorm", "self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                   "self_attn.o_proj", "post_attention_layernorm", "mlp")


def _lookup(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def check_layout(base) -> None:
    """Refuse, in one line, a model without the Llama/Qwen3 decoder layout that MAGModel runs."""
    missing = [p for p in _REQUIRED if _lookup(base, p) is None]
    if not missing:
        missing = [f"model.layers[{i}].{p}" for i, layer in enumerate(base.model.layers)
                   for p in _LAYER_REQUIRED if _lookup(layer, p) is None]
    if missing:
        raise AGIFormerError(
            f"{type(base).__name__} lacks {', '.join(missing[:3])}; MAG needs a Llama/Qwen3-style causal LM "
            "(model.embed_tokens, model.layers[i].{input_layernorm, self_attn.q/k/v/o_proj, "
            "post_attention_layernorm, mlp}, model.norm, model.rotary_emb, lm_head)")
    # the base's own per-layer sliding windows (Qwen3 use_sliding_window) would be silently replaced
    sliding = [i for i, layer in enumerate(base.model.layers) if getattr(layer.self_attn, "sliding_window", None)]
    if sliding:
        raise AGIFormerError(f"{type(base).__name__} layers {sliding[:4]} use the base's own sliding-window "
                             "attention, which MAGModel does not reproduce; load it with use_sliding_window=False")


class _Heads(NamedTuple):
    heads: int
    kv_heads: int
    head_dim: int
    scale: float


def _attention_heads(attn, config) -> _Heads:
    head_dim = getattr(attn, "head_dim", None) or getattr(config, "head_dim", None) \
        or config.hidden_size // config.num_attention_heads
    heads, kv_heads = attn.q_proj.out_features // head_dim, attn.k_proj.out_features // head_dim
    if heads * head_dim != attn.q_proj.out_features or kv_heads * head_dim != attn.k_proj.out_features \
            or kv_heads < 1 or heads % kv_heads:
        raise AGIFormerError(f"attention projections {attn.q_proj.out_features}/{attn.k_proj.out_features} do not "
                             f"split into query and key/value heads of size {head_dim}")
    return _Heads(heads, kv_heads, head_dim, float(getattr(attn, "scaling", head_dim ** -0.5)))


def _repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, KVH, n, E) → (B, KVH·groups, n, E), query head h using kv head h // groups (HF repeat_kv)."""
    if groups == 1:
        return x
    B, KVH, n, E = x.shape
    return x[:, :, None].expand(B, KVH, groups, n, E).reshape(B, KVH * groups, n, E)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, past: KVCache | None, window: int | None,
                     scale: float) -> tuple[Tensor, KVCache]:
    """q (B, H, L, E) for the L positions after the P cached ones; k, v (B, KVH, L, E), rotated.

    Full attention: prefill uses is_causal; a continuation masks key j for query i unless j ≤ P + i.
    Window W: the cache keeps the last W − 1 positions (all a next query can see). Up to W new
    queries use one (L, P + L) mask; longer inputs go through `blockwise_window_attention`, O(L·W),
    with P placeholder queries in front so the cached keys line up as the previous block.
    """
    P = past.keys.shape[2] if past is not None else 0
    if past is not None:
        k, v = torch.cat([past.keys, k], dim=2), torch.cat([past.values, v], dim=2)
    groups = q.shape[1] // k.shape[1]
    keys, values = _repeat_kv(k, groups), _repeat_kv(v, groups)
    L, E = q.shape[2], q.shape[3]
    query_pos = P + torch.arange(L, device=q.device)
    key_pos = torch.arange(P + L, device=q.device)
    distance = query_pos[:, None] - key_pos[None, :]
    if window is None:
        if P == 0:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True, scale=scale)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=distance >= 0, scale=scale)
        return out, KVCache(k, v)
    if L <= window:
        mask = (distance >= 0) & (distance < window)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
    else:
        if scale != E ** -0.5:  # blockwise_window_attention uses the default 1/√E
            q = q * (scale * E ** 0.5)
        out = blockwise_window_attention(F.pad(q, (0, 0, P, 0)), keys, values, window)[:, :, P:]
    keep = min(window - 1, P + L)
    return out, KVCache(k[:, :, P + L - keep:], v[:, :, P + L - keep:])


class QueryRefiner(nn.Module):
    """q_in = (1 − γ)⊙h̃ + γ⊙W_p m_prev with γ = σ(W_γ[h̃; m_prev] + b) per dimension: the memory's
    query may also draw on what the previous MAG layer recalled (MemoryMAG's QueryProjector, gate
    mode, without its causal convolution: the memory's own q/k/v projections already pass one,
    `NeuralMemory`'s short convolution). b = −2 starts γ near 0.12, and W_p = 0 so the query starts
    as h̃ alone: a random W_p mixed noise into it, and with fresh least-squares memories at layers
    2, 4, …, 10 the needle's token came back for 41 % of answer tokens at layer 8 instead of 57 %
    (`python -m experiments.mag_lookup`)."""

    def __init__(self, *, hidden: int, bias_init: float = -2.0):
        super().__init__()
        self.project = nn.Linear(hidden, hidden, bias=False)
        nn.init.zeros_(self.project.weight)
        self.mix = nn.Linear(2 * hidden, hidden)
        nn.init.normal_(self.mix.weight, std=0.02)
        nn.init.constant_(self.mix.bias, bias_init)

    def forward(self, normed: Tensor, previous: Tensor) -> Tensor:
        gamma = torch.sigmoid(self.mix(torch.cat([normed, previous], dim=-1)))
        return (1 - gamma) * normed + gamma * self.project(previous)


class MAGLayer(nn.Module):
    """The trainable part of one MAG decoder layer: memory, its output norm, the gate, the refiner."""

    def __init__(self, *, hidden: int, config: MAGConfig, refine: bool):
        super().__init__()
        self.memory = NeuralMemory(dim=hidden, depth=config.memory_depth, chunk_size=config.memory_chunk_size,
                                   conv_kernel=MEMORY_CONV_KERNEL, key_span=config.memory_key_span,
                                   key_form=config.memory_key_form, write=config.memory_write, ridge=config.memory_ridge)
        self.memory_norm = nn.LayerNorm(hidden)
        self.gate = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, config.gate_bias_init)
        self.refiner = QueryRefiner(hidden=hidden) if refine else None

    def forward(self, normed: Tensor, attended: Tensor, previous: Tensor | None, state: MemoryState | None, *,
                source: Tensor | None = None, values: Tensor | None = None, scale: Tensor | None = None
                ) -> tuple[Tensor, Tensor, MemoryState]:
        """→ (1 − g)⊙a + g⊙m·scale and m (for the next MAG layer), in the MAG dtype, and the memory state.
        source: what the memory's q and k see instead of `normed`; values: what it stores instead;
        scale (B, L, 1): what the read is multiplied by where it joins the residual."""
        dtype = self.gate.weight.dtype
        # full precision whatever the base runs in: the memory's writes accumulate over the sequence
        with torch.autocast(normed.device.type, enabled=False):
            n, a = normed.to(dtype), attended.to(dtype)
            looked = n if source is None else source.to(dtype)
            query = looked if self.refiner is None or previous is None else self.refiner(looked, previous)
            recalled, state = self.memory(query, state, None if values is None else values.to(dtype))
            recalled = self.memory_norm(recalled)
            g = torch.sigmoid(self.gate(n))
            mixed = (1 - g) * a + g * (recalled if scale is None else recalled * scale.to(dtype))
        return mixed, recalled, state


class MAGModel(nn.Module):
    """forward(input_ids, state) → (logits, state) over a frozen base; see the module docstring.

    base: a loaded `LlamaForCausalLM`, `Qwen3ForCausalLM` or any model with their layout. It is
    frozen in place (requires_grad_(False)) and kept in eval mode; it stays a submodule, so `.to()`
    moves it with the MAG parameters. Only `trainable_parameters()` train.

    base_dtype (e.g. torch.bfloat16): run the frozen decoder layers under autocast to that dtype
    (their matmuls in bf16, keys/values cached in bf16). The MAG layers always run in their own
    dtype (at least float32), and so do the final norm and lm_head; the residual stream stays in
    the base's parameter dtype. The attribute can be changed between calls.
    """

    def __init__(self, base, config: MAGConfig | None = None, *, base_dtype: torch.dtype | None = None):
        super().__init__()
        check_layout(base)
        identity = base_identity(base)
        if config is None:
            config = MAGConfig.for_base(base)
        elif not config.has_base_identity:
            config = dataclasses.replace(config, base_architecture=identity[0], base_hidden_size=identity[1],
                                         base_num_layers=identity[2])
        if config.base_identity() != identity:
            raise AGIFormerError(f"MAG config is for {_describe(config.base_identity())}, "
                                 f"the base is {_describe(identity)}")
        self.config, self.base, self.base_dtype = config, base, base_dtype
        base.requires_grad_(False)
        base.eval()
        self.heads = [_attention_heads(layer.self_attn, base.config) for layer in base.model.layers]
        reference = base.model.embed_tokens.weight
        hidden = identity[1]
        self.mag = nn.ModuleDict({
            str(i): MAGLayer(hidden=hidden, config=config, refine=config.query_refinement and n > 0)
            for n, i in enumerate(config.layers)})
        self.mag.to(device=reference.device, dtype=torch.promote_types(reference.dtype, torch.float32))

    def train(self, mode: bool = True) -> "MAGModel":
        super().train(mode)
        self.base.eval()  # frozen: whatever dropout the base has must not fire while MAG trains
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.mag.parameters())

    def mag_state_dict(self) -> dict[str, Tensor]:
        """The MAG parameters only, keyed "<layer>.<module>.<name>" (what `save_mag` writes)."""
        return self.mag.state_dict()

    def _autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.base_dtype) if self.base_dtype is not None else nullcontext()

    def _attention(self, i: int, x: Tensor, cos: Tensor, sin: Tensor, past: KVCache | None,
                   window: int | None) -> tuple[Tensor, KVCache]:
        attn, spec = self.base.model.layers[i].self_attn, self.heads[i]
        B, L, _ = x.shape
        q = attn.q_proj(x).view(B, L, spec.heads, spec.head_dim)
        k = attn.k_proj(x).view(B, L, spec.kv_heads, spec.head_dim)
        v = attn.v_proj(x).view(B, L, spec.kv_heads, spec.head_dim).transpose(1, 2)
        if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMSNorm per head before rotary
            q, k = attn.q_norm(q), attn.k_norm(k)
        # rotate-half, the same expression as HF apply_rotary_pos_emb; one dtype for SDPA under autocast
        q = apply_rotary(q.transpose(1, 2), cos, sin).to(v.dtype)
        k = apply_rotary(k.transpose(1, 2), cos, sin).to(v.dtype)
        if past is not None:
            past = KVCache(past.keys.to(v.dtype), past.values.to(v.dtype))
        out, cache = causal_attention(q, k, v, past, window, spec.scale)
        return attn.o_proj(out.transpose(1, 2).reshape(B, L, spec.heads * spec.head_dim)), cache

    def forward(self, input_ids: Tensor, state: MAGState | None = None, *, window=CONFIG_WINDOW,
                use_memory: bool = True, logits_to_keep: int = 0) -> tuple[Tensor, MAGState]:
        """input_ids (B, L) → logits (B, L, vocab) and the state after them. With a state, the input
        continues that state's sequences. use_memory=False skips every MAG layer: the exact base
        (with window-W or full attention), whatever the MAG parameters hold. logits_to_keep = n > 0:
        logits of the last n positions only, (B, n, vocab): a loss on an answer or a decoding step
        needs no more, and the head over a large vocabulary costs as much as several layers."""
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise AGIFormerError(f"input_ids must be (batch, length ≥ 1), got shape {tuple(input_ids.shape)}")
        if logits_to_keep < 0:
            raise AGIFormerError(f"logits_to_keep must be ≥ 0, got {logits_to_keep}")
        window = self._check_state(input_ids, state, window, use_memory)
        layers = self.base.model.layers
        B, L = input_ids.shape
        start = state.length if state is not None else 0
        memory_on = use_memory and len(self.mag) > 0
        # nothing below the lowest MAG layer trains, so no graph is kept there
        first_trained = self.config.layers[0] if memory_on else len(layers)
        grad = torch.is_grad_enabled()
        caches, memories = [], [] if use_memory else None
        recalled = None
        with self._autocast(input_ids.device):
            with torch.no_grad():
                h = self.base.model.embed_tokens(input_ids)
                values = h if memory_on and self.config.memory_values == "embeddings" else None
                source = None
                positions = torch.arange(start, start + L, device=input_ids.device)[None]
                cos, sin = self.base.model.rotary_emb(h, positions)
                if cos.shape[-1] != self.heads[0].head_dim:
                    raise AGIFormerError(f"the base's rotary embedding covers {cos.shape[-1]} of "
                                         f"{self.heads[0].head_dim} head dimensions; MAGModel needs full rotary")
                cos, sin = cos[:, None], sin[:, None]       # (1, 1, L, E), broadcast over heads
            for i, layer in enumerate(layers):
                with torch.set_grad_enabled(grad and i >= first_trained):
                    normed = layer.input_layernorm(h)
                    if memory_on and i == self.config.memory_source_layer:
                        source = normed
                    attended, cache = self._attention(i, normed, cos, sin,
                                                      state.attention[i] if state is not None else None, window)
                    caches.append(cache)
                    mag = self.mag[str(i)] if memory_on and str(i) in self.mag else None
                    if mag is None:
                        h = h + attended
                    else:
                        n = len(memories)
                        scale = (h.detach().to(torch.promote_types(h.dtype, torch.float32))
                                 .pow(2).mean(-1, keepdim=True).sqrt()
                                 if self.config.memory_read_scale == "residual" else None)
                        mixed, recalled, memory_state = mag(normed, attended, recalled,
                                                            state.memory[n] if state is not None else None,
                                                            source=source, values=values, scale=scale)
                        memories.append(memory_state)
                        h = h + mixed.to(h.dtype)
                    h = h + layer.mlp(layer.post_attention_layernorm(h))
            # the head stays in the base's own dtype even under autocast: bf16 logits round by up to
            # 0.06 at magnitude 16, which would show in every loss and bits-per-byte figure
            with torch.set_grad_enabled(grad and memory_on), torch.autocast(h.device.type, enabled=False):
                logits = self.base.lm_head(self.base.model.norm(h[:, -logits_to_keep:] if logits_to_keep else h))
        logits = logits.to(torch.promote_types(logits.dtype, h.dtype))
        return logits, MAGState(start + L, window, tuple(caches), None if memories is None else tuple(memories))

    def _check_state(self, input_ids: Tensor, state: MAGState | None, window, use_memory: bool) -> int | None:
        if window is CONFIG_WINDOW:
            window = state.window if state is not None else self.config.window
        if window is not None and (not isinstance(window, int) or window < 1):
            raise AGIFormerError(f"window must be an integer ≥ 1 or None, got {window!r}")
        if state is None:
            return window
        if state.window != window:
            raise AGIFormerError(f"the state was made with window {state.window}, not {window}; "
                                 "continue with the same window")
        if (state.memory is not None) != use_memory:
            raise AGIFormerError(f"the state was made with use_memory={state.memory is not None}; "
                                 "continue with the same")
        if len(state.attention) != len(self.base.model.layers) or \
                (state.memory is not None and len(state.memory) != len(self.mag)):
            raise AGIFormerError("the state belongs to a different model (layer counts differ)")
        held = state.attention[0].keys.shape[0] if state.attention else input_ids.shape[0]
        if held != input_ids.shape[0]:
            raise AGIFormerError(f"the state holds {held} sequences, the input has {input_ids.shape[0]}")
        return window

    @torch.no_grad()
    def greedy_generate(self, input_ids: Tensor, max_new_tokens: int, *, window=CONFIG_WINDOW,
                        use_memory: bool = True, eos_token_id: int | None = None) -> Tensor:
        """Prompt plus up to max_new_tokens argmax tokens (B, P + n), one cached step per token.
        A sequence that has produced eos_token_id repeats it; generation stops once all have."""
        if max_new_tokens < 0:
            raise AGIFormerError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
        logits, state = self(input_ids, window=window, use_memory=use_memory, logits_to_keep=1)
        tokens = [input_ids]
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            token = logits[:, -1].argmax(-1)
            if eos_token_id is not None:
                token = torch.where(finished, torch.full_like(token, eos_token_id), token)
                finished |= token == eos_token_id
            tokens.append(token[:, None])
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            logits, state = self(token[:, None], state, use_memory=use_memory)
        return torch.cat(tokens, dim=1)


def _describe(identity: tuple[str, int, int]) -> str:
    architecture, hidden, layers = identity
    return f"{architecture or 'an unrecorded base'} (hidden {hidden}, {layers} layers)"


def check_trained_on(config: MAGConfig, identity: tuple[str, int, int], *, where) -> None:
    """Refuse MAG weights (described by `config`) on a base other than the one they were trained on."""
    if config.base_identity() != identity:
        raise AGIFormerError(f"{where} was trained on {_describe(config.base_identity())}, "
                             f"not on this {_describe(identity)}")


def save_mag(model: MAGModel, directory: str | Path) -> None:
    """config.json and model.safetensors with the MAG parameters only (the base is not copied)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, model.mag_state_dict())
    model.config.save(directory / CONFIG_FILE)


def load_mag(directory: str | Path, base, *, base_dtype: torch.dtype | None = None) -> MAGModel:
    """The MAG model saved in `directory`, on this base, in eval mode. Refuses a base other than the
    one it was trained on, and missing or damaged files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AGIFormerError(f"{directory}: no such MAG directory")
    config = MAGConfig.from_dict(read_config_values(directory / CONFIG_FILE))
    check_layout(base)
    check_trained_on(config, base_identity(base), where=directory)
    tensors = load_tensors(directory / WEIGHTS_FILE)
    model = MAGModel(base, config, base_dtype=base_dtype)
    check_weights_match(model.mag_state_dict(), tensors, directory / WEIGHTS_FILE)
    model.mag.load_state_dict(tensors)
    return model.eval()

