"""Facts planted in real text: a statement, and later in the same window its question and answer.

A stage's ``facts`` share of the training rows each carry one, so the model learns to look an answer up
from far back in its context rather than guess it (``agiformer recall`` measures the same skill).
The evaluation's phrasing (``RECALL_TEMPLATE``) is held out of training: a model that recalls it has
learnt to copy a stated fact, not memorised a phrase.

>>> batch = plant_facts(mixture_windows(...), 0.25, generator)        # doctest: +SKIP
"""

from __future__ import annotations

import torch

from agiformer.errors import AGIFormerError

SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "vex", "zor", "dal", "qui", "sen", "bra", "nok"]

# (statement, question); the answer follows the question, then a full stop
RECALL_TEMPLATE = (" The secret number of {key} is {value}. ",
                   " What is the secret number of {key}? The secret number of {key} is ")
TRAINING_TEMPLATES = [
    (" The room of {key} is {value}. ", " Which room is {key} in? The room of {key} is "),
    (" {key} was born in {value}. ", " When was {key} born? {key} was born in "),
    (" The code for {key} is {value}. ", " What is the code for {key}? The code for {key} is "),
    (" {key}'s phone number is {value}. ", " What is {key}'s phone number? {key}'s phone number is "),
    (" Order {key} weighs {value} grams. ", " How much does order {key} weigh? Order {key} weighs "),
]


def fact_text(template: tuple[str, str], key: str, value: str) -> tuple[bytes, bytes]:
    """(statement, question) of one fact; the answer `value` is to follow the question."""
    statement, question = template
    return statement.format(key=key, value=value).encode(), question.format(key=key).encode()


LONGEST_FACT = max(sum(map(len, fact_text(template, "k" * 3 * max(map(len, SYLLABLES)), "9" * 6)))
                   for template in TRAINING_TEMPLATES) + 6 + 1  # bytes a planted fact can take, answer and stop included


def fact_key(syllables: list[int]) -> str:
    """A made-up name from syllable indices, e.g. [4, 0, 9] → "Tukasen": no corpus contains it."""
    return "".join(SYLLABLES[i] for i in syllables).capitalize()


def planted_row(row: list[int], generator: torch.Generator) -> list[int]:
    """`row` with a training fact's statement and, later, its question and answer inserted at random
    points; cut back to the row's length, with the answer whole."""
    def draw(high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=generator))

    template = TRAINING_TEMPLATES[draw(len(TRAINING_TEMPLATES))]
    key = fact_key([draw(len(SYLLABLES)) for _ in range(3)])
    value = str(draw(10)) + "".join(str(draw(10)) for _ in range(2 + draw(4)))  # 3 to 6 digits
    statement, question = fact_text(template, key, value)
    asked = question + value.encode() + b"."
    room = len(row) - len(statement) - len(asked)
    if room < 0:
        raise AGIFormerError(f"a planted fact needs up to {LONGEST_FACT} bytes, more than the {len(row)} of a "
                             f"training window; use a longer seq_len or facts = 0")
    first, second = sorted((draw(room + 1), draw(room + 1)))
    return (row[:first] + list(statement) + row[first:second] + list(asked) + row[second:])[:len(row)]


def plant_facts(batch: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Each row of a (batch, length) LongTensor carries a planted fact with probability `share`.
    Every draw comes from `generator`, so a resumed run plants the same facts."""
    if share <= 0:
        return batch
    chosen = torch.rand(len(batch), generator=generator) < share
    planted = batch.clone()
    for i in chosen.nonzero().flatten().tolist():
        planted[i] = torch.tensor(planted_row(batch[i].tolist(), generator))
    return planted
