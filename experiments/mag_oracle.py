"""Can the frozen base use a recalled needle at all? Recalls, perfect and real, injected by hand.

On single-hop hash-hop prompts (the evaluation format), the base alone under a window of W tokens
(the needle beyond its reach), teacher-forced. For every answer token j, at the position p that
predicts it, a vector is added to the residual stream after layer ℓ's attention, where a MAG layer
adds its gated read:

    needle state     c·h_ℓ(n_j): the residual entering layer ℓ at the needle position n_j holding
                     token j, what a memory at layer ℓ stores (before its value projection)
    token embedding  c·|h_ℓ(p)|·e_j/|e_j|: the embedding row of token j (SmolLM2 ties it to the head),
                     scaled to p's own residual norm: what the head reads as "j"
    recalled embedding  the same with e_j replaced by what a least-squares memory recalls at p when
                     its keys are the key layer's normed states, each stored under the position
                     before it (a fresh memory's, up to its orthogonal projection), and its values
                     the embedding rows of the tokens: not perfect, but this memory exists

and the answer loss (nats/token, answer tokens the needle holds) is compared with no injection and
with the 4.45 nats/token of a model that knows only what a hash looks like (`experiments.mag_lookup`).
A loss far below both says the layers above ℓ turn that vector into the answer by themselves;
above "none" says they take it for the current token and predict what follows it.

    python -m experiments.mag_oracle                       # layers 4,8,16,24, c = 1 and 2, keys at layer 4

Writes docs/results/mag_oracle.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from agiformer.mag.data import answer_targets
from agiformer.mag.model import MAGModel
from benchmarks.common import (
    RESULTS_DIR, command_line, environment_markdown, finish_environment, log, markdown_table, write_json,
    write_text,
)
from experiments.mag_lookup import (
    add_prompt_arguments, answer_lookups, hash_hop_prompts, parse_and_start, windowed_base,
)

INJECTIONS = ("needle state", "token embedding", "recalled embedding")


def recalled_embeddings(normed: torch.Tensor, tokens: list[int], embeddings: torch.Tensor, positions: torch.Tensor,
                        stored: int, ridge: float) -> torch.Tensor:
    """Reads at `positions` of the ridge map from keys (unit `normed` states (L, dim), position t's
    under t − 1) to values (unit embedding rows of token t), over positions 1 … stored − 1."""
    x = F.normalize(normed.double(), dim=-1)
    keys = x[:stored - 1]
    values = F.normalize(embeddings[torch.tensor(tokens[1:stored])].double(), dim=-1)
    eye = ridge * torch.eye(keys.shape[1], dtype=keys.dtype)
    return (x[positions] @ torch.linalg.solve(keys.T @ keys + eye, keys.T @ values)).float()


def answer_loss(model: MAGModel, tokens: list[int], positions: torch.Tensor, targets: torch.Tensor,
                inject: tuple[int, torch.Tensor] | None = None) -> float:
    """Mean cross-entropy of `targets` at `positions`, with inject = (layer, vectors (len(positions), dim))
    added to that layer's attention output at those positions."""
    hook = None
    if inject is not None:
        layer, vectors = inject

        def add(module, inputs, output):
            output = output.clone()
            output[0, positions] += vectors.to(output.dtype)
            return output

        hook = model.base.model.layers[layer].self_attn.o_proj.register_forward_hook(add)
    try:
        with torch.no_grad():
            logits, _ = model(torch.tensor([tokens[:-1]]), use_memory=False)
    finally:
        if hook is not None:
            hook.remove()
    return F.cross_entropy(logits[0, positions].float(), targets).item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--layers", default="4,8,16,24", help="where to inject (default: 4,8,16,24)")
    parser.add_argument("--scales", default="1,2", help="values of c (default: 1,2)")
    parser.add_argument("--key-layer", type=int, default=4,
                        help="layer whose states key the recalled embeddings (default: 4)")
    parser.add_argument("--ridge", type=float, default=1e-3, help="λ of the recalling map (default: 1e-3)")
    parser.add_argument("--window", type=int, default=256)
    add_prompt_arguments(parser)
    parser.add_argument("--out", type=Path, help="output stem (default: docs/results/mag_oracle)")
    args, started, env = parse_and_start(parser, argv)
    model, codec = windowed_base(args.base, args.window)
    base = model.base
    layers = [int(i) for i in args.layers.split(",")]
    scales = [float(c) for c in args.scales.split(",")]
    log(f"mag_oracle: {args.base}, window {args.window}, {args.samples} hash-hop prompts of {args.context_tokens} "
        f"tokens, injections at layers {layers}")
    samples = hash_hop_prompts(codec, args, args.window)
    embeddings = base.get_input_embeddings().weight.detach().float()
    residuals: dict[int, torch.Tensor] = {}
    hooks = [base.model.layers[i].input_layernorm.register_forward_pre_hook(
        lambda module, inputs, i=i: residuals.__setitem__(i, inputs[0][0].detach().float()))
        for i in sorted(set(layers) | {args.key_layer})]
    losses: dict[str, list[float]] = {"none": []}
    rms: dict[int, list[float]] = {layer: [] for layer in layers}  # the residual's, per element, at the answers
    for sample in samples:
        tokens, spans = answer_targets(sample, codec)
        lookups = answer_lookups(tokens, spans[-1], (sample["needle_token_start"], sample["needle_token_end"]))
        positions = torch.tensor([p for p, _, _ in lookups])
        targets = torch.tensor([target for _, target, _ in lookups])
        needles = torch.tensor([holders[0] for _, _, holders in lookups])
        losses["none"].append(answer_loss(model, tokens, positions, targets))
        clean = dict(residuals)  # the residuals without any injection, captured by the call above
        with torch.no_grad():
            normed = base.model.layers[args.key_layer].input_layernorm(clean[args.key_layer])
        # pairs beyond the window of every answer position, as experiments.mag_lookup's ridge map
        recalled = recalled_embeddings(normed, tokens, embeddings, positions, spans[-1][0] - args.window, args.ridge)
        for layer in layers:
            own_norm = clean[layer][positions].norm(dim=-1, keepdim=True)
            rms[layer] += (own_norm / clean[layer].shape[-1] ** 0.5).flatten().tolist()
            vectors = {"needle state": clean[layer][needles],
                       "token embedding": F.normalize(embeddings[targets], dim=-1) * own_norm,
                       "recalled embedding": F.normalize(recalled, dim=-1) * own_norm}
            for what in INJECTIONS:
                for c in scales:
                    losses.setdefault(f"{layer}|{what}|{c:g}", []).append(
                        answer_loss(model, tokens, positions, targets, (layer, c * vectors[what])))
    for hook in hooks:
        hook.remove()
    mean = {key: sum(values) / len(values) for key, values in losses.items()}
    residual_rms = {layer: sum(values) / len(values) for layer, values in rms.items()}
    finish_environment(env, started)
    rows = [[layer, what] + [f"{mean[f'{layer}|{what}|{c:g}']:.2f}" for c in scales]
            for layer in layers for what in INJECTIONS]
    result = {"base": args.base, "window": args.window, "key_layer": args.key_layer, "ridge": args.ridge, "context_tokens": args.context_tokens, "samples": args.samples,
              "answer_loss_without_injection": mean["none"], "residual_rms": residual_rms,
              "answer_loss": [{"layer": layer, "injection": what, "scale": c, "loss": mean[f"{layer}|{what}|{c:g}"]}
                              for layer in layers for what in INJECTIONS for c in scales],
              "command": command_line("mag_oracle", argv), "environment": env}
    stem = args.out or RESULTS_DIR / "mag_oracle"
    write_json(stem.with_suffix(".json"), result)
    rms_line = "The residual's RMS per element at the answer positions (what the injections are scaled to): " + \
        ", ".join(f"layer {layer}: {value:.1f}" for layer, value in residual_rms.items()) + "."
    table = markdown_table(["layer ℓ", "injected at the answer positions"] + [f"c = {c:g}" for c in scales], rows)
    write_text(stem.with_suffix(".md"), f"# MAG oracle: recalls injected by hand into {args.base}\n\n"
               f"`{result['command']}`\n\n{args.samples} single-hop hash-hop prompts of {args.context_tokens} tokens, "
               f"window {args.window}, teacher-forced answer loss in nats/token; without injection "
               f"{mean['none']:.2f}. Recalled embeddings: keys at layer {args.key_layer}, λ = {args.ridge:g}.\n\n{table}\n\n"
               f"{rms_line}\n\n{environment_markdown(env)}\n")
    print(table)
    print(rms_line)
    print(f"without injection: {mean['none']:.2f} nats/token")


if __name__ == "__main__":
    main()
