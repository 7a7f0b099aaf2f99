"""What data a run trains on: the built-in generator's, or an institution's own.

``data-format = "builtin"`` uses the generator's transactions, whose features
are fixed transforms (:mod:`fraud.features`). ``data-format = "byo"`` uses each
institution's own CSV files read with the federation's **schema**
(:mod:`fraud.byo_schema`): a copy in every institution's site folder, and the
server's copies in its own folder (both placed as :mod:`core.layout`
says). All institutions must share one schema (checked before the run, naming
the columns that differ), and the numeric scaling is agreed from securely
summed statistics, never per site.

Policies speak of *columns*: for a BYO run the features a policy must allow
are the schema's model columns, named in lowercase snake_case
(``capital-gains`` becomes ``capital_gains``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from core.errors import ConfigError, ProtocolError


class DataFormat(str, Enum):
    """Where a run's data comes from."""

    BUILTIN = "builtin"
    BYO = "byo"


def policy_name(column: str) -> str:
    """A column's name as policies write it (lowercase snake_case)."""
    name = re.sub(r"[^a-z0-9_]+", "_", column.strip().lower()).strip("_")
    return name if name and name[0].isalpha() else f"c_{name}"


def server_schema(copies: Mapping[str, Path]) -> object:
    """Load the server's schema copies, check they agree, return the shared schema.

    ``copies`` maps each institution, in the run's order, to the server's copy
    of its schema (:meth:`core.layout.ServerLayout.schema`); the shared
    schema is the first institution's copy.
    """
    from fraud.byo_schema import compare_schemas, load_schema

    missing = [i for i, path in copies.items() if not path.is_file()]
    if missing:
        raise ConfigError(
            f"the server has no schema for {', '.join(missing)} in {copies[missing[0]].parent}"
        )
    schemas = {i: load_schema(path) for i, path in copies.items()}
    compare_schemas(schemas)
    return schemas[list(copies)[0]]


def model_columns(schema: object) -> tuple[str, ...]:
    """The schema's columns that feed the model, as policies name them."""
    from fraud.byo_schema import Derive, Schema

    if not isinstance(schema, Schema):
        raise ConfigError("not a fedfraud schema")
    calendar = [t.column for t in schema.timestamps if t.derive == Derive.CALENDAR]
    kept = [*schema.numeric, *schema.categorical, *calendar]
    return tuple(policy_name(c) for c in kept)


def spec_to_text(spec: object) -> str:
    """Serialize a :class:`fraud.byo_encode.FeatureSpec` for the fit and evaluation configs."""
    return json.dumps(
        {
            "schema_fingerprint": spec.schema_fingerprint,  # type: ignore[attr-defined]
            "numeric_mean": list(spec.numeric_mean),  # type: ignore[attr-defined]
            "numeric_std": list(spec.numeric_std),  # type: ignore[attr-defined]
            "feature_names": list(spec.feature_names),  # type: ignore[attr-defined]
        },
        sort_keys=True,
    )


def spec_from_text(text: object) -> Any:
    """Parse :func:`spec_to_text` output strictly (ProtocolError otherwise)."""
    from fraud.byo_encode import FeatureSpec

    if not isinstance(text, str) or not text:
        raise ProtocolError("a bring-your-own-data round needs the agreed feature spec")
    try:
        data = json.loads(text)
        return FeatureSpec(
            schema_fingerprint=str(data["schema_fingerprint"]),
            numeric_mean=tuple(float(v) for v in data["numeric_mean"]),
            numeric_std=tuple(float(v) for v in data["numeric_std"]),
            feature_names=tuple(str(v) for v in data["feature_names"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError("the feature spec is malformed") from exc
