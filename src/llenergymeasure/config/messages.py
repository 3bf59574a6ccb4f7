"""Validation errors as one-line messages: `key.path: problem`, each bad value shortened.

Shared by the loader and the grid expansion (which the loader calls), so neither
imports the other for them.
"""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import BaseModel, ValidationError

from llenergymeasure.config.introspection import unknown_key_hint

MAX_MESSAGE_LINES = 20
MAX_LINE_CHARS = 500

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 60
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 5


def shown(value: Any) -> str:
    """`repr(value)`, shortened: a bad value is quoted in a message, never whole."""
    try:
        return _SHORT_REPR.repr(value)
    except (ValueError, RecursionError):  # an int past Python's int-str limit, a cycle
        return f"<{type(value).__name__}>"


def clip(line: str, limit: int = MAX_LINE_CHARS) -> str:
    if len(line) <= limit:
        return line
    return f"{line[: limit - 40]}... ({len(line) - limit + 40} characters cut)"


def bounded_message(lines: list[str]) -> str:
    """`lines` as a message of at most MAX_MESSAGE_LINES lines of MAX_LINE_CHARS each."""
    kept = [clip(line) for line in lines[:MAX_MESSAGE_LINES]]
    if len(lines) > MAX_MESSAGE_LINES:
        kept.append(f"... and {len(lines) - MAX_MESSAGE_LINES} more errors")
    return "\n".join(kept)


def format_loc(loc: tuple[Any, ...]) -> str:
    """('configs', 0, 'pytorch', 'batch_size') -> 'configs[0].pytorch.batch_size'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(error: dict[str, Any], root: type[BaseModel] | None = None) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "greater_than_equal":
        return f"{shown(value)} is less than the minimum {ctx['ge']}"
    if kind == "greater_than":
        return f"{shown(value)} must be greater than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"{shown(value)} is more than the maximum {ctx['le']}"
    if kind == "less_than":
        return f"{shown(value)} must be less than {ctx['lt']}"
    if kind == "extra_forbidden":
        hint = unknown_key_hint(root, _clean_loc(error["loc"])) if root is not None else ""
        return f"unknown key (value {shown(value)})" + (f"; {hint}" if hint else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{shown(value)} is not one of {ctx.get('expected')}"
    if kind == "value_error":
        return clip(str(ctx.get("error", error["msg"])))
    return f"{error['msg']} (got {shown(value)})"


def describe_validation_error(
    exc: ValidationError, prefix: tuple[Any, ...] = (), root: type[BaseModel] | None = None
) -> list[str]:
    """All errors of `exc` as `key.path: problem`, without repeats.

    `root` is the model that was validated: it lets an unknown key's message say
    which keys are accepted there.
    """
    lines = [
        f"{format_loc(tuple(prefix) + _clean_loc(error['loc']))}: {_describe(error, root)}"
        for error in exc.errors(include_url=False)
    ]
    return list(dict.fromkeys(lines))


def format_validation_error(
    source: str,
    exc: ValidationError,
    prefix: tuple[Any, ...] = (),
    root: type[BaseModel] | None = None,
) -> str:
    """All errors of `exc`, one per line, each `source: key.path: problem`."""
    return "\n".join(f"{source}: {line}" for line in describe_validation_error(exc, prefix, root))


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(part for part in loc if not _is_union_tag(part))


def _is_union_tag(part: Any) -> bool:
    # pydantic puts type names such as 'str' or 'dict[str,any]' into locs of unions
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})
