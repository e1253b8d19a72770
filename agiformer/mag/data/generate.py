"""Drawing samples (each checked before it is returned) and validating samples read back from a file."""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping, Sequence

from agiformer.errors import AGIFormerError
from agiformer.mag.data import code_retrieval, dependency, hash_hop
from agiformer.mag.data.assemble import TokenCounter, first_token_at, position_margin, token_spans
from agiformer.mag.data.format import FORMAT_VERSION, SAMPLE_KEYS, InvalidSample, format_prompt
from agiformer.mag.data.tokenizers import Encode, resolve_tokenizer

TASKS = ("hash-hop", "dependency", "code")
DEFAULT_HOPS = {"hash-hop": 1, "dependency": 2, "code": 1}
LENGTH_TOLERANCE = 0.05  # |prompt_tokens - context_tokens| <= 5 % of context_tokens
MIN_CONTEXT_TOKENS = 512  # below this, 5 % is less than a filler line
_ATTEMPTS = 40  # fresh draws per sample before giving up (a valid draw normally comes first)
_TASKS = {"hash-hop": hash_hop, "dependency": dependency, "code": code_retrieval}  # each: generate, check


def _check(sample: Mapping, prompt: str, window: int) -> None:
    """The guarantees of a sample, given its prompt (token positions already computed)."""
    meta = sample["metadata"]
    context_tokens, total = meta["context_tokens"], sample["prompt_tokens"]
    if abs(total - context_tokens) > LENGTH_TOLERANCE * context_tokens:
        raise InvalidSample(f"prompt has {total} tokens, more than 5 % away from {context_tokens}")
    if total + meta["answer_tokens"] > context_tokens:
        raise InvalidSample(f"prompt and answer have {total + meta['answer_tokens']} tokens, "
                            f"more than {context_tokens}")
    spans, chars = meta["needle_spans"], meta["needle_chars"]
    if not spans or len(spans) != len(chars):
        raise InvalidSample("no needle")
    for start, end in spans:
        if not 0 <= start < end <= total - window:
            raise InvalidSample(f"needle tokens [{start}, {end}) are not all before position {total - window} "
                                f"(prompt {total} tokens, window {window})")
    bounds = (min(s for s, _ in spans), max(e for _, e in spans))
    if (sample["needle_token_start"], sample["needle_token_end"]) != bounds:
        raise InvalidSample("needle_token_start/end disagree with the needle spans")
    context_chars = len(sample["context"])
    if any(not 0 <= s < e <= context_chars for s, e in chars):
        raise InvalidSample("a needle is not inside the context")
    _TASKS[sample["task"]].check(sample, prompt, chars)


def validate_sample(sample: Mapping, encode: Encode | str = "bytes") -> None:
    """Raise InvalidSample unless `sample` keeps every guarantee under the tokenizer it was made with:
    length within ±5 %, needles beyond the window and inside the prompt, the answer only in its needle."""
    _, encode = resolve_tokenizer(encode)
    missing = [key for key in SAMPLE_KEYS if key not in sample]
    if missing:
        raise InvalidSample(f"missing fields: {', '.join(missing)}")
    if sample["task"] not in _TASKS:
        raise InvalidSample(f"unknown task {sample['task']!r}")
    prompt = format_prompt(sample)
    tokens = encode(prompt)
    meta = sample["metadata"]
    if len(tokens) != sample["prompt_tokens"]:
        raise InvalidSample(f"prompt encodes to {len(tokens)} tokens, the sample says {sample['prompt_tokens']}")
    if len(encode(sample["answer"])) != meta["answer_tokens"]:
        raise InvalidSample(f"answer encodes to {len(encode(sample['answer']))} tokens, "
                            f"the sample says {meta['answer_tokens']}")
    spans = token_spans(prompt, tokens, meta["needle_chars"], encode)
    if [list(s) for s in spans] != [list(s) for s in meta["needle_spans"]]:
        raise InvalidSample("needle token spans do not match the needles' text")
    if "demo_chars_start" in meta and first_token_at(prompt, tokens, meta["demo_chars_start"],
                                                       encode) != meta["demo_token_start"]:
        raise InvalidSample("demo_token_start does not match the demonstration lines")
    if "recalls" in meta:
        positions = hash_hop.recall_positions(prompt, tokens, len(sample["context"]), meta["recall_chars"], encode)
        if any(positions[key] != meta.get(key) for key in positions):
            raise InvalidSample("recall token positions do not match the recall lines")
    _check(sample, prompt, meta["window"])


def _check_arguments(task: str, context_tokens: int, window: int, hops: int | None,
                     depth: float | None) -> int:
    if task not in TASKS:
        raise AGIFormerError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if hops is None:
        hops = DEFAULT_HOPS[task]
    if task == "code" and hops != 1:
        raise AGIFormerError("task 'code' has one hop; --hops applies to hash-hop and dependency")
    if not 1 <= hops <= 64:
        raise AGIFormerError(f"hops must be in [1, 64], got {hops}")
    if window < 1:
        raise AGIFormerError(f"window must be ≥ 1 token, got {window}")
    needed = max(MIN_CONTEXT_TOKENS, window + 64 * (hops + 1) + position_margin(context_tokens))
    if task == "code":
        needed = max(needed, window + 256 + 2 * position_margin(context_tokens))
    if context_tokens < needed:
        raise AGIFormerError(f"{context_tokens} context tokens are too few for {task} with a window of {window}: "
                             f"use at least {needed} (room for the needles beyond the window, and at least "
                             f"{MIN_CONTEXT_TOKENS} in all), or a smaller window")
    if depth is not None and not 0 <= depth <= 1:
        raise AGIFormerError(f"depth must be in [0, 1], got {depth}")
    return hops


def generate_sample(task: str, index: int, *, seed: int = 0, context_tokens: int = 2048, window: int = 256,
                    tokenizer: str | Encode = "bytes", hops: int | None = None, depth: float | None = None,
                    recalls: int = 0, _counter: TokenCounter | None = None) -> dict:
    """Sample `index` of a curriculum: a function of its arguments alone (depth drawn if None).
    recalls > 0 (hash-hop): that many answered queries about other chains beyond the window open the
    query, extra training targets in the prompt's own format (`answer_targets`)."""
    hops = _check_arguments(task, context_tokens, window, hops, depth)
    if recalls and task != "hash-hop" or recalls < 0:
        raise AGIFormerError(f"recalls ({recalls}) must be ≥ 0, and only hash-hop has them")
    if recalls > context_tokens // 8:  # each needs its chain's lines and a query line, far more than 8 tokens
        raise AGIFormerError(f"{recalls} recalls cannot fit in {context_tokens} context tokens; "
                             f"use at most {context_tokens // 8}")
    extra = {"recalls": recalls} if recalls else {}
    name, encode = resolve_tokenizer(tokenizer)
    counter = _counter or TokenCounter(encode)
    rng = random.Random(f"{seed}:{task}:{index}")
    drawn = depth is None
    if drawn:
        depth = round(rng.random(), 4)
    common = {"format": FORMAT_VERSION, "seed": seed, "index": index, "tokenizer": name,
              "context_tokens": context_tokens, "window": window, "hops": hops, "depth": depth, "depth_drawn": drawn}
    failures = []
    for _ in range(_ATTEMPTS):
        try:
            sample = _TASKS[task].generate(rng, counter, context_tokens, window, hops, depth, common, **extra)
            _check(sample, format_prompt(sample), window)
            return sample
        except InvalidSample as error:
            failures.append(str(error))
    raise AGIFormerError(f"could not make a valid {task} sample {index} with {context_tokens} context tokens and a "
                         f"window of {window} ({failures[-1]}): use more context tokens or a smaller window")


def generate_samples(task: str, samples: int, *, seed: int = 0, context_tokens: int | Sequence[int] = 2048,
                     window: int = 256, tokenizer: str | Encode = "bytes", hops: int | None = None,
                     depths: float | Sequence[float] | None = None, recalls: int = 0,
                     progress: bool = False) -> list[dict]:
    """`samples` samples; sample i takes the i-th cell (cycling) of the grid context_tokens × depths
    (depths None: drawn uniformly per sample); `progress` draws a bar on stderr."""
    lengths = [context_tokens] if isinstance(context_tokens, int) else list(context_tokens)
    depth_list = [None] if depths is None else [depths] if isinstance(depths, (int, float)) else list(depths)
    if not lengths or not depth_list:
        raise AGIFormerError("give at least one context length and one depth")
    for length in lengths:
        _check_arguments(task, length, window, hops, None)
    for depth in depth_list:
        _check_arguments(task, lengths[0], window, hops, depth)
    counter = TokenCounter(resolve_tokenizer(tokenizer)[1])
    grid = [(length, depth) for length in lengths for depth in depth_list]
    out = []
    from tqdm import tqdm

    for index in tqdm(range(samples), desc=f"{task} samples", unit="sample", disable=not progress, file=sys.stderr):
        length, depth = grid[index % len(grid)]
        out.append(generate_sample(task, index, seed=seed, context_tokens=length, window=window, tokenizer=tokenizer,
                                   hops=hops, depth=depth, recalls=recalls, _counter=counter))
    return out
