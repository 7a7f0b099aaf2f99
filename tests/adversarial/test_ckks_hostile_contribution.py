"""Hostile ckks contributions are refused by name and the round goes on.

Two attacks, each through the real ServerApp with the product's ClientApp at
the honest institutions:

- insurer-c's ClientApp flips one bit of its first ciphertext after signing
  (``tampering_client.py``): the server checks every contribution's signature
  before adding anything, refuses insurer-c's and decrypts the others' sum.
- four malicious institutions sign hostile ciphertexts with their own keys
  (``hostile_ckks_client.py``: truncated, one too many, oversized, another
  CKKS context), so signatures verify; the server's own checks of the
  ciphertexts refuse each by name, and the five honest institutions' round
  is aggregated.
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


#: What the server's log must give as each attacker's reason.
REASONS = {
    "mallory-a": r"ciphertext 1 of \d+ is truncated or not a (serialized CKKS vector|valid SEAL ciphertext)",
    "mallory-b": r"expected \d+ ciphertexts for \d+ words, got \d+",
    "mallory-c": r"field 'ckks-blobs': item 1 of \d+ has \d+ bytes, outside \[1, \d+\]",
    "mallory-d": r"ciphertext 1 of \d+ (is not at the scale 2\*\*\d+|is truncated or not a valid SEAL ciphertext"
                 r"|is not a fresh-level ciphertext)",
}
HONEST = ("bank-a", "bank-b", "bank-c", "bank-d", "bank-e")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five honest institutions and four attackers, one ckks round.

    Nine, so that the five survivors still hold the auto threshold's shares
    (9 shares, threshold 5) to remove the four refused contributions' masks.
    """
    names = (*HONEST, *REASONS)
    root = tmp_path_factory.mktemp("hostile-ckks")
    data = make_data(root / "data", names=names, rows=1000)
    project = attacker_app(root / "app", "clientapp", HERE / "hostile_ckks_client.py", "hostile")
    run_dir, _ = run_federation(root, data, rounds=1, project=project, names=names, aggregation="ckks")
    return {"run_dir": run_dir, "rounds": read_rounds(run_dir),
            "log": (run_dir / "flower.log").read_text(encoding="utf-8", errors="replace")}


def test_hostile_signed_ciphertexts_leave_the_round_to_the_honest_institutions(hostile_run: dict[str, Any]) -> None:
    (record,) = hostile_run["rounds"]
    assert record["accepted"] is True
    assert record["cohort"] == list(HONEST)
    assert record["dropouts"] == sorted(REASONS)
    summary = json.loads((hostile_run["run_dir"] / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds_completed"] == 1


@pytest.mark.parametrize(
    ("attacker", "attack"),
    [("mallory-a", "truncated"), ("mallory-b", "wrong count"), ("mallory-c", "oversized"),
     ("mallory-d", "foreign context")],
)
def test_hostile_signed_ciphertexts_are_refused_by_name(hostile_run: dict[str, Any], attacker: str, attack: str) -> None:
    """The attacker signs hostile ciphertexts with its own key: the signature verifies, the server's checks refuse them."""
    assert re.search(
        rf"secure round 1 \(train\): contribution of {attacker} \(node \d+\) refused: .*{REASONS[attacker]}",
        hostile_run["log"],
    ), attack
