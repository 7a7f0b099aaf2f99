"""Fixtures that build real, signed audit logs from deterministic keys.

Keys come from fixed seeds and the clock is a fixed sequence, so every log
(and every test vector) is byte-for-byte reproducible: Ed25519 signatures are
deterministic (RFC 8032 §5.1.6).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from audit.keys import public_key_bytes  # noqa: E402
from audit.receipt import make_receipt  # noqa: E402
from audit.run import RunAuditor, config_hash  # noqa: E402
from audit.witness import InstitutionWitness  # noqa: E402

INSTITUTIONS = ("bank-a", "bank-b", "insurer-c")


def seeded_key(label: str) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key for tests only (never do this in production)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fedfraud-test-key:" + label.encode()).digest())


def h(label: str) -> str:
    """A deterministic SHA-256 hex for test payloads."""
    return hashlib.sha256(label.encode()).hexdigest()


class StepClock:
    """A clock that advances one second per call, from a fixed start."""

    def __init__(self, start: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class BuiltRun:
    """A run recorded into real files, with the keys needed to verify it."""

    log: Path
    server_key: Ed25519PrivateKey
    inst_keys: dict[str, Ed25519PrivateKey]
    inst_logs: dict[str, Path]
    auditor: RunAuditor
    witnesses: dict[str, InstitutionWitness] = field(default_factory=dict)

    @property
    def trusted(self) -> dict[str, bytes]:
        return {i: public_key_bytes(k) for i, k in self.inst_keys.items()}

    @property
    def server_pub(self) -> bytes:
        return public_key_bytes(self.server_key)

    def lines(self) -> list[bytes]:
        return self.log.read_bytes().splitlines(keepends=True)

    def write_lines(self, lines: list[bytes], path: Path | None = None) -> Path:
        target = path or self.log
        target.write_bytes(b"".join(lines))
        return target

    def seq_of(self, kind: str, nth: int = 0) -> int:
        from audit.record import decode_record

        found = [decode_record(l.rstrip(b"\n")) for l in self.lines()]
        return [r.seq for r in found if r.kind.value == kind][nth]


def policy_hash(inst: str) -> str:
    return h("policy:" + inst)


def witness_all(run: BuiltRun, witnesses: dict[str, InstitutionWitness], only: tuple[str, ...] | None = None) -> None:
    cp, proof_for = run.auditor.checkpoint()
    for inst, w in witnesses.items():
        if only is not None and inst not in only:
            continue
        last = w.last_checkpoint.tree_size if w.last_checkpoint else 0
        cs = w.witness(cp, proof_for(last))
        run.auditor.record_witness(cs)


def build_run(
    directory: Path,
    *,
    rounds: int = 3,
    run_id: str = "run-1",
    close: bool = True,
    witness: bool = True,
    witness_final: bool = True,
    metrics: dict[str, float] | None = None,
    aggregation_mode: str = "secagg+",
    min_cohort: int = 2,
    drop_in_round: int | None = 2,
    refuse_in_round: int | None = 1,
    hook: Callable[[RunAuditor, int], None] | None = None,
    server_key: Ed25519PrivateKey | None = None,
    auditor_cls: type[RunAuditor] = RunAuditor,
    receipt_for: Callable[[BuiltRun, str, int], dict[str, Any]] | None = None,
    genesis_keys: dict[str, Ed25519PrivateKey] | None = None,
    model_salt: dict[int, str] | None = None,
    snapshot_after: dict[int, Path] | None = None,
    policy_hash_for: Callable[[str, int], str] | None = None,
) -> BuiltRun:
    """Record a realistic run: genesis, rounds with refusals, dropouts, receipts, checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    server_key = server_key or seeded_key("server")
    inst_keys = {i: seeded_key(i) for i in INSTITUTIONS}
    inst_keys.update(genesis_keys or {})
    clock = StepClock()
    log = directory / f"{run_id}.audit.jsonl"
    auditor = auditor_cls.create(log, server_key, "fed-eu-fraud", run_id, clock=clock)
    inst_logs = {i: directory / f"{run_id}.{i}.witness.jsonl" for i in INSTITUTIONS}
    witnesses = {
        i: InstitutionWitness(inst_logs[i], i, inst_keys[i], public_key_bytes(server_key), clock=clock)
        for i in INSTITUTIONS
    }
    run = BuiltRun(log, server_key, inst_keys, inst_logs, auditor, witnesses)
    run_config = {"num-server-rounds": rounds, "min-cohort": min_cohort, "lr": 0.003, "aggregation": aggregation_mode}
    auditor.start(
        code_version="fedfraud 0.1.0",
        run_config=run_config,
        institutions=[
            {"id": i, "public_key": public_key_bytes(inst_keys[i]), "policy_hash": policy_hash(i)} for i in INSTITUTIONS
        ],
        run_plan={"purpose": "FraudPreventionAndDetection", "min_cohort_size": min_cohort, "max_rounds": 10},
        aggregation_mode=aggregation_mode,
        aggregation_params={"num-shares": 3, "reconstruction-threshold": 2, "clipping-range": 8.0},
    )
    released = metrics if metrics is not None else {"auprc": 0.8125, "loss": 0.25}
    for rnd in range(1, rounds + 1):
        auditor.round_opened(rnd, config_hash({"round": rnd, "lr": 0.003}), list(INSTITUTIONS),
                             {"num-shares": 3, "reconstruction-threshold": 2, "modulus-range": 2**32})
        survivors = list(INSTITUTIONS)
        if refuse_in_round == rnd:
            auditor.policy_refusal(rnd, "insurer-c", ["max_rounds"], policy_hash("insurer-c"))
            survivors.remove("insurer-c")
        if drop_in_round == rnd and "bank-b" in survivors and len(survivors) > 2:
            auditor.dropout(rnd, ["bank-b"], "unmask")
            survivors.remove("bank-b")
        for inst in survivors:
            if receipt_for is not None:
                receipt = receipt_for(run, inst, rnd)
            else:
                ph = policy_hash_for(inst, rnd) if policy_hash_for else policy_hash(inst)
                receipt = make_receipt(inst_keys[inst], inst, auditor.log_id, rnd, h(f"update:{inst}:{rnd}"), ph)
            auditor.receipt(receipt)
        if hook is not None:
            hook(auditor, rnd)
        salt = (model_salt or {}).get(rnd, "")
        auditor.round_closed(rnd, survivors, h(f"model:{rnd}{salt}"), released)
        if witness:
            witness_all(run, witnesses)
        if snapshot_after and rnd in snapshot_after:
            snapshot_after[rnd].mkdir(parents=True, exist_ok=True)
            for inst, path in inst_logs.items():
                if path.exists():
                    (snapshot_after[rnd] / path.name).write_bytes(path.read_bytes())
    if close:
        auditor.close("completed", h(f"model:{rounds}"))
        if witness_final:
            witness_all(run, witnesses)
    return run


class DishonestAuditor(RunAuditor):
    """A server that logs receipts without checking them (to build attack logs)."""

    def receipt(self, receipt: dict[str, Any]):  # type: ignore[override]
        from audit.record import RecordKind

        record = self._writer.append(
            RecordKind.RECEIPT, {"round": self._round, "institution": receipt["institution"], "receipt": receipt}
        )
        self._receipts.append(receipt)
        return record


def resign(lines: list[bytes], key: Ed25519PrivateKey, edit: Callable[[int, str, dict[str, Any]], tuple[str, dict[str, Any]]]) -> list[bytes]:
    """Re-encode a whole log with ``key`` after ``edit(seq, ts, body)`` (a dishonest server rewriting history).

    Checkpoint records are re-signed over the rewritten records.
    """
    from audit.checkpoint import sign_checkpoint
    from audit.merkle import MerkleFrontier, leaf_hash
    from audit.record import GENESIS_PREV, RecordKind, decode_record, encode_record

    out: list[bytes] = []
    prev = GENESIS_PREV
    frontier = MerkleFrontier()
    for raw in lines:
        rec = decode_record(raw.rstrip(b"\n"))
        ts, body = edit(rec.seq, rec.ts, rec.body)
        if rec.kind is RecordKind.CHECKPOINT:
            body = {"checkpoint": sign_checkpoint(key, rec.log_id, frontier.size, frontier.root().hex()).to_dict()}
        new = encode_record(key, rec.log_id, rec.seq, ts, rec.kind, prev, body)
        out.append(new.line + b"\n")
        prev = new.hash
        frontier.append(leaf_hash(bytes.fromhex(new.hash)))
    return out


