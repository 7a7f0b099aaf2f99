"""Deterministic generator of the invalid (and valid) audit-log test vectors.

Run ``python tests/audit/audit_vectors.py`` to regenerate ``tests/audit/vectors``.
Each vector is a folder named after the attack, holding ``server.jsonl``,
the institutions' witness logs given to the verifier (``witness-<id>.jsonl``),
optional ``policies.json``, and ``expected.json`` (verdict, the failed check's
name, and the record sequence number and line it must point at).  Trusted keys
are in ``vectors/trusted_keys.json`` and ``vectors/server_key.b64``.

Default run layout (seq: record): 0 genesis; round 1: 1 opened, 2 refusal,
3-4 receipts, 5 closed, 6 checkpoint, 7-9 witnesses; round 2: 10 opened,
11 dropout, 12-13 receipts, 14 closed, 15 checkpoint, 16-18 witnesses; round 3:
19 opened, 20-22 receipts, 23 closed, 24 checkpoint, 25-27 witnesses;
28 run_closed, 29 checkpoint, 30-32 witnesses.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from audit_support import (  # noqa: E402
    INSTITUTIONS,
    BuiltRun,
    DishonestAuditor,
    build_run,
    h,
    resign,
    seeded_key,
)

from audit.keys import public_key_b64  # noqa: E402
from audit.receipt import make_receipt  # noqa: E402
from audit.record import encode_record  # noqa: E402

VECTORS = Path(__file__).resolve().parent / "vectors"

Vector = dict[str, Any]


def _emit(out: Path, server_lines: list[bytes], witness: dict[str, bytes], expected: dict[str, Any],
          policies: dict[str, Any] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "server.jsonl").write_bytes(b"".join(server_lines))
    for inst, data in witness.items():
        (out / f"witness-{inst}.jsonl").write_bytes(data)
    if policies is not None:
        (out / "policies.json").write_text(json.dumps(policies, indent=2, sort_keys=True) + "\n")
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


def _witness_files(run: BuiltRun, only: tuple[str, ...] = INSTITUTIONS) -> dict[str, bytes]:
    return {i: run.inst_logs[i].read_bytes() for i in only}


def _exp(verdict: str, check: str, seq: int | None, line: int | None) -> dict[str, Any]:
    return {"verdict": verdict, "check": check, "seq": seq, "line": line}


# Each attack builds from scratch in ``work`` and writes its vector to ``out``.

def valid_run(work: Path, out: Path) -> None:
    run = build_run(work)
    _emit(out, run.lines(), _witness_files(run), _exp("VALID", "", None, None))


def record_deleted(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    del lines[12]  # bank-a's receipt in round 2
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "chain", 13, 13))


def round_deleted(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    del lines[10:19]  # all of round 2, its checkpoint and witnesses
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "chain", 19, 11))


def record_inserted(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    lines.insert(13, lines[12])  # a receipt recorded twice
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "chain", 12, 14))


def records_reordered(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    lines[20], lines[21] = lines[21], lines[20]
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "chain", 21, 21))


def wrong_signer(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    from audit.record import decode_record

    rec = decode_record(lines[23].rstrip(b"\n"))
    body = dict(rec.body, metrics={"auprc": 0.99, "loss": 0.01})
    forged = encode_record(seeded_key("attacker"), rec.log_id, rec.seq, rec.ts, rec.kind, rec.prev, body)
    lines[23] = forged.line + b"\n"
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "signature", 23, 24))


def receipt_replayed_other_round(work: Path, out: Path) -> None:
    saved: dict[str, Any] = {}

    def receipt_for(run: BuiltRun, inst: str, rnd: int) -> dict[str, Any]:
        receipt = make_receipt(run.inst_keys[inst], inst, run.auditor.log_id, rnd, h(f"update:{inst}:{rnd}"),
                               h("policy:" + inst))
        if inst == "bank-a":
            saved.setdefault(rnd, receipt)
            return saved[1]  # the server reuses bank-a's round-1 receipt
        return receipt

    run = build_run(work, auditor_cls=DishonestAuditor, receipt_for=receipt_for)
    _emit(out, run.lines(), _witness_files(run), _exp("TAMPERED", "receipt", 12, 13))


def receipt_replayed_other_run(work: Path, out: Path) -> None:
    other = build_run(work / "other", run_id="run-0")

    def receipt_for(run: BuiltRun, inst: str, rnd: int) -> dict[str, Any]:
        log_id = other.auditor.log_id if (inst, rnd) == ("bank-a", 3) else run.auditor.log_id
        return make_receipt(run.inst_keys[inst], inst, log_id, rnd, h(f"update:{inst}:{rnd}"), h("policy:" + inst))

    run = build_run(work / "this", auditor_cls=DishonestAuditor, receipt_for=receipt_for)
    _emit(out, run.lines(), _witness_files(run), _exp("TAMPERED", "receipt", 20, 21))


def record_replayed_other_run(work: Path, out: Path) -> None:
    other = build_run(work / "other", run_id="run-0")
    run = build_run(work / "this")
    lines = run.lines()
    lines[23] = other.lines()[23]  # same position, validly signed, but from run-0
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "log id", 23, 24))


def record_replayed_other_round(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    lines[23] = lines[5]  # round 1's round_closed in place of round 3's
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "chain", 5, 24))


def tail_truncated_witnessed(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()[:28]  # run_closed and the final checkpoint cut off
    _emit(out, lines, _witness_files(run), _exp("TAMPERED", "truncation", 28, 29))


def _tail_cut(count: int) -> Callable[[Path, Path], None]:
    """The last ``count`` records (the final witnesses, then the final checkpoint) deleted."""

    def attack(work: Path, out: Path) -> None:
        run = build_run(work)
        lines = run.lines()[: 33 - count]
        seq = 29 if count == 4 else 33 - count
        _emit(out, lines, _witness_files(run), _exp("INCOMPLETE", "cut tail", seq, None))

    attack.__name__ = f"tail_cut_after_final_checkpoint_{count}"
    return attack


def unwitnessed_checkpoint_appended(work: Path, out: Path) -> None:
    # The server appends a checkpoint after the final witnessing: no
    # institution countersigned it, so nothing vouches for it.
    run = build_run(work)
    run.auditor.checkpoint()
    _emit(out, run.lines(), _witness_files(run), _exp("INCOMPLETE", "unwitnessed record", 33, 34))


def institution_log_cut(work: Path, out: Path) -> None:
    # bank-a's own log is cut to its first record; the server log holds its later countersignatures.
    run = build_run(work)
    witness = _witness_files(run)
    witness["bank-a"] = witness["bank-a"].splitlines(keepends=True)[0]
    _emit(out, run.lines(), witness, _exp("INCOMPLETE", "institution log cut", None, None))


def institution_log_empty(work: Path, out: Path) -> None:
    run = build_run(work)
    witness = _witness_files(run)
    witness["bank-a"] = b""
    _emit(out, run.lines(), witness, _exp("INCOMPLETE", "institution log", None, None))


def history_rewritten_with_inserted_refusal(work: Path, out: Path) -> None:
    # The server rewrites history with its real key: a forged refusal in round
    # 2 shifts every later record; institutions hold the original checkpoints.
    original = build_run(work / "original")

    def forge(auditor: Any, rnd: int) -> None:
        if rnd == 2:
            auditor.policy_refusal(rnd, "bank-a", ["forged"], h("policy:bank-a"))

    rewritten = build_run(work / "rewritten", hook=forge)
    _emit(out, rewritten.lines(), _witness_files(original), _exp("EQUIVOCATION", "equivocation", None, None))


def history_rewritten_with_receipt_removed(work: Path, out: Path) -> None:
    # The server rewrites history with its real key: bank-b's round-2 receipt
    # removed, a dropout logged in its place, cohort and receipts root fixed.
    original = build_run(work / "original", drop_in_round=None)
    rewritten = build_run(work / "rewritten", drop_in_round=2)
    _emit(out, rewritten.lines(), _witness_files(original), _exp("EQUIVOCATION", "equivocation", None, None))


def tail_truncated_unwitnessed(work: Path, out: Path) -> None:
    snap = work / "after-round-2"
    run = build_run(work / "run", snapshot_after={2: snap})
    lines = run.lines()[:24]  # cut after round 3's round_closed
    witness = {i: (snap / run.inst_logs[i].name).read_bytes() for i in INSTITUTIONS}
    _emit(out, lines, witness, _exp("INCOMPLETE", "completeness", None, None))


def rollback_resigned(work: Path, out: Path) -> None:
    original = build_run(work / "original")
    rewritten = build_run(work / "rewritten", model_salt={3: "-rewritten"})
    # The server serves the rewritten history; institutions hold the original.
    _emit(out, rewritten.lines(), _witness_files(original), _exp("EQUIVOCATION", "equivocation", None, None))


def fork(work: Path, out: Path) -> None:
    honest = build_run(work / "honest")
    forked = build_run(work / "forked", model_salt={3: "-fork"})
    witness = _witness_files(honest, ("bank-b", "insurer-c"))
    witness["bank-a"] = forked.inst_logs["bank-a"].read_bytes()  # bank-a was shown another history
    _emit(out, honest.lines(), witness, _exp("EQUIVOCATION", "equivocation", None, None))


def key_substitution(work: Path, out: Path) -> None:
    run = build_run(work, genesis_keys={"bank-b": seeded_key("impostor-bank-b")})
    _emit(out, run.lines(), _witness_files(run, ("bank-a",)), _exp("TAMPERED", "key substitution", 0, 1))


def timestamp_backwards(work: Path, out: Path) -> None:
    run = build_run(work, witness=False, witness_final=False)

    def edit(seq: int, ts: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("2026-01-05T08:00:00.000000Z" if seq == 9 else ts), body

    _emit(out, resign(run.lines(), run.server_key, edit), {}, _exp("TAMPERED", "timestamp", 9, 10))


def _line_edit(name: str, index: int, transform: Callable[[bytes], bytes], check: str) -> Callable[[Path, Path], None]:
    def attack(work: Path, out: Path) -> None:
        run = build_run(work)
        lines = run.lines()
        lines[index] = transform(lines[index].rstrip(b"\n")) + b"\n"
        _emit(out, lines, _witness_files(run), _exp("TAMPERED", check, index, index + 1))

    attack.__name__ = name
    return attack


def _reorder_keys(line: bytes) -> bytes:
    obj = json.loads(line)
    return json.dumps({"sig": obj["sig"], "record": obj["record"], "hash": obj["hash"]},
                      separators=(",", ":"), ensure_ascii=False).encode()


def torn_last_line(work: Path, out: Path) -> None:
    run = build_run(work)
    lines = run.lines()
    offset = sum(len(l) for l in lines[:-1])
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    expected = _exp("TAMPERED", "torn line", None, len(lines))
    expected["offset"] = offset
    _emit(out, lines, _witness_files(run), expected)


def _policies(**overrides: Any) -> dict[str, Any]:
    base = {
        i: {"protection": {"required_aggregation": "any", "min_cohort_size": 2, "max_rounds": 20},
            "outputs": {"allowed_metrics": ["auprc", "loss"], "model_recipients": ["federation"]},
            "audit": {"retention_days": 365}}
        for i in INSTITUTIONS
    }
    for inst, (table, key, value) in overrides.items():
        base[inst.replace("_", "-")][table][key] = value
    return base


def _policy_vector(verdict: str, check: str, seq: int | None, line: int | None, policies: dict[str, Any],
                   **build: Any) -> Callable[[Path, Path], None]:
    def attack(work: Path, out: Path) -> None:
        run = build_run(work, **build)
        _emit(out, run.lines(), _witness_files(run), _exp(verdict, check, seq, line), policies)

    return attack


ATTACKS: dict[str, Callable[[Path, Path], None]] = {
    **{f"tail_cut_after_final_checkpoint_{k}": _tail_cut(k) for k in (1, 2, 3, 4)},
    "unwitnessed_checkpoint_appended": unwitnessed_checkpoint_appended,
    "institution_log_cut": institution_log_cut,
    "institution_log_empty": institution_log_empty,
    "history_rewritten_with_inserted_refusal": history_rewritten_with_inserted_refusal,
    "history_rewritten_with_receipt_removed": history_rewritten_with_receipt_removed,
    "valid_run": valid_run,
    "record_deleted": record_deleted,
    "round_deleted": round_deleted,
    "record_inserted": record_inserted,
    "records_reordered": records_reordered,
    "wrong_signer": wrong_signer,
    "receipt_replayed_other_round": receipt_replayed_other_round,
    "receipt_replayed_other_run": receipt_replayed_other_run,
    "record_replayed_other_run": record_replayed_other_run,
    "record_replayed_other_round": record_replayed_other_round,
    "tail_truncated_witnessed": tail_truncated_witnessed,
    "tail_truncated_unwitnessed": tail_truncated_unwitnessed,
    "rollback_resigned": rollback_resigned,
    "fork": fork,
    "key_substitution": key_substitution,
    "timestamp_backwards": timestamp_backwards,
    "torn_last_line": torn_last_line,
    "whitespace_added": _line_edit("whitespace_added", 14, lambda l: l.replace(b'":', b'": ', 1), "canonical"),
    "keys_reordered": _line_edit("keys_reordered", 14, _reorder_keys, "canonical"),
    "unicode_escape": _line_edit("unicode_escape", 14, lambda l: l.replace(b'"kind":"round_closed"', b'"kind":"round_clos\\u0065d"'), "canonical"),
    "duplicate_key": _line_edit("duplicate_key", 14, lambda l: l.replace(b'{"alg":', b'{"alg":"x","alg":', 1), "canonical"),
    "number_reformatted": _line_edit("number_reformatted", 14, lambda l: l.replace(b'"round":2', b'"round":2.0', 1), "canonical"),
    "nan_injected": _line_edit("nan_injected", 14, lambda l: l.replace(b'"loss":0.25', b'"loss":NaN', 1), "canonical"),
    "policy_min_cohort": _policy_vector("POLICY_VIOLATED", "min cohort", 5, 6, _policies(bank_a=("protection", "min_cohort_size", 3))),
    "policy_max_rounds": _policy_vector("POLICY_VIOLATED", "max rounds", 23, 24, _policies(bank_a=("protection", "max_rounds", 2))),
    "policy_aggregation_mode": _policy_vector("POLICY_VIOLATED", "aggregation mode", 0, 1,
                                              _policies(insurer_c=("protection", "required_aggregation", "ckks"))),
    "policy_metric_not_allowed": _policy_vector("POLICY_VIOLATED", "metrics", 5, 6,
                                                _policies(bank_b=("outputs", "allowed_metrics", ["loss"]))),
    "policy_hash_changed": _policy_vector(
        "POLICY_VIOLATED", "policy hash", 21, 22, _policies(),
        policy_hash_for=lambda inst, rnd: h("policy:" + inst + (":v2" if (inst, rnd) == ("bank-b", 3) else ""))),
}


def generate(target: Path = VECTORS) -> None:
    """(Re)generate every vector into ``target`` deterministically."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    keys = {i: public_key_b64(seeded_key(i)) for i in INSTITUTIONS}
    (target / "trusted_keys.json").write_text(json.dumps(keys, indent=2, sort_keys=True) + "\n")
    (target / "server_key.b64").write_text(public_key_b64(seeded_key("server")) + "\n")
    for name, attack in ATTACKS.items():
        with tempfile.TemporaryDirectory() as work:
            attack(Path(work), target / name)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS)
