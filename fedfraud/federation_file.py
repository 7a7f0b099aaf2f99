"""The federation file: who is in a production federation, and where its SuperLink is.

``fedfraud provision`` and ``fedfraud deployment`` read one TOML file (see
``federation.example.toml``): the federation's id and SuperLink address,
optionally its schema (bring-your-own data), and each institution's id, data
folder and policy. :func:`load_federation` validates it and resolves its paths
against the file's folder; every error names the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError, InputError

_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")


class InstitutionSpec(BaseModel):
    """One institution of the federation file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str
    data_dir: str = Field(min_length=1)
    policy: str | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_PATTERN.fullmatch(value):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits and '-', "
                f"starting with a letter or digit; found {value!r}"
            )
        return value


class FederationSection(BaseModel):
    """The ``[federation]`` table.

    ``schema``: the federation's schema for bring-your-own data (a path,
    relative to the federation file). Without it the institutions train on
    the built-in generator's transactions.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str
    superlink: str
    schema_file: str | None = Field(default=None, alias="schema", min_length=1)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_PATTERN.fullmatch(value):
            raise ValueError(f"must match {_ID_PATTERN.pattern}; found {value!r}")
        return value

    @field_validator("superlink")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_address(value)
        return value


class FederationFile(BaseModel):
    """The whole federation file (``schema_version = 1``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: int
    federation: FederationSection
    institutions: list[InstitutionSpec] = Field(min_length=2)

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"only schema_version 1 exists; found {value}")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> FederationFile:
        seen: set[str] = set()
        for spec in self.institutions:
            if spec.id in seen:
                raise ValueError(f"institution id {spec.id!r} appears more than once")
            seen.add(spec.id)
        return self


@dataclass(frozen=True)
class Institution:
    """An institution with its paths resolved against the federation file."""

    id: str
    data_dir: Path
    policy: Path | None


@dataclass(frozen=True)
class Federation:
    """A validated federation file."""

    source: Path
    id: str
    superlink_host: str
    superlink_port: int
    institutions: tuple[Institution, ...]
    schema: Path | None = None
    """The shared schema of a bring-your-own-data federation (None: built-in data)."""

    @property
    def names(self) -> list[str]:
        """The institution ids, in file order."""
        return [inst.id for inst in self.institutions]


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv4, ``[IPv6]`` or a DNS name); raise ValueError."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"must be host:port, found {address!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, found {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def load_federation(path: Path) -> Federation:
    """Read and validate a federation file; errors name the file and field.

    Raises
    ------
    InputError
        If the file cannot be read or is not TOML.
    ConfigError
        If a field is missing, unknown or invalid.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read federation file ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    try:
        parsed = FederationFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(
                _field_name(raw, error["loc"][: i + 1]) for i in range(len(error["loc"]))
            ).replace(".[", "[")
            problems.append(f"  {where or '(top level)'}: {error['msg']}")
        raise ConfigError(f"{path}: invalid federation file\n" + "\n".join(problems)) from None
    base = path.resolve().parent
    host, port = split_address(parsed.federation.superlink)
    schema = (base / parsed.federation.schema_file).resolve() if parsed.federation.schema_file else None
    return Federation(
        source=path.resolve(),
        id=parsed.federation.id,
        superlink_host=host,
        superlink_port=port,
        schema=schema,
        institutions=tuple(
            Institution(
                id=spec.id,
                data_dir=(base / spec.data_dir).resolve(),
                policy=(base / spec.policy).resolve() if spec.policy else None,
            )
            for spec in parsed.institutions
        ),
    )


def _field_name(raw: Any, loc: Sequence[Any]) -> str:
    """Render one step of a pydantic error location; list items by their id."""
    key = loc[-1]
    if isinstance(key, int):
        parent: Any = raw
        for step in loc[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                return f"[{key}]"
        try:
            item = parent[key]
        except (KeyError, IndexError, TypeError):
            return f"[{key}]"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            return f"[{key}] (id {item['id']!r})"
        return f"[{key}]"
    return str(key)
