"""Building a sample from text blocks: placing needles among fillers at a depth, measuring token spans,
trimming to the length asked for. Shared by the three tasks."""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agiformer.mag.data.format import InvalidSample
from agiformer.mag.data.tokenizers import Encode


@dataclass
class Block:
    text: str
    tokens: int
    hop: int | None = None  # which needle (hop) this block is; None for filler
    demo: bool = False  # a line of a demonstration chain (hash-hop): kept at the end of the context
    recall: tuple[int, int] | None = None  # (r, hop): a line of recall chain r (hash-hop), placed like a needle


class TokenCounter:
    """Token counts of text pieces under one tokenizer, cached (statements recur across samples)."""

    def __init__(self, encode: Encode):
        self.encode = encode
        self.count = functools.lru_cache(maxsize=1 << 16)(lambda text: len(encode(text)))


def position_margin(context_tokens: int) -> int:
    """Slack between estimated and exact token positions (piece-wise vs whole-prompt encoding)."""
    return 2 + context_tokens // 100


def layout(rng: random.Random, fillers: list[Block], needles: list[Block], prompt_estimate: int, window: int,
           margin: int, depth: float, reserve: int = 0) -> list[Block]:
    """Insert needles among fillers: needle 0 at `depth` of the room it has, the others uniformly, all
    ending before `prompt_estimate - window - margin`, recall blocks `reserve` tokens earlier still.
    Fillers keep their order."""
    free = prompt_estimate - window - margin - sum(n.tokens for n in needles)
    if free - (reserve if any(n.recall is not None for n in needles) else 0) < 0:
        raise InvalidSample("no room for the needles beyond the window")
    offsets = [depth * free] + [rng.random() * (free - (reserve if n.recall is not None else 0))
                                for n in needles[1:]]  # in filler-only token coordinates
    order = sorted(range(len(needles)), key=lambda k: (offsets[k], k))
    blocks: list[Block] = []
    rest = list(fillers)
    position = 0
    for k in order:  # at the filler boundary nearest to its offset, never past the room it has
        while True:  # the next filler that fits; a smaller one a little further on if the next does not
            fits = (j for j, b in enumerate(rest[:64]) if position + b.tokens / 2 <= offsets[k]
                    and position + b.tokens <= free)
            j = next(fits, None)
            if j is None:
                break
            blocks.append(rest.pop(j))
            position += blocks[-1].tokens
        blocks.append(needles[k])
    return blocks + rest


def assemble(blocks: list[Block], separator: str) -> tuple[str, list[tuple[int, int]]]:
    """The context (every block followed by the separator) and each needle's character span, by hop."""
    parts, spans, position = [], {}, 0
    for block in blocks:
        if block.hop is not None:
            spans[block.hop] = (position, position + len(block.text))
        parts += [block.text, separator]
        position += len(block.text) + len(separator)
    return "".join(parts), [spans[k] for k in sorted(spans)]


def token_spans(prompt: str, tokens: list[int], char_spans: Iterable[tuple[int, int]],
                encode: Encode) -> list[tuple[int, int]]:
    """Token spans covering character spans of `prompt`, exact at clean token boundaries and widened
    (never narrowed) where a token straddles a boundary."""
    spans = []
    for start, end in char_spans:
        head = encode(prompt[:start])
        first = 0
        while first < min(len(head), len(tokens)) and head[first] == tokens[first]:
            first += 1  # tokens[:first] are identical to head's, so they hold only text before `start`
        tail = encode(prompt[end:])
        common = 0
        while common < min(len(tail), len(tokens)) and tail[-1 - common] == tokens[-1 - common]:
            common += 1  # the last `common` tokens hold only text after `end`
        spans.append((first, len(tokens) - common))
    return spans


def first_token_at(prompt: str, tokens: list[int], char_start: int, encode: Encode) -> int:
    """The first token holding text at or after `char_start` (widened, never narrowed, like `token_spans`)."""
    if char_start >= len(prompt):
        return len(tokens)
    return token_spans(prompt, tokens, [(char_start, len(prompt))], encode)[0][0]


def fill_lines(make: Callable[[], list[str]], counter: TokenCounter, budget: int, separator: str) -> list[Block]:
    """Filler blocks from groups of lines (`make`) while their tokens stay within `budget`; near the end,
    up to 32 more draws look for lines short enough to close the gap."""
    blocks: list[Block] = []
    total, misses = 0, 0
    while misses < 32:
        for text in make():
            tokens = counter.count(text + separator)
            if total + tokens > budget:
                misses += 1
                break
            blocks.append(Block(text, tokens))
            total += tokens
    return blocks


Annotate = Callable[[list[Block], str, list[int]], dict]


def finish(task: str, blocks: list[Block], separator: str, query: str, answer: str, metadata: dict,
           counter: TokenCounter, window: int, annotate: Annotate | None = None) -> dict:
    """The sample: filler dropped until prompt + answer fit the context, token spans measured on the
    whole prompt. annotate(blocks, prompt, tokens): task-specific metadata, added before the needles'."""
    answer_tokens = counter.count(answer)
    while True:  # piece-wise token counts are estimates: drop the filler block that best removes the excess
        context, char_spans = assemble(blocks, separator)
        prompt = context + query
        tokens = counter.encode(prompt)
        if len(tokens) + answer_tokens <= metadata["context_tokens"]:
            break
        excess = len(tokens) + answer_tokens - metadata["context_tokens"]
        fillers = [i for i, block in enumerate(blocks) if block.hop is None and not block.demo and block.recall is None]
        if not fillers:
            raise InvalidSample("the needles alone exceed the context")
        enough = [i for i in fillers if blocks[i].tokens >= excess]
        if enough:
            drop = min(enough, key=lambda i: (blocks[i].tokens, i))
        else:
            drop = max(fillers, key=lambda i: (blocks[i].tokens, -i))
        blocks = blocks[:drop] + blocks[drop + 1:]
    spans = token_spans(prompt, tokens, char_spans, counter.encode)
    if annotate is not None:
        metadata.update(annotate(blocks, prompt, tokens))
    needles = sum(e - s for s, e in spans)
    before = spans[0][0] - sum(e - s for s, e in spans if s < spans[0][0])  # filler tokens before hop 1
    metadata.update(needle_spans=[list(s) for s in spans], needle_chars=[list(s) for s in char_spans],
                    answer_tokens=answer_tokens,
                    needle_depth=round(min(1.0, before / max(1, len(tokens) - window - needles)), 4))
    return {
        "task": task, "context": context, "query": query, "answer": answer,
        "needle_token_start": min(s for s, _ in spans), "needle_token_end": max(e for _, e in spans),
        "prompt_tokens": len(tokens), "metadata": metadata,
    }


# ---- checks shared by the tasks -----------------------------------------------------------------------

def inside(position: int, length: int, spans: Iterable[Sequence[int]]) -> bool:
    return any(start <= position and position + length <= end for start, end in spans)


def occurrences(text: str, value: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(value), text)]


def check_word_answer(sample: Mapping, prompt: str, chars: list) -> None:
    """An answer of one space and one word, found in the prompt once: in the last needle."""
    answer = sample["answer"]
    if not re.fullmatch(r" \S+", answer):
        raise InvalidSample(f"answer {answer!r} is not one space and one word")
    value = answer[1:]
    where = occurrences(prompt, value)
    if len(where) != 1 or not inside(where[0], len(value), chars[-1:]):
        raise InvalidSample(f"answer {value!r} occurs {len(where)} times, not once in the last needle")
