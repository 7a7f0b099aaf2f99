"""What the run commands parse and print: ``--set`` overrides, a line per round, the final table.

``fedfraud demo``, ``fedfraud run`` and the deployment launcher share them, so
a run reads the same whichever engine it ran on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from core.errors import ConfigError

# soft_wrap: a printed line is never broken (it must survive copy-paste).
console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)

METRIC_COLUMNS = (
    ("precision", "Prec.", "{:.3f}"),
    ("recall", "Recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("auc_roc", "AUC-ROC", "{:.4f}"),
    ("auc_pr", "AUC-PR", "{:.4f}"),
    ("false_negatives", "FN", "{}"),
)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into typed run-config overrides."""
    import tomllib

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, found {pair!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        result[key.strip()] = value
    return result


def fmt(value: object, pattern: str) -> str:
    """``value`` formatted with ``pattern``, or ``n/a`` when there is none."""
    if value is None:
        return "n/a"
    return pattern.format(value)


class RoundProgress:
    """Prints one line per finished round, read from the run directory."""

    def __init__(self, run_dir: Path, total: int) -> None:
        self.run_dir = run_dir
        self.total = total
        self.seen = 0

    def __call__(self) -> None:
        from server.rundir import read_rounds

        rounds = read_rounds(self.run_dir)
        for record in rounds[self.seen :]:
            metrics = record.get("metrics", {})
            cohort = record.get("cohort", [])
            status = "" if record.get("accepted") else f"  not aggregated: {record.get('refusal')}"
            dropped = record.get("dropouts") or []
            drop_text = f"  dropped: {', '.join(dropped)}" if dropped else ""
            console.print(
                f"round {record['server_round']:>3}/{self.total}  "
                f"cohort {len(cohort)}  loss {fmt(metrics.get('loss'), '{:.4f}')}  "
                f"AUC-PR {fmt(metrics.get('auc_pr'), '{:.4f}')}  "
                f"recall {fmt(metrics.get('recall'), '{:.3f}')}  "
                f"FN {fmt(metrics.get('false_negatives'), '{}')}  "
                f"({record.get('seconds', 0):.1f}s){drop_text}{status}"
            )
        self.seen = len(rounds)


def final_table(run_dir: Path) -> Table:
    """Every round's metrics on the combined test set, as one table."""
    from server.rundir import read_rounds

    table = Table(title=f"Federated model on the combined test set ({run_dir.name})")
    table.add_column("Round", justify="right")
    table.add_column("Cohort", justify="right")
    table.add_column("Loss", justify="right")
    for _, title, _ in METRIC_COLUMNS:
        table.add_column(title, justify="right")
    for record in read_rounds(run_dir):
        metrics = record.get("metrics", {})
        table.add_row(
            str(record["server_round"]),
            str(len(record.get("cohort", []))),
            fmt(metrics.get("loss"), "{:.4f}"),
            *(fmt(metrics.get(key), pattern) for key, _, pattern in METRIC_COLUMNS),
        )
    return table
