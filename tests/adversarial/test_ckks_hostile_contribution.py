"""A corrupted ckks contribution is refused by name and the round goes on.

insurer-c's ClientApp flips one bit of its first ciphertext after signing
(``tampering_client.py``). The real ServerApp checks every contribution's
signature before adding anything: insurer-c's is refused and logged, the
others' sum decrypts, and the run completes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from server.rundir import read_rounds

from .attacker_app import attacker_app

from tests.integration.federation import make_data, run_federation

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tampered_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tampered-ckks")
    data = make_data(root / "data", rows=2000)
    run_dir, _ = run_federation(
        root, data, rounds=1, project=attacker_app(root / "app", "clientapp", HERE / "tampering_client.py", "tampering"), aggregation="ckks"
    )
    return {"run_dir": run_dir, "rounds": read_rounds(run_dir)}


def test_bit_flipped_ciphertext_is_refused_and_the_round_goes_on(tampered_run: dict[str, Any]) -> None:
    (record,) = tampered_run["rounds"]
    # The others' sum was decrypted; insurer-c's contribution was left out.
    assert record["accepted"] is True
    assert record["cohort"] == ["bank-a", "bank-b"]
    assert record["dropouts"] == ["insurer-c"]
    # The reason is in the server's log, by name.
    log = (tampered_run["run_dir"] / "flower.log").read_text(encoding="utf-8", errors="replace")
    assert re.search(r"contribution of insurer-c \(node \d+\) refused: .*does not verify", log)
    # The run finished and its summary says so.
    summary = json.loads((tampered_run["run_dir"] / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds_completed"] == 1
