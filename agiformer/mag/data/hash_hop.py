"""hash-hop: lines ``hashA = hashB``; follow K of them from the hash the query names (see the package docstring)."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence

from agiformer.mag.data.assemble import (
    Block, TokenCounter, assemble, check_word_answer, fill_lines, finish, first_token_at, inside, layout, occurrences,
    position_margin, token_spans,
)
from agiformer.mag.data.format import InvalidSample
from agiformer.mag.data.tokenizers import Encode

HASH_ALPHABET = string.ascii_lowercase + string.digits
HASH_LENGTH = 8
HASH_HOP_DEMOS = 3  # demonstrations before the real query, as many as fit in the window (see the package docstring)

_HASH = f"[{HASH_ALPHABET}]{{{HASH_LENGTH}}}"
_HASH_LINE = re.compile(f"({_HASH}) = ({_HASH})")
_HASH_DEMO = re.compile(f"hop ([1-9][0-9]*) from ({_HASH}): ({_HASH})\n")
_HASH_QUERY = re.compile(f"\n((?:{_HASH_DEMO.pattern})*)hop ([1-9][0-9]*) from ({_HASH}):")


def hash_hop_query(hops: int, start: str, demos: Sequence[Sequence[str]] = (),
                   recalls: Sequence[Sequence[str]] = ()) -> str:
    """The hash-hop query, the one place that decides its format: a line ``hop K from <first>: <last>``
    per recall chain, then per demo chain, then the real question ``hop K from <start>:``."""
    lines = "".join(f"hop {hops} from {chain[0]}: {chain[-1]}\n" for chain in [*recalls, *demos])
    return f"\n{lines}hop {hops} from {start}:"


def _recall_chars(blocks: list[Block], separator: str) -> list[list[list[int]]]:
    """Per recall chain, the character spans of its lines in the context, in chain order."""
    spans: dict[tuple[int, int], list[int]] = {}
    position = 0
    for block in blocks:
        if block.recall is not None:
            spans[block.recall] = [position, position + len(block.text)]
        position += len(block.text) + len(separator)
    chains = max((r for r, _ in spans), default=-1) + 1
    return [[spans[r, hop] for hop in sorted(h for q, h in spans if q == r)] for r in range(chains)]


def recall_positions(prompt: str, tokens: list[int], context_chars: int, chain_chars: list[list[list[int]]],
                     encode: Encode) -> dict:
    """Token positions of hash-hop recall queries: per recall r, the spans of its chain's lines
    (`recall_spans`), where its query line starts (`recall_line_tokens`) and the span of its answer
    " <hash>" on that line (`recall_answer_spans`, the training targets). The recall lines are the
    first lines of the query, in order."""
    lines = list(_HASH_DEMO.finditer(prompt, context_chars + 1))[:len(chain_chars)]
    starts = [first_token_at(prompt, tokens, line.start(), encode) for line in lines]
    answers = token_spans(prompt, tokens, [(line.start(3) - 1, line.end(3)) for line in lines], encode)
    return {"recall_chars": chain_chars,
            "recall_spans": [[list(s) for s in token_spans(prompt, tokens, chars, encode)] for chars in chain_chars],
            "recall_line_tokens": starts, "recall_answer_spans": [list(s) for s in answers]}


def generate(rng: random.Random, counter: TokenCounter, context_tokens: int, window: int, hops: int,
             depth: float, common: dict, recalls: int = 0) -> dict:
    used: set[str] = set()

    def fresh() -> str:
        while True:
            value = "".join(rng.choices(HASH_ALPHABET, k=HASH_LENGTH))
            if value not in used:
                used.add(value)
                return value

    def chain_lines(chain: list[str]) -> list[str]:
        return [f"{a} = {b}" for a, b in zip(chain, chain[1:])]

    margin = position_margin(context_tokens)
    chain = [fresh() for _ in range(hops + 1)]
    needles = [Block(line, counter.count(line + "\n"), hop) for hop, line in enumerate(chain_lines(chain))]
    answer = f" {chain[-1]}"
    # Recall chains: answered queries about distractor chains beyond the window, for training.
    recall_chains = [[fresh() for _ in range(hops + 1)] for _ in range(recalls)]
    recall_blocks = [Block(line, counter.count(line + "\n"), recall=(r, hop))
                     for r, recall in enumerate(recall_chains) for hop, line in enumerate(chain_lines(recall))]
    # Demonstrations: distractor chains whose lines end the context, inside the window of the last prompt
    # token (with the demo lines and the query after them), as many as fit, up to HASH_HOP_DEMOS.
    demos: list[list[str]] = []
    demo_blocks: list[Block] = []
    for _ in range(HASH_HOP_DEMOS):
        demo = [fresh() for _ in range(hops + 1)]
        lines = [Block(line, counter.count(line + "\n"), demo=True) for line in chain_lines(demo)]
        tail = sum(b.tokens for b in demo_blocks + lines) + counter.count(
            hash_hop_query(hops, chain[0], demos + [demo], recall_chains))
        if tail + margin > window:
            break
        demos.append(demo)
        demo_blocks += lines
    rng.shuffle(demo_blocks)
    query = hash_hop_query(hops, chain[0], demos, recall_chains)
    budget = (context_tokens - counter.count(query) - counter.count(answer)
              - sum(n.tokens for n in needles + recall_blocks + demo_blocks))
    # Distractor chains as long as the real one, so that chain structure does not single it out.
    fillers = fill_lines(lambda: chain_lines([fresh() for _ in range(hops + 1)]), counter, budget, "\n")
    rng.shuffle(fillers)
    estimate = sum(b.tokens for b in fillers + needles + recall_blocks + demo_blocks) + counter.count(query)
    # a recall line's window starts before the query does: its chain must end that much earlier
    reserve = counter.count(query) + margin
    blocks = layout(rng, fillers, needles + recall_blocks, estimate, window, margin, depth, reserve) + demo_blocks

    def positions(blocks: list[Block], prompt: str, tokens: list[int]) -> dict:
        """Where the demonstration chains begin (the first demo line of the context), and the recalls'."""
        first = next((i for i, block in enumerate(blocks) if block.demo), None)
        context_chars = len(prompt) - len(query)
        char_start = len(assemble(blocks[:first], "\n")[0]) if first is not None else context_chars
        found = {"demo_chars_start": char_start,
                 "demo_token_start": first_token_at(prompt, tokens, char_start, counter.encode)}
        if recalls:
            found.update(recall_positions(prompt, tokens, context_chars, _recall_chars(blocks, "\n"),
                                          counter.encode))
        return found

    metadata = {**common, "chain": chain, "demos": demos}
    if recalls:
        metadata["recalls"] = recall_chains
    return finish("hash-hop", blocks, "\n", query, answer, metadata, counter, window, positions)


def check(sample: Mapping, prompt: str, chars: list) -> None:
    check_word_answer(sample, prompt, chars)
    context, meta = sample["context"], sample["metadata"]
    query = _HASH_QUERY.fullmatch(sample["query"])
    if not query or int(query.group(5)) != meta["hops"]:
        raise InvalidSample(f"query {sample['query']!r} is not '\\n' + demo lines 'hop K from HASH: HASH\\n' + "
                            "'hop K from HASH:'")
    lines = [(int(k), start, end) for k, start, end in _HASH_DEMO.findall(query.group(1))]
    recall_chains = meta.get("recalls", [])
    recalls, demos = lines[:len(recall_chains)], lines[len(recall_chains):]
    if [[start, end] for _, start, end in recalls] != [[c[0], c[-1]] for c in recall_chains]:
        raise InvalidSample("the query's recall lines disagree with metadata['recalls']")
    if [[start, end] for _, start, end in demos] != [[d[0], d[-1]] for d in meta.get("demos", [])]:
        raise InvalidSample("the query's demonstrations disagree with metadata['demos']")
    assigned: dict[str, str] = {}
    values: set[str] = set()
    line_start = {}
    position = 0
    for line in context.split("\n")[:-1]:
        match = _HASH_LINE.fullmatch(line)
        if not match:
            raise InvalidSample(f"context line {line!r} is not 'HASH = HASH'")
        left, right = match.groups()
        if left in assigned or right in values or left == right:
            raise InvalidSample(f"hash reused in {line!r}")
        assigned[left], line_start[left] = right, position
        values.add(right)
        position += len(line) + 1

    def follow(start: str, hops: int, line_ok, error: str) -> str:
        """The hash `hops` lines on from `start`, each line's start character accepted by
        line_ok(hop, char); else InvalidSample(error, with {hop} the 1-based hop that failed)."""
        current = start
        for hop in range(hops):
            if current not in assigned or not line_ok(hop, line_start[current]):
                raise InvalidSample(error.format(hop=hop + 1))
            current = assigned[current]
        return current

    current = follow(query.group(6), meta["hops"], lambda hop, char: char == chars[hop][0],
                     "hop {hop} of the chain is not its needle line")
    if current != sample["answer"][1:]:
        raise InvalidSample("the chain does not end at the answer")
    for value in meta["chain"]:
        if any(not inside(p, len(value), chars) for p in occurrences(context, value)):
            raise InvalidSample(f"chain hash {value} occurs outside the needles")
    answer = sample["answer"][1:]
    for k, start, end in demos:  # each demo follows a K-chain of lines that all lie at the end of the context
        current = follow(start, k, lambda hop, char: char >= meta["demo_chars_start"],
                         f"demonstration 'hop {k} from {start}' does not follow a chain of the last lines")
        if k != meta["hops"] or current != end or answer in (start, end):
            raise InvalidSample(f"demonstration 'hop {k} from {start}: {end}' is wrong")
    for r, (k, start, end) in enumerate(recalls):  # each recall follows a K-chain of lines beyond its window
        current = follow(start, k, lambda hop, char, r=r: char == meta["recall_chars"][r][hop][0],
                         f"recall 'hop {k} from {start}' does not follow its chain's lines")
        if k != meta["hops"] or current != end:
            raise InvalidSample(f"recall 'hop {k} from {start}: {end}' is wrong")
        if max(e for _, e in meta["recall_spans"][r]) > meta["recall_line_tokens"][r] - meta["window"]:
            raise InvalidSample(f"recall chain {r} ends inside the window of its query line")
    if demos and meta["demo_token_start"] < sample["prompt_tokens"] - meta["window"]:
        raise InvalidSample(f"demonstration chains start at token {meta['demo_token_start']}, outside the window "
                            f"(prompt {sample['prompt_tokens']} tokens, window {meta['window']})")
