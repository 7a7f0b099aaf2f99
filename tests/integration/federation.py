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

from client.fraud_client import load_split, round_seed
from fedfraud.settings import RunSettings
from fedfraud.sites import prepare_demo_sites, release_validation_data
from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
from fraud.features import FEATURE_COLUMNS
from fraud.generator import ensure_federation_data
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
    **overrides: Any,
) -> tuple[Path, RunSettings]:
    """Run a real simulated federation and return its run directory and settings.

    ``project`` is the Flower app folder to run (default: the product's own).
    """
    run_dir = tmp_path / "run"
    sites = prepare_demo_sites(tmp_path / "parties", INSTITUTIONS, project_dir() / "policies")
    for institution, edit in (site_edits or {}).items():
        edit_site_policy(sites.site(institution) / "policy.toml", edit)
    if validation_rows:
        release_validation_data(sites, data_dir, INSTITUTIONS, validation_rows, 7)
    config = default_run_config()
    config.update(
        {
            "num-server-rounds": rounds,
            "institutions": ",".join(INSTITUTIONS),
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
        features, labels = load_split(data_dir / member / "train.csv", "training data")
        result = train_local(
            model,
            features,
            labels,
            TrainConfig(
                local_epochs=settings.local_epochs,
                batch_size=settings.batch_size,
                lr=settings.lr,
                seed=round_seed(settings, member, 1),
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
    run_dir: Path, parties: Path, run_name: str = "test", server_copies: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the compliance officer's command, ``fedfraud audit verify``, on a run.

    The institutions' own policy files are used, or with ``server_copies`` the
    copies the server was given.
    """
    command = [
        sys.executable, "-m", "fedfraud", "audit", "verify", str(run_dir / "audit.jsonl"),
        "--server-key", str(parties / "server" / "audit.pub"),
    ]
    for institution in INSTITUTIONS:
        site = parties / "sites" / institution
        policy = (
            parties / "server" / "policies" / f"{institution}.toml"
            if server_copies
            else site / "policy.toml"
        )
        command += ["--policy", str(policy)]
        command += ["--institution-log", str(site / "audit" / f"{run_name}.jsonl")]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
