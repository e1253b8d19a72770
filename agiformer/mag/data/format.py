"""The one prompt format, shared by training and evaluation, and what a sample must hold."""

from __future__ import annotations

from collections.abc import Mapping

from agiformer.errors import AGIFormerError
from agiformer.mag.data.tokenizers import Encode

FORMAT_VERSION = 2  # 2: hash-hop queries open with in-window demonstrations
SAMPLE_KEYS = ("task", "context", "query", "answer", "needle_token_start", "needle_token_end", "prompt_tokens",
               "metadata")
# What follows an answer in the format's own text: the end of its line. A code answer needs none: it
# ends with the ")" that closes its parameter list, and what follows that in the source varies (":", " -> T:").
ANSWER_ENDS = {"hash-hop": "\n", "dependency": "\n"}


class InvalidSample(ValueError):
    """A generated sample broke one of the curriculum's guarantees (the generator draws again)."""


def format_prompt(sample: Mapping) -> str:
    """The one prompt, for training and evaluation alike: the context, then the query."""
    return sample["context"] + sample["query"]


def encode_sample(sample: Mapping, encode: Encode) -> tuple[list[int], list[int]]:
    """(prompt tokens, answer tokens), encoded separately: the training sequence is their concatenation
    and the loss falls on the answer tokens; evaluation feeds the prompt tokens and decodes greedily."""
    return encode(format_prompt(sample)), encode(sample["answer"])


def answer_targets(sample: Mapping, encode: Encode, *, end: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
    """The training sequence, prompt + answer, and the token spans [start, end) it is scored on: the
    recall answers inside the prompt (hash-hop with recalls), then the answer. end=True also scores
    what follows each answer (`ANSWER_ENDS`, appended after the last): a model never taught where an
    answer stops runs on past it, and exact match refuses that."""
    prompt, answer = encode_sample(sample, encode)
    spans = [tuple(span) for span in sample["metadata"].get("recall_answer_spans", [])]
    if not end:
        return prompt + answer, spans + [(len(prompt), len(prompt) + len(answer))]
    after = ANSWER_ENDS.get(sample["task"], "")
    stop = encode(after) if after else []
    for start, stop_at in spans:
        if prompt[stop_at:stop_at + len(stop)] != stop:
            raise AGIFormerError(f"the recall answer at tokens [{start}, {stop_at}) is not followed by "
                                f"{after!r} as its own token")
    return (prompt + answer + stop, [(start, stop_at + len(stop)) for start, stop_at in spans]
            + [(len(prompt), len(prompt) + len(answer) + len(stop))])


def exact_match(answer: str, continuation: str) -> bool:
    """Whether a decoded continuation gives the answer: it starts with it and does not run on."""
    if not continuation.startswith(answer):
        return False
    rest = continuation[len(answer):]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")
