"""How many hash-hop pairs can one least-squares map hold apart, and what would give it room for more?
On single-hop hash-hop prompts, with no learned projection (what a memory sourced at a layer could do
at initialisation), every token t beyond the window is written as a pair

    key of t     the unit normed input states of a decoder layer at t − s … t − 1, summed (`sum`,
                 dim dimensions: what `memory_key_span = s` starts from, and a sum of linear maps of
                 these states never has more) or side by side (`concat`, s · dim dimensions)
    value of t   t's embedding row, unit length (what `memory_values = "embeddings"` stores)

into the ridge map W over all pairs beyond the window of the answer (λ as `--ridge`), either every
token (`all`) or only the tokens of a line's value, after its " =" (`values`: a write that knew
which tokens can be answers). For every answer token j at position p, the query is the same form at
p − s + 1 … p, and the read q W is right when the nearest embedding row of the whole vocabulary is
j's (the frozen head's view; no short-list of stored tokens, so fewer writes do not make it easier).

    python -m experiments.mag_capacity --threads 2                       # 1,024-token prompts
    python -m experiments.mag_capacity --threads 2 --context-tokens 2048

Writes docs/results/mag_capacity_<context tokens>.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from agiformer.mag.data import answer_targets
from benchmarks.common import (
    RESULTS_DIR, command_line, environment_markdown, finish_environment, log, markdown_table, write_json,
    write_text,
)
from experiments.mag_key_span import normed_inputs, span_sums
from experiments.mag_lookup import add_prompt_arguments, answer_lookups, hash_hop_prompts, parse_and_start, \
    ridge_map, windowed_base

KEY_FORMS = ("sum", "concat")
WRITES = ("all", "values")


def span_states(states: torch.Tensor, span: int, *, shift: int, form: str) -> torch.Tensor:
    """(L, dim) unit states → (L, dim) sums (as `span_sums`) or (L, span · dim) concatenations of rows
    p − shift − span + 1 … p − shift, unit length; rows before the start are copies of row 0."""
    if form == "sum":
        return F.normalize(span_sums(states, span, shift=shift), dim=-1)
    padded = torch.cat([states[:1].expand(span + shift, -1), states])
    return F.normalize(torch.cat([padded[span - i: span - i + len(states)] for i in range(span)], dim=-1), dim=-1)


def value_positions(pieces: list[str], *, with_end: bool = False) -> torch.Tensor:
    """Per token (its decoded text), True where it belongs to a line's value: after the line's " ="
    token, up to the token that holds the line's newline (that one included when it starts in the
    value, or always with with_end: what `answer_end` recipes are asked for)."""
    inside, marks = False, []
    for piece in pieces:
        marks.append(inside and (with_end or not piece.startswith("\n")))
        if piece.strip() == "=":
            inside = True
        if "\n" in piece:
            inside = False
    return torch.tensor(marks)


def reads_right(states: torch.Tensor, embeddings: torch.Tensor, tokens: list[int], answer: tuple[int, int],
                needle: tuple[int, int], window: int, span: int, form: str, writes: torch.Tensor | None,
                ridge: float) -> list[tuple[int, bool]]:
    """(j, read right) for every answer token j (1-based) the needle holds, in one prompt: the ridge map
    over the pairs beyond the answer's window, at positions where `writes` (None: all) is True."""
    unit = F.normalize(states.double(), dim=-1)
    queries, keys = span_states(unit, span, shift=0, form=form), span_states(unit, span, shift=1, form=form)
    seen = answer[0] - window
    stored = torch.arange(seen) if writes is None else torch.nonzero(writes[:seen])[:, 0]
    values = F.normalize(embeddings[torch.tensor(tokens)[stored]], dim=-1)
    W = ridge_map(keys[stored], values, ridge)
    lookups = answer_lookups(tokens, answer, needle)
    return [(p - answer[0] + 2, (embeddings @ (queries[p] @ W)).argmax().item() == target) for p, target, _ in lookups]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=4, help="decoder layer whose normed inputs key the pairs")
    parser.add_argument("--span", type=int, default=3, help="tokens a key and a query cover (default: 3)")
    parser.add_argument("--ridge", type=float, default=1e-3, help="λ of the map (default: 1e-3, the recipes')")
    parser.add_argument("--window", type=int, default=256)
    add_prompt_arguments(parser)
    parser.add_argument("--out", type=Path, help="output stem (default: docs/results/mag_capacity_<context tokens>)")
    args, started, env = parse_and_start(parser, argv)
    model, codec = windowed_base(args.base, args.window)
    embeddings = F.normalize(model.base.get_input_embeddings().weight.detach().double(), dim=-1)
    log(f"mag_capacity: {args.base}, layer {args.layer}, span {args.span}, λ {args.ridge:g}, {args.samples} "
        f"hash-hop prompts of {args.context_tokens} tokens, window {args.window}")
    cells = {(form, write): {} for form in KEY_FORMS for write in WRITES}  # answer token j → [right, count]
    pairs = {write: 0 for write in WRITES}
    for sample in hash_hop_prompts(codec, args, args.window):
        tokens, answer_spans = answer_targets(sample, codec)
        states = normed_inputs(model, tokens, [args.layer])[args.layer]
        answer, needle = answer_spans[-1], (sample["needle_token_start"], sample["needle_token_end"])
        marks = value_positions([codec.decode([t]) for t in tokens])
        masks = {"all": None, "values": marks}
        pairs["all"] += answer[0] - args.window
        pairs["values"] += int(marks[:answer[0] - args.window].sum())
        for (form, write), cell in cells.items():
            for j, right in reads_right(states, embeddings, tokens, answer, needle, args.window, args.span, form,
                                        masks[write], args.ridge):
                counts = cell.setdefault(j, [0, 0])
                counts[0] += right
                counts[1] += 1
    finish_environment(env, started)
    dim = model.base.get_input_embeddings().weight.shape[1]
    dims = {"sum": dim, "concat": args.span * dim}
    totals = {key: [sum(r for r, _ in cell.values()), sum(n for _, n in cell.values())] for key, cell in cells.items()}
    indices = sorted({j for cell in cells.values() for j in cell})
    rows = [[form, dims[form], write, f"{pairs[write] / args.samples:.0f}", f"{100 * right / count:.0f} % ({right} / {count})"]
            + ["{} / {}".format(*cells[form, write].get(j, (0, 0))) for j in indices]
            for (form, write), (right, count) in totals.items()]
    table = markdown_table(["key", "key dims", "writes", "pairs stored (mean)", "answer tokens read right"]
                           + [f"token {j}" for j in indices], rows)
    command = command_line("mag_capacity", argv)
    stem = args.out or RESULTS_DIR / f"mag_capacity_{args.context_tokens}"
    write_json(stem.with_suffix(".json"), {
        "base": args.base, "layer": args.layer, "span": args.span, "ridge": args.ridge, "window": args.window,
        "context_tokens": args.context_tokens, "samples": args.samples,
        "cells": [{"key": form, "key_dims": dims[form], "writes": write,
                   "pairs_stored_mean": pairs[write] / args.samples, "right": right, "answer_tokens": count,
                   "by_answer_token": {str(j): cells[form, write][j] for j in sorted(cells[form, write])}}
                  for (form, write), (right, count) in totals.items()],
        "command": command, "environment": env})
    write_text(stem.with_suffix(".md"), f"# How many hash-hop pairs one least-squares map holds apart\n\n"
               f"`{command}`\n\n{args.samples} single-hop hash-hop prompts of {args.context_tokens} tokens on {args.base}, window "
               f"{args.window}; keys from layer {args.layer}'s normed inputs over {args.span} tokens, values the "
               f"tokens' embedding rows, ridge λ = {args.ridge:g}, no learned projection. A read is right when the "
               f"vocabulary's nearest embedding row to q W is the answer token's; 'token j': right / looked up "
               f"for the answer's j-th token.\n\n{table}\n\n"
               f"{environment_markdown(env)}\n")
    print(table)


if __name__ == "__main__":
    main()
