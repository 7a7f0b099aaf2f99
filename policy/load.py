"""Loading policy files: bounded reading, strict TOML parsing, readable errors.

A policy file is untrusted input until it has been validated. Loading is done
in numbered steps, each failing closed with an error that names the file:

1. read at most :data:`MAX_POLICY_BYTES` + 1 bytes of a regular file;
2. refuse anything larger than :data:`MAX_POLICY_BYTES`;
3. decode as strict UTF-8;
4. refuse bracket nesting deeper than :data:`MAX_NESTING_DEPTH` *before*
   parsing (the stdlib parser recurses on nested arrays and inline tables);
5. parse with :mod:`tomllib` (which already refuses duplicate keys);
6. refuse data nested deeper than :data:`MAX_NESTING_DEPTH` (dotted keys can
   nest without brackets);
7. refuse an unknown ``schema_version`` on its own, since the rest of the file
   would be read against the wrong schema;
8. validate against :class:`~policy.model.Policy`, reporting every problem.

Steps 1-6 raise :class:`core.errors.InputError`; steps 7-8 raise
:class:`~policy.errors.PolicyFileError` (a :class:`core.errors.ConfigError`).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from core.errors import InputError
from policy.errors import FieldProblem, PolicyFileError
from policy.model import SCHEMA_VERSION, Policy

__all__ = ["MAX_NESTING_DEPTH", "MAX_POLICY_BYTES", "load_policy", "parse_policy"]

#: Largest policy file accepted, in bytes. Real policies are a few KiB.
MAX_POLICY_BYTES: Final = 64 * 1024

#: Deepest nesting of tables and arrays accepted. The schema needs three
#: levels (document, section, array); the rest is headroom.
MAX_NESTING_DEPTH: Final = 5

_LINE_NUMBER = re.compile(r"at line (\d+)")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_AT_LINE_START = re.compile(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read, parse and validate one policy file.

    Parameters
    ----------
    path : str or os.PathLike
        The TOML policy file.

    Returns
    -------
    Policy
        The validated, immutable policy.

    Raises
    ------
    core.errors.InputError
        If the file cannot be read, is not a regular file, is larger than
        :data:`MAX_POLICY_BYTES`, is not UTF-8, is not TOML or is nested too deeply.
    PolicyFileError
        If the TOML does not describe a valid policy; it lists every problem.
    """
    source = os.fspath(path)
    return parse_policy(_read_bounded(Path(source), source), source=source)


def parse_policy(data: bytes, *, source: str = "<policy>") -> Policy:
    """Parse and validate the bytes of a policy file.

    Parameters
    ----------
    data : bytes
        The raw file content.
    source : str
        The name used for the input in error messages.

    Returns
    -------
    Policy
        The validated, immutable policy.

    Raises
    ------
    core.errors.InputError
        For oversized, non-UTF-8, non-TOML or too deeply nested input.
    PolicyFileError
        If the TOML does not describe a valid policy.
    """
    # 2. Size, checked before any decoding or parsing work.
    if len(data) > MAX_POLICY_BYTES:
        raise InputError(
            f"{source}: policy file is larger than the {MAX_POLICY_BYTES}-byte limit"
        )
    # 3. Strict UTF-8, as TOML requires.
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{source}: policy file is not valid UTF-8 (bad byte at offset {exc.start})"
        ) from exc
    # 4. Bracket nesting, before the recursive parser sees it.
    depth = _bracket_depth(text)
    if depth > MAX_NESTING_DEPTH:
        raise InputError(
            f"{source}: arrays or inline tables are nested {depth} deep; "
            f"the limit is {MAX_NESTING_DEPTH}"
        )
    # 5. TOML syntax; tomllib refuses duplicate keys and tables itself.
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}{_near(text, str(exc))}") from exc
    except RecursionError as exc:  # A second line of defence behind step 4.
        raise InputError(f"{source}: policy file is nested too deeply to parse") from exc
    # 6. Data nesting (dotted keys nest without brackets).
    depth = _data_depth(document)
    if depth > MAX_NESTING_DEPTH:
        raise InputError(
            f"{source}: tables are nested {depth} deep; the limit is {MAX_NESTING_DEPTH}"
        )
    # 7. An unknown schema version makes every other field meaningless.
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        raise PolicyFileError(
            source,
            (
                FieldProblem(
                    source,
                    "schema_version",
                    f"unknown schema_version {version}; this build understands only "
                    f"{SCHEMA_VERSION}",
                ),
            ),
        )
    # 8. The schema, with every problem collected.
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        raise PolicyFileError(source, problems_from_validation_error(exc, source)) from exc


def problems_from_validation_error(exc: ValidationError, source: str) -> tuple[FieldProblem, ...]:
    """Turn a pydantic ``ValidationError`` into one readable line per problem.

    Parameters
    ----------
    exc : pydantic.ValidationError
        The error raised while validating a :class:`~policy.model.Policy`.
    source : str
        The file name to put on every problem.

    Returns
    -------
    tuple of FieldProblem
        One entry per error, with a dotted field path and a one-line reason.
    """
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        problems.append(FieldProblem(source, _dotted(loc), _reason(error, loc)))
    return tuple(problems)


# -- reading ------------------------------------------------------------------


def _read_bounded(path: Path, source: str) -> bytes:
    # 1. Only regular files, and never more than one byte past the limit, so a
    #    device, a FIFO or a huge file cannot stall or exhaust the reader. The
    #    type is checked on the opened descriptor (no race with a swapped path);
    #    O_NONBLOCK keeps the open itself from waiting on a FIFO.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{source}: cannot read policy file: {_os_reason(exc)}") from exc
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InputError(f"{source}: not a regular file")
        chunks: list[bytes] = []
        remaining = MAX_POLICY_BYTES + 1
        while remaining > 0:
            chunk = os.read(descriptor, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{source}: cannot read policy file: {_os_reason(exc)}") from exc
    finally:
        os.close(descriptor)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# -- nesting ------------------------------------------------------------------


def _bracket_depth(text: str) -> int:
    """Return the deepest nesting of ``[``/``{`` outside strings and comments.

    This is a conservative lexical scan, not a parser: it exists only so that
    pathological nesting is refused before :mod:`tomllib` recurses into it.
    """
    depth = deepest = 0
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "#":
            newline = text.find("\n", index)
            index = length if newline < 0 else newline + 1
            continue
        if char in "\"'":
            delimiter = char * 3 if text.startswith(char * 3, index) else char
            index += len(delimiter)
            while index < length:
                if char == '"' and text[index] == "\\":
                    index += 2
                    continue
                if text.startswith(delimiter, index):
                    index += len(delimiter)
                    break
                if len(delimiter) == 1 and text[index] == "\n":
                    break
                index += 1
            continue
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
        index += 1
    return deepest


def _data_depth(document: dict[str, Any]) -> int:
    """Return the nesting depth of parsed TOML data (the document itself is 1)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in node)
    return deepest


def _near(text: str, message: str) -> str:
    """Name the key on the line a TOML error points at, when there is one."""
    match = _LINE_NUMBER.search(message)
    if match is None:
        return ""
    lines = text.splitlines()
    number = int(match.group(1))
    if not 1 <= number <= len(lines):
        return ""
    key = _KEY_AT_LINE_START.match(lines[number - 1])
    if key is not None:
        return f" near key {key.group(1).strip()[:60]!r}"
    header = lines[number - 1].strip()
    if header.startswith("["):
        return f" near table {header[:60]!r}"
    return ""


# -- messages -----------------------------------------------------------------


def _dotted(loc: tuple[str | int, ...]) -> str:
    if not loc:
        return "<root>"
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        # A key from the file is shown verbatim only if it is a plain name;
        # anything else (spaces, control characters) is quoted and escaped.
        name = part if _PLAIN_KEY.fullmatch(part) else repr(part[:60])
        path += f".{name}" if path else name
    return path


_EXPECTED: Final = {
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected a boolean (true or false)",
    "datetime_type": "expected an offset date-time such as 2026-01-01T00:00:00Z",
    "tuple_type": "expected an array",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "dict_type": "expected a table",
}


def _reason(error: Any, loc: tuple[str | int, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    found = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field_reason(loc)
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, found {_describe(found)}"
    if kind == "enum":
        return f"expected one of {ctx.get('expected', '?')}, found {_describe(found)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, found {_describe(found)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, found {_describe(found)}"
    if kind == "too_short":
        return (
            f"must list at least {ctx['min_length']} entr"
            f"{'y' if ctx['min_length'] == 1 else 'ies'}, found {ctx.get('actual_length', 0)}"
        )
    if kind == "too_long":
        return f"must list at most {ctx['max_length']} entries, found {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long"
    # Our own rules (PydanticCustomError) already carry a readable message.
    return " ".join(str(error["msg"]).split())


def _unknown_field_reason(loc: tuple[str | int, ...]) -> str:
    name = str(loc[-1]) if loc else "?"
    model: type[BaseModel] | None = Policy
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    reason = f"unknown field {name!r} (not part of policy schema version {SCHEMA_VERSION})"
    if model is not None:
        close = difflib.get_close_matches(name, list(model.model_fields), n=1)
        if close:
            reason += f"; did you mean {close[0]!r}?"
    return reason


def _describe(value: object) -> str:
    """Describe a TOML value by type, with a short excerpt for scalars."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        excerpt = value if len(value) <= 40 else value[:37] + "..."
        return f"string {excerpt!r}"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return "a local date-time without offset"
        return "an offset date-time"
    if isinstance(value, date):
        return "a date without a time"
    if isinstance(value, time):
        return "a time of day"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
