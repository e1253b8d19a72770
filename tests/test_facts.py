"""Planted facts: what a row carries, that the rest of the text is kept in order, and exact repetition."""

import re

import pytest
import torch

from agiformer import AGIFormerError
from agiformer.data import LONGEST_FACT, plant_facts
from agiformer.data.facts import RECALL_TEMPLATE, TRAINING_TEMPLATES, planted_row


def template_pattern(text: str, *, value: str) -> bytes:
    """A template as a regular expression: the first {key} names the key, later ones must repeat it."""
    pattern = re.escape(text).replace(r"\{key\}", "(?P<key>[A-Z][a-z]+)", 1).replace(r"\{key\}", "(?P=key)")
    return pattern.replace(r"\{value\}", value).encode()


def find_fact(text: bytes) -> tuple[re.Match, re.Match]:
    """The statement and the question with its answer, in order, whichever template planted them."""
    for statement, question in TRAINING_TEMPLATES:
        told = re.search(template_pattern(statement, value=r"(?P<value>\d{3,6})"), text)
        if told:
            key, value = told["key"].decode(), told["value"].decode()
            asked = re.search(re.escape(question.format(key=key).encode() + value.encode() + b"."), text)
            if asked and asked.start() >= told.end():
                return told, asked
    raise AssertionError(f"no planted fact in {text!r}")


def text_rows(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """Rows of lowercase letters only, so every space, digit and stop comes from a planted fact."""
    return torch.randint(ord("a"), ord("z") + 1, (n, length), generator=torch.Generator().manual_seed(seed))


def test_a_planted_row_states_a_fact_and_later_asks_for_it_with_the_answer_whole():
    rows = text_rows(64, 400)
    planted = plant_facts(rows, 1.0, torch.Generator().manual_seed(1))
    assert planted.shape == rows.shape and planted.dtype == rows.dtype
    for original, row in zip(rows, planted):
        text = bytes(row.tolist())
        told, asked = find_fact(text)
        # outside the fact the row is the original text, in order, cut back to the row's length
        kept = text[: told.start()] + text[told.end(): asked.start()] + text[asked.end():]
        assert bytes(original.tolist()).startswith(kept)


def test_every_question_ends_in_the_words_that_preceded_the_value_so_a_copy_can_answer():
    for statement, question in TRAINING_TEMPLATES + [RECALL_TEMPLATE]:
        assert question.endswith(statement.split("{value}")[0].split("{key}")[-1])


def test_the_share_decides_how_many_rows_carry_a_fact():
    rows = text_rows(2000, 150)
    assert torch.equal(plant_facts(rows, 0.0, torch.Generator().manual_seed(0)), rows)
    planted = plant_facts(rows, 0.25, torch.Generator().manual_seed(0))
    carrying = (planted != rows).any(1).float().mean().item()
    assert 0.21 < carrying < 0.29  # 2,000 rows: the binomial's sd is 1 %


def test_the_same_generator_state_plants_the_same_facts_and_another_seed_does_not():
    rows = text_rows(16, 300)
    first, second, other = (plant_facts(rows, 0.5, torch.Generator().manual_seed(seed)) for seed in (3, 3, 4))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_the_evaluation_phrasing_is_held_out_of_training():
    assert RECALL_TEMPLATE not in TRAINING_TEMPLATES
    assert all("secret" not in statement + question for statement, question in TRAINING_TEMPLATES)


def test_a_row_too_short_for_a_fact_is_a_clear_error():
    planted_row(list(range(LONGEST_FACT)), torch.Generator().manual_seed(0))  # the longest fact fits
    with pytest.raises(AGIFormerError, match="planted fact needs up to"):
        planted_row([97] * 40, torch.Generator().manual_seed(0))
