"""The model card: one page that says what a run's model is, how it was made and judged.

Written into the run directory at the end of a run, twice with the same
facts: ``model_card.json`` for tools and ``model_card.md`` for people (the
ML team, and the compliance officer who checks it against the audit log).
It repeats only what the server already holds and has released: the
policies' hashes, the SecAgg+ settings, the final round's *released* pooled
metrics (a metric a policy withholds stays withheld here), the audit log's
head and Merkle root, the final model's hash. Nothing per institution but
names and policy hashes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from core.layout import MODEL_CARD_JSON, SCORING_FILE
from fraud.scoring import ScoringFile
from federation.settings import RunSettings

from .rundir import finite

MODEL_CARD_FORMAT = "fedfraud-model-card/1"
"""Format marker of ``model_card.json``."""


EVALUATION_SET = (
    "the union of the institutions' test splits, scored by each institution on its own "
    "site; only score counts on a 1000-bin grid were summed under SecAgg+"
)


@dataclass(frozen=True)
class PolicyFacts:
    """One institution's policy as the server held it."""

    institution: str
    version: int
    policy_hash: str


@dataclass(frozen=True)
class AuditFacts:
    """Where the run's audit log is and what it ended with."""

    log: str
    log_id: Mapping[str, str]
    records: int
    head_hash: str
    merkle_root: str
    final_checkpoint_witnessed_by: Sequence[str]


def build_model_card(
    settings: RunSettings,
    scoring: ScoringFile,
    rounds: Sequence[Mapping[str, Any]],
    policies: Sequence[PolicyFacts],
    plan_hash: str,
    audit: AuditFacts,
    seconds: float,
    created: dt.datetime,
) -> dict[str, Any]:
    """Collect a run's model card (JSON-ready; NaN becomes ``None``).

    Parameters
    ----------
    settings
        The run's settings.
    scoring
        The run's scoring file (model, threshold, data format, schema).
    rounds
        The run's round records, as in ``rounds.jsonl``.
    policies, plan_hash
        The policies the server combined, and the combined plan's hash.
    audit
        The audit log's path and final state.
    seconds, created
        The run's duration; when the card was written (UTC).
    """
    final = rounds[-1] if rounds else {}
    metrics = dict(final.get("metrics") or {})
    model = scoring.model
    card: dict[str, Any] = {
        "format": MODEL_CARD_FORMAT,
        "run": {
            "name": settings.run_name,
            "federation_id": settings.federation_id,
            "purpose": settings.purpose,
            "fedfraud_version": scoring.fedfraud_version,
            "created": created.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "rounds_requested": settings.num_rounds,
            "rounds_completed": sum(1 for r in rounds if r.get("accepted")),
            "seconds": round(seconds, 3),
        },
        "model": {
            "architecture": model.architecture,
            "n_features": model.n_features,
            **(
                {"trees": model.trees, "hyper_parameters": dict(settings.gbdt), "scorer": model.scorer}
                if model.architecture == "fedfraud-gbdt/1"
                else {"hidden": list(model.hidden), "layer_names": list(model.layer_names)}
            ),
            "hash": model.hash,
            "digest": model.digest,
            "file": model.file,
            "held_by": model.held_by,
        },
        "data": {
            "format": scoring.data_format.value,
            "institutions": list(settings.institutions),
            "schema_fingerprint": scoring.byo_schema.fingerprint if scoring.byo_schema else None,
            "label_column": scoring.label_column,
            "features": list(scoring.features),
            "test_rows": metrics.get("num_examples"),
        },
        "evaluation": {
            "round": final.get("server_round"),
            "set": EVALUATION_SET,
            "evaluated_by": list(final.get("evaluated_by") or []),
            "metrics": metrics,
            "withheld_by_policy": list(final.get("withheld") or []),
        },
        "threshold": scoring.threshold.model_dump(mode="json"),
        "training": {
            "local_epochs": settings.local_epochs,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "seed": settings.seed,
            "min_cohort": settings.min_cohort,
        },
        "aggregation": {"mode": settings.aggregation.value, "secagg": settings.secagg.as_record()},
        "policies": {"plan_hash": plan_hash, "institutions": [asdict(p) for p in policies]},
        "audit": {
            "log": audit.log,
            "log_id": dict(audit.log_id),
            "records": audit.records,
            "head_hash": audit.head_hash,
            "merkle_root": audit.merkle_root,
            "final_checkpoint_witnessed_by": list(audit.final_checkpoint_witnessed_by),
        },
        "scoring": {
            "file": SCORING_FILE,
            "command": f"fedfraud score {settings.run_dir} --csv NEW.csv --out scores.csv"
            + (" --model MODEL.npz" if model.file is None else ""),
        },
    }
    finite_card: dict[str, Any] = finite(card)
    return finite_card


_METRIC_ROWS = (
    ("precision", "Precision", "{:.4f}"),
    ("recall", "Recall", "{:.4f}"),
    ("f1", "F1", "{:.4f}"),
    ("auc_roc", "AUC-ROC", "{:.4f}"),
    ("auc_pr", "AUC-PR", "{:.4f}"),
    ("loss", "Loss", "{:.4f}"),
    ("false_negatives", "False negatives", "{}"),
    ("false_positives", "False positives", "{}"),
    ("true_positives", "True positives", "{}"),
    ("true_negatives", "True negatives", "{}"),
    ("num_examples", "Test rows", "{}"),
)


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card for people: the same facts as the JSON, as a short Markdown page."""
    run, model, data = card["run"], card["model"], card["data"]
    evaluation, threshold, aggregation = card["evaluation"], card["threshold"], card["aggregation"]
    policies, audit, scoring = card["policies"], card["audit"], card["scoring"]
    lines = [
        f"# Model card: {run['name']}",
        "",
        f"A fraud-scoring model trained by {len(data['institutions'])} institutions together "
        f"({', '.join(data['institutions'])}) in federation `{run['federation_id']}`, for the purpose "
        f"`{run['purpose']}`, with fedfraud {run['fedfraud_version']}. "
        f"{run['rounds_completed']} of {run['rounds_requested']} rounds were aggregated "
        f"({run['seconds']:.1f} s). Written {run['created']}; the same facts are in "
        f"`{MODEL_CARD_JSON}` (format `{card['format']}`).",
        "",
        "## Model",
        "",
        *(
            [
                f"* Architecture: `{model['architecture']}`, {model['n_features']} inputs, "
                f"{model['trees']} boosted trees grown from securely summed histograms "
                "(score = sigmoid of the summed leaf values).",
                f"* Final model hash (`{model['digest']}`): `{model['hash']}`",
                f"* Held by: {model['held_by']}",
            ]
            if "trees" in model
            else [
                f"* Architecture: `{model['architecture']}`, {model['n_features']} inputs, hidden layers "
                f"{model['hidden']}, one fraud logit (score = sigmoid).",
                f"* Final model hash (`{model['digest']}`): `{model['hash']}`",
                f"* Held by: {model['held_by']}",
                f"* Layers: {', '.join(f'`{n}`' for n in model['layer_names'])}",
            ]
        ),
        "",
        "## Data",
        "",
        f"* Format: `{data['format']}`; label column `{data['label_column']}`; "
        f"{len(data['features'])} model inputs.",
    ]
    if data["schema_fingerprint"]:
        lines.append(f"* Schema fingerprint: `{data['schema_fingerprint']}` (the schema text is in `{scoring['file']}`)")
    rows = data["test_rows"]
    lines += [
        f"* Test rows (pooled over institutions): {rows if rows is not None else 'withheld by policy or not evaluated'}",
        (
            "* UNSAFE: this run used plain aggregation; the server saw every institution's update."
            if aggregation["mode"] == "unsafe-plain"
            else "* No row, no institution's update and no per-institution count or statistic "
            "reached the server; it learned sums over institutions only."
        ),
        "",
        "## Evaluation (final round)",
        "",
    ]
    if evaluation["metrics"]:
        lines += [
            f"Round {evaluation['round']}, on {evaluation['set']}; evaluated by "
            f"{', '.join(evaluation['evaluated_by']) or 'nobody'}.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        for key, title, pattern in _METRIC_ROWS:
            if key in evaluation["metrics"] and evaluation["metrics"][key] is not None:
                lines.append(f"| {title} | {pattern.format(evaluation['metrics'][key])} |")
    else:
        lines.append("The final round was not evaluated (no metrics were released).")
    if evaluation["withheld_by_policy"]:
        lines += ["", f"Withheld by the institutions' policies: {', '.join(evaluation['withheld_by_policy'])}."]
    lines += [
        "",
        "## Operating threshold",
        "",
        f"A row is flagged when its score is at least **{threshold['value']:g}** "
        f"(chosen in round {threshold['round']}: {threshold['source']}).",
        "",
        "## Aggregation",
        "",
        f"* Mode: `{aggregation['mode']}`",
        "* SecAgg+ settings: "
        + ", ".join(f"{k} = {v}" for k, v in sorted(aggregation["secagg"].items()))
        + (" (max_weight 0: the federation's securely summed training rows)"
           if aggregation["secagg"].get("max_weight") == 0 else ""),
        "",
        "## Policies",
        "",
        f"Combined plan hash: `{policies['plan_hash']}`",
        "",
        "| institution | policy version | policy hash |",
        "|---|---|---|",
        *(f"| {p['institution']} | {p['version']} | `{p['policy_hash']}` |" for p in policies["institutions"]),
        "",
        "## Audit",
        "",
        f"* Log: `{audit['log']}` ({audit['records']} records)",
        f"* Head record hash: `{audit['head_hash']}`",
        f"* Merkle root (RFC 9162) over all records: `{audit['merkle_root']}`",
        f"* Final checkpoint witnessed by: {', '.join(audit['final_checkpoint_witnessed_by']) or 'nobody'}",
        "* Check it with `fedfraud audit verify` (the command the run printed).",
        "",
        "## Scoring new rows",
        "",
        f"`{scoring['file']}` holds the data format (for bring-your-own data the schema and the agreed "
        "scaling), the feature order, the threshold and the model's layout and hash:",
        "",
        "```",
        scoring["command"],
        "```",
        "",
        "## Limitations",
        "",
        "* The metrics are pooled over all institutions' test splits; no institution's own "
        "performance is known to the server, and it may differ.",
        "* The threshold trades missed frauds against false alarms as configured for this run; "
        "an institution with other costs should choose its own on its own labelled rows.",
        "* Scores are probabilities only as well as the training data's fraud rate matches new data.",
        "",
    ]
    return "\n".join(lines)
