"""Where MAG's recall breaks: does a memory's query find the needle's key, and does its read bring
the needle's token back? Per MAG layer, on single-hop hash-hop prompts (the evaluation format), for
every answer token j (predicted at position p = answer start − 1 + j, teacher-forced):

    key top-1    the key of a needle position holding answer token j is the most similar (cosine) to
                 p's query of all keys beyond the window: what attention's argmax would retrieve
    read top-1   of all values stored beyond the window, the one whose output (out_proj of the
                 unit value) is most similar to the memory's output at p holds token j: what the
                 memory's read actually brings back
    ridge top-1  the same for the best linear map from these keys to these values, the least-squares
                 W = argmin Σ‖W k_t − v_t‖² + λ‖W‖² over the stored pairs (λ = 1e-2): the read a
                 depth-1 memory could give if its writes converged; below key top-1 when the
                 pairs outnumber what one d × d map can hold apart
    θ needle     the memory's write weight (`lr_proj`'s gate, mean over heads) at the needle positions
                 holding answer tokens, over its mean at all positions beyond the window: how much more
                 of the map's capacity the write gives the pairs that will be asked for (1: none)
    needle kept  of what the needle's first chunk wrote, the fraction the forgetting α leaves when the
                 answer reads (`kept_fraction`): 1 − this is what forgetting cost the needle

Also, per answer-token index, how often the model's teacher-forced prediction is the answer's token
(`--query-form needle` asks as the needle is written, "<key> =", instead of "hop 1 from <key>:").

Keys, queries and values are the layer's own (`NeuralMemory.unit_projections` of the memory's input,
and of its stored values where the config moves them: `memory_values = "embeddings"`).
A fresh model (a base name or directory) measures the memory as initialised; a trained run
(out/NAME) measures what training made of it. Also reported: the floor of the answer loss for a model
that knows the format but not the hash, the mean over answer positions of the entropy of the token
found there, over 3,000 random " <hash>" answers (a loss at that level has learned nothing per sample).

    python -m experiments.mag_lookup                      # SmolLM2 + fresh MAG layers 8,12,16,20,24
    python -m experiments.mag_lookup --write least_squares --out docs/results/mag_lookup_least_squares
    python -m experiments.mag_lookup out/mag-hashhop      # the trained run
    python -m experiments.mag_lookup out/mag-hashhop-late --query-form needle --out docs/results/mag_lookup_late_needle_form

Writes docs/results/mag_lookup[_NAME].{json,md}.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from agiformer.mag.base import TextCodec, load_base
from agiformer.mag.config import MAGConfig
from agiformer.mag.data import HASH_ALPHABET, HASH_LENGTH, answer_targets, generate_samples
from agiformer.mag.eval import DEFAULT_SEED, find_mag_checkpoint, open_for_eval
from agiformer.mag.model import MAGModel
from agiformer.nn.neural_memory import WRITES
from benchmarks.common import (
    RESULTS_DIR, command_line, environment, environment_markdown, finish_environment, log, markdown_table, write_json,
    write_text,
)


RIDGE = 1e-2


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every MAG benchmark shares: how many hash-hop prompts, how long, on how many threads."""
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--depth", type=float,
                        help="where the needle lies, 0 (first line) to 1 (last before the window) (default: drawn)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")


def parse_and_start(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, float, dict]:
    """The parsed options with --threads applied, the start time and the environment record: how every
    MAG benchmark begins."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, time.time(), environment(torch.device("cpu"))


def hash_hop_prompts(codec: TextCodec, args: argparse.Namespace, window: int) -> list[dict]:
    """Single-hop hash-hop samples as `agiformer mag eval` draws them (its seed), as many, as long and
    with the needle as deep as add_prompt_arguments' options say."""
    return generate_samples("hash-hop", args.samples, seed=DEFAULT_SEED, context_tokens=args.context_tokens,
                            window=window, tokenizer=codec, depths=args.depth)


def windowed_base(name: str, window: int) -> tuple[MAGModel, TextCodec]:
    """A base model in MAGModel's decoder loop with window-`window` attention and no MAG layers."""
    base, tokenizer = load_base(name)
    return MAGModel(base, MAGConfig.for_base(base, layers=[], window=window)).eval(), \
        TextCodec(tokenizer, name=Path(name).name)


def answer_lookups(tokens: list[int], answer: tuple[int, int], needle: tuple[int, int]
                   ) -> list[tuple[int, int, list[int]]]:
    """(p, token j, needle positions holding it) for every answer token j the needle holds, p = the
    position that predicts it (answer start − 1 + j)."""
    lookups = []
    for j in range(answer[1] - answer[0]):
        target = tokens[answer[0] + j]
        holders = [t for t in range(*needle) if tokens[t] == target]
        if holders:
            lookups.append((answer[0] - 1 + j, target, holders))
    return lookups


def ridge_map(keys: torch.Tensor, values: torch.Tensor, ridge: float) -> torch.Tensor:
    """W = argmin Σ_t ‖k_t W − v_t‖² + λ‖W‖² over the rows of keys (n, Dk) and values (n, Dv)."""
    return torch.linalg.solve(keys.T @ keys + ridge * torch.eye(keys.shape[1], dtype=keys.dtype), keys.T @ values)


def kept_fraction(decay: torch.Tensor, written: int, read: int, chunk_size: int) -> float:
    """Of what the chunk holding position `written` wrote, the fraction left when position `read` reads,
    given per-token forgetting α (L,): a chunk forgets by its last token's α after the chunks before
    it wrote, and a read sees the chunks before its own, so the product of (1 − α) over the chunks
    after the written one and before the read one."""
    ends = decay[chunk_size - 1::chunk_size]
    return torch.prod(1 - ends[written // chunk_size + 1:read // chunk_size]).item()


def layer_lookup(layer, x: torch.Tensor, values: torch.Tensor | None, output: torch.Tensor, tokens: list[int],
                 answer: tuple[int, int], needle: tuple[int, int], window: int) -> tuple[float, ...]:
    """(key, read and ridge top-1 hits, answer tokens, θ needle, needle kept) for one prompt at one MAG layer:
    x (L, dim) the memory's input, values (L, dim) what it stores where that is not x, output (L, dim)
    its output."""
    memory = layer.memory
    lookups = answer_lookups(tokens, answer, needle)
    with torch.no_grad():
        theta = torch.sigmoid(memory.lr_proj(x).double()).mean(-1)[:answer[0] - window]
        held = sorted({t for _, _, holders in lookups for t in holders})
        theta_needle = (theta[held].mean() / theta.mean()).item()
        decay = torch.sigmoid(memory.decay_proj(x).double()).mean(-1)
        kept = kept_fraction(decay, needle[0], answer[0], memory.chunk_size)
        (q, k, v), _ = memory.unit_projections(x[None], values=None if values is None else values[None])
        q, k, v = (t[0].double() for t in (q, k, v))
        stored = F.normalize(memory.out_proj(v.to(output.dtype)), dim=-1)
        # the least-squares map over the pairs every answer position sees beyond its window
        seen = answer[0] - window
        values = v[:seen]
        ridge = ridge_map(k[:seen], values, RIDGE)
    key_hits = read_hits = ridge_hits = count = 0
    for p, target, holders in lookups:
        beyond = p - window + 1  # positions 0 … p − W are outside p's window
        count += 1
        keys = k[:beyond] @ q[p]
        key_hits += int(keys.argmax().item() in holders)
        read = stored[:beyond] @ F.normalize(output[p], dim=0)
        read_hits += int(tokens[read.argmax().item()] == target)
        best = values @ F.normalize(q[p] @ ridge, dim=0)
        ridge_hits += int(tokens[best.argmax().item()] == target)
    return key_hits, read_hits, ridge_hits, count, theta_needle, kept


def format_entropy(codec: TextCodec, answers: int = 3000, seed: int = 0) -> float:
    """Mean over answer-token positions (a position counting once per answer that has it) of the
    entropy, in nats, of the token at that position of random hash-hop answers."""
    rng = random.Random(seed)
    counts: dict[int, Counter] = {}
    for _ in range(answers):
        for position, token in enumerate(codec(" " + "".join(rng.choices(HASH_ALPHABET, k=HASH_LENGTH)))):
            counts.setdefault(position, Counter())[token] += 1
    total = sum(sum(c.values()) for c in counts.values())
    return sum(-sum(n * math.log(n / sum(c.values())) for n in c.values()) for c in counts.values()) / total


def captured_memory_call(inputs: tuple, output: tuple) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(x, values or None, output) of the first sequence of one `NeuralMemory.forward(x, state, values)`."""
    values = inputs[2] if len(inputs) > 2 else None
    return inputs[0][0].detach(), None if values is None else values[0].detach(), output[0][0].detach()


def ask_as_the_needle_is_written(sample: dict) -> dict:
    """The single-hop sample with its question "hop 1 from <key>:" written as the needle line, "<key> =",
    the demonstration lines before it kept."""
    head, question = sample["query"].rsplit("\n", 1)
    key = question.removeprefix("hop 1 from ").removesuffix(":")
    if question != f"hop 1 from {key}:":
        raise SystemExit(f"--query-form needle needs single-hop hash-hop questions, got {question!r}")
    return dict(sample, query=f"{head}\n{key} =")


def measure(model: MAGModel, codec: TextCodec, samples: list[dict]) -> tuple[dict, list[list[int]]]:
    """Per MAG layer: key, read and ridge top-1, θ needle and needle kept; and per answer-token index [right, total]
    of the teacher-forced predictions."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = {}
    hooks = [layer.memory.register_forward_hook(
        lambda module, inputs, out, name=name: captured.__setitem__(name, captured_memory_call(inputs, out)))
        for name, layer in model.mag.items()]
    totals = {name: [0, 0, 0, 0, 0.0, 0.0] for name in model.mag}
    by_index: list[list[int]] = []
    try:
        for sample in samples:
            tokens, spans = answer_targets(sample, codec)
            with torch.no_grad():
                logits, _ = model(torch.tensor([tokens[:-1]], device=model.base.device))
            predicted = logits[0].argmax(-1).tolist()
            for j, p in enumerate(range(*spans[-1])):
                if j == len(by_index):
                    by_index.append([0, 0])
                by_index[j][0] += int(predicted[p - 1] == tokens[p])
                by_index[j][1] += 1
            for name, (x, values, output) in captured.items():
                hits = layer_lookup(model.mag[name], x, values, output, tokens, spans[-1],
                                    (sample["needle_token_start"], sample["needle_token_end"]), model.config.window)
                totals[name] = [a + b for a, b in zip(totals[name], hits)]
    finally:
        for hook in hooks:
            hook.remove()
    return {name: {"key_top1": key / count, "read_top1": read / count, "ridge_top1": ridge / count,
                   "answer_tokens": count, "theta_needle": theta / len(samples), "needle_kept": kept / len(samples)}
            for name, (key, read, ridge, count, theta, kept) in totals.items()}, by_index


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2-135m",
                        help="a trained MAG run or checkpoint, or a base to give fresh MAG layers "
                             "(default: smollm2-135m)")
    parser.add_argument("--layers", default="8,12,16,20,24",
                        help="MAG layers of a fresh model (default: 8,12,16,20,24)")
    parser.add_argument("--window", type=int, default=256, help="window of a fresh model (default: 256)")
    parser.add_argument("--write", choices=WRITES, default="gradient", help="memory write of a fresh model")
    parser.add_argument("--ridge", type=float, default=MAGConfig.memory_ridge,
                        help=f"λ of a fresh model's least-squares write (default: {MAGConfig.memory_ridge})")
    add_prompt_arguments(parser)
    parser.add_argument("--query-form", choices=("question", "needle"), default="question",
                        help="ask 'hop 1 from <key>:' (the curriculum's form) or '<key> =' (the needle's)")
    parser.add_argument("--seed", type=int, default=0, help="initialises a fresh model's MAG layers (default: 0)")
    parser.add_argument("--out", type=Path, help="output stem (default: docs/results/mag_lookup[_RUN])")
    args, started, env = parse_and_start(parser, argv)
    path = Path(args.model)
    trained = path.is_dir() and find_mag_checkpoint(path) is not None
    if trained:
        model, codec, opened = open_for_eval(args.model)
        what = f"trained: {opened['checkpoint']}"
    else:
        base, tokenizer = load_base(args.model)
        torch.manual_seed(args.seed)
        config = MAGConfig.for_base(base, layers=args.layers, window=args.window, memory_write=args.write,
                                    memory_ridge=args.ridge)
        model = MAGModel(base, config).eval()
        codec = TextCodec(tokenizer, name=Path(args.model).name)
        what = f"fresh MAG layers {model.config.layers} (seed {args.seed})"
    what += f", {model.config.memory_write} write" + (f" (λ = {model.config.memory_ridge:g})"
                                                      if model.config.memory_write == "least_squares" else "")
    where = "drawn per prompt" if args.depth is None else f"{args.depth:g}"
    log(f"mag_lookup: {what}, {args.samples} hash-hop prompts of {args.context_tokens} tokens, needle depth {where}")
    samples = hash_hop_prompts(codec, args, model.config.window)
    if args.query_form == "needle":
        samples = [ask_as_the_needle_is_written(sample) for sample in samples]
        what += ", asked as '<key> ='"
    layers, by_index = measure(model, codec, samples)
    floor = format_entropy(codec)
    finish_environment(env, started)
    result = {"model": what, "window": model.config.window, "context_tokens": args.context_tokens,
              "needle_depth": args.depth, "samples": args.samples, "memory_depth": model.config.memory_depth,
              "layers": layers,
              "answer_token_accuracy": [{"index": j, "right": right, "total": total}
                                        for j, (right, total) in enumerate(by_index)],
              "format_entropy_nats": floor,
              "command": command_line("mag_lookup", argv), "environment": env}
    stem = args.out or RESULTS_DIR / ("mag_lookup" + (f"_{path.name}" if trained else ""))
    write_json(stem.with_suffix(".json"), result)
    table = markdown_table(["MAG layer", "key top-1", "read top-1", "ridge top-1", "answer tokens", "θ needle",
                            "needle kept"],
                           [[name] + [f"{100 * r[key]:.0f} %" for key in ("key_top1", "read_top1", "ridge_top1")]
                            + [r["answer_tokens"], f"{r['theta_needle']:.2f}", f"{r['needle_kept']:.3f}"]
                            for name, r in layers.items()])
    accuracy = markdown_table(["answer token"] + [str(j + 1) for j in range(len(by_index))],
                              [["right / prompts"] + [f"{right} / {total}" for right, total in by_index]])
    write_text(stem.with_suffix(".md"), f"# MAG lookup: {what}\n\n`{result['command']}`\n\n{args.samples} single-hop "
               f"hash-hop prompts of {args.context_tokens} tokens, needle depth {where}, window "
               f"{model.config.window}, memory depth {model.config.memory_depth}.\n\n{table}\n\nThe model's "
               f"teacher-forced prediction of each answer token:\n\n{accuracy}\n\nAnswer loss of a model that "
               f"knows only the format: {floor:.2f} nats/token.\n\n{environment_markdown(env)}\n")
    print(table)
    print(accuracy)
    print(f"format-only answer loss: {floor:.2f} nats/token")


if __name__ == "__main__":
    main()
