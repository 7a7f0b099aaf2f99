"""A readable comparison report: ``report.md`` plus PNG plots and one ``report.html``, written atomically.

:func:`write_report` writes into ``out_dir``:

==============================  =====================================================
``report.md``                   tables of metrics (combined and per institution),
                                the threshold and how it was chosen, the synthetic
                                releases' quality and privacy numbers, links to plots
``pr_curves.png``               precision-recall curves, combined test set
``roc_curves.png``              ROC curves, combined test set
``federated_auc_pr.png``        AUC-PR of the federated model per round (if rounds given)
``false_negatives.png``         missed frauds by institution, per model
``report.html``                 the same report as one self-contained page to hand
                                on: ``report.md`` rendered by markdown-it-py (raw
                                HTML in the text escaped), the plots embedded as
                                base64 PNG ``data:`` URIs, a print-friendly style
==============================  =====================================================

Everything is first written into a fresh temporary folder next to
``out_dir``; each file is then moved into ``out_dir`` with an atomic rename,
``report.md`` last, so a reader never sees a half-written file and a
``report.md`` only exists once its plots do.
"""

from __future__ import annotations

import base64
import html
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Headless; must precede pyplot.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.errors import ConfigError, InputError  # noqa: E402
from fraud.compare import ComparisonResult  # noqa: E402
from fraud.metrics import Metrics, curves_from_histograms  # noqa: E402
from fraud.synth import SyntheticReport  # noqa: E402

REPORT_FORMAT = "fedfraud-comparison-report/1"
REPORT_NAME = "report.md"
REPORT_HTML_NAME = "report.html"
PLOTS = ("pr_curves.png", "roc_curves.png", "federated_auc_pr.png", "false_negatives.png")


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _metrics_row(name: str, m: Metrics) -> str:
    return (
        f"| {name} | {_fmt(m.auc_pr)} | {_fmt(m.auc_roc)} | {_fmt(m.precision)} | {_fmt(m.recall)} | "
        f"{_fmt(m.f1)} | {m.tp} | {m.fp} | {m.fn} | {m.threshold:.3f} |"
    )


_HEADER = (
    "| model | AUC-PR | AUC-ROC | precision | recall | F1 | TP | FP | FN | threshold |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _check_rounds(rounds: Sequence[Mapping[str, Any]] | None) -> list[tuple[int, float]]:
    if rounds is None:
        return []
    points: list[tuple[int, float]] = []
    for i, entry in enumerate(rounds):
        try:
            server_round = int(entry["server_round"])
            auc_pr = float(entry["metrics"]["auc_pr"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"federated round {i}: needs 'server_round' and 'metrics.auc_pr'") from exc
        points.append((server_round, auc_pr))
    return sorted(points)


def _plot_curves(result: ComparisonResult, path: Path, kind: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, ev in result.models.items():
        fpr, tpr, precision, recall = curves_from_histograms(*ev.histograms)
        if kind == "pr":
            ax.step(recall, precision, where="post", label=f"{name} (AP {_fmt(ev.combined.auc_pr)})")
        else:
            ax.plot(fpr, tpr, label=f"{name} (AUC {_fmt(ev.combined.auc_roc)})")
    if kind == "pr":
        ax.axhline(result.base_rate, color="grey", linestyle=":", label=f"base rate {result.base_rate:.3f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision-recall, combined test set")
    else:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC, combined test set")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_rounds(points: list[tuple[int, float]], path: Path, result: ComparisonResult) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label="federated")
    for name in ("pooled",):
        if name in result.models:
            ax.axhline(result.models[name].combined.auc_pr, linestyle="--", color="green", label=f"{name} (upper bound)")
    best_local = max(
        (ev.combined.auc_pr for n, ev in result.models.items() if n.startswith("local:")), default=math.nan
    )
    if not math.isnan(best_local):
        ax.axhline(best_local, linestyle=":", color="red", label="best local-only")
    ax.set_xlabel("server round")
    ax.set_ylabel("AUC-PR")
    ax.set_title("Federated model, AUC-PR per round")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_false_negatives(result: ComparisonResult, path: Path) -> None:
    names = list(result.models)
    insts = list(result.institutions)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(insts) + 2), 4.5))
    x = np.arange(len(insts))
    for k, name in enumerate(names):
        values = [result.models[name].per_institution[i].fn for i in insts]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, insts)
    ax.set_ylabel("missed frauds (FN)")
    ax.set_title("False negatives by institution, at each model's threshold")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: What :func:`write_report`'s ``provenance`` may name, in the order shown.
PROVENANCE_FIELDS = {
    "run": "Run",
    "federation": "Federation",
    "model_file": "Federated model file",
    "model_hash": "Federated model hash",
    "audit_log": "Audit log",
    "audit_records": "Audit log records",
    "audit_root": "Audit log Merkle root (RFC 9162, all records)",
    "witnessed_by": "Final checkpoint witnessed by",
}


def _provenance(provenance: Mapping[str, str] | None) -> list[str]:
    """The section tying the federated model in this report to its run's signed audit log."""
    if not provenance:
        return []
    lines = ["## Provenance", ""]
    for key, label in PROVENANCE_FIELDS.items():
        value = provenance.get(key)
        if value:
            shown = f"`{value}`" if key in ("model_hash", "audit_root", "model_file", "audit_log") else value
            lines.append(f"- {label}: {shown}")
    in_log = provenance.get("model_hash_in_log")
    if in_log is not None and provenance.get("model_hash"):
        if in_log == provenance["model_hash"]:
            note = ("The audit log's `run_closed` record states this same final model hash; "
                    "`fedfraud audit verify` on that log checks the signed chain of records that leads to it.")
        elif in_log:
            note = (f"**The audit log's `run_closed` record states a different final model hash** (`{in_log}`): "
                    "this report's model is not the one the log describes.")
        else:
            note = "The audit log has no `run_closed` record stating a final model hash (the run did not close)."
        lines += ["", note]
    lines.append("")
    return lines


def _markdown(
    result: ComparisonResult,
    points: list[tuple[int, float]],
    synthetic_reports: Mapping[str, SyntheticReport],
    provenance: Mapping[str, str] | None = None,
) -> str:
    s = result.settings
    lines = [
        "# fedfraud comparison report",
        "",
        f"Format `{REPORT_FORMAT}`, written {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "## Set-up",
        "",
        f"- Institutions: {', '.join(result.institutions)}.",
        f"- Budget: every MLP trains {s['total_epochs']} epochs ({s['rounds']} rounds x {s['local_epochs']} "
        f"local epochs), batch size {s['batch_size']}, learning rate {s['lr']}, seed {s['seed']}, "
        f"{s['n_features']} features.",
        "- Models: `local:<institution>` (its own training rows only), `pooled` (all training rows, "
        "the upper bound), `pooled-hgb` (scikit-learn HistGradientBoosting on all training rows)"
        + (", and the externally trained models added afterwards." if len(result.models) > 3 else "."),
        f"- Validation set (threshold choice): {result.validation_size[0]} rows, {result.validation_size[1]} frauds"
        + (f" ({result.settings['validation']})." if result.settings.get("validation") else "."),
        f"- Combined test set: {sum(n for n, _ in result.test_sizes.values())} rows, "
        f"{sum(f for _, f in result.test_sizes.values())} frauds (base rate {result.base_rate:.4f}).",
        "",
        *_provenance(provenance),
        "## Threshold",
        "",
        f"Each model's threshold is the {result.threshold_rule.describe()}, then held fixed for every test set.",
        "",
        "| model | threshold | validation precision | validation recall |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {ev.threshold:.3f} | {_fmt(ev.validation.precision)} | {_fmt(ev.validation.recall)} |"
        for n, ev in result.models.items()
    ]
    lines += ["", "## Combined test set", "", _HEADER]
    lines += [_metrics_row(n, ev.combined) for n, ev in result.models.items()]
    lines += ["", "![precision-recall curves](pr_curves.png)", "", "![ROC curves](roc_curves.png)", ""]
    lines += ["## Per institution", ""]
    for inst in result.institutions:
        rows, frauds = result.test_sizes[inst]
        lines += [f"### {inst} ({rows} test rows, {frauds} frauds)", "", _HEADER]
        lines += [_metrics_row(n, ev.per_institution[inst]) for n, ev in result.models.items()]
        lines.append("")
    lines += ["![false negatives by institution](false_negatives.png)", ""]
    lines += ["## Federated rounds", ""]
    if points:
        lines += ["| round | AUC-PR |", "|---|---|"] + [f"| {r} | {_fmt(v)} |" for r, v in points]
        lines += ["", "![federated AUC-PR per round](federated_auc_pr.png)", ""]
    else:
        lines += ["No federated rounds were given.", ""]
    lines += ["## Synthetic validation releases", ""]
    if synthetic_reports:
        lines += [
            "Each institution fitted the synthesizer on its own training rows; only the checked sample left it.",
            "",
            "| institution | method | rows | fraud share | quality | column shapes | pair trends | "
            "exact copies | share closer than holdout p5 (limit) | median DCR synthetic / holdout |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for inst, rep in synthetic_reports.items():
            p = rep.privacy
            lines.append(
                f"| {inst} | {rep.method} | {rep.n_rows} | {rep.fraud_share:.3f} | {_fmt(rep.quality_score)} | "
                f"{_fmt(rep.column_shapes)} | {_fmt(rep.column_pair_trends)} | {p.exact_copies} | "
                f"{p.share_closer:.3f} ({p.limit:.2f}) | {p.synthetic_dcr_median:.4f} / {p.holdout_dcr_median:.4f} |"
            )
        lines.append("")
    else:
        lines += ["No synthetic release reports were given.", ""]
    return "\n".join(lines)


_HTML_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1a1a1a; background: #fff; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #bbb; padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #eef0f2; }
td { font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .92em; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0 1rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  tr, img { break-inside: avoid; }
  thead { display: table-header-group; }
  h2, h3 { break-after: avoid; }
}
""".strip()

# Scripts, frames and every outside resource are refused; images only as data: URIs.
_HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _html(markdown_text: str, plots: Path) -> str:
    """``report.md`` as one self-contained page, its plots (files in ``plots``) embedded as data URIs.

    The Markdown goes through markdown-it-py's CommonMark parser with raw HTML
    disabled (any ``<tag>`` in an institution name shows as text) and GFM
    tables enabled. An image that is not one of the report's own plots is
    dropped rather than linked, so the page never loads anything from outside.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "xhtmlOut": False}).enable("table")
    tokens = md.parse(markdown_text)
    for token in tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            src = str(child.attrGet("src") or "")
            if src in PLOTS and (plots / src).is_file():
                data = base64.b64encode((plots / src).read_bytes()).decode("ascii")
                child.attrSet("src", f"data:image/png;base64,{data}")
            else:
                child.attrSet("src", "")
    body = md.renderer.render(tokens, md.options, {})
    title = next((line[2:] for line in markdown_text.splitlines() if line.startswith("# ")), "fedfraud comparison report")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_HTML_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_HTML_STYLE}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        body.rstrip("\n"),
        "</main>",
        "</body>",
        "</html>",
    ]) + "\n"


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_report(
    out_dir: str | Path,
    comparison: ComparisonResult,
    federated_rounds: Sequence[Mapping[str, Any]] | None,
    synthetic_reports: Mapping[str, SyntheticReport] | None,
    provenance: Mapping[str, str] | None = None,
) -> Path:
    """Write ``report.md``, its plots and ``report.html`` into ``out_dir``; return the path of ``report.md``.

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed); existing report files are replaced.
    comparison
        From :func:`fraud.compare.run_comparison` (plus :func:`fraud.compare.add_model`).
    federated_rounds
        Round records, each with ``server_round`` and ``metrics.auc_pr``
        (as in ``rounds.jsonl``), or ``None``.
    synthetic_reports
        ``{institution: SyntheticReport}``, or ``None``.
    provenance
        ``{field: text}`` with keys from :data:`PROVENANCE_FIELDS` (the run, the
        federated model's hash, the audit log and its root), or ``None``.

    Raises
    ------
    InputError
        If a round record lacks ``server_round`` or ``metrics.auc_pr``.
    ConfigError
        If ``out_dir`` exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    points = _check_rounds(federated_rounds)
    reports = dict(synthetic_reports or {})
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".report-"))
    try:
        _plot_curves(comparison, staging / "pr_curves.png", "pr")
        _plot_curves(comparison, staging / "roc_curves.png", "roc")
        _plot_false_negatives(comparison, staging / "false_negatives.png")
        if points:
            _plot_rounds(points, staging / "federated_auc_pr.png", comparison)
        text = _markdown(comparison, points, reports, provenance)
        _write_synced(staging / REPORT_HTML_NAME, _html(text, staging))
        _write_synced(staging / REPORT_NAME, text)
        if not points:
            (out / "federated_auc_pr.png").unlink(missing_ok=True)  # a stale plot would mislead
        for name in (*PLOTS, REPORT_HTML_NAME, REPORT_NAME):
            if (staging / name).exists():
                os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / REPORT_NAME
