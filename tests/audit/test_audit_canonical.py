"""Canonical JSON: RFC 8785 rules, strict parsing, and the canonical-bytes check."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.canonical import MAX_SAFE_INTEGER, canonical_dumps, loads_canonical, sha256_hex, strict_loads
from audit.errors import CanonicalEncodingError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ([1.0, 0.5, -0.0, 1e21, 1e20, 1e-7, 0.000001, 123.456], b"[1,0.5,0,1e+21,100000000000000000000,1e-7,0.000001,123.456]"),
        ("\u2028\n\x01\"\\é", '"\u2028\\n\\u0001\\"\\\\é"'.encode()),
        ({"\ufb33": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ufb33":1}'.encode()),  # UTF-16 order (RFC 8785 §3.2.3)
        ({"x": [True, False, None]}, b'{"x":[true,false,null]}'),
    ],
)
def test_canonical_dumps_known_answers(value: object, expected: bytes) -> None:
    assert canonical_dumps(value) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, MAX_SAFE_INTEGER + 1, {1: "x"}, b"bytes", "\ud800", object()])
def test_canonical_dumps_rejects(bad: object) -> None:
    with pytest.raises(CanonicalEncodingError):
        canonical_dumps({"v": bad})


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":2}',  # duplicate member names
        b'{"a":{"b":1,"b":1}}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1e400}',  # overflows to infinity
        b'{"a":"\xff"}',  # invalid UTF-8
        b"\xef\xbb\xbf{}",  # BOM
        b"[1,2]",  # not an object
        b'{"a":1',  # truncated
    ],
)
def test_strict_loads_rejects(text: bytes) -> None:
    with pytest.raises(CanonicalEncodingError):
        strict_loads(text)


@pytest.mark.parametrize(
    "line",
    [
        b'{"a":1, "b":2}',  # whitespace
        b'{"b":2,"a":1}',  # member order
        b'{"a":"\\u0041"}',  # escape of a printable character
        b'{"a":1.0}',  # number not in shortest form
        b'{"a":"\\/"}',  # escaped solidus
        b'{"a":"\xc3\xa9","b":"\\u00e9"}',  # escaped non-ASCII
        b'{"a":1}\n',
        b'{"a":9007199254740993}',  # beyond 2**53-1: read as a double, which prints differently
        b'{"a":-0}',
    ],
)
def test_loads_canonical_rejects_equivalent_but_different_bytes(line: bytes) -> None:
    strict_loads(line.strip())  # each is valid JSON ...
    with pytest.raises(CanonicalEncodingError):
        loads_canonical(line)  # ... but not the canonical bytes


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), _json, max_size=5))
def test_canonical_roundtrip_property(value: dict) -> None:
    # Property: canonical bytes parse back (strictly) to an equal value whose
    # canonical form is the same bytes; the fast path agrees with the slow one.
    try:
        encoded = canonical_dumps(value)
    except CanonicalEncodingError:
        return  # lone surrogates in generated text
    parsed = loads_canonical(encoded)
    assert canonical_dumps(parsed) == encoded
    assert parsed == value


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
