"""Which states could key a hash-hop lookup? On single-hop hash-hop prompts (the evaluation format),
for every answer token j predicted at position p (teacher-forced), is a needle position holding j
the most similar (cosine) of all positions beyond p's window, when

    query of p   = the sum of a decoder layer's normed input states at p − s + 1 … p
    key of t     = the same sum at t − s … t − 1   (token t stored under the s tokens before it)

for spans s = 1, 2, 3, …, layers and both forms of the question: the curriculum's "hop 1 from <key>:"
and the needle's own "<key> =". No learned projection: what a memory sourced there would find at
initialisation, by answer-token index. The first answer token is looked up by the question's last
tokens, the later ones by the answer's own earlier tokens.

    python -m experiments.mag_key_span                       # layers 4, 8; spans 1, 2, 3, 4

Writes docs/results/mag_key_span.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from agiformer.mag.base import TextCodec
from agiformer.mag.data import answer_targets
from agiformer.mag.model import MAGModel
from benchmarks.common import (
    RESULTS_DIR, command_line, environment_markdown, finish_environment, log, markdown_table, write_json,
    write_text,
)
from experiments.mag_lookup import (
    add_prompt_arguments, answer_lookups, ask_as_the_needle_is_written, hash_hop_prompts, parse_and_start,
    windowed_base,
)


def span_sums(states: torch.Tensor, span: int, *, shift: int) -> torch.Tensor:
    """(L, dim) unit states → (L, dim): row p is the sum of rows p − shift − span + 1 … p − shift, rows
    before the start counted as copies of row 0."""
    padded = torch.cat([states[:1].expand(span + shift, -1), states])
    return sum(padded[span - i: span - i + len(states)] for i in range(span))


def key_hits_by_index(states: torch.Tensor, tokens: list[int], answer: tuple[int, int], needle: tuple[int, int],
                      window: int, span: int) -> list[int]:
    """Per answer-token index j (that the needle holds; others are left out): 1 if the key found by
    j's query is a needle position holding token j, else 0."""
    unit = F.normalize(states.double(), dim=-1)
    queries, keys = span_sums(unit, span, shift=0), F.normalize(span_sums(unit, span, shift=1), dim=-1)
    return [int((keys[:p - window + 1] @ queries[p]).argmax().item() in holders)
            for p, _, holders in answer_lookups(tokens, answer, needle)]


def normed_inputs(model: MAGModel, tokens: list[int], layers: list[int]) -> dict[int, torch.Tensor]:
    """Layer → (L − 1, dim): the base's normed input states at those decoder layers, for the prompt
    tokens[:-1] (the last token is only ever a target), attention under the model's window."""
    captured = {}
    hooks = [model.base.model.layers[i].input_layernorm.register_forward_hook(
        lambda module, args, out, i=i: captured.__setitem__(i, out[0].detach())) for i in layers]
    try:
        with torch.no_grad():
            model(torch.tensor([tokens[:-1]], device=model.base.device), use_memory=False)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def measure(model: MAGModel, codec: TextCodec, samples: list[dict], layers: list[int], spans: list[int]
            ) -> dict[tuple[int, int], list[list[int]]]:
    """(layer, span) → per answer-token index [found, lookups]."""
    found = {(layer, span): [] for layer in layers for span in spans}
    for sample in samples:
        tokens, answer_spans = answer_targets(sample, codec)
        states = normed_inputs(model, tokens, layers)
        for (layer, span), counts in found.items():
            hits = key_hits_by_index(states[layer], tokens, answer_spans[-1],
                                     (sample["needle_token_start"], sample["needle_token_end"]),
                                     model.config.window, span)
            for j, hit in enumerate(hits):
                if j == len(counts):
                    counts.append([0, 0])
                counts[j][0] += hit
                counts[j][1] += 1
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--layers", default="4,8", help="decoder layers whose normed inputs are the states")
    parser.add_argument("--spans", default="1,2,3,4", help="how many tokens a key and a query sum over")
    parser.add_argument("--window", type=int, default=256)
    add_prompt_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "mag_key_span", help="output stem")
    args, started, env = parse_and_start(parser, argv)
    model, codec = windowed_base(args.base, args.window)
    layers, spans = [int(x) for x in args.layers.split(",")], [int(x) for x in args.spans.split(",")]
    log(f"mag_key_span: {args.base}, layers {layers}, spans {spans}, {args.samples} hash-hop prompts of "
        f"{args.context_tokens} tokens, window {args.window}")
    samples = hash_hop_prompts(codec, args, args.window)
    forms = {"question": samples, "needle": [ask_as_the_needle_is_written(sample) for sample in samples]}
    rows, results = [], []
    for form, asked in forms.items():
        for (layer, span), counts in measure(model, codec, asked, layers, spans).items():
            results.append({"form": form, "layer": layer, "span": span,
                            "found_by_index": [{"index": j, "found": f, "lookups": n} for j, (f, n) in enumerate(counts)]})
            rows.append([form, layer, span] + [f"{f} / {n}" for f, n in counts])
    finish_environment(env, started)
    width = max(len(row) for row in rows) - 3
    table = markdown_table(["question form", "layer", "span"] + [f"token {j + 1}" for j in range(width)],
                           [row + [""] * (width + 3 - len(row)) for row in rows])
    write_json(args.out.with_suffix(".json"), {"base": args.base, "window": args.window,
                                               "context_tokens": args.context_tokens, "samples": args.samples,
                                               "results": results, "command": command_line("mag_key_span", argv),
                                               "environment": env})
    write_text(args.out.with_suffix(".md"), f"# Which states could key a hash-hop lookup\n\n"
               f"`{command_line('mag_key_span', argv)}`\n\n{args.samples} single-hop hash-hop prompts of "
               f"{args.context_tokens} tokens on {args.base}, window {args.window}. A cell: answer tokens at that "
               f"index whose most similar key beyond the window (sum of the layer's normed input over `span` "
               f"tokens, cosine, no projection) is a needle position holding them / lookups.\n\n{table}\n\n"
               f"{environment_markdown(env)}\n")
    print(table)


if __name__ == "__main__":
    main()
