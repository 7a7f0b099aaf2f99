"""Bring your own data, the schema: the shared description of an institution's CSV files.

An institution points fedfraud at its own CSV file(s) and a small
:class:`Schema` (a TOML table, validated strictly; :func:`load_schema`,
:func:`schema_from_toml`, :func:`builtin_schema` for the schemas shipped in
``fraud/schemas/``). All institutions of a federation use **one** schema;
:func:`compare_schemas` names every column that differs and for which
institution, and :meth:`Schema.fingerprint` lets them agree on it beforehand.

Roles of the columns (every CSV column must have exactly one):

* ``label`` with ``positive_label`` (read as text, e.g. ``"Y"``); any other
  single value is the negative class.
* ``id_columns``: identifiers and near-identifiers (policy numbers, zip codes,
  addresses). Read, never model inputs, never kept in the loaded frame; a
  schema that also lists one of them as a feature is refused.
* ``drop_columns``: other columns deliberately not used (empty trailing
  columns, the column institutions were split on, ...).
* ``numeric``: numbers; transformed and standardized with federation-wide
  statistics (:mod:`fraud.byo_stats`).
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

The other bring-your-own-data modules: :mod:`fraud.byo_read` (reading CSV
files against a schema), :mod:`fraud.byo_split` (splitting one CSV file into
institutions' files), :mod:`fraud.byo_stats` (federated numeric statistics)
and :mod:`fraud.byo_encode` (rows to model features).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator, model_validator

from core.errors import ConfigError, InputError

SCHEMA_FORMAT = "fedfraud-byo-schema/1"
"""Format marker every schema carries."""

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
"""Schemas shipped with fedfraud (e.g. ``insurance_claims.toml``)."""

OTHER = "__other__"
MISSING = "__missing__"

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
