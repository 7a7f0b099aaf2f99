"""``fedfraud schema draft``: a commented first schema for an institution's CSV file.

Writing a schema by hand for a file of forty columns is slow and easy to get
wrong. :func:`draft_schema` reads a sample of the file (its first
``--sample-rows`` rows, 200 000 by default, streamed chunk by chunk, so a file
of several GB is fine), guesses every column's role and writes TOML that
:func:`fraud.byo_schema.load_schema` accepts, with a ``# REVIEW:`` note on every
guess. The command then reads the draft back and checks the file against it
exactly as ``fedfraud data check`` does (:func:`fraud.byo_read.check_institution_data`).

How a column's role is guessed, in this order (values are stripped of
surrounding white space, as the reader does; a value in
:data:`MARKER_CANDIDATES` is missing):

1. The label: ``--label``, or the one column with two values and a name like
   ``fraud``/``is_fraud``/``label``/``class``/``target``. It must have exactly
   two values and no missing one, else the draft is refused.
2. No value at all: dropped.
3. A name that says identifier (``*_id``, ``uuid``) or personal detail
   (``zip``, ``email``, ``phone``, ``name``, ``birth``, ...): an id column.
4. A single value: dropped.
5. Numbers (apart from missing markers): numeric, unless they are integers and
   (nearly) all distinct, or half distinct under a name like ``*number*``:
   then an id column. A few words (``unknown``) among numbers become missing
   markers.
6. Text whose every value parses with one date/time format of
   :data:`TIMESTAMP_FORMATS`: a timestamp (``derive = "calendar"``).
7. Other text: an id column if at least half its values are distinct, dropped
   if it has more than :data:`TRACK_DISTINCT` values, else categorical with the
   :data:`MAX_VOCABULARY` most frequent values as its vocabulary.

A guess is a guess: the first rows of a file sorted by date or label may not
show every value, and names mislead. The header of the draft says so; the
check after writing catches what the sample missed (it reads the whole file,
so it is bounded like ``fedfraud data check``: files up to
:data:`fraud.byo_read.MAX_BYTES`). Statistics of the sample (counts per value) are
printed nowhere and written nowhere: the draft is meant to be shared once
reviewed.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.errors import ConfigError, InputError, UsageError

if TYPE_CHECKING:
    from fraud.byo_schema import Schema

app = typer.Typer(help="Draft a schema from a CSV file.", no_args_is_help=True, add_completion=False)

DEFAULT_SAMPLE_ROWS = 200_000
"""Rows read by default to draft a schema (the first rows of the file)."""

MAX_SAMPLE_ROWS = 5_000_000
"""Most rows ``--sample-rows`` accepts (the sample's distinct values are held in memory)."""

CHUNK_ROWS = 20_000
MAX_VOCABULARY = 50
"""Most values listed per categorical column (the most frequent ones)."""

RARE_ROWS = 10
"""A vocabulary value seen in fewer rows than this is flagged as rare."""

TRACK_DISTINCT = 10_000
"""Values counted per column; a text column with more is dropped, not categorical."""

MARKER_CANDIDATES = (
    "", "?", "None", "none", "NA", "N/A", "n/a", "na", "NaN", "nan", "null", "NULL", "Null", "#N/A", "-", "--",
)
"""Texts taken as "missing" wherever they occur (those found are written to ``missing_markers``)."""

TIMESTAMP_FORMATS = (
    "%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S%z", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S",
    "%m/%d/%Y", "%d/%m/%Y", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y", "%d.%m.%Y %H:%M:%S", "%d-%b-%Y", "%d %b %Y", "%b %d, %Y",
)
"""``strptime`` formats tried on text columns, in order of preference."""

# Column names are split into lower-case words (``isFraud`` -> is, fraud).
LABEL_NAMES = (
    frozenset({"fraud", "is_fraud", "isfraud", "fraudulent", "is_fraudulent", "fraud_flag", "fraud_label",
               "fraud_reported", "fraud_ind", "fraud_indicator"}),
    frozenset({"label", "class", "target", "y", "outcome"}),
)
ID_WORDS = frozenset({"id", "uuid", "guid"})
PERSONAL_WORDS = frozenset({
    "zip", "zipcode", "postcode", "postal", "address", "street", "email", "phone", "mobile", "msisdn", "ssn",
    "iban", "ip", "name", "surname", "passport", "plate", "vin", "birth", "dob", "birthdate", "birthday",
    "latitude", "longitude", "lat", "lng", "lon",
})
NUMBER_WORDS = frozenset({"number", "num", "no", "nr", "account", "acct", "card", "ref", "reference", "key"})
CODE_WORDS = frozenset({"code", "codes", "type", "category", "cat", "kind", "status", "mcc", "class"})
POSITIVE_WORDS = frozenset({"1", "y", "yes", "true", "t", "fraud", "fraudulent", "positive", "pos", "bad"})
NEGATIVE_WORDS = frozenset(
    {"0", "n", "no", "false", "f", "legit", "legitimate", "genuine", "normal", "negative", "neg", "ok", "good"}
)
RESERVED = frozenset({"__other__", "__missing__"})


class Role(StrEnum):
    """What a column becomes in the schema."""

    LABEL = "label"
    ID = "id_columns"
    DROP = "drop_columns"
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    TIMESTAMP = "timestamps"


@dataclass
class _Column:
    """Running statistics of one column over the sample (never written to the draft)."""

    name: str
    rows: int = 0
    markers: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] | None = field(default_factory=Counter)  # None: more than TRACK_DISTINCT values
    hashes: list[Any] = field(default_factory=list)  # per chunk, hashes of the distinct values
    numbers: int = 0  # non-missing values that parse as finite numbers
    integers: int = 0  # of which written as plain integers
    texts: Counter[str] = field(default_factory=Counter)  # non-numbers (at most 20 kept)
    many_texts: bool = False
    formats: list[str] | None = None  # timestamp formats every text so far parses with

    def update(self, raw: Sequence[str]) -> None:
        import numpy as np
        import pandas as pd

        values = pd.Series([v.strip() for v in raw], dtype=object)
        self.rows += len(values)
        missing = values.isin(MARKER_CANDIDATES).to_numpy()
        if missing.any():
            self.markers.update(values[missing].value_counts().to_dict())
        counts = values[~missing].value_counts()
        if counts.empty:
            return
        if self.counts is not None:
            self.counts.update(counts.to_dict())
            if len(self.counts) > TRACK_DISTINCT:
                self.counts = None
        self.hashes.append(pd.util.hash_array(counts.index.to_numpy(dtype=object)))
        # Parse each distinct value once, weighted by its count (as the reader: pandas.to_numeric).
        index = pd.Series(counts.index, dtype=object)
        number = np.isfinite(pd.to_numeric(index, errors="coerce").to_numpy(dtype=np.float64))
        integer = number.copy()
        if number.any():
            integer[number] = index[number].str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(dtype=bool)
        weights = counts.to_numpy()
        self.numbers += int(weights[number].sum())
        self.integers += int(weights[integer].sum())
        texts = [str(v) for v in index[~number]]
        if not self.many_texts:
            self.texts.update({t: int(c) for t, c in zip(texts, weights[~number], strict=True)})
            self.many_texts = len(self.texts) > 20
        if self.numbers:
            self.formats = []
        elif texts:
            candidates = TIMESTAMP_FORMATS if self.formats is None else self.formats
            self.formats = [f for f in candidates if _all_parse(texts, f)]

    @property
    def present(self) -> int:
        """Non-missing values."""
        return self.rows - sum(self.markers.values())

    def distinct(self) -> int:
        """Distinct non-missing values."""
        import numpy as np

        return int(np.unique(np.concatenate(self.hashes)).size) if self.hashes else 0


def _parses(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _all_parse(texts: list[str], fmt: str) -> bool:
    """Whether every text parses with ``fmt``: exactly (``strptime``, as the reader) on the first
    1000, then vectorised (pandas' C port of ``strptime``) on the rest, which keeps a column of
    distinct date-times fast."""
    import pandas as pd

    if not all(_parses(t, fmt) for t in texts[:1000]):
        return False
    rest = texts[1000:]
    if not rest:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(pd.Series(rest, dtype=object), format=fmt, errors="coerce")
    except (ValueError, TypeError):
        return all(_parses(t, fmt) for t in rest)
    return bool(parsed.notna().all())


def _word_list(name: str) -> list[str]:
    """``isFraud`` -> ``["is", "fraud"]``; ``policy-number`` -> ``["policy", "number"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return [w for w in re.split(r"[^a-z0-9]+", spaced) if w]


def _words(name: str) -> set[str]:
    return set(_word_list(name))


@dataclass(frozen=True)
class _Guess:
    role: Role
    note: str = ""  # why (written as a comment next to the column)
    format: str = ""  # timestamps
    vocabulary: tuple[str, ...] = ()  # categorical
    review: str = ""  # a REVIEW note above the column
    unique: bool = False  # every row has a distinct value (a good row identifier)


@dataclass(frozen=True)
class SchemaDraft:
    """A drafted schema: the TOML text, the schema it loads as, and what was read."""

    text: str
    schema: Schema
    rows_read: int
    more_rows: bool
    """Whether the file has rows after the sample."""
    roles: dict[str, Role]


# ---------------------------------------------------------------------------
# Reading the sample
# ---------------------------------------------------------------------------


def _read_sample(path: Path, sample_rows: int) -> tuple[list[_Column], int, bool]:
    """Stream the first ``sample_rows`` rows of ``path`` into per-column statistics."""
    try:
        handle = path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(handle, strict=True)
        columns: list[_Column] = []
        rows = 0
        more = False
        try:
            header = next((row for row in reader if row), None)
            if header is None:
                raise InputError(f"{path}: empty file (no header, no rows)")
            names = [h.strip() for h in header]
            for j, name in enumerate(names, start=1):
                if not name:
                    raise InputError(
                        f"{path}: column {j} of the header has no name; a schema names every column, "
                        "so give it a name in the file"
                    )
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise InputError(f"{path}: duplicate column names in the header: {duplicates}")
            columns = [_Column(name) for name in names]
            chunk: list[list[str]] = []
            for row in reader:
                if not row:
                    continue  # a blank line, as the reader skips it
                if rows == sample_rows:
                    more = True
                    break
                if len(row) != len(names):
                    raise InputError(
                        f"{path}: CSV parse error at line {reader.line_num}: expected {len(names)} fields "
                        f"as in the header, found {len(row)}"
                    )
                chunk.append(row)
                rows += 1
                if len(chunk) == CHUNK_ROWS:
                    _update(columns, chunk)
                    chunk = []
            _update(columns, chunk)
        except csv.Error as exc:
            raise InputError(f"{path}: CSV parse error at line {reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text (line {_first_bad_line(path)}); save it as UTF-8") from exc
    if rows == 0:
        raise InputError(f"{path}: no data rows after the header")
    return columns, rows, more


def _first_bad_line(path: Path) -> int:
    """The line (1-based) of the first byte that is not UTF-8, for the error message."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + block[: max(exc.start, 0)].count(b"\n")
            line += block.count(b"\n")
    return line


def _update(columns: list[_Column], chunk: list[list[str]]) -> None:
    if chunk:
        for column, values in zip(columns, zip(*chunk, strict=True), strict=True):
            column.update(values)


# ---------------------------------------------------------------------------
# Guessing roles
# ---------------------------------------------------------------------------


def _binary(column: _Column) -> bool:
    return not column.markers and column.counts is not None and len(column.counts) == 2


def _guess_label(path: Path, columns: list[_Column]) -> _Column:
    """The one column with two values and a label's name (exact names first, then any ``*fraud*``)."""
    normalized = {c.name: "_".join(_word_list(c.name)) for c in columns}
    tiers = [
        *([c for c in columns if normalized[c.name] in names] for names in LABEL_NAMES),
        [c for c in columns if "fraud" in _words(c.name)],
    ]
    for exact, tier in zip((True, True, False), tiers, strict=True):
        binary = [c for c in tier if _binary(c)]
        if len(binary) > 1:
            raise InputError(
                f"{path}: several columns could be the label ({[c.name for c in binary]}); pass --label COLUMN"
            )
        if binary:
            return binary[0]
        if exact and len(tier) == 1:
            return tier[0]  # named exactly like a label: refused below, saying why
    named = sorted({c.name for tier in tiers for c in tier})
    hint = f" (columns named like a label, without exactly two values: {named})" if named else ""
    raise InputError(f"{path}: could not guess the label column{hint}; pass --label COLUMN")


def _pick_label(path: Path, columns: list[_Column], label: str | None, rows: int, more: bool) -> _Column:
    """The label column: ``label`` if given, else guessed from names; refused unless it has two values."""
    by_name = {c.name: c for c in columns}
    if label is not None and label not in by_name:
        raise InputError(f"{path}: no column {label!r} (--label); the columns are {list(by_name)}")
    chosen = by_name[label] if label is not None else _guess_label(path, columns)
    guessed = "" if label is not None else " (guessed from its name; else pass --label COLUMN)"
    where = f"{path}: label column {chosen.name!r}{guessed}, first {rows} rows"
    if chosen.markers:
        found = ", ".join(repr(m) for m in sorted(chosen.markers))
        raise InputError(f"{where}: {sum(chosen.markers.values())} missing label(s) ({found}); every row needs one")
    if chosen.counts is None or len(chosen.counts) != 2:
        n = len(chosen.counts) if chosen.counts is not None else f"more than {TRACK_DISTINCT}"
        shown = sorted(chosen.counts)[:10] if chosen.counts is not None else []
        sorted_hint = "; the file has more rows: if it is sorted, raise --sample-rows" if more else ""
        raise InputError(
            f"{where}: {n} distinct value(s) {shown}; a label needs exactly two (fraud and not fraud){sorted_hint}"
        )
    return chosen


def _positive(column: _Column) -> tuple[str, str]:
    """Return (TOML literal of positive_label, why), matching the data's type."""
    counts = column.counts
    if counts is None or len(counts) != 2:
        raise InputError(f"label column {column.name!r} does not have exactly two values")
    a, b = sorted(counts)
    rarer = min((a, b), key=lambda v: (counts[v], v))
    if all(re.fullmatch(r"-?[1-9][0-9]*|0", v) for v in (a, b)):
        if {a, b} in ({"0", "1"}, {"-1", "1"}):
            return "1", f"the values are {a} and {b}: 1 is taken as fraud"
        return rarer, f"the values are {a} and {b}: the rarer, {rarer}, is taken as fraud"
    if {a, b} <= {"true", "True", "TRUE", "false", "False", "FALSE"} and {a.lower(), b.lower()} == {"true", "false"}:
        return "true", f"the values are {a} and {b}: true is taken as fraud (it also matches 1)"
    pair = f"the values are {_toml_str(a)} and {_toml_str(b)}"
    for value, other in ((a, b), (b, a)):
        if value.lower() in POSITIVE_WORDS and other.lower() not in POSITIVE_WORDS:
            return _toml_str(value), f"{pair}: {_toml_str(value)} reads as yes/fraud"
        if other.lower() in NEGATIVE_WORDS and value.lower() not in NEGATIVE_WORDS:
            return _toml_str(value), f"{pair}: {_toml_str(other)} reads as no/legitimate"
    return _toml_str(rarer), f"{pair}: the rarer, {_toml_str(rarer)}, is taken as fraud"


def _extra_markers(columns: list[_Column], label: _Column) -> set[str]:
    """Words among numbers (``unknown`` in an age column): missing markers, not a reason to make it text."""
    found: set[str] = set()
    label_values = set(label.counts or ())
    for column in columns:
        texts = sum(column.texts.values())
        if (column is label or column.many_texts or not column.numbers or not texts or len(column.texts) > 3
                or texts > 0.1 * column.present):
            continue
        words = {t for t in column.texts if not any(ch.isdigit() for ch in t)}
        if len(words) == len(column.texts) and not words & label_values:
            found |= words
    return found


def _guess(column: _Column, extra: set[str]) -> _Guess:
    words = _words(column.name)
    extra_here = {t: n for t, n in column.texts.items() if t in extra}
    present = column.present - sum(extra_here.values())
    distinct = column.distinct() - len(extra_here)
    # 1. Nothing to learn from, or a name that says identifier / personal detail.
    if present == 0:
        return _Guess(Role.DROP, "no value in the sample")
    if words & ID_WORDS:
        return _Guess(Role.ID, "the name says identifier", unique=distinct == column.rows)
    personal = sorted(words & PERSONAL_WORDS)
    if personal:
        return _Guess(Role.ID, f"the name suggests a personal detail ({personal[0]})", unique=distinct == column.rows)
    if distinct == 1:
        return _Guess(Role.DROP, "a single value in the sample")
    unique = distinct == column.rows
    # 2. Numbers: quantities, unless they look like identifiers.
    if column.numbers == present:
        if column.integers == present and present >= 100 and distinct >= 0.98 * present:
            return _Guess(Role.ID, "integers, (nearly) every value distinct", unique=unique)
        if column.integers == present and words & NUMBER_WORDS and distinct >= 0.5 * present:
            return _Guess(Role.ID, "integers, mostly distinct, named like a number or account", unique=unique)
        note = ""
        if column.integers == present and words & CODE_WORDS:
            note = "REVIEW: named like a code; if the numbers are codes, not quantities, make it categorical"
        if extra_here:
            note = f"{note}; " if note else ""
            note += f"REVIEW: {', '.join(map(_toml_str, sorted(extra_here)))} taken as missing"
        return _Guess(Role.NUMERIC, note)
    # 3. Dates and times.
    if column.formats:
        fmt = column.formats[0]
        review = f"REVIEW: the values also parse as {column.formats[1]!r}; pick the right one." if len(
            column.formats) > 1 else ""
        return _Guess(Role.TIMESTAMP, format=fmt, review=review)
    # 4. Text: identifiers, too many values, or a vocabulary.
    if present >= 20 and distinct >= 0.5 * present:
        return _Guess(Role.ID, "text, (nearly) every value distinct" if distinct >= 0.9 * present
                      else "text, most values distinct", unique=unique)
    if column.counts is None:
        return _Guess(Role.DROP, f"REVIEW: more than {TRACK_DISTINCT} distinct values, too many for a vocabulary")
    ranked = sorted(((n, v) for v, n in column.counts.items() if v not in extra and v not in RESERVED),
                    key=lambda item: (-item[0], item[1]))
    if not ranked:
        return _Guess(Role.DROP, "no value in the sample")
    vocabulary = tuple(v for _, v in ranked[:MAX_VOCABULARY])
    listed = "all listed" if len(ranked) <= MAX_VOCABULARY else (
        f"the {MAX_VOCABULARY} most frequent listed, the others would go to __other__")
    review = f"REVIEW: {len(ranked)} values in the sample, {listed}."
    rare = [v for n, v in ranked[:MAX_VOCABULARY] if n < RARE_ROWS]
    if rare:
        review += f" Rare (under {RARE_ROWS} rows): {_some(rare)}."
    personal_like = [v for v in vocabulary if re.search(r"@|\d{6,}", v)]
    if personal_like:
        review += f" May identify someone: {_some(personal_like)}."
    if set(column.counts) & RESERVED:
        review += " The reserved values __other__/__missing__ are left out."
    return _Guess(Role.CATEGORICAL, vocabulary=vocabulary, review=review)


def _some(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(_toml_str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


# ---------------------------------------------------------------------------
# Writing TOML
# ---------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    """A TOML basic string (control characters and DEL escaped, so it also fits in a comment)."""
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    out = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04X}", out)
    return f'"{out}"'


def _toml_key(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z0-9_-]+", value) else _toml_str(value)


def _array(key: str, items: Sequence[str], notes: Sequence[str] | None = None, width: int = 100) -> list[str]:
    """``key = [...]``: one line if it fits, else wrapped (one item per line when items carry notes)."""
    quoted = [_toml_str(v) for v in items]
    one_line = f"{key} = [{', '.join(quoted)}]"
    if len(one_line) <= width and not any(notes or ()):
        return [one_line]
    lines = [f"{key} = ["]
    if notes is not None:
        lines += [f"    {q},  # {n}" if n else f"    {q}," for q, n in zip(quoted, notes, strict=True)]
    else:
        current = "   "
        for q in quoted:
            if len(current) + len(q) + 2 > width:
                lines.append(current.rstrip())
                current = "   "
            current += f" {q},"
        lines.append(current.rstrip())
    return [*lines, "]"]


def _render(file_name: str, rows: int, more: bool, label: _Column, guesses: dict[str, _Guess],
            markers: list[str], marker_columns: Counter[str]) -> str:
    from fraud.byo_schema import SCHEMA_FORMAT

    positive, why = _positive(label)
    of_file = "the file has more rows, not read" if more else "the whole file"
    by_role: dict[Role, list[str]] = {role: [c for c, g in guesses.items() if g.role == role] for role in Role}
    ids = sorted(by_role[Role.ID], key=lambda c: not guesses[c].unique)  # stable: file order otherwise
    out = [
        "# A DRAFT schema for fedfraud's bring-your-own-data mode, made by `fedfraud schema draft`",
        f"# from the first {rows} rows of {_toml_str(file_name)} ({of_file}).",
        "#",
        "# A schema says what each column of an institution's CSV files is. Every institution of a",
        "# federation uses the same schema (the server refuses to start when they differ), so this",
        "# draft is a proposal to agree on, not a finished file: every guess carries a REVIEW note.",
        "# Read them all, change what the data's owners know better, then delete the notes. The",
        "# vocabularies list values found in this institution's data: check them before the file",
        "# leaves the institution. Every column of the file has exactly one role below; check the",
        "# files against the final version with `fedfraud data check --schema FILE NAME=PATH`.",
        f"format = {_toml_str(SCHEMA_FORMAT)}",
        "",
        "# The label: the column that says whether a row is fraud, and the value that means fraud",
        "# (text, an integer or true/false, as in the file); the other value is the negative class.",
        f"# REVIEW: {why}.",
        f"label = {_toml_str(label.name)}",
        f"positive_label = {positive}",
        "",
        "# Identifiers and near-identifiers (account or policy numbers, zip codes, addresses): read,",
        "# never model inputs, never kept. The first one names the rows when new rows are scored, so",
        "# it should be unique. REVIEW: a column here for its name may be a useful feature; one that",
        "# identifies people or places must stay here.",
        *_array("id_columns", ids, [guesses[c].note for c in ids]),
        "",
        "# Columns not used: empty or constant in the sample, or with too many values for an agreed",
        "# vocabulary. REVIEW: also list here the column institutions were split on, if any (it",
        "# would only tell the model which institution a row comes from).",
        *_array("drop_columns", by_role[Role.DROP], [guesses[c].note for c in by_role[Role.DROP]]),
        "",
        "# Values that mean \"missing\" in every column (compared after stripping spaces). A missing",
        "# number becomes the federation's mean plus a <column>__missing indicator; a missing",
        "# category the <column>=__missing__ slot. The defaults are kept; found in the sample:",
        "# " + (", ".join(f"{_toml_str(m)} ({marker_columns[m]} column(s))" for m in markers
                      if marker_columns[m]) or "none") + ".",
        "# REVIEW: a value that is meaningful in some column (\"None\": no authority contacted) still",
        "# lands in that column's __missing__ slot, which keeps the information.",
        *_array("missing_markers", markers),
        "",
        "# Numbers: every value in the sample parses as a number (or is missing). They go through",
        "# the fixed signed log1p and the federation-wide standardization (fraud/byo_stats.py, fraud/byo_encode.py).",
        *_array("numeric", by_role[Role.NUMERIC], [guesses[c].note for c in by_role[Role.NUMERIC]]),
        "",
    ]
    if by_role[Role.CATEGORICAL]:
        out += [
            "# Categorical columns, each with its vocabulary. Vocabularies are agreed by the federation,",
            "# never computed from data at run time: every institution must use the same lists. A value",
            "# outside its list goes to <column>=__other__. Listed most frequent first (in this sample),",
            f"# at most {MAX_VOCABULARY} per column. REVIEW every list: remove values that are rare or could",
            "# identify someone (a name, an address, an account), add the values other institutions have.",
            "[categorical]",
        ]
        for column in by_role[Role.CATEGORICAL]:
            out += [f"# {guesses[column].review}", *_array(_toml_key(column), guesses[column].vocabulary)]
        out.append("")
    else:
        out += ["# No categorical columns were found (text with few values).", ""]
    if by_role[Role.TIMESTAMP]:
        out += [
            "# Dates and times, parsed with their strptime format on every row. derive = \"calendar\"",
            "# turns one into cyclic day-of-week and month features; \"drop\" only checks it. REVIEW:",
            "# use \"drop\" for a date far from the event (a policy's start), whose place in the",
            "# calendar says nothing about fraud.",
        ]
        for column in by_role[Role.TIMESTAMP]:
            guess = guesses[column]
            out += [
                "[[timestamps]]",
                *([f"# {guess.review}"] if guess.review else []),
                f"column = {_toml_str(column)}",
                f"format = {_toml_str(guess.format)}",
                'derive = "calendar"',
                "",
            ]
    else:
        out += ["# No date or time columns were found (text parsing with one format on every row).", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------
# The operations
# ---------------------------------------------------------------------------


def draft_schema(csv_path: str | Path, label: str | None = None,
                 sample_rows: int = DEFAULT_SAMPLE_ROWS) -> SchemaDraft:
    """Draft a schema for one CSV file from its first ``sample_rows`` rows.

    Parameters
    ----------
    csv_path
        The institution's CSV file (UTF-8, a header row).
    label
        The label column; ``None`` guesses it from the column names.
    sample_rows
        Rows read, from the top of the file (1 .. :data:`MAX_SAMPLE_ROWS`).

    Returns
    -------
    SchemaDraft
        The TOML text (validated: it loads as a :class:`~fraud.byo_schema.Schema`).

    Raises
    ------
    ConfigError
        If ``sample_rows`` is out of range.
    InputError
        Naming the file (and column) if it cannot be read or parsed, has no
        data rows, ``label`` is not a column, no label can be guessed, or the
        label has missing values or not exactly two values.
    """
    from fraud.byo_schema import Schema, schema_from_toml

    if not isinstance(sample_rows, int) or isinstance(sample_rows, bool) or not 1 <= sample_rows <= MAX_SAMPLE_ROWS:
        raise ConfigError(f"sample rows must be an int in 1..{MAX_SAMPLE_ROWS}, got {sample_rows!r}")
    path = Path(csv_path)
    # 1. Stream the sample into per-column statistics.
    columns, rows, more = _read_sample(path, sample_rows)
    # 2. The label, refused unless it has exactly two values and no missing one.
    label_column = _pick_label(path, columns, label, rows, more)
    # 3. Missing markers: the defaults, those found, and words found among numbers.
    extra = _extra_markers(columns, label_column)
    found: Counter[str] = Counter(m for c in columns for m in c.markers)
    found.update(t for c in columns for t in c.texts if t in extra)
    defaults = tuple(Schema.model_fields["missing_markers"].default)
    markers = [*defaults, *(m for m in (*MARKER_CANDIDATES, *sorted(extra)) if m in found and m not in defaults)]
    # 4. Every other column's role.
    guesses = {c.name: _guess(c, extra) for c in columns if c is not label_column}
    text = _render(path.name, rows, more, label_column, guesses, markers, found)
    # 5. Never hand out a draft that does not load.
    schema = schema_from_toml(text, f"the draft for {path}")
    roles = {label_column.name: Role.LABEL, **{name: g.role for name, g in guesses.items()}}
    return SchemaDraft(text, schema, rows, more, roles)


def write_draft(text: str, out: Path, force: bool) -> Path:
    """Write ``text`` to ``out`` atomically (a temporary file, then a rename), mode 0600.

    The draft lists values of the institution's data, so it starts private.
    Without ``force`` an existing ``out`` is never replaced, not even one
    created meanwhile (the temporary file is hard-linked into place).

    Raises
    ------
    ConfigError
        If ``out`` exists and ``force`` is false.
    InputError
        If the file cannot be written.
    """
    if not force and (out.exists() or out.is_symlink()):
        raise UsageError(f"{out} exists; pass --force to replace it")
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, out)
        else:
            os.link(tmp, out)  # fails if out appeared meanwhile
    except FileExistsError:
        raise UsageError(f"{out} exists; pass --force to replace it") from None
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def check_draft(schema: Schema, csv_path: Path, where: str) -> int:
    """Check the whole file against the draft as ``fedfraud data check`` does; return its rows.

    Raises
    ------
    InputError
        Saying that the draft (``where``) was made but the file does not pass
        it, with every problem the check found.
    """
    from fraud.byo_read import check_institution_data

    try:
        rows = check_institution_data(schema, {"draft": [csv_path]})
    except InputError as exc:
        raise InputError(
            f"{where} was drafted, but {csv_path} does not pass it as drafted; edit the draft, then run "
            f"`fedfraud data check`. {exc}"
        ) from exc
    return sum(rows.values())


def _summary(draft: SchemaDraft) -> Iterable[str]:
    count = Counter(draft.roles.values())
    yield (f"read the first {draft.rows_read} rows"
           + (" (the file has more: the draft rests on these only; see --sample-rows)" if draft.more_rows
              else " (the whole file)"))
    yield (f"label {draft.schema.label!r} (fraud = {draft.schema.positive_label!r}); "
           + ", ".join(f"{count[r]} {r.value}" for r in Role if r is not Role.LABEL))


@app.command("draft")
def draft_command(
    csv_file: Annotated[Path, typer.Argument(metavar="CSV", help="The institution's CSV file (header row, UTF-8).")],
    label: Annotated[
        str | None, typer.Option("--label", help="The label column (default: guessed from names like is_fraud).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the draft here (default: print it on standard output).")
    ] = None,
    sample_rows: Annotated[
        int, typer.Option("--sample-rows", min=1, max=MAX_SAMPLE_ROWS, help="Rows read from the top of the file.")
    ] = DEFAULT_SAMPLE_ROWS,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Draft a commented schema from a CSV file, then check the file against it.

    Example: fedfraud schema draft claims.csv --label fraud_reported --out schema.toml.
    CSV is the institution's file (a header row, UTF-8); its first --sample-rows rows
    are read. Every guess carries a REVIEW note. Exit 3: the file cannot be read, the
    label is not binary, or the file does not pass the draft (the draft is still
    written); exit 2: --out exists (pass --force).
    """
    if out is not None and not force and (out.exists() or out.is_symlink()):
        raise UsageError(f"{out} exists; pass --force to replace it")
    draft = draft_schema(csv_file, label, sample_rows)
    # The TOML alone goes to standard output; notes go to standard error then.
    note = typer.echo if out is not None else (lambda text: typer.echo(text, err=True))
    if out is None:
        sys.stdout.write(draft.text)
        sys.stdout.flush()
        where = "the draft"
        schema = draft.schema
    else:
        write_draft(draft.text, out, force)
        where = f"the draft {out}"
        from fraud.byo_schema import load_schema

        schema = load_schema(out)
    for line in _summary(draft):
        note(line)
    if out is not None:
        note(f"wrote {out}: read every REVIEW note before the federation agrees on it")
    rows = check_draft(schema, csv_file, where)
    note(f"ok  {csv_file}: {rows} rows pass {where} (the check `fedfraud data check` runs)")
