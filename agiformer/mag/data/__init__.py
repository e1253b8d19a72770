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

Modules: ``format`` (the prompt and what a sample holds), ``tokenizers``, ``assemble`` (placing needles
among fillers, token spans), one module per task (``hash_hop``, ``dependency``, ``code_retrieval``:
``generate`` and ``check``), ``generate`` (drawing and validating samples), ``files`` (JSONL, summaries).
"""

from agiformer.mag.data.files import format_summary, read_jsonl, summary, write_jsonl
from agiformer.mag.data.format import (
    FORMAT_VERSION, SAMPLE_KEYS, InvalidSample, answer_targets, encode_sample, exact_match, format_prompt,
)
from agiformer.mag.data.generate import (
    DEFAULT_HOPS, LENGTH_TOLERANCE, MIN_CONTEXT_TOKENS, TASKS, generate_sample, generate_samples, validate_sample,
)
from agiformer.mag.data.hash_hop import HASH_ALPHABET, HASH_HOP_DEMOS, HASH_LENGTH, hash_hop_query
from agiformer.mag.data.tokenizers import TOKENIZERS, Encode, bytes_encode, get_tokenizer, smollm2_encode

__all__ = [
    "DEFAULT_HOPS", "FORMAT_VERSION", "HASH_ALPHABET", "HASH_HOP_DEMOS", "HASH_LENGTH", "LENGTH_TOLERANCE",
    "MIN_CONTEXT_TOKENS", "SAMPLE_KEYS", "TASKS", "TOKENIZERS", "Encode", "InvalidSample", "answer_targets",
    "bytes_encode", "encode_sample", "exact_match", "format_prompt", "format_summary", "generate_sample",
    "generate_samples", "get_tokenizer", "hash_hop_query", "read_jsonl", "smollm2_encode", "summary",
    "validate_sample", "write_jsonl",
]
