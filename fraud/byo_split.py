"""Bring your own data, splitting: one CSV file into institutions' files, streamed and atomic.

For demos and benchmarks of several institutions from one file:
:func:`split_by_column` writes one file per value of a column (named by
:func:`institution_id`), :func:`split_train_test_rows` one institution's
``train.csv`` and ``test.csv``. Both stream the input
(:func:`stream_csv_rows`), never holding it in memory, and write their
outputs atomically: every file complete, or none left behind.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

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
