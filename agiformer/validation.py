"""Type checks for the plain dataclasses that recipes and configs are read into.

TOML and JSON give any value to any key; a dataclass takes them all. `type_problems` names each
field whose value does not match its annotation (an integer count given 6.5 or "six", a number given
NaN, a table given a string), so a recipe is refused with every problem in one line instead of
failing later with a traceback or, worse, running with a wrong value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing


def type_problems(instance) -> list[str]:
    """'<field> must be …, got …' for every field of the dataclass `instance` whose value has the wrong type."""
    hints = typing.get_type_hints(type(instance))
    problems = []
    for field in dataclasses.fields(instance):
        problem = value_problem(getattr(instance, field.name), hints[field.name])
        if problem:
            problems.append(f"{field.name} {problem}")
    return problems


def value_problem(value, expected) -> str | None:
    """Why `value` is not a valid `expected` (bool, int, float, str, dict/list/tuple of those, a dataclass), or None."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [value_problem(value, member) for member in args if member is not type(None)]
        return None if None in problems else problems[0]
    if expected is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if expected is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        return None if math.isfinite(value) else f"must be finite, got {value}"
    if expected is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    if origin is dict or expected is dict:
        if not isinstance(value, dict):
            return f"must be a table, got {value!r}"
        if args:
            for key, item in value.items():
                problem = value_problem(key, args[0]) or value_problem(item, args[1])
                if problem:
                    return f"entry {key!r} {problem}"
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {value!r}"
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return f"must have {len(args)} entries, got {len(value)}"
            items = zip(value, args)
        else:
            items = ((item, args[0]) for item in value) if args else ()
        for i, (item, item_type) in enumerate(items):
            problem = value_problem(item, item_type)
            if problem:
                return f"entry {i + 1} {problem}"
        return None
    if dataclasses.is_dataclass(expected):
        return None if isinstance(value, (dict, expected)) else f"must be a table, got {value!r}"
    return None  # annotations the configs do not use are not checked
