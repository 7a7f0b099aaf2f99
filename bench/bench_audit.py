"""Benchmark of the audit log: append cost and verification throughput.

Writes a run of about 100,000 records (rounds of round_opened, three signed
receipts, round_closed and a checkpoint; then run_closed, a final checkpoint
and three witnesses), then verifies it several times and prints the median.

Usage::

    python bench/bench_audit.py [--records 100000] [--runs 3] [--dir DIR]

Target: >= 10,000 records/s verification on one core.  Appends include an
``fsync`` each, so their cost depends on the file system (``--dir``).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.keys import generate_signing_key, public_key_bytes  # noqa: E402
from audit.receipt import make_receipt  # noqa: E402
from audit.run import RunAuditor, config_hash  # noqa: E402
from audit.verify import Verdict, verify_log  # noqa: E402
from audit.witness import InstitutionWitness  # noqa: E402

INSTITUTIONS = ("bank-a", "bank-b", "insurer-c")
RECORDS_PER_ROUND = 6


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_log(directory: Path, records: int) -> tuple[Path, dict[str, bytes], bytes, list[Path], float, float]:
    server_key = generate_signing_key()
    inst_keys = {i: generate_signing_key() for i in INSTITUTIONS}
    auditor = RunAuditor.create(directory / "bench.audit.jsonl", server_key, "bench-fed", "bench-run")
    auditor.start(
        code_version="bench",
        run_config={"num-server-rounds": records // RECORDS_PER_ROUND},
        institutions=[{"id": i, "public_key": public_key_bytes(k), "policy_hash": _h(i)} for i, k in inst_keys.items()],
        run_plan={"purpose": "FraudPreventionAndDetection"},
        aggregation_mode="secagg+",
        aggregation_params={"num-shares": 3, "reconstruction-threshold": 2},
    )
    rounds = max(1, (records - 8) // RECORDS_PER_ROUND)
    # Receipts are signed by the institutions; sign them outside the timed
    # loop so the figure is the server's append cost.
    receipts = {}
    for rnd in range(1, rounds + 1):
        for inst in INSTITUTIONS:
            receipts[(rnd, inst)] = make_receipt(inst_keys[inst], inst, auditor.log_id, rnd, _h(f"{inst}{rnd}"), _h(inst))
    start = time.perf_counter()
    for rnd in range(1, rounds + 1):
        auditor.round_opened(rnd, config_hash({"round": rnd}), list(INSTITUTIONS), {"num-shares": 3})
        for inst in INSTITUTIONS:
            auditor.receipt(receipts[(rnd, inst)])
        auditor.round_closed(rnd, list(INSTITUTIONS), _h(f"model{rnd}"), {"loss": 0.25, "auc_pr": 0.8125})
        auditor.checkpoint()
    elapsed = time.perf_counter() - start
    appended = rounds * RECORDS_PER_ROUND
    auditor.close("completed", _h("final"))
    cp, proof_for = auditor.checkpoint()
    inst_logs = []
    for inst, key in inst_keys.items():
        path = directory / f"{inst}.witness.jsonl"
        witness = InstitutionWitness(path, inst, key, public_key_bytes(server_key))
        auditor.record_witness(witness.witness(cp, proof_for(0)))
        inst_logs.append(path)
    auditor.close_file()
    trusted = {i: public_key_bytes(k) for i, k in inst_keys.items()}
    return auditor.writer.path, trusted, public_key_bytes(server_key), inst_logs, elapsed, elapsed / appended


def ed25519_verify_cost(samples: int = 2000) -> float:
    """Seconds per raw Ed25519 verify on this machine (the floor of verification)."""
    key = generate_signing_key()
    public, message = key.public_key(), b"x" * 40
    signature = key.sign(message)
    start = time.perf_counter()
    for _ in range(samples):
        public.verify(signature, message)
    return (time.perf_counter() - start) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        log, trusted, server, inst_logs, write_s, per_append = write_log(Path(tmp), args.records)
        n = sum(1 for _ in log.open("rb"))
        print(f"wrote {n} records in {write_s:.1f} s: {per_append * 1e6:.0f} µs per append (incl. sign + fsync)")
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            report = verify_log(log, trusted, server, inst_logs)
            times.append(time.perf_counter() - t0)
            if report.verdict is not Verdict.VALID:
                raise SystemExit(f"benchmark log did not verify: {report.first_failure}")
        median = statistics.median(times)
        print(f"verify: median {median:.2f} s over {args.runs} runs ({', '.join(f'{t:.2f}' for t in times)})")
        print(f"verify throughput: {n / median:,.0f} records/s (target >= 10,000), {median / n * 1e6:.1f} µs per record")
        raw = ed25519_verify_cost()
        # Records, receipts (3 per 6 records) and witnesses each need one verify.
        sigs = 1 + 3 / RECORDS_PER_ROUND
        print(f"raw Ed25519 verify here: {raw * 1e6:.0f} µs -> signature floor {sigs * raw * 1e6:.0f} µs per record "
              f"({1 / (sigs * raw):,.0f} records/s ceiling); non-signature overhead "
              f"{(median / n - sigs * raw) * 1e6:.0f} µs per record")


if __name__ == "__main__":
    main()
