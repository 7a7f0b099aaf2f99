"""Participants records: every node of a secure round proves a roster identity.

The server records, for each node that answered a secure round's first stage,
the institution it claimed and its signed key advertisement. The verifier
re-checks each advertisement under the institution's key from the genesis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.run import RunAuditor
from audit.verify import Verdict, verify_log
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from secagg import hardened as hc

from audit_support import BuiltRun, build_run, seeded_key

FEDERATION = "fed-eu-fraud"
RUN = 2**63 + 11  # Flower run and node ids are 64-bit
TASK = "train"


def _node(node_id: int, institution: str, key: Ed25519PrivateKey, rnd: int, *, verified: bool) -> dict[str, Any]:
    keys = hc.RoundKeys.generate()
    binding = hc.Binding(FEDERATION, RUN, rnd, TASK)
    advert = hc.advertise(key, binding, node_id, institution, keys)
    return {
        "node": node_id,
        "institution": institution,
        "verified": verified,
        "seal_key": advert.seal_key.hex(),
        "mask_key": advert.mask_key.hex(),
        "signature": advert.signature.hex(),
    }


def _run_with(tmp_path: Path, extra: dict[str, Any] | None) -> BuiltRun:
    def hook(auditor: RunAuditor, rnd: int) -> None:
        nodes = [
            _node(2**62 + i, inst, seeded_key(inst), rnd, verified=True)
            for i, inst in enumerate(("bank-a", "bank-b", "insurer-c"))
        ]
        if extra is not None and rnd == 1:
            nodes.append(extra)
        binding = {"federation": FEDERATION, "run": RUN, "round": rnd, "task": TASK}
        auditor.participants(binding, nodes)

    return build_run(tmp_path, rounds=2, hook=hook)


def _verify(run: BuiltRun):
    return verify_log(run.log, run.trusted, run.server_pub, list(run.inst_logs.values()))


def test_run_whose_every_node_proved_its_identity_is_valid(tmp_path: Path) -> None:
    report = _verify(_run_with(tmp_path, None))
    assert report.verdict is Verdict.VALID, report


def test_rogue_node_outside_the_roster_is_flagged(tmp_path: Path) -> None:
    # A SuperNode registered through the open Control API, signing with its
    # own key while claiming bank-a: the server records it as unproven.
    rogue = _node(7, "bank-a", Ed25519PrivateKey.generate(), 1, verified=False)
    report = _verify(_run_with(tmp_path, rogue))
    assert report.verdict is Verdict.POLICY_VIOLATED
    assert any("without proving an identity on the roster" in f.message for f in report.failures)


def test_server_claiming_a_rogue_node_verified_is_tampered(tmp_path: Path) -> None:
    # The server lies that the rogue's advertisement verified: the verifier
    # re-checks it under bank-a's genesis key.
    rogue = _node(7, "bank-a", Ed25519PrivateKey.generate(), 1, verified=True)
    report = _verify(_run_with(tmp_path, rogue))
    assert report.verdict is Verdict.TAMPERED
    assert any("does not verify" in f.message for f in report.failures)


def test_one_identity_on_two_nodes_is_flagged(tmp_path: Path) -> None:
    twin = _node(8, "bank-b", seeded_key("bank-b"), 1, verified=True)
    report = _verify(_run_with(tmp_path, twin))
    assert report.verdict is Verdict.POLICY_VIOLATED
    assert any("both proved the identity 'bank-b'" in f.message for f in report.failures)


def test_malformed_participants_record_is_tampered(tmp_path: Path) -> None:
    broken = {"node": 9, "institution": "bank-a", "verified": False,
              "seal_key": "zz", "mask_key": "", "signature": ""}
    report = _verify(_run_with(tmp_path, broken))
    assert report.verdict is Verdict.TAMPERED
