"""Bring your own data: an institution's CSV files, a shared schema, federated preprocessing.

An institution points fedfraud at its own CSV file(s) and a small
:class:`Schema` (a TOML table, validated strictly). All institutions of a
federation use **one** schema; :func:`compare_schemas` names every column
that differs and for which institution.

Roles of the columns (every CSV column must have exactly one):

* ``label`` with ``positive_label`` (read as text, e.g. ``"Y"``); any other
  single value is the negative class.
* ``id_columns``: identifiers and near-identifiers (policy numbers, zip codes,
  addresses). Read, never model inputs, never kept in the loaded frame; a
  schema that also lists one of them as a feature is refused.
* ``drop_columns``: other columns deliberately not used (empty trailing
  columns, the column institutions were split on, ...).
* ``numeric``: numbers; see "Numeric features" below.
* ``categorical``: each with its **agreed vocabulary written in the schema**.
  Categories are never computed from data (that would leak which values an
  institution has); a value outside the vocabulary goes to the
  ``<col>=__other__`` slot and a missing value to ``<col>=__missing__``.
* ``timestamps``: a date/time column with a ``strptime`` format (e.g.
  ``%m/%d/%Y``). ``derive = "calendar"`` turns it into the cyclic features
  ``<col>__dow_sin/cos`` (day of week) and ``<col>__month_sin/cos`` plus a
  ``<col>__missing`` indicator; absolute dates are *not* used (they would
  tie the model to a period and differ between institutions' histories).
  ``derive = "drop"`` parses and validates the column, then drops it.

Values are stripped of surrounding white space; a value equal to one of
``missing_markers`` (default: empty, ``?``, ``None``, ``NA``, ``NaN``,
``null``) is missing. Missing values never crash encoding.

Numeric features (federated, not per-client guesswork)
-----------------------------------------------------
1. Fixed transform, identical everywhere: ``t = sign(x) * log1p(|x|)``
   (signed log1p: tames money amounts spanning decades, keeps the sign of
   e.g. capital losses, and maps 0 to 0).
2. Global standardization: ``z = (t - mean) / std`` where ``mean`` and
   ``std`` are the **federation-wide** statistics of ``t`` over all
   institutions' training rows (population std; a constant column gets
   std 1). They come from per-institution sufficient statistics
   (:func:`local_numeric_stats`: rows, and per column the count of
   non-missing values, their sum and sum of squares) summed across
   institutions, then :meth:`FeatureSpec.from_stats`.
3. ``z`` is clipped to ``[-5, 5]``; a missing value becomes 0 (the global
   mean) and sets the ``<col>__missing`` indicator. Every numeric column has
   that indicator, whether or not it has missing values, so the feature
   layout depends on the schema only.

What leaves each site
---------------------
Only the :class:`NumericStats` vector (row count; per numeric column: count
of non-missing values, sum and sum of squares of the transformed values),
and only as an input to a **secure sum**: the hardened SecAgg+ sums the counts
exactly and the two totals in fixed point (:mod:`secagg.secure_sum`), so the
server learns the federation's sums and nothing per institution.
No row, no category
and no per-institution statistic leaves a site: vocabularies come from the
schema, and the schema itself is agreed beforehand (compare its
:meth:`Schema.fingerprint`).

The CSV reader is strict: a file must have exactly the schema's columns
(unknown columns and missing columns are both named), consistent row
lengths, a binary label with the positive value present and both classes,
and numbers (or missing markers) in numeric columns. Errors are
:class:`~core.errors.InputError` naming the file, the column and, where
one is at fault, the line of the file (1-based, the header is line 1) and
the value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from core.errors import ConfigError, InputError

SCHEMA_FORMAT = "fedfraud-byo-schema/1"
"""Format marker every schema carries."""

SPEC_FORMAT = "fedfraud-feature-spec/1"
"""Format marker of a :class:`FeatureSpec`."""

STATS_FORMAT = "fedfraud-numeric-stats/1"
"""Version of the :class:`NumericStats` vector layout."""

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
"""Schemas shipped with fedfraud (e.g. ``insurance_claims.toml``)."""

OTHER = "__other__"
MISSING = "__missing__"
CLIP = 5.0
"""Standardized numeric values are clipped to ``[-CLIP, CLIP]``."""

MAX_TRANSFORMED = 64.0
"""Largest ``|sign(x) log1p(|x|)|`` accepted (``|x|`` up to about 6e27)."""

MAX_BYTES = 512 * 1024 * 1024
"""Largest CSV file read (bytes)."""

_NAME_RE = re.compile(r"^[^\x00-\x1f]{1,200}$")


class Derive(StrEnum):
    """What to do with a timestamp column."""

    CALENDAR = "calendar"
    DROP = "drop"


class TimestampColumn(BaseModel):
    """A date/time column, its ``strptime`` format and what to derive from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: StrictStr
    format: StrictStr
    derive: Derive = Derive.CALENDAR

    @model_validator(mode="after")
    def _check(self) -> TimestampColumn:
        if "%" not in self.format:
            raise ValueError(f"timestamp {self.column!r}: format {self.format!r} has no % directive")
        return self


class Schema(BaseModel):
    """The shared description of an institution's CSV files.

    Load it with :func:`load_schema` (TOML) or :meth:`pydantic.BaseModel.model_validate`.
    Unknown keys are refused; a column may have only one role.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fedfraud-byo-schema/1"] = Field(description="format marker")
    label: StrictStr
    positive_label: StrictStr
    id_columns: tuple[StrictStr, ...] = ()
    drop_columns: tuple[StrictStr, ...] = ()
    numeric: tuple[StrictStr, ...] = ()
    categorical: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    timestamps: tuple[TimestampColumn, ...] = ()
    missing_markers: tuple[StrictStr, ...] = ("", "?", "None", "NA", "NaN", "null")

    @field_validator("positive_label", mode="before")
    @classmethod
    def _label_as_text(cls, value: object) -> object:
        """``positive_label = 1`` or ``= true`` in TOML: the text the CSV holds.

        An integer becomes its digits; a boolean becomes ``"true"`` or
        ``"false"``, matched in the file in any letter case and as ``1``/``0``
        (see :attr:`positive_values`).
        """
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        return value

    @property
    def positive_values(self) -> frozenset[str]:
        """The label texts that mean "fraud" in a file."""
        word = self.positive_label.lower()
        if word in ("true", "false"):
            digit = "1" if word == "true" else "0"
            return frozenset({word, word.capitalize(), word.upper(), digit})
        return frozenset({self.positive_label})

    @model_validator(mode="after")
    def _check(self) -> Schema:
        # Collect every problem, then refuse once.
        problems: list[str] = []
        roles: dict[str, list[str]] = {}
        named = [
            ("label", [self.label]),
            ("id_columns", list(self.id_columns)),
            ("drop_columns", list(self.drop_columns)),
            ("numeric", list(self.numeric)),
            ("categorical", list(self.categorical)),
            ("timestamps", [t.column for t in self.timestamps]),
        ]
        for role, columns in named:
            for column in columns:
                roles.setdefault(column, []).append(role)
        for column, found in roles.items():
            if not _NAME_RE.match(column):
                problems.append(f"column name {column!r} is empty, too long or has control characters")
            if len(found) > 1:
                problems.append(f"column {column!r} has more than one role: {', '.join(found)}")
        markers = set(self.missing_markers)
        if self.positive_label.strip() != self.positive_label or self.positive_label in markers:
            problems.append(f"positive_label {self.positive_label!r} is a missing marker or has surrounding spaces")
        for column, vocabulary in self.categorical.items():
            if not vocabulary:
                problems.append(f"categorical {column!r}: the vocabulary is empty")
            if len(set(vocabulary)) != len(vocabulary):
                problems.append(f"categorical {column!r}: the vocabulary has duplicates")
            clashes = sorted((set(vocabulary) & markers) | (set(vocabulary) & {OTHER, MISSING}))
            if clashes:
                problems.append(f"categorical {column!r}: vocabulary values {clashes} are missing markers or reserved")
        if not (self.numeric or self.categorical or any(t.derive == Derive.CALENDAR for t in self.timestamps)):
            problems.append("the schema has no feature columns (numeric, categorical or calendar timestamps)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the CSV files must have, in a fixed order."""
        return (
            self.label,
            *self.id_columns,
            *self.drop_columns,
            *self.numeric,
            *self.categorical,
            *(t.column for t in self.timestamps),
        )

    @property
    def kept_columns(self) -> tuple[str, ...]:
        """Columns of a loaded frame: the model's raw inputs, then the label."""
        return (
            *self.numeric,
            *self.categorical,
            *(t.column for t in self.timestamps if t.derive == Derive.CALENDAR),
            self.label,
        )

    def roles(self) -> dict[str, str]:
        """Return ``{column: description of its role}`` (what :func:`compare_schemas` compares)."""
        out = {self.label: f"label (positive {self.positive_label!r})"}
        out.update({c: "id (dropped)" for c in self.id_columns})
        out.update({c: "dropped" for c in self.drop_columns})
        out.update({c: "numeric" for c in self.numeric})
        out.update({c: f"categorical {list(v)}" for c, v in self.categorical.items()})
        out.update({t.column: f"timestamp {t.format!r} ({t.derive.value})" for t in self.timestamps})
        return out

    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of the canonical schema (institutions compare it before a run)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{SCHEMA_FORMAT}\n{canonical}".encode()).hexdigest()


def load_schema(path: str | Path, table: str | None = None) -> Schema:
    """Load a :class:`Schema` from a TOML file.

    Parameters
    ----------
    path
        The TOML file.
    table
        Dotted name of the table holding the schema (e.g. ``"fedfraud.schema"``);
        ``None`` uses the whole file.

    Raises
    ------
    InputError
        Naming the file (and table) if it cannot be read, is not TOML or is
        not a valid schema.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data: Any = tomllib.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot read schema: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    where = str(path)
    if table:
        for key in table.split("."):
            if not isinstance(data, dict) or key not in data:
                raise InputError(f"{path}: no table [{table}]")
            data = data[key]
        where = f"{path} [{table}]"
    return _validated_schema(data, where)


def schema_from_toml(text: str, where: str) -> Schema:
    """Parse a :class:`Schema` from TOML text (e.g. the copy a run directory keeps).

    Raises
    ------
    InputError
        Naming ``where`` if the text is not TOML or not a valid schema.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML: {exc}") from exc
    return _validated_schema(data, where)


def _validated_schema(data: object, where: str) -> Schema:
    try:
        return Schema.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'schema'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{where}: invalid schema: {details}") from exc


def builtin_schema(name: str) -> Schema:
    """Load a schema shipped in :data:`SCHEMAS_DIR` by name (e.g. ``"insurance_claims"``)."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ConfigError(f"schema name must be lowercase letters, digits and _, got {name!r}")
    path = SCHEMAS_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"no built-in schema {name!r} in {SCHEMAS_DIR}")
    return load_schema(path)


def compare_schemas(schemas: Mapping[str, Schema]) -> None:
    """Check that every institution uses the same schema; raise naming every difference.

    The first institution (in mapping order) is the reference.

    Raises
    ------
    ConfigError
        Listing, per differing institution, the columns it lacks, the columns
        it adds and the columns whose role, vocabulary or format differ, and
        any other differing setting (missing markers).
    """
    if not schemas:
        raise ConfigError("no schemas to compare")
    names = list(schemas)
    ref_name = names[0]
    ref = schemas[ref_name]
    ref_roles = ref.roles()
    problems: list[str] = []
    for name in names[1:]:
        other = schemas[name]
        roles = other.roles()
        lacks = [c for c in ref_roles if c not in roles]
        adds = [c for c in roles if c not in ref_roles]
        differ = [
            f"{c!r} is {roles[c]} at {name} but {ref_roles[c]} at {ref_name}"
            for c in ref_roles
            if c in roles and roles[c] != ref_roles[c]
        ]
        parts: list[str] = []
        if lacks:
            parts.append(f"lacks columns {lacks}")
        if adds:
            parts.append(f"adds columns {adds}")
        parts.extend(differ)
        if set(other.missing_markers) != set(ref.missing_markers):
            parts.append(f"missing markers {list(other.missing_markers)} vs {list(ref.missing_markers)} at {ref_name}")
        if parts:
            problems.append(f"{name}: " + "; ".join(parts))
    if problems:
        raise ConfigError(f"schemas differ from {ref_name}'s: " + " | ".join(problems))


# ---------------------------------------------------------------------------
# Reading CSV files
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawFile:
    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    """File line (1-based) on which each row starts."""


def _read_raw(path: Path) -> _RawFile:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{path}: file is {size} bytes, more than the {MAX_BYTES} accepted")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    if not data.strip():
        raise InputError(f"{path}: empty file (no header, no rows)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        header = next(reader)
        previous = reader.line_num
        for row in reader:
            start = previous + 1
            previous = reader.line_num
            if not row:
                continue  # a blank line
            rows.append(row)
            lines.append(start)
    except csv.Error as exc:
        raise InputError(f"{path}: CSV parse error at line {reader.line_num}: {exc}") from exc
    header = [h.strip() for h in header]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise InputError(f"{path}: duplicate column names in the header: {duplicates}")
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(header):
            raise InputError(
                f"{path}: CSV parse error at line {line}: expected {len(header)} fields as in the header, found {len(row)}"
            )
    if not rows:
        raise InputError(f"{path}: no data rows after the header")
    return _RawFile(path, header, rows, lines)


def _check_columns(raw: _RawFile, schema: Schema, label_optional: bool = False) -> None:
    unknown = [c for c in raw.header if c not in schema.columns]
    absent = [c for c in schema.columns if c not in raw.header]
    if label_optional:
        absent = [c for c in absent if c != schema.label]
    parts = []
    if schema.label in absent:
        parts.append(f"label column {schema.label!r} is missing")
        absent = [c for c in absent if c != schema.label]
    if absent:
        parts.append(f"columns missing from the file (in the schema): {absent}")
    if unknown:
        parts.append(f"unknown columns (in the file, not in the schema): {unknown}")
    if parts:
        raise InputError(f"{raw.path}: " + "; ".join(parts))


def _parse_numeric(raw: _RawFile, column: str, values: list[str], missing: set[str]) -> npt.NDArray[np.float64]:
    # Vectorised: parse every cell, then name the first bad one, if any.
    text = pd.Series(values, dtype=object)
    is_missing = text.isin(missing).to_numpy() if missing else np.zeros(len(values), dtype=bool)
    out = pd.to_numeric(text.where(~is_missing, None), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~is_missing & ~np.isfinite(out))
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{raw.path}: column {column!r}, line {raw.lines[i]} (data row {i + 1}): "
            f"{values[i][:40]!r} is not a number (nor a missing marker)"
        )
    with np.errstate(invalid="ignore"):
        large = np.flatnonzero(np.abs(signed_log1p(out)) > MAX_TRANSFORMED)
    if large.size:
        i = int(large[0])
        raise InputError(
            f"{raw.path}: column {column!r}, line {raw.lines[i]}: {values[i][:40]!r} is too large (|x| > 6e27)"
        )
    out[is_missing] = np.nan
    return out


def _parse_timestamp(raw: _RawFile, spec: TimestampColumn, values: list[str], missing: set[str]) -> pd.Series:
    parsed: list[datetime | None] = []
    for i, value in enumerate(values):
        if value in missing:
            parsed.append(None)
            continue
        try:
            parsed.append(datetime.strptime(value, spec.format))
        except ValueError as exc:
            raise InputError(
                f"{raw.path}: column {spec.column!r}, line {raw.lines[i]} (data row {i + 1}): "
                f"{value[:40]!r} does not match the format {spec.format!r}"
            ) from exc
    return pd.Series(pd.to_datetime(parsed), dtype="datetime64[ns]")


def _label_values(raw: _RawFile, schema: Schema, values: list[str], missing: set[str]) -> None:
    for i, value in enumerate(values):
        if value in missing:
            raise InputError(
                f"{raw.path}: label column {schema.label!r}, line {raw.lines[i]} (data row {i + 1}): "
                f"missing label {value!r}"
            )


def _parse_file(raw: _RawFile, schema: Schema, label_optional: bool = False) -> pd.DataFrame:
    _check_columns(raw, schema, label_optional)
    missing = set(schema.missing_markers)
    by_name = {name: [row[j].strip() for row in raw.rows] for j, name in enumerate(raw.header)}
    labels = by_name.get(schema.label)
    if labels is not None:
        _label_values(raw, schema, labels, missing)
    out: dict[str, Any] = {}
    for column in schema.numeric:
        out[column] = _parse_numeric(raw, column, by_name[column], missing)
    for column in schema.categorical:
        out[column] = pd.Series([None if v in missing else v for v in by_name[column]], dtype=object)
    for spec in schema.timestamps:
        parsed = _parse_timestamp(raw, spec, by_name[spec.column], missing)
        if spec.derive == Derive.CALENDAR:
            out[spec.column] = parsed
    if labels is not None:
        out[schema.label] = pd.Series(labels, dtype=object)
    return pd.DataFrame(out)


def _binary_label(frame: pd.DataFrame, schema: Schema, where: str) -> pd.Series:
    values = sorted(set(frame[schema.label].tolist()))
    if len(values) > 2:
        raise InputError(
            f"{where}: label column {schema.label!r} is not binary: {len(values)} distinct values {values[:10]}"
        )
    if not schema.positive_values & set(values):
        raise InputError(
            f"{where}: label column {schema.label!r}: the positive value "
            f"{' or '.join(repr(v) for v in sorted(schema.positive_values))} never occurs (found {values})"
        )
    if len(values) == 1:
        raise InputError(
            f"{where}: label column {schema.label!r} has a single class only ({values[0]!r}); "
            "training needs frauds and non-frauds"
        )
    return frame[schema.label].isin(schema.positive_values).astype(np.int64)


def load_institution_csv(paths: str | Path | Sequence[str | Path], schema: Schema) -> pd.DataFrame:
    """Read an institution's CSV file(s), strictly, into a typed frame.

    Parameters
    ----------
    paths
        One CSV file or several (concatenated in the given order); each must
        have exactly the schema's columns, in any order.
    schema
        The federation's schema.

    Returns
    -------
    pandas.DataFrame
        Columns :attr:`Schema.kept_columns`: numeric as float64 (NaN when
        missing), categorical as text (``None`` when missing), calendar
        timestamps as ``datetime64[ns]`` (NaT when missing) and the label as
        int64 0/1. Identifier and dropped columns are gone. The index is
        ``0..n-1``.

    Raises
    ------
    InputError
        Naming the file and column (and line) for: an unreadable or empty
        file, a CSV parse error, unknown or missing columns (the label
        included), a missing label, a label that is not binary, lacks the
        positive value or has a single class, a non-numeric value in a
        numeric column, or a date not matching its format.
    """
    path_list = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not path_list:
        raise InputError("no CSV files given")
    frames = [_parse_file(_read_raw(path), schema) for path in path_list]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    where = ", ".join(str(p) for p in path_list)
    frame[schema.label] = _binary_label(frame, schema, where)
    return frame.loc[:, list(schema.kept_columns)]


class RowsToScore:
    """New rows to score with a trained model: one CSV file read with the federation's schema.

    The file must have the schema's columns, as for training
    (:func:`load_institution_csv`), except that the label column may be
    absent (rows whose outcome is not known yet). When it is present, every
    row needs a label, there may be at most two distinct values, and with
    two one of them must be the positive value; a single class is accepted
    (a day's rows may hold no fraud). The first of ``id_columns``, if the
    schema has one, is kept as the rows' identifier.

    The whole file is read and checked when the object is made; the values
    are parsed chunk by chunk (:meth:`chunks`), so a caller can show progress.

    Raises
    ------
    InputError
        Naming the file, column and line, as :func:`load_institution_csv`.
    """

    def __init__(self, path: str | Path, schema: Schema) -> None:
        self.schema = schema
        self._raw = _read_raw(Path(path))
        _check_columns(self._raw, schema, label_optional=True)
        self.path = self._raw.path
        #: Whether the file has the label column (then every row is labelled).
        self.labelled = schema.label in self._raw.header
        #: The identifier column kept in the output, or ``None``.
        self.id_column: str | None = schema.id_columns[0] if schema.id_columns else None
        if self.labelled:
            self._check_labels()

    def __len__(self) -> int:
        return len(self._raw.rows)

    def _check_labels(self) -> None:
        j = self._raw.header.index(self.schema.label)
        values = [row[j].strip() for row in self._raw.rows]
        _label_values(self._raw, self.schema, values, set(self.schema.missing_markers))
        distinct = sorted(set(values))
        where = f"{self.path}: label column {self.schema.label!r}"
        if len(distinct) > 2:
            raise InputError(f"{where} is not binary: {len(distinct)} distinct values {distinct[:10]}")
        if len(distinct) == 2 and not self.schema.positive_values & set(distinct):
            raise InputError(
                f"{where}: the positive value "
                f"{' or '.join(repr(v) for v in sorted(self.schema.positive_values))} never occurs "
                f"(found {distinct}), so fraud cannot be told from the rest"
            )

    def chunks(self, rows: int) -> Iterator[tuple[pd.DataFrame, list[str]]]:
        """Yield ``(frame, ids)`` for consecutive slices of at most ``rows`` rows.

        ``frame`` has the columns :attr:`Schema.kept_columns`, as
        :func:`load_institution_csv` returns them, ready for :func:`encode`;
        its label column holds 0/1, or 0 for every row of a file without
        labels (then it means nothing and must not be used). ``ids`` holds
        the identifier column's values as written in the file, or the data
        row numbers (1-based) when the schema has no identifier column.

        Raises
        ------
        ConfigError
            If ``rows`` is not a positive int.
        InputError
            Naming the file, column and line of the first value that does
            not parse.
        """
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise ConfigError(f"rows per chunk must be a positive int, got {rows!r}")
        raw = self._raw
        id_index = raw.header.index(self.id_column) if self.id_column is not None else None
        for start in range(0, len(raw.rows), rows):
            part = _RawFile(raw.path, raw.header, raw.rows[start : start + rows], raw.lines[start : start + rows])
            frame = _parse_file(part, self.schema, label_optional=True)
            if self.labelled:
                frame[self.schema.label] = frame[self.schema.label].isin(self.schema.positive_values).astype(np.int64)
            else:
                frame[self.schema.label] = np.zeros(len(frame), dtype=np.int64)
            if id_index is not None:
                ids = [row[id_index].strip() for row in part.rows]
            else:
                ids = [str(start + i + 1) for i in range(len(part.rows))]
            yield frame.loc[:, list(self.schema.kept_columns)], ids


def check_institution_data(schema: Schema, files: Mapping[str, Sequence[str | Path]]) -> dict[str, int]:
    """Read every institution's files as the federation will, before any round.

    Every file is parsed strictly (:func:`load_institution_csv`: columns,
    values, label); then the numeric columns must hold a value somewhere.
    Every problem of every institution is collected and reported at once.

    Returns
    -------
    dict
        ``{"<institution>: <file>": rows}`` for every file that reads.

    Raises
    ------
    InputError
        Listing each problem with its institution, file, column and line.
    """
    problems: list[str] = []
    rows: dict[str, int] = {}
    filled: set[str] = set()
    for institution, paths in files.items():
        for path in paths:
            try:
                frame = load_institution_csv(path, schema)
            except InputError as exc:
                problems.append(f"{institution}: {exc}")
                continue
            rows[f"{institution}: {path}"] = len(frame)
            filled.update(c for c in schema.numeric if frame[c].notna().any())
    empty = [c for c in schema.numeric if c not in filled]
    if rows and empty:
        problems.append(
            f"numeric column(s) {', '.join(map(repr, empty))} hold no value in any institution's "
            "files: list them under drop_columns in the schema"
        )
    if problems:
        raise InputError(
            f"{len(problems)} data problem(s), found before any round:\n  " + "\n  ".join(problems)
        )
    return rows


def train_test_split(
    frame: pd.DataFrame, schema: Schema, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a loaded frame into train and test, stratified by label, deterministically.

    A seeded ``numpy`` generator picks ``round(test_fraction * n_class)``
    rows of each class for the test part (this is data handling, not a
    security path). Both parts keep the frame's row order and get a fresh
    ``0..n-1`` index; ``frame`` is not modified.

    Raises
    ------
    ConfigError
        If ``test_fraction`` is not in (0, 1) or ``seed`` is negative.
    InputError
        If the label column is missing or either part would lack a class.
    """
    if not isinstance(test_fraction, float | int) or not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if schema.label not in frame.columns:
        raise InputError(f"frame has no label column {schema.label!r}")
    labels = frame[schema.label].to_numpy()
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(frame), dtype=bool)
    for value in (0, 1):
        idx = np.flatnonzero(labels == value)
        n_test = int(round(len(idx) * float(test_fraction)))
        if n_test == 0 or n_test == len(idx):
            raise InputError(
                f"class {value} has {len(idx)} rows: too few to put some in both train and test "
                f"at test_fraction {test_fraction}"
            )
        test_mask[rng.permutation(idx)[:n_test]] = True
    return frame[~test_mask].reset_index(drop=True), frame[test_mask].reset_index(drop=True)


def institution_id(value: str) -> str:
    """A valid institution id (policy slug) for a split value: ``All Perils`` -> ``all-perils``.

    Lower-cased; every run of characters other than letters and digits
    becomes one ``-``; a result shorter than 2 characters gets the prefix
    ``inst-``; at most 48 characters.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    if len(slug) < 2:
        slug = f"inst-{slug}".strip("-") if slug else "inst"
        slug = slug if len(slug) >= 2 else "inst"
    return slug[:48].strip("-")


def stream_csv_rows(path: Path) -> Iterator[tuple[list[str], list[str], int]]:
    """Read a CSV file one row at a time: ``(header, row, line)`` per data row.

    The same checks as the whole-file reader (UTF-8, strict CSV, a header
    without duplicates, every row as wide as the header, at least one row),
    with the file never held in memory: a bank's multi-gigabyte export is
    split in constant memory. Blank lines are skipped.

    Raises
    ------
    InputError
        Naming the file and line of the first problem.
    """
    try:
        handle = path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(handle, strict=True)
        try:
            first = next(reader, None)
            if first is None or not any(cell.strip() for cell in first):
                raise InputError(f"{path}: empty file (no header, no rows)")
            header = [h.strip() for h in first]
            duplicates = sorted({h for h in header if header.count(h) > 1})
            if duplicates:
                raise InputError(f"{path}: duplicate column names in the header: {duplicates}")
            previous = reader.line_num
            seen = False
            for row in reader:
                start, previous = previous + 1, reader.line_num
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise InputError(
                        f"{path}: CSV parse error at line {start}: expected {len(header)} "
                        f"fields as in the header, found {len(row)}"
                    )
                seen = True
                yield header, row, start
        except csv.Error as exc:
            raise InputError(f"{path}: CSV parse error at line {reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text (near line {reader.line_num + 1})") from exc
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    if not seen:
        raise InputError(f"{path}: no data rows after the header")


class _AtomicCsvFiles:
    """CSV files written row by row to temporary files, renamed into place together.

    Nothing is left behind on an error: either every file is complete or
    none of the temporary files remains.
    """

    def __init__(self, header: list[str]) -> None:
        self.header = header
        self._open: dict[Path, tuple[Any, Any, str]] = {}

    def _entry(self, path: Path) -> tuple[Any, Any, str]:
        entry = self._open.get(path)
        if entry is None:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(self.header)
            entry = self._open[path] = (handle, writer, tmp)
        return entry

    def start(self, path: Path) -> None:
        """Make sure ``path`` is written, with its header, even if it gets no row."""
        self._entry(path)

    def writerow(self, path: Path, row: list[str]) -> None:
        self._entry(path)[1].writerow(row)

    def commit(self) -> None:
        for path, (handle, _, tmp) in self._open.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp, path)
        self._open.clear()

    def discard(self) -> None:
        for handle, _, tmp in self._open.values():
            handle.close()
            Path(tmp).unlink(missing_ok=True)
        self._open.clear()


def split_by_column(
    csv_path: str | Path, column: str, out_dir: str | Path, mapping: dict[str, str] | None = None
) -> dict[str, Path]:
    """Split one CSV file into one file per value of ``column`` (for demos of several institutions).

    Every output file keeps all columns and the header, rows in their
    original order. Files are named after the value's institution id
    (:func:`institution_id`: ``OH`` -> ``oh.csv``, ``All Perils`` ->
    ``all-perils.csv``), and written atomically (temporary files, renamed
    once the whole input has been read). The input is streamed, never held
    in memory. ``mapping``, if given, receives ``{value: institution id}``.

    Returns
    -------
    dict
        ``{name: path}`` with names sorted.

    Raises
    ------
    InputError
        If the file cannot be parsed, ``column`` is not in its header, a
        value is empty, or two values map to the same name (no file written).
    """
    path = Path(csv_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    origin: dict[str, str] = {}
    files: _AtomicCsvFiles | None = None
    j = -1
    try:
        for header, row, line in stream_csv_rows(path):
            if files is None:
                if column not in header:
                    raise InputError(f"{path}: no column {column!r} to split on (columns: {header})")
                j = header.index(column)
                files = _AtomicCsvFiles(header)
            value = row[j].strip()
            if not value:
                raise InputError(f"{path}: column {column!r}, line {line}: empty value, cannot name an institution")
            name = institution_id(value)
            if origin.setdefault(name, value) != value:
                raise InputError(f"{path}: values {origin[name]!r} and {value!r} of {column!r} both map to {name!r}")
            files.writerow(out / f"{name}.csv", row)
        assert files is not None  # stream_csv_rows raises on a file without rows
        files.commit()
    except BaseException:
        if files is not None:
            files.discard()
        raise
    if mapping is not None:
        mapping.update({value: name for name, value in origin.items()})
    return {name: out / f"{name}.csv" for name in sorted(origin)}


def split_train_test_rows(
    csv_path: Path, label: str, out: Path, rng: np.random.Generator, test_fraction: float = 0.3,
    source: Path | None = None,
) -> None:
    """Split one institution's CSV into ``out/train.csv`` and ``out/test.csv``, streamed.

    Stratified by ``label`` (for each label value, in sorted order, a seeded
    choice of ``round(test_fraction * count)`` rows goes to the test split);
    rows keep their original text and order. Two passes over the file: the
    first keeps only each row's label, the second writes the rows.
    """
    labels: list[str] = []
    j = -1
    for header, row, _ in stream_csv_rows(csv_path):
        if j < 0:
            if label not in header:
                raise InputError(f"{source or csv_path}: label column {label!r} not found")
            j = header.index(label)
        labels.append(row[j])
    values = np.asarray(labels, dtype=object)
    del labels
    test = np.zeros(len(values), dtype=bool)
    for value in sorted(set(values.tolist())):
        rows = np.flatnonzero(values == value)
        chosen = rng.choice(rows, size=round(test_fraction * len(rows)), replace=False)
        test[chosen] = True
    out.mkdir(parents=True, exist_ok=True)
    files: _AtomicCsvFiles | None = None
    try:
        for i, (header, row, _) in enumerate(stream_csv_rows(csv_path)):
            if files is None:
                files = _AtomicCsvFiles(header)
                for split in ("train.csv", "test.csv"):
                    files.start(out / split)  # both exist, even if one is empty
            files.writerow(out / ("test.csv" if test[i] else "train.csv"), row)
        assert files is not None
        files.commit()
    except BaseException:
        if files is not None:
            files.discard()
        raise


def _write_atomic(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------
# Federated numeric statistics
# ---------------------------------------------------------------------------


def signed_log1p(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return ``sign(x) * log1p(|x|)`` (NaN stays NaN); the fixed numeric transform."""
    x = np.asarray(values, dtype=np.float64)
    out: npt.NDArray[np.float64] = np.sign(x) * np.log1p(np.abs(x))
    return out


@dataclass(frozen=True)
class NumericStats:
    """Summable sufficient statistics of the transformed numeric columns.

    Parameters
    ----------
    columns
        The schema's numeric columns, in schema order.
    n_rows
        Number of rows.
    count, total, total_sq
        Per column: non-missing values, their sum and their sum of squares
        (of ``signed_log1p`` values), float64 arrays of ``len(columns)``.
    """

    columns: tuple[str, ...]
    n_rows: float
    count: npt.NDArray[np.float64]
    total: npt.NDArray[np.float64]
    total_sq: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        """Check shapes and values once; store read-only copies."""
        k = len(self.columns)
        for name in ("count", "total", "total_sq"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != (k,) or not np.all(np.isfinite(arr)):
                raise InputError(f"NumericStats.{name} must be {k} finite numbers, got shape {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if not math.isfinite(self.n_rows) or self.n_rows < 0:
            raise InputError(f"NumericStats.n_rows must be >= 0, got {self.n_rows!r}")
        if np.any(self.count < 0) or np.any(self.count > self.n_rows + 1e-6) or np.any(self.total_sq < 0):
            raise InputError("NumericStats: counts must lie in [0, n_rows] and sums of squares be >= 0")

    def __add__(self, other: NumericStats) -> NumericStats:
        """Sum two institutions' statistics (same columns required)."""
        if not isinstance(other, NumericStats):
            return NotImplemented
        if other.columns != self.columns:
            raise ConfigError(f"cannot add statistics of different columns: {self.columns} vs {other.columns}")
        return NumericStats(
            self.columns,
            self.n_rows + other.n_rows,
            self.count + other.count,
            self.total + other.total,
            self.total_sq + other.total_sq,
        )

    def to_vector(self) -> npt.NDArray[np.float64]:
        """Return ``[n_rows, count..., total..., total_sq...]`` (length ``1 + 3k``), for a secure sum."""
        return np.concatenate([[self.n_rows], self.count, self.total, self.total_sq]).astype(np.float64)

    @classmethod
    def from_vector(cls, columns: Sequence[str], vector: npt.ArrayLike) -> NumericStats:
        """Inverse of :meth:`to_vector` (e.g. applied to a secure sum of vectors)."""
        v = np.asarray(vector, dtype=np.float64)
        k = len(columns)
        if v.shape != (1 + 3 * k,):
            raise InputError(f"statistics vector must have length {1 + 3 * k}, got shape {v.shape}")
        return cls(tuple(columns), float(v[0]), v[1 : 1 + k], v[1 + k : 1 + 2 * k], v[1 + 2 * k :])


def local_numeric_stats(frame: pd.DataFrame, schema: Schema) -> NumericStats:
    """Compute this institution's :class:`NumericStats` (the only thing its numeric columns contribute).

    Raises
    ------
    InputError
        If a numeric column is missing, non-numeric or out of range.
    """
    t = _transformed(frame, schema)
    present = ~np.isnan(t)
    filled = np.where(present, t, 0.0)
    return NumericStats(
        tuple(schema.numeric),
        float(len(frame)),
        present.sum(axis=0).astype(np.float64),
        filled.sum(axis=0),
        (filled * filled).sum(axis=0),
    )


def _transformed(frame: pd.DataFrame, schema: Schema) -> npt.NDArray[np.float64]:
    """Return ``signed_log1p`` of the numeric columns, shape ``[n, k]``, NaN where missing."""
    missing = [c for c in schema.numeric if c not in frame.columns]
    if missing:
        raise InputError(f"frame is missing numeric columns: {missing}")
    out = np.empty((len(frame), len(schema.numeric)), dtype=np.float64)
    for j, column in enumerate(schema.numeric):
        series = frame[column]
        coerced = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(coerced) & series.notna().to_numpy() | np.isinf(coerced))
        if bad.size:
            raise InputError(
                f"column {column!r}, data row {int(bad[0]) + 1}: {series.iloc[bad[0]]!r} is not a finite number"
            )
        t = signed_log1p(coerced)
        if np.any(np.abs(t[~np.isnan(t)]) > MAX_TRANSFORMED):
            raise InputError(f"column {column!r} has values too large (|x| > 6e27)")
        out[:, j] = t
    return out


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """The agreed encoding: global means/stds of the numeric columns and the feature layout.

    Build it with :meth:`from_stats` from the federation's summed statistics.
    """

    schema_fingerprint: str
    numeric_mean: tuple[float, ...]
    numeric_std: tuple[float, ...]
    feature_names: tuple[str, ...]
    format: str = SPEC_FORMAT

    @classmethod
    def from_stats(cls, schema: Schema, stats: NumericStats) -> FeatureSpec:
        """Derive the spec from summed statistics (population std; a constant column gets std 1).

        Raises
        ------
        ConfigError
            If the statistics are for other columns.
        InputError
            Naming a numeric column with no value at any institution.
        """
        if stats.columns != tuple(schema.numeric):
            raise ConfigError(f"statistics are for columns {stats.columns}, the schema has {tuple(schema.numeric)}")
        empty = [c for c, n in zip(schema.numeric, stats.count, strict=True) if n <= 0]
        if empty:
            raise InputError(f"numeric columns with no value in any institution's data: {empty}")
        mean = stats.total / stats.count
        var = np.maximum(stats.total_sq / stats.count - mean * mean, 0.0)
        std = np.sqrt(var)
        std = np.where(std > 1e-9, std, 1.0)
        return cls(
            schema.fingerprint(),
            tuple(float(m) for m in mean),
            tuple(float(s) for s in std),
            feature_names(schema),
        )

    @property
    def n_features(self) -> int:
        """Width of ``X``."""
        return len(self.feature_names)


def feature_names(schema: Schema) -> tuple[str, ...]:
    """Return the model-input names, in the column order of ``X`` (depends on the schema only)."""
    names: list[str] = list(schema.numeric)
    names += [f"{c}__missing" for c in schema.numeric]
    for column, vocabulary in schema.categorical.items():
        names += [f"{column}={v}" for v in (*vocabulary, OTHER, MISSING)]
    for spec in schema.timestamps:
        if spec.derive == Derive.CALENDAR:
            names += [f"{spec.column}__{p}" for p in ("dow_sin", "dow_cos", "month_sin", "month_cos", "missing")]
    return tuple(names)


def encode(
    frame: pd.DataFrame, schema: Schema, spec: FeatureSpec
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Turn a loaded (or synthetic) frame into model inputs and labels.

    Parameters
    ----------
    frame
        As returned by :func:`load_institution_csv` (columns
        :attr:`Schema.kept_columns`); not modified.
    schema, spec
        The federation's schema and the spec derived from its summed statistics.

    Returns
    -------
    X : numpy.ndarray
        float32, shape ``[n, spec.n_features]``, C-contiguous, all values in [-5, 5].
    y : numpy.ndarray
        float32 labels in {0, 1}.

    Raises
    ------
    ConfigError
        If ``spec`` was made for another schema.
    InputError
        Naming missing columns, a non-numeric value, or a label not 0/1.
    """
    if spec.format != SPEC_FORMAT or spec.schema_fingerprint != schema.fingerprint():
        raise ConfigError("the feature spec was made for another schema (fingerprints differ)")
    absent = [c for c in schema.kept_columns if c not in frame.columns]
    if absent:
        raise InputError(f"frame is missing columns: {absent}")
    n = len(frame)
    blocks: list[npt.NDArray[np.float64]] = []

    # 1. Numeric: fixed transform, global standardization, clip; missing -> 0 plus indicator.
    t = _transformed(frame, schema)
    missing = np.isnan(t)
    z = (t - np.asarray(spec.numeric_mean)) / np.asarray(spec.numeric_std)
    blocks.append(np.clip(np.where(missing, 0.0, z), -CLIP, CLIP))
    blocks.append(missing.astype(np.float64))

    # 2. Categorical: one-hot over the schema's vocabulary, then __other__ and __missing__.
    for column, vocabulary in schema.categorical.items():
        values = frame[column]
        absent_mask = values.isna().to_numpy()
        text = values.astype(object).where(~values.isna(), None).map(lambda v: None if v is None else str(v))
        codes = np.full(n, len(vocabulary), dtype=np.int64)  # __other__
        for k, value in enumerate(vocabulary):
            codes[(text == value).to_numpy()] = k
        codes[absent_mask] = len(vocabulary) + 1
        one_hot = np.zeros((n, len(vocabulary) + 2), dtype=np.float64)
        one_hot[np.arange(n), codes] = 1.0
        blocks.append(one_hot)

    # 3. Calendar features of timestamps; missing -> zeros plus indicator.
    for ts in schema.timestamps:
        if ts.derive != Derive.CALENDAR:
            continue
        stamps = pd.to_datetime(frame[ts.column], errors="coerce")
        bad = stamps.isna().to_numpy() & frame[ts.column].notna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"column {ts.column!r}, data row {row + 1}: {frame[ts.column].iloc[row]!r} is not a date")
        absent_ts = stamps.isna().to_numpy()
        dow = np.nan_to_num(stamps.dt.dayofweek.to_numpy(dtype=np.float64))
        month = np.nan_to_num(stamps.dt.month.to_numpy(dtype=np.float64)) - 1.0
        cal = np.stack(
            [
                np.sin(2 * np.pi * dow / 7),
                np.cos(2 * np.pi * dow / 7),
                np.sin(2 * np.pi * month / 12),
                np.cos(2 * np.pi * month / 12),
            ],
            axis=1,
        )
        cal[absent_ts] = 0.0
        blocks.append(np.concatenate([cal, absent_ts[:, None].astype(np.float64)], axis=1))

    X = np.ascontiguousarray(np.concatenate(blocks, axis=1).astype(np.float32))
    y_raw = pd.to_numeric(frame[schema.label], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all((y_raw == 0.0) | (y_raw == 1.0)):
        raise InputError(f"label column {schema.label!r} must hold 0/1 (load the CSV with load_institution_csv)")
    if X.shape[1] != spec.n_features:
        raise ConfigError(f"encoded {X.shape[1]} features, the spec has {spec.n_features}")
    return X, y_raw.astype(np.float32)
