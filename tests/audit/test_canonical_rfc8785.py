"""Differential test: our canonical JSON against the ``rfc8785`` package (Trail of Bits' RFC 8785 encoder).

``audit/canonical.py`` is a hand-written JCS encoder with a C-accelerated fast
path; every record's hash and signature is computed over its output, so a
divergence from RFC 8785 would make logs unverifiable by any other JCS tool.
Hypothesis draws JSON values (unicode member names outside the BMP, control
and separator characters, floats across the exponent range, safe-range
integers, nesting) and both encoders must give the same bytes; where
``rfc8785`` refuses a value, ours must refuse it too.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.canonical import MAX_SAFE_INTEGER, CanonicalEncodingError, canonical_dumps, loads_canonical

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # no lone surrogates: not UTF-8
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_canonical_json_equals_rfc8785_byte_for_byte(value: Any) -> None:
    ours = canonical_dumps(value)

    assert ours == rfc8785.dumps(value)
    # The verifier's reader accepts it back as canonical (it reads objects: each record is one).
    line = canonical_dumps({"v": value})
    assert canonical_dumps(loads_canonical(line)) == line


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_double_prints_as_rfc8785_prints_it(value: float) -> None:
    assert canonical_dumps([value]) == rfc8785.dumps([value])


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -(MAX_SAFE_INTEGER + 1), 2**64, math.nan, math.inf, -math.inf])
def test_values_rfc8785_refuses_are_refused_too(value: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps(value)
    with pytest.raises(CanonicalEncodingError):
        canonical_dumps(value)
