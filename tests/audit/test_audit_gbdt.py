"""The verifier on the records of a boosted-tree run (gbdt_bins, gbdt_sum, gbdt_tree).

The logs are written by a server that signs whatever it likes (it holds the
key): what it claims is checked against the receipts and the policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.receipt import make_receipt
from audit.run import RunAuditor
from audit.verify import Verdict, verify_log

from audit_support import BuiltRun, build_run, h, policy_hash, seeded_key

TREE = h("tree")


def _run(tmp_path: Path, smallest: int, receipts_of: tuple[str, ...] = ("bank-a", "bank-b")) -> BuiltRun:
    """One round with a bin agreement, one histogram sum and one tree."""

    def hook(auditor: RunAuditor, rnd: int) -> None:
        auditor.gbdt_bins(rnd, [8, 8, 2], ["bank-a", "bank-b"])
        receipts = [
            make_receipt(seeded_key(i), i, auditor.log_id, rnd, h(f"hist:{i}"), policy_hash(i))
            for i in receipts_of
        ]
        auditor.gbdt_sum(rnd, "histogram-0-0", [1, 3, 8], h("sum"), receipts)
        auditor.gbdt_tree(rnd, 0, TREE, 3, smallest, 50)

    return build_run(tmp_path, rounds=1, refuse_in_round=None, drop_in_round=None, hook=hook)


def _verify(run: BuiltRun, policies: dict[str, dict[str, Any]] | None = None) -> Any:
    return verify_log(run.log, run.trusted, run.server_pub, list(run.inst_logs.values()), policies)


def test_gbdt_records_of_an_honest_run_verify(tmp_path: Path) -> None:
    report = _verify(_run(tmp_path, smallest=60))
    assert report.verdict is Verdict.VALID, [c.message for c in report.failures]


def test_a_tree_with_a_small_node_is_a_policy_violation(tmp_path: Path) -> None:
    report = _verify(_run(tmp_path, smallest=7))
    assert report.verdict is Verdict.POLICY_VIOLATED
    assert any("7 rows, below the run's minimum of 50" in c.message for c in report.failures)
    # Checked against each institution's own policy too (a stricter one).
    run = _run(tmp_path / "strict", smallest=60)
    policies = {"bank-a": {"histograms": {"min_child_rows": 100}}}
    report = _verify(run, policies)
    assert report.verdict is Verdict.POLICY_VIOLATED
    assert any("bank-a's histograms.min_child_rows of 100" in c.message for c in report.failures)


def test_a_histogram_sum_of_one_institution_is_a_policy_violation(tmp_path: Path) -> None:
    report = _verify(_run(tmp_path, smallest=60, receipts_of=("bank-a",)))
    assert report.verdict is Verdict.POLICY_VIOLATED
    assert any("fewer than two institutions" in c.message for c in report.failures)


def test_a_forged_histogram_receipt_is_tampering(tmp_path: Path) -> None:
    # A server that writes a histogram sum with a receipt bank-b never signed
    # (made with another key): the verifier checks every receipt in the record.
    from audit.record import RecordKind

    def hook(auditor: RunAuditor, rnd: int) -> None:
        good = make_receipt(seeded_key("bank-a"), "bank-a", auditor.log_id, rnd, h("hist:a"), policy_hash("bank-a"))
        forged = make_receipt(seeded_key("mallory"), "bank-b", auditor.log_id, rnd, h("hist:b"), policy_hash("bank-b"))
        auditor._writer.append(RecordKind.GBDT_SUM, {
            "round": rnd, "task": "histogram-0-0", "shape": [1, 3, 8], "sum_sha256": h("sum"),
            "receipts": [good, forged]})

    run = build_run(tmp_path, rounds=1, refuse_in_round=None, drop_in_round=None, hook=hook)
    report = _verify(run)
    assert report.verdict is Verdict.TAMPERED
    assert any("histogram receipt of 'bank-b'" in c.message for c in report.failures)
