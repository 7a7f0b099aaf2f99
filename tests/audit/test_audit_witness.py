"""Institution witnesses: consistency with the last checkpoint seen, persisted across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.checkpoint import verify_countersignature
from audit.errors import WitnessRefusal
from audit.keys import public_key_bytes
from audit.record import RecordKind
from audit.log import AuditLogWriter
from audit.witness import InstitutionWitness

from audit_support import BuiltRun, build_run, seeded_key


def _witness(path: Path) -> InstitutionWitness:
    return InstitutionWitness(path, "bank-a", seeded_key("bank-a"), public_key_bytes(seeded_key("server")))


def _checkpoints(run: BuiltRun) -> list[dict]:
    from audit.record import decode_record

    out = []
    for line in run.lines():
        rec = decode_record(line.rstrip(b"\n"))
        if rec.kind is RecordKind.CHECKPOINT:
            out.append(rec.body["checkpoint"])
    return out


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[BuiltRun, BuiltRun]:
    # The same server key and run, two different round-3 histories (a fork).
    return build_run(tmp_path / "a", witness=True), build_run(tmp_path / "b", model_salt={3: "-fork"})


def test_witness_accepts_extensions_and_countersigns(tmp_path: Path, two_runs) -> None:
    run, _ = two_runs
    witness = _witness(tmp_path / "bank-a.jsonl")
    cps = _checkpoints(run)
    witness.witness(cps[0], [])
    for old, new in zip(cps, cps[1:]):
        proof = run.auditor.writer.consistency_proof(old["tree_size"], new["tree_size"])
        cs = witness.witness(new, proof)
        assert verify_countersignature(cs, seeded_key("bank-a").public_key()).tree_size == new["tree_size"]
    assert witness.last_checkpoint.tree_size == cps[-1]["tree_size"]


def test_state_survives_restart_and_rollback_is_refused(tmp_path: Path, two_runs) -> None:
    run, _ = two_runs
    cps = _checkpoints(run)
    path = tmp_path / "bank-a.jsonl"
    first = _witness(path)
    first.witness(cps[0], [])
    first.witness(cps[2], run.auditor.writer.consistency_proof(cps[0]["tree_size"], cps[2]["tree_size"]))
    first.close()
    restarted = _witness(path)  # a new process: reads the last checkpoint from its own log
    assert restarted.last_checkpoint.tree_size == cps[2]["tree_size"]
    with pytest.raises(WitnessRefusal, match="rollback"):
        restarted.witness(cps[1], [])
    kinds = [r.kind for r in AuditLogWriter.open_existing(path, seeded_key("bank-a")).records]
    assert kinds == [RecordKind.WITNESS, RecordKind.WITNESS, RecordKind.WITNESS_REFUSED]


def test_fork_of_equal_size_is_refused(tmp_path: Path, two_runs) -> None:
    honest, forked = two_runs
    witness = _witness(tmp_path / "bank-a.jsonl")
    witness.witness(_checkpoints(honest)[2], [])
    with pytest.raises(WitnessRefusal, match="fork"):
        witness.witness(_checkpoints(forked)[2], [])


def test_bad_consistency_proof_is_refused(tmp_path: Path, two_runs) -> None:
    honest, forked = two_runs
    witness = _witness(tmp_path / "bank-a.jsonl")
    cps, other = _checkpoints(honest), _checkpoints(forked)
    witness.witness(cps[2], [])
    # A later checkpoint from the forked history cannot be proven to extend ours.
    proof = forked.auditor.writer.consistency_proof(cps[2]["tree_size"], other[3]["tree_size"])
    with pytest.raises(WitnessRefusal, match="does not extend"):
        witness.witness(other[3], proof)
    with pytest.raises(WitnessRefusal):
        witness.witness(cps[3], ["00" * 32])


def test_forged_or_foreign_checkpoints_are_refused(tmp_path: Path, two_runs) -> None:
    run, _ = two_runs
    cp = dict(_checkpoints(run)[0])
    witness = _witness(tmp_path / "bank-a.jsonl")
    with pytest.raises(WitnessRefusal, match="signature"):
        witness.witness(dict(cp, root="ab" * 32), [])
    with pytest.raises(WitnessRefusal, match="malformed"):
        witness.witness(dict(cp, v="fedfraud-checkpoint/9"), [])
    other_run = build_run(tmp_path / "other", run_id="run-2", rounds=1)
    witness.witness(cp, [])
    with pytest.raises(WitnessRefusal, match="run"):
        witness.witness(_checkpoints(other_run)[0], [])


def test_refused_fork_in_institution_log_is_equivocation_evidence(tmp_path: Path, two_runs) -> None:
    from audit.verify import Verdict, verify_log

    honest, forked = two_runs
    path = tmp_path / "bank-a.jsonl"
    witness = _witness(path)
    cps = _checkpoints(honest)
    witness.witness(cps[-1], [])
    with pytest.raises(WitnessRefusal):
        witness.witness(_checkpoints(forked)[-1], [])
    report = verify_log(honest.log, honest.trusted, honest.server_pub, [path])
    assert report.verdict is Verdict.EQUIVOCATION
    assert report.evidence[0]["tree_size"] == cps[-1]["tree_size"]
