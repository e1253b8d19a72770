"""What a trained MAG run gets wrong, and how much a write that stored only what can be asked for would
fix. On single-hop hash-hop prompts as `agiformer mag eval` draws them (its seed; one context length,
`--per-depth` prompts at each of the grid's depths 0, 0.25, 0.5, 0.75, 1), exact match of greedy
decoding with the base + MAG under the window, for two writes:

    trained      the run's own write weights θ
    values only  θ replaced, at every MAG layer, by the run's mean θ at the tokens a query can ask for
                 (a line's value tokens after its " =", and the token holding the newline that ends
                 it: `answer_end` recipes are asked for it too) and by --epsilon everywhere else: an
                 oracle a learned write could at best approach

and, for each miss, which answer token is the first that teacher forcing predicts wrong (the
answer's newline counted as its last token): where the lookup breaks.

    python -m experiments.mag_write_oracle out/mag-hashhop-concat-gpu --context-tokens 2048 --threads 2

Writes docs/results/mag_write_oracle_<run>_<context tokens>.{json,md}.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from agiformer.mag.data import answer_targets, generate_samples
from agiformer.mag.eval import DEFAULT_SEED, open_for_eval, recalls
from benchmarks.common import (
    RESULTS_DIR, command_line, environment_markdown, finish_environment, log, markdown_table, write_json,
    write_text,
)
from experiments.mag_capacity import value_positions
from experiments.mag_lookup import parse_and_start

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


class ValuesOnlyWrite:
    """Hooks on a MAG model: each call's tokens are marked where a query can ask for them (a call that
    continues a state is the answer being decoded: never marked); every MAG layer's θ is recorded, or,
    once `theta` = (high, low) is set, replaced by high at marked tokens and low elsewhere."""

    def __init__(self, model, codec):
        self.codec, self.theta, self.marks, self.seen = codec, None, None, []
        model.register_forward_pre_hook(self._mark, with_kwargs=True)
        for mag in model.mag.values():
            mag.memory.lr_proj.register_forward_hook(self._gate)

    def _mark(self, module, args, kwargs):
        input_ids = args[0] if args else kwargs["input_ids"]
        state = args[1] if len(args) > 1 else kwargs.get("state")
        pieces = [self.codec.decode([t]) for t in input_ids[0].tolist()]
        self.marks = value_positions(pieces, with_end=True) if state is None else torch.zeros(len(pieces), dtype=torch.bool)

    def _gate(self, module, inputs, output):  # output: θ's logits, (1, L, heads)
        if self.theta is None:
            self.seen.append((torch.sigmoid(output.float())[0].mean(-1), self.marks))
            return output
        high, low = self.theta
        theta = torch.where(self.marks, torch.tensor(high), torch.tensor(low))
        return torch.logit(theta)[None, :, None].expand_as(output).to(output.device, output.dtype)

    def mean_theta(self) -> tuple[float, float]:
        """The recorded θ's mean at marked tokens and elsewhere."""
        theta = torch.cat([t for t, _ in self.seen])
        marks = torch.cat([m for _, m in self.seen])
        return theta[marks].mean().item(), theta[~marks].mean().item()


def first_wrong_token(model, codec, sample: dict) -> int | None:
    """1-based index of the first answer token (its newline last) that teacher forcing predicts wrong."""
    tokens, spans = answer_targets(sample, codec, end=True)
    start, end = spans[-1]
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokens[:end - 1]]), window=model.config.window)
    predicted = logits[0, start - 1:end - 1].argmax(-1).tolist()
    return next((j + 1 for j, (p, t) in enumerate(zip(predicted, tokens[start:end])) if p != t), None)


def measure(model, codec, samples: list[dict]) -> dict:
    hits = [recalls(model, codec, s, window=model.config.window, use_memory=True) for s in samples]
    misses = Counter(first_wrong_token(model, codec, s) for s, hit in zip(samples, hits) if not hit)
    return {"exact_match": sum(hits) / len(hits),
            "right_by_depth": [sum(hits[i::len(DEPTHS)]) for i in range(len(DEPTHS))],
            "misses_by_first_wrong_token": {str(k): n for k, n in sorted(misses.items(), key=lambda kn: str(kn[0]))}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a trained MAG run or checkpoint, e.g. out/mag-hashhop-concat-gpu")
    parser.add_argument("--context-tokens", type=int, default=2048)
    parser.add_argument("--per-depth", type=int, default=4, help="prompts per needle depth (default: 4)")
    parser.add_argument("--epsilon", type=float, default=1e-4, help="θ of the other tokens (default: 1e-4)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="output stem (default: docs/results/mag_write_oracle_<run>_<tokens>)")
    args, started, env = parse_and_start(parser, argv)
    model, codec, opened = open_for_eval(args.run)
    samples = generate_samples("hash-hop", args.per_depth * len(DEPTHS), seed=DEFAULT_SEED,
                               context_tokens=args.context_tokens, window=model.config.window, tokenizer=codec,
                               depths=list(DEPTHS))
    log(f"mag_write_oracle: {opened['checkpoint']}, {len(samples)} hash-hop prompts of {args.context_tokens} tokens")
    hooks = ValuesOnlyWrite(model, codec)
    results = {"trained": measure(model, codec, samples)}
    high, low = hooks.mean_theta()
    hooks.theta = (high, args.epsilon)
    results["values only"] = measure(model, codec, samples)
    finish_environment(env, started)
    command = command_line("mag_write_oracle", argv)
    result = {"checkpoint": opened["checkpoint"], "base_dtype": opened["base_dtype"], "window": model.config.window,
              "context_tokens": args.context_tokens, "depths": list(DEPTHS), "per_depth": args.per_depth,
              "trained_theta_asked_for": high, "trained_theta_elsewhere": low, "epsilon": args.epsilon,
              "writes": results, "command": command, "environment": env}
    stem = args.out or RESULTS_DIR / f"mag_write_oracle_{Path(opened['checkpoint']).parent.name}_{args.context_tokens}"
    write_json(stem.with_suffix(".json"), result)
    thetas = {"trained": f"{high:.3f} / {low:.3f}", "values only": f"{high:.3f} / {args.epsilon:g}"}
    table = markdown_table(
        ["write", "θ asked-for / other tokens", "exact match", "right by depth " + " / ".join(f"{d:g}" for d in DEPTHS),
         "misses by first wrong answer token"],
        [[name, thetas[name], f"{100 * r['exact_match']:.0f} %", " / ".join(map(str, r["right_by_depth"])),
          ", ".join(f"{k}: {n}" for k, n in r["misses_by_first_wrong_token"].items()) or "none"]
         for name, r in results.items()])
    write_text(stem.with_suffix(".md"), f"# MAG write oracle: {opened['checkpoint']}\n\n`{command}`\n\n{len(samples)} "
               f"single-hop hash-hop prompts of {args.context_tokens} tokens ({args.per_depth} per depth), window "
               f"{model.config.window}, base {opened['base_dtype']}. 'values only' writes the tokens a query can ask "
               f"for (a line's value and its newline) at the trained run's mean θ there, every other token at "
               f"θ = {args.epsilon:g}. A miss counts under the first answer token (1-based; the newline last) that "
               f"teacher forcing predicts wrong.\n\n{table}\n\n{environment_markdown(env)}\n")
    print(table)


if __name__ == "__main__":
    main()
