"""Canonical JSON (RFC 8785 style) and strict parsing.

Every audit record is hashed and signed over one byte string, so the encoding
of a value must be unique.  The rules follow RFC 8785 (JSON Canonicalization
Scheme, JCS):

* object members sorted by the UTF-16 code units of their names (§3.2.3);
* no insignificant whitespace, UTF-8 output (§3.2.1, §3.2.4);
* strings escaped minimally: ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t`` and
  ``\\u00xx`` (lower-case hex) for other control characters (§3.2.2.2);
* numbers in the shortest round-trip form of ECMAScript ``Number.toString``
  (§3.2.2.3); NaN and Infinity are forbidden;
* integers must lie within ±(2**53 - 1) (I-JSON, RFC 7493 §2.2) so that every
  JSON implementation reads the same value.

The reader (:func:`strict_loads`) rejects what the writer can never produce:
duplicate member names, NaN/Infinity literals, numbers that overflow to
infinity and invalid UTF-8; integers beyond ±(2**53-1) are read as doubles.  :func:`loads_canonical`
additionally demands that the bytes are *exactly* the canonical encoding of
what they parse to; a log line that is not byte-identical to its canonical form
is treated as tampered, even if it would decode to the same value (whitespace,
member order, ``\\u`` escapes of printable characters, ``1.0`` vs ``1``).

Speed (the verifier reads every line of logs of 100,000 records): both
:func:`canonical_dumps` and :func:`loads_canonical` first try the stdlib's C
JSON encoder/decoder and fall back to the reference (pure Python) code for
anything the fast path cannot prove identical.  The fast paths never change a
result: they produce the same bytes, accept the same lines, and every error
(with its message) comes from the reference path.

* :func:`canonical_dumps`: if the value holds only plain ``dict`` (ASCII
  member names), ``list``/``tuple``, ``str``, ``int`` within ±(2**53-1),
  ``bool`` and ``None``, then ``json.dumps(sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)`` *is* the RFC 8785 form: both escape strings with the
  same C function, code-point order equals UTF-16 order for ASCII names, and
  integers print identically.  Floats, non-ASCII names, big integers and
  anything else take the reference encoder.
* :func:`loads_canonical`: an ASCII line is decoded by the C decoder with no
  per-object hook.  Integer literals of more than 15 characters (which could
  exceed ±(2**53-1)), float literals that are not already in ECMAScript form
  and NaN/Infinity literals abort the fast path.  The line is accepted only if
  it equals the C re-encoding of what it parses to; duplicate member names
  make the re-encoding shorter, so they always fall back, and so does any
  other difference.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .errors import CanonicalEncodingError

__all__ = [
    "MAX_SAFE_INTEGER",
    "canonical_dumps",
    "strict_loads",
    "loads_canonical",
    "sha256_hex",
]

#: Largest integer every IEEE-754 double reader keeps exactly (RFC 7493 §2.2).
MAX_SAFE_INTEGER = 2**53 - 1

# The C-accelerated string escaper of the stdlib: it escapes exactly the
# characters RFC 8785 §3.2.2.2 requires (quote, backslash, controls) and
# nothing else when ``ensure_ascii`` is off.
_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _utf16_key(name: str) -> bytes:
    # RFC 8785 §3.2.3 sorts member names by UTF-16 code units; big-endian
    # UTF-16 bytes compare in exactly that order.
    return name.encode("utf-16-be", "surrogatepass")


def _format_float(value: float) -> str:
    """Format a finite float as ECMAScript ``Number.prototype.toString`` does."""
    if not math.isfinite(value):
        raise CanonicalEncodingError("NaN and Infinity cannot be encoded (RFC 8785 §3.2.2.3)")
    if value == 0.0:
        return "0"  # also for -0.0, as ECMAScript does
    sign = "-" if value < 0 else ""
    # repr() yields the shortest digit string that round-trips (like ES).
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # Position of the decimal point relative to the first significant digit.
    point = len(int_part.lstrip("0")) + exponent if int_part.strip("0") else exponent - (
        len(frac_part) - len(frac_part.lstrip("0"))
    )
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        body = f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalEncodingError(
                f"integer {value} is outside ±(2**53-1) (RFC 7493 §2.2)"
            )
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_format_float(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalEncodingError(
                    f"object member names must be strings, found {type(key).__name__}"
                )
        out.append("{")
        first = True
        for key in sorted(value, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise CanonicalEncodingError(
            f"cannot encode a value of type {type(value).__name__} as JSON"
        )


def _is_plain(value: Any) -> bool:
    """Whether the C encoder writes ``value`` exactly as :func:`_encode` does.

    Exact type checks on purpose: subclasses (and floats, which the C encoder
    formats as Python's ``repr``, not as ECMAScript) go to the reference encoder.
    """
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            # Strings are by far the most common member; skip the call for them.
            if type(item) is not str and not _is_plain(item):
                return False
        return True
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if kind is list or kind is tuple:
        for item in value:
            if type(item) is not str and not _is_plain(item):
                return False
        return True
    return False


def _canonical_dumps_reference(obj: Any) -> bytes:
    """The reference encoder (pure Python); :func:`canonical_dumps` equals it."""
    out: list[str] = []
    _encode(obj, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalEncodingError("string holds a lone surrogate; not valid UTF-8") from exc


def canonical_dumps(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes (RFC 8785 style).

    Parameters
    ----------
    obj : Any
        ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``/``tuple`` or
        ``dict`` with string keys, nested arbitrarily.

    Returns
    -------
    bytes
        The UTF-8 encoded canonical form.

    Raises
    ------
    CanonicalEncodingError
        For NaN/Infinity, out-of-range integers, non-string keys, lone
        surrogates or unsupported types.
    """
    try:
        plain = _is_plain(obj)
    except RecursionError:
        plain = False  # let the reference encoder fail the way it always has
    if not plain:
        return _canonical_dumps_reference(obj)
    text = _C_ENCODER.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalEncodingError("string holds a lone surrogate; not valid UTF-8") from exc


def sha256_hex(data: bytes) -> str:
    """Return the lower-case hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


class _FloatSeen:
    """Flag set by the float hook; lets :func:`loads_canonical` take a fast path."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise CanonicalEncodingError(f"duplicate object member name {duplicate!r}")
    return result


def _reject_constant(name: str) -> Any:
    raise CanonicalEncodingError(f"JSON literal {name} is not allowed (NaN/Infinity)")


def _parse_int(text: str) -> int | float:
    # Like every RFC 8785 reader, treat numbers as IEEE-754 doubles: an
    # integer literal beyond ±(2**53-1) is read as the nearest double, so a
    # literal that does not round-trip fails the canonical-bytes check.
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        as_float = float(value)
        if not math.isfinite(as_float):
            raise CanonicalEncodingError(f"number {text[:20]}… overflows to infinity")
        return as_float
    return value


def _loads(data: bytes | str, flag: _FloatSeen | None, require_object: bool) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CanonicalEncodingError(
                f"not valid UTF-8 at byte {exc.start}"
            ) from exc
    elif isinstance(data, str):
        text = data
    else:
        raise CanonicalEncodingError(f"cannot parse a {type(data).__name__}")

    def parse_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise CanonicalEncodingError(f"number {literal} overflows to infinity")
        if flag is not None:
            flag.seen = True
        return value

    def parse_int(literal: str) -> int | float:
        value = _parse_int(literal)
        if flag is not None and isinstance(value, float):
            flag.seen = True
        return value

    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_pairs,
            parse_constant=_reject_constant,
            parse_float=parse_float,
            parse_int=parse_int,
        )
    except CanonicalEncodingError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CanonicalEncodingError(f"not valid JSON: {exc}") from exc
    if require_object and not isinstance(value, dict):
        raise CanonicalEncodingError(
            f"top-level JSON value must be an object, found {type(value).__name__}"
        )
    return value


def strict_loads(data: bytes | str, *, require_object: bool = True) -> Any:
    """Parse JSON strictly.

    Parameters
    ----------
    data : bytes or str
        The JSON text; bytes must be valid UTF-8 (no BOM).
    require_object : bool, default True
        Demand a JSON object at the top level.

    Returns
    -------
    Any
        The parsed value (dicts, lists, str, int, float, bool, None).

    Raises
    ------
    CanonicalEncodingError
        On duplicate member names, NaN/Infinity, overflowing numbers,
        invalid UTF-8, syntax errors, or a non-object
        top level when ``require_object`` is set.
    """
    return _loads(data, None, require_object)


class _NotFast(Exception):
    """Raised inside the fast decoder: this line needs the reference path."""


def _fast_float(literal: str) -> float:
    # Accept only literals already in ECMAScript form, so that a line whose C
    # re-encoding matches is canonical; anything else (1.0, 1e-07, 1e400, ...)
    # goes to the reference path, which reports it precisely.
    value = float(literal)
    if not math.isfinite(value) or _format_float(value) != literal:
        raise _NotFast
    return value


def _fast_int(literal: str) -> int:
    # 15 characters hold every integer up to 999,999,999,999,999 (< 2**53)
    # and down to -99,999,999,999,999; longer literals take the reference path.
    if len(literal) > 15:
        raise _NotFast
    return int(literal)


def _fast_constant(name: str) -> Any:
    raise _NotFast


# Immutable after construction (the hooks keep no state), so sharing them is safe.
_C_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=True
)
_FAST_DECODER = json.JSONDecoder(
    parse_float=_fast_float, parse_int=_fast_int, parse_constant=_fast_constant
)


def _loads_canonical_fast(line: bytes) -> dict[str, Any] | None:
    """The fast path of :func:`loads_canonical`; ``None`` means "use the reference path"."""
    if not line.isascii():
        return None
    text = line.decode("ascii")
    try:
        # ``scan_once`` (the C scanner) skips no whitespace, unlike ``decode``;
        # a line with any is not canonical and takes the reference path anyway.
        value, end = _FAST_DECODER.scan_once(text, 0)  # type: ignore[attr-defined]
    except (_NotFast, ValueError, StopIteration, RecursionError):
        return None
    if end != len(text) or type(value) is not dict:
        return None
    # Every float in ``value`` was written in ECMAScript form, every integer is
    # safe and the line is ASCII, so the C encoding below differs from the
    # canonical one at most in float spelling; both spellings must equal the
    # line's, hence equality proves the line canonical.
    try:
        if _C_ENCODER.encode(value) != text:
            return None
    except (ValueError, RecursionError):
        return None
    return value


def loads_canonical(line: bytes) -> dict[str, Any]:
    """Parse ``line`` strictly and demand it is byte-identical to its canonical form.

    Parameters
    ----------
    line : bytes
        One JSON object, without the trailing newline.

    Returns
    -------
    dict
        The parsed object.

    Raises
    ------
    CanonicalEncodingError
        If the bytes do not parse strictly, or differ from
        ``canonical_dumps(parsed)`` in any byte.
    """
    if isinstance(line, bytes):
        fast = _loads_canonical_fast(line)
        if fast is not None:
            return fast
    return _loads_canonical_reference(line)


def _loads_canonical_reference(line: bytes) -> dict[str, Any]:
    """The reference check; :func:`loads_canonical` accepts and rejects exactly as it does."""
    flag = _FloatSeen()
    value = _loads(line, flag, True)
    if not flag.seen and line.isascii():
        # Fast path: for an all-ASCII line without floats the stdlib C
        # encoder produces exactly the RFC 8785 form (code-point order equals
        # UTF-16 order for ASCII names; no number formatting differences).  If
        # the parsed value held any non-ASCII character the encoder output
        # would be non-ASCII and so could never equal the ASCII line.
        expected = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8", "surrogatepass")
    else:
        expected = _canonical_dumps_reference(value)
    if expected != line:
        position = next(
            (i for i, (a, b) in enumerate(zip(expected, line)) if a != b),
            min(len(expected), len(line)),
        )
        raise CanonicalEncodingError(
            f"bytes are not the canonical JSON encoding (first difference at byte {position})"
        )
    return value
