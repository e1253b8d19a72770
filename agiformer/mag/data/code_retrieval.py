"""code: a standard-library ``def`` among other stdlib statements; give its parameters from its name alone."""

from __future__ import annotations

import ast
import functools
import io
import platform
import random
import tokenize
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agiformer.errors import AGIFormerError
from agiformer.mag.data.assemble import Block, TokenCounter, finish, inside, layout, occurrences, position_margin
from agiformer.mag.data.format import InvalidSample

_MAX_STDLIB_FILE_BYTES = 200_000


@dataclass(frozen=True)
class _Statement:
    text: str  # whole lines of one top-level statement (decorators included), trailing space stripped
    function: str | None = None  # for a module-level `def` usable as a needle: its name ...
    parameters: str | None = None  # ... and its parameter text through the closing ")"
    lineno: int = 0


@functools.lru_cache(maxsize=1)
def _stdlib_files() -> tuple[tuple[str, Path], ...]:
    from agiformer.data import stdlib_source

    files = tuple((key, path) for key, path in stdlib_source().files.items()
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


def generate(rng: random.Random, counter: TokenCounter, context_tokens: int, window: int, hops: int, depth: float,
             common: dict) -> dict:
    files = _stdlib_files()
    margin = position_margin(context_tokens)
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
    needle = Block(needle_statement.text, counter.count(needle_statement.text + separator), 0)
    query = _code_query(name)
    budget = context_tokens - counter.count(query) - counter.count(answer) - needle.tokens
    max_filler = max(32, context_tokens // 8)  # small enough to place the needle at the depth asked for

    def usable(statement: _Statement) -> bool:
        return name not in statement.text and answer not in statement.text

    fillers: list[Block] = []
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
            fillers.append(Block(statement.text, tokens))
            used.add((run_key, statement.lineno))
            total += tokens
    # Close the gap with the largest statements that still fit (imports, constants).
    for run_key, lineno, text, tokens in sorted(seen, key=lambda s: (-s[3], s[0], s[1])):
        if budget - total <= margin // 2:
            break
        if (run_key, lineno) not in used and total + tokens <= budget:
            position = rng.randrange(len(fillers) + 1)
            fillers.insert(position, Block(text, tokens))
            used.add((run_key, lineno))
            total += tokens
    estimate = total + needle.tokens + counter.count(query)
    blocks = layout(rng, fillers, [needle], estimate, window, margin, depth)
    metadata = {**common, "function": name, "source_file": key, "lineno": needle_statement.lineno,
                "python": platform.python_version()}
    return finish("code", blocks, separator, query, answer, metadata, counter, window)


def check(sample: Mapping, prompt: str, chars: list) -> None:
    context, answer, meta = sample["context"], sample["answer"], sample["metadata"]
    name = meta["function"]
    if sample["query"] != _code_query(name):
        raise InvalidSample("query is not the code query")
    if not answer.endswith(")") or not answer[:1].isalpha():
        raise InvalidSample(f"answer {answer!r} is not a parameter list closed by ')'")
    where = occurrences(prompt, answer)
    if len(where) != 1 or not inside(where[0], len(answer), chars):
        raise InvalidSample(f"the parameters occur {len(where)} times in the prompt, not once in the definition")
    where = occurrences(context, name)
    if len(where) != 1 or not inside(where[0], len(name), chars):
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
