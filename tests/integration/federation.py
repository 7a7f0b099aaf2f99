"""Helpers that run real simulated federations for the integration tests."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

import numpy as np
import numpy.typing as npt

from client.fraud_client import round_seed
from fraud.features import load_arrays
from federation.settings import RunSettings
from core.layout import DemoSites
from fedfraud.sites import prepare_demo_sites, release_validation_data
from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
from fraud.features import FEATURE_COLUMNS
from fraud.generator_files import ensure_federation_data
from fraud.model import build_model, get_weights, initial_model_seed, set_weights
from fraud.train import TrainConfig, train_local

INSTITUTIONS = ("bank-a", "bank-b", "insurer-c")
ROWS = 4000


def make_data(root: Path, names: tuple[str, ...] = INSTITUTIONS, rows: int = ROWS) -> Path:
    """Generate (small) institution data into ``root``."""
    ensure_federation_data(root, list(names), rows, 7)
    return root


def edit_site_policy(site_policy: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change an institution's *own* policy (the server keeps its old copy)."""
    data = tomllib.loads(site_policy.read_text(encoding="utf-8"))
    edit(data)
    site_policy.write_text(tomli_w.dumps(data), encoding="utf-8")


def run_federation(
    tmp_path: Path,
    data_dir: Path,
    rounds: int,
    site_edits: Mapping[str, Callable[[dict[str, Any]], None]] | None = None,
    validation_rows: int = 0,
    project: Path | None = None,
    policy_dir: Path | None = None,
    names: tuple[str, ...] = INSTITUTIONS,
    **overrides: Any,
) -> tuple[Path, RunSettings]:
    """Run a real simulated federation and return its run directory and settings.

    ``project`` is the Flower app folder to run (default: the product's own);
    ``policy_dir`` the folder of policy templates (default: its ``policies/``);
    ``names`` the institutions (default: the demo's three).
    """
    run_dir = tmp_path / "run"
    sites = prepare_demo_sites(tmp_path / "parties", names, policy_dir or project_dir() / "policies")
    for institution, edit in (site_edits or {}).items():
        edit_site_policy(sites.site_layout(institution).policy, edit)
    if validation_rows:
        release_validation_data(sites, data_dir, names, validation_rows, 7)
    config = default_run_config()
    config.update(
        {
            "num-server-rounds": rounds,
            "institutions": ",".join(names),
            "data-dir": str(data_dir),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(run_dir),
            "run-name": "test",
            "local-epochs": 1,
            "timeout": 60.0,
        }
    )
    config.update(overrides)
    settings = RunSettings.from_run_config(config)
    run_simulation(
        SimulationRequest(
            project_dir=project or project_dir(),
            run_dir=run_dir,
            run_config=config,
            num_institutions=len(settings.institutions),
        )
    )
    return run_dir, settings


def final_weights(run_dir: Path) -> dict[str, npt.NDArray[np.float64]]:
    """The final global model's arrays by layer name."""
    with np.load(run_dir / "model.npz") as archive:
        return {key: np.asarray(archive[key], dtype=np.float64) for key in archive.files}


def plain_fedavg_round_one(
    settings: RunSettings, data_dir: Path, members: tuple[str, ...]
) -> tuple[dict[str, npt.NDArray[np.float64]], list[int]]:
    """Plain FedAvg of round 1, recomputed here from the same seeds and data."""
    template = build_model(
        len(FEATURE_COLUMNS), seed=initial_model_seed(settings.seed, settings.institutions)
    )
    names = list(template.state_dict().keys())
    initial = get_weights(template)
    updates: list[list[npt.NDArray[np.float32]]] = []
    counts: list[int] = []
    for member in members:
        model = build_model(len(FEATURE_COLUMNS), seed=settings.seed)
        set_weights(model, initial)
        features, labels = load_arrays(data_dir / member / "train.csv", "training data")
        result = train_local(
            model,
            features,
            labels,
            TrainConfig(
                local_epochs=settings.local_epochs,
                batch_size=settings.batch_size,
                lr=settings.lr,
                seed=round_seed(settings, member, 1),
                prox_mu=settings.fedprox_mu,
            ),
        )
        updates.append(get_weights(model))
        counts.append(result.num_examples)
    weights = np.array(counts, dtype=np.float64)
    mean = {
        name: np.average(
            np.stack([np.asarray(u[i], dtype=np.float64) for u in updates]), axis=0, weights=weights
        )
        for i, name in enumerate(names)
    }
    return mean, counts


def verify_with_cli(
    run_dir: Path, parties: Path, run_name: str = "test", server_copies: bool = False, action: str = "verify"
) -> subprocess.CompletedProcess[str]:
    """Run the compliance officer's command, ``fedfraud audit verify`` (or ``action``), on a run.

    The institutions' own policy files are used, or with ``server_copies`` the
    copies the server was given.
    """
    command = [
        sys.executable, "-m", "fedfraud", "audit", action, str(run_dir / "audit.jsonl"),
        "--server-key", str(DemoSites(parties).server.audit_pub),
    ]
    for institution in INSTITUTIONS:
        site = DemoSites(parties).site_layout(institution)
        policy = DemoSites(parties).server.policy(institution) if server_copies else site.policy
        command += ["--policy", str(policy)]
        command += ["--institution-log", str(site.audit_dir / f"{run_name}.jsonl")]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def union_csv(files: list[Path], out: Path) -> Path:
    """The institutions' CSV files as one (same header; rows in the given order)."""
    header, lines = None, []
    for path in files:
        first, *rows = path.read_text(encoding="utf-8").splitlines()
        assert header in (None, first), f"{path}: another header"
        header = first
        lines += [row for row in rows if row]
    out.write_text("\n".join([str(header), *lines]) + "\n", encoding="utf-8")
    return out


def check_scoring_reproduces_the_run(
    run_dir: Path, test_files: list[Path], work: Path, model: Path | None = None
) -> dict[str, Any]:
    """``fedfraud score`` on the union of the evaluated institutions' test files.

    It must reproduce the run's final released metrics exactly: the counts at
    the threshold, and AUC-PR/AUC-ROC/precision/recall/F1 on the federation's
    score grid. Returns the command's JSON report.
    """
    import json

    from typer.testing import CliRunner

    from fedfraud.cli import app
    from server.rundir import read_rounds

    record = read_rounds(run_dir)[-1]
    scoring = json.loads((run_dir / "scoring.json").read_text(encoding="utf-8"))
    assert scoring["threshold"]["value"] == record["threshold"]
    assert scoring["threshold"]["round"] == record["server_round"]
    assert scoring["model"]["hash"] == json.loads((run_dir / "summary.json").read_text())["final_model_hash"]
    union = union_csv(test_files, work / "union-test.csv")
    out = work / "scores.csv"
    args = ["score", str(run_dir), "--csv", str(union), "--out", str(out), "--json"]
    result = CliRunner().invoke(app, [*args, "--model", str(model)] if model else args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    grid, released = report["grid_metrics"], record["metrics"]
    counts = {"true_positives": "tp", "false_positives": "fp", "false_negatives": "fn",
              "true_negatives": "tn", "num_examples": "num_examples"}
    for name, key in counts.items():
        if name in released:
            assert released[name] == grid[key] == report["metrics"][key], name
    for name in ("precision", "recall", "f1", "auc_roc", "auc_pr"):
        if name in released:
            assert abs(released[name] - grid[name]) <= 1e-12, (name, released[name], grid[name])
    assert "auc_pr" in released  # something was compared
    assert report["rows"] == sum(1 for _ in out.open()) - 1
    return dict(report)


def check_model_card(run_dir: Path) -> dict[str, Any]:
    """The model card's facts match the run's files (audit head and root, model, policies, metrics)."""
    import json

    from audit.merkle import leaf_hash, root
    from server.rundir import read_rounds

    card = json.loads((run_dir / "model_card.json").read_text(encoding="utf-8"))
    text = (run_dir / "model_card.md").read_text(encoding="utf-8")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    hashes = [json.loads(line)["hash"] for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert card["format"] == "fedfraud-model-card/1"
    assert card["model"]["hash"] == summary["final_model_hash"]
    assert card["audit"]["log"] == str(run_dir / "audit.jsonl")
    assert card["audit"]["records"] == len(hashes)
    assert card["audit"]["head_hash"] == hashes[-1]
    assert card["audit"]["merkle_root"] == root([leaf_hash(bytes.fromhex(h)) for h in hashes]).hex()
    assert card["audit"]["final_checkpoint_witnessed_by"] == summary["final_checkpoint_witnessed_by"]
    assert card["policies"]["plan_hash"] == config["plan"]["plan_hash"]
    assert {p["institution"]: p["policy_hash"] for p in card["policies"]["institutions"]} == config["plan"]["policies"]
    assert card["evaluation"]["metrics"] == read_rounds(run_dir)[-1]["metrics"]
    assert card["aggregation"]["secagg"] == config["secagg"]
    for fact in (card["model"]["hash"], card["audit"]["head_hash"], card["audit"]["merkle_root"],
                 card["policies"]["plan_hash"], f"{card['threshold']['value']:g}"):
        assert fact in text, fact
    return dict(card)
