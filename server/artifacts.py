"""What a finished run leaves for the institutions to use: the scoring file and the model card.

Flower-free: the round loop hands over what it learned (the final model, the
agreed feature spec, the round records, the policies, the closed audit log)
and this module writes ``scoring.json`` (:mod:`fraud.scoring`) and
``model_card.json`` / ``model_card.md`` (:mod:`server.model_card`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from core import __version__
from fraud.datasets import DataFormat
from server.model_card import (
    AuditFacts,
    PolicyFacts,
    build_model_card,
    render_markdown,
)
from fraud.scoring import (
    SCORING_FORMAT,
    GbdtModelRecord,
    SchemaCopy,
    ScoringFile,
    ThresholdRecord,
    model_record,
)
from core.layout import GBDT_FILE, GBDT_SCORER_FILE, MODEL_CARD_JSON, MODEL_CARD_MD, SCORING_FILE, WEIGHTS_FILE, ServerLayout
from federation.settings import Aggregation, ModelKind, RunSettings
from policy import Policy

from .rundir import RunDirectory


def scoring_file(
    settings: RunSettings,
    model: Any,
    final_hash: str,
    feature_spec: str,
    rounds: Sequence[Mapping[str, Any]],
    flower_run_id: int,
    gbdt_trees: int = 0,
) -> ScoringFile | None:
    """The run's scoring file, or ``None`` if no round chose a threshold (or no spec was agreed).

    Parameters
    ----------
    model
        A :class:`fraud.model.FraudMLP` of the run's layout (its weights are
        not used: the file records the layout and the final model's hash).
    feature_spec
        The agreed feature spec's text (bring-your-own data), else ``""``.
    rounds
        The round records, as in ``rounds.jsonl``; the last one with a
        threshold gives the operating threshold.
    flower_run_id
        Flower's run id, which names an institution's ckks model file.
    """
    chosen = [r for r in rounds if r.get("threshold") is not None]
    byo = settings.data_format is DataFormat.BYO
    if not chosen or (byo and not feature_spec):
        return None
    last = chosen[-1]
    if settings.model is ModelKind.GBDT:
        file, held_by = GBDT_FILE, f"the run directory ({GBDT_FILE}; {GBDT_SCORER_FILE} scores it with numpy alone)"
    elif settings.aggregation is Aggregation.CKKS:
        cohort: list[str] = next((list(r["cohort"]) for r in reversed(rounds) if r.get("accepted")), [])
        file, held_by = None, (
            "each institution that took part in the last aggregated round "
            f"({', '.join(cohort) or 'none'}), in its own site folder: "
            f"state/ckks-model-{flower_run_id}.npz; the server holds none"
        )
    else:
        file, held_by = WEIGHTS_FILE, f"the run directory ({WEIGHTS_FILE}, also model.pt)"
    if byo:
        from fraud.byo_encode import feature_names
        from fraud.byo_schema import load_schema

        source = ServerLayout(settings.server_dir).schema(settings.institutions[0])
        schema = load_schema(source)
        schema_copy: SchemaCopy | None = SchemaCopy(
            toml=source.read_text(encoding="utf-8"), fingerprint=schema.fingerprint(), source=str(source)
        )
        features = feature_names(schema)
        label, id_column = schema.label, (schema.id_columns[0] if schema.id_columns else None)
        spec: dict[str, Any] | None = json.loads(feature_spec)
    else:
        from fraud.features import FEATURE_COLUMNS, ID_COLUMNS, LABEL_COLUMN

        schema_copy, spec = None, None
        features, label, id_column = FEATURE_COLUMNS, LABEL_COLUMN, ID_COLUMNS[0]
    return ScoringFile(
        format=SCORING_FORMAT,
        run_name=settings.run_name,
        federation_id=settings.federation_id,
        fedfraud_version=__version__,
        aggregation=settings.aggregation.value,
        data_format=settings.data_format,
        byo_schema=schema_copy,
        feature_spec=spec,
        features=tuple(features),
        label_column=label,
        id_column=id_column,
        threshold=ThresholdRecord(
            value=float(last["threshold"]), round=int(last["server_round"]), source=str(last["threshold_source"])
        ),
        model=(
            GbdtModelRecord(
                architecture="fedfraud-gbdt/1", n_features=len(features), trees=gbdt_trees,
                digest="sha256 of the file", hash=final_hash, file=GBDT_FILE,
                scorer=GBDT_SCORER_FILE, held_by=held_by,
            )
            if settings.model is ModelKind.GBDT
            else model_record(model, final_hash, file, held_by)
        ),
    )


def write_run_artifacts(
    run_dir: RunDirectory,
    settings: RunSettings,
    scoring: ScoringFile | None,
    rounds: Sequence[Mapping[str, Any]],
    policies: Sequence[Policy],
    plan_hash: str,
    audit: AuditFacts,
    seconds: float,
) -> None:
    """Write ``scoring.json``, ``model_card.json`` and ``model_card.md`` (each atomically)."""
    if scoring is None:
        return
    run_dir.write_json(SCORING_FILE, scoring.model_dump(mode="json"))
    card = build_model_card(
        settings,
        scoring,
        rounds,
        [PolicyFacts(p.institution_id, p.identity.version, p.policy_hash) for p in policies],
        plan_hash,
        audit,
        seconds,
        dt.datetime.now(dt.timezone.utc),
    )
    run_dir.write_json(MODEL_CARD_JSON, card)
    run_dir.write_text(MODEL_CARD_MD, render_markdown(card))
