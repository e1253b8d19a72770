"""dependency: ``svc_a depends on svc_b.`` chains ending in a property; follow one to its property."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Mapping

from agiformer.mag.data.assemble import (
    Block, TokenCounter, check_word_answer, fill_lines, finish, inside, layout, occurrences, position_margin,
)
from agiformer.mag.data.format import InvalidSample

_NAME_PREFIX = "svc_"
_NAME_LETTERS = 6
# kind: (property sentence, query question, value maker); values of one kind have one width.
_PROPERTIES = {
    "port": ("{} listens on port {}.", "Which port does the last service of the chain listen on?",
             lambda rng: str(rng.randrange(10000, 65536))),
    "zone": ("{} is deployed in zone {}.", "Which zone is the last service of the chain deployed in?",
             lambda rng: "".join(rng.choices(string.ascii_uppercase, k=2)) + str(rng.randrange(10, 100))),
    "version": ("{} runs version {}.", "Which version does the last service of the chain run?",
                lambda rng: ".".join(str(rng.randrange(1, 10)) for _ in range(3))),
}
# Filler mentions only names used nowhere else, and never a property or a number.
_FILLER_SENTENCES = (
    "{} was deployed by the platform team.",
    "{} writes its logs to the central collector.",
    "{} is owned by the billing team.",
    "{} was migrated to the new cluster last quarter.",
    "{} is scheduled for a security review.",
    "{} restarts itself when its health check fails.",
    "{} and {} share an on-call rotation.",
    "{} sends its metrics to {}.",
    "{} was renamed from {} during the last refactoring.",
    "The runbook of {} was reviewed by the owners of {}.",
    "{} depends on {}.",  # dangling edges, so that 'depends on' alone marks nothing
    "{} is idle.",  # short ones close the gap to the requested length
    "{} was paused.",
)
_NAME = f"{_NAME_PREFIX}[a-z]{{{_NAME_LETTERS}}}"
_NAME_RE = re.compile(_NAME)
_DEPENDS = re.compile(f"({_NAME}) depends on ({_NAME})\\.")


def generate(rng: random.Random, counter: TokenCounter, context_tokens: int, window: int, hops: int,
             depth: float, common: dict) -> dict:
    used: set[str] = set()

    def fresh() -> str:
        while True:
            name = _NAME_PREFIX + "".join(rng.choices(string.ascii_lowercase, k=_NAME_LETTERS))
            if name not in used:
                used.add(name)
                return name

    kind = rng.choice(sorted(_PROPERTIES))
    sentence, question, make_value = _PROPERTIES[kind]
    values: set[str] = set()

    def fresh_value() -> str:
        while True:
            value = make_value(rng)
            if value not in values:
                values.add(value)
                return value

    def chain_lines(chain: list[str], value: str) -> list[str]:
        return [f"{a} depends on {b}." for a, b in zip(chain, chain[1:])] + [sentence.format(chain[-1], value)]

    chain, answer_value = [fresh() for _ in range(hops + 1)], fresh_value()
    needles = [Block(line, counter.count(line + "\n"), hop)
               for hop, line in enumerate(chain_lines(chain, answer_value))]
    query = f"\nQuestion: follow the dependencies of {chain[0]} to the end of its chain. {question}\nAnswer:"
    answer = f" {answer_value}"
    budget = context_tokens - counter.count(query) - counter.count(answer) - sum(n.tokens for n in needles)
    distractors: list[list[str]] = []
    fillers: list[Block] = []
    line_tokens = max(n.tokens for n in needles)
    for _ in range(rng.randint(2, 6)):  # distractor chains: same length, same property kind, their own names
        if sum(b.tokens for b in fillers) + (hops + 1) * line_tokens > budget // 2:
            break
        distractor = [fresh() for _ in range(hops + 1)]
        distractors.append(distractor)
        fillers += [Block(line, counter.count(line + "\n")) for line in chain_lines(distractor, fresh_value())]

    def filler_sentence() -> list[str]:
        template = rng.choice(_FILLER_SENTENCES)
        return [template.format(*(fresh() for _ in range(template.count("{}"))))]

    fillers += fill_lines(filler_sentence, counter, budget - sum(b.tokens for b in fillers), "\n")
    rng.shuffle(fillers)
    estimate = sum(b.tokens for b in fillers + needles) + counter.count(query)
    blocks = layout(rng, fillers, needles, estimate, window, position_margin(context_tokens), depth)
    metadata = {**common, "chain": chain, "property": kind, "distractor_chains": distractors}
    return finish("dependency", blocks, "\n", query, answer, metadata, counter, window)


def check(sample: Mapping, prompt: str, chars: list) -> None:
    check_word_answer(sample, prompt, chars)
    context, meta = sample["context"], sample["metadata"]
    chain = meta["chain"]
    if not sample["query"].startswith(f"\nQuestion: follow the dependencies of {chain[0]} to the end of its chain."):
        raise InvalidSample("query does not ask for the chain's first service")
    edges: dict[str, str] = {}
    mentions: Counter = Counter()
    for line in context.split("\n")[:-1]:
        names = _NAME_RE.findall(line)
        mentions.update(set(names))
        if len(names) != len(set(names)):
            raise InvalidSample(f"a name repeats within {line!r}")
        match = _DEPENDS.fullmatch(line)
        if match:
            if match.group(1) in edges:
                raise InvalidSample(f"{match.group(1)} depends on two services")
            edges[match.group(1)] = match.group(2)
    if any(count > 2 for count in mentions.values()):
        raise InvalidSample("a name is used by more than one chain or sentence")
    current = chain[0]
    for hop in range(meta["hops"]):
        if edges.get(current) != chain[hop + 1]:
            raise InvalidSample(f"hop {hop + 1} of the chain is missing")
        current = edges[current]
    sentence = _PROPERTIES[meta["property"]][0].format(chain[-1], sample["answer"][1:])
    start, end = chars[-1]
    if context[start:end] != sentence:
        raise InvalidSample("the last needle is not the chain's property")
    for name in chain:
        if any(not inside(p, len(name), chars) for p in occurrences(context, name)):
            raise InvalidSample(f"chain name {name} occurs outside the needles")
