"""``fedfraud data check``: an institution's files against the federation's schema, before any round.

Every problem is found here, on the console, with file, column and line,
instead of tens of seconds into a federation where the institution would
only drop out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.errors import InputError
from core.layout import DataLayout

app = typer.Typer(help="Check data files against a schema before any round.", no_args_is_help=True,
                  add_completion=False)
console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)


def files_of(entry: str) -> tuple[str, list[Path]]:
    """``NAME=PATH`` (a CSV file, or a folder with train.csv and test.csv) -> (name, files).

    Raises
    ------
    InputError
        If the entry is malformed or names no readable file.
    """
    name, sep, path_text = entry.partition("=")
    if not sep or not name or not path_text:
        raise InputError(f"{entry!r}: expected NAME=PATH (a CSV file or a folder with train.csv, test.csv)")
    path = Path(path_text)
    if path.is_dir():
        found = [p for p in DataLayout(path).splits if p.is_file()]
        if not found:
            raise InputError(f"{path}: no train.csv or test.csv in this folder")
        return name, found
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    return name, [path]


@app.command("check")
def check_command(
    schema: Annotated[Path, typer.Option("--schema", help="The federation's schema (TOML).")],
    institutions: Annotated[
        list[str], typer.Argument(help="NAME=PATH, PATH a CSV file or a folder with train.csv/test.csv.")
    ],
) -> None:
    """Read every file as the federation will; list every problem, or the rows per file.

    Example: fedfraud data check --schema schema.toml bank-a=/srv/data/bank-a
    (a folder with train.csv and test.csv, or one CSV file). Exit 3 lists
    every problem with its institution, file, column and line.
    """
    from fraud.byo_read import check_institution_data
    from fraud.byo_schema import load_schema

    parsed = load_schema(schema)
    files: dict[str, list[Path]] = {}
    for entry in institutions:
        name, paths = files_of(entry)
        files.setdefault(name, []).extend(paths)
    rows = check_institution_data(parsed, files)
    for where, count in rows.items():
        console.print(f"ok  {where}: {count} rows")
    console.print(f"{len(rows)} file(s) of {len(files)} institution(s) fit {schema}")
