"""Bring your own data, reading: an institution's CSV files checked against the :class:`~fraud.byo_schema.Schema`.

* :func:`load_institution_csv` reads an institution's training file(s) into a
  typed frame;
* :class:`RowsToScore` reads new rows to score (the label may be absent);
* :func:`check_institution_data` reads every institution's files before any
  round and reports every problem at once;
* :func:`train_test_split` splits a loaded frame, stratified by label.

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
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import ConfigError, InputError
from fraud.byo_schema import Derive, Schema, TimestampColumn
from fraud.byo_stats import MAX_TRANSFORMED, signed_log1p

MAX_BYTES = 512 * 1024 * 1024
"""Largest CSV file read (bytes)."""


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
        Columns :attr:`~fraud.byo_schema.Schema.kept_columns`: numeric as float64 (NaN when
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

        ``frame`` has the columns :attr:`~fraud.byo_schema.Schema.kept_columns`, as
        :func:`load_institution_csv` returns them, ready for :func:`~fraud.byo_encode.encode`;
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
