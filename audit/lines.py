"""Reading a JSON-lines audit log: one file reader and one line splitter for every reader.

The writer (:mod:`audit.log`), the verifier (:mod:`audit.verify`) and the
display summary (:mod:`audit.summary`) all split a log with
:func:`split_lines`; each decides for itself what a torn last line means
(the writer refuses to append, the verifier reports TAMPERED, the summary
shows what it can).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import NamedTuple

from .errors import AuditInputError

__all__ = ["MAX_LOG_BYTES", "Line", "split_lines", "read_regular_file"]

#: Largest log file the verifier reads (it holds the file in memory).
MAX_LOG_BYTES = 4 * 2**30


class Line(NamedTuple):
    """One line of a log file.

    Attributes
    ----------
    number : int
        1-based line number.
    offset : int
        Byte offset of the line's first byte in the file.
    data : bytes
        The line without its terminating newline.
    """

    number: int
    offset: int
    data: bytes


def split_lines(data: bytes) -> tuple[list[Line], Line | None]:
    """Split a log file's bytes into its newline-terminated lines.

    Returns
    -------
    lines : list of Line
        Every newline-terminated line, empty ones included, in file order.
    torn : Line or None
        The bytes after the last newline, if there are any: a line whose
        write was interrupted or that was cut (never a record to trust).
    """
    lines: list[Line] = []
    offset, number, length = 0, 0, len(data)
    while offset < length:
        number += 1
        end = data.find(b"\n", offset)
        if end < 0:
            return lines, Line(number, offset, data[offset:])
        lines.append(Line(number, offset, data[offset:end]))
        offset = end + 1
    return lines, None


def read_regular_file(path: Path, what: str, limit: int = MAX_LOG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or AuditInputError (exit 3).

    Devices (``/dev/zero``), FIFOs and sockets are refused before they are
    opened, so the verifier never blocks on them or reads without bound.

    Raises
    ------
    AuditInputError
        If the file cannot be read, is not a regular file or is larger than ``limit``.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise AuditInputError(f"{path}: {what} is not a regular file (a device, FIFO or folder)")
    if info.st_size > limit:
        raise AuditInputError(f"{path}: {what} is {info.st_size} bytes, more than the {limit} accepted")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    if len(data) > limit:
        raise AuditInputError(f"{path}: {what} grew beyond the {limit} bytes accepted while read")
    return data
