"""Cost of the audit log per federated round, as the server incurs it.

Builds a :class:`audit.run.RunAuditor` on a temporary file with three
institutions and, for ``--rounds`` simulated rounds, makes exactly the audit
calls of one server round:

1. ``round_opened``;
2. three receipts, each signed by an institution's key with
   :func:`audit.receipt.make_receipt` and logged with ``receipt``;
3. ``round_closed``;
4. ``checkpoint`` (signed Merkle checkpoint over the log);
5. three witnesses: each institution's :class:`audit.witness.InstitutionWitness`
   checks the checkpoint and its consistency proof and countersigns it (its
   own log, with ``fsync``), and the server logs it with ``record_witness``.

It prints the median seconds per round, split into the server's own calls
and the institutions' part (signing receipts, witnessing; done on their
machines in a real run, here in the same process), and compares the total
with a typical demo round's wall time (``--round-seconds``, default 1.3 s).
Target: <= 2 % of a round.

Usage::

    python bench/bench_audit_overhead.py [--rounds 50] [--round-seconds 1.3] [--dir DIR]
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
from audit.witness import InstitutionWitness  # noqa: E402

INSTITUTIONS = ("bank-a", "bank-b", "insurer-c")
TARGET_PERCENT = 2.0


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def measure(directory: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Per-round seconds of (server calls, institution calls) over ``rounds`` rounds."""
    server_key = generate_signing_key()
    inst_keys = {i: generate_signing_key() for i in INSTITUTIONS}
    auditor = RunAuditor.create(directory / "server.audit.jsonl", server_key, "bench-fed", "bench-run")
    auditor.start(
        code_version="bench",
        run_config={"num-server-rounds": rounds},
        institutions=[{"id": i, "public_key": public_key_bytes(k), "policy_hash": _h(i)} for i, k in inst_keys.items()],
        run_plan={"purpose": "FraudPreventionAndDetection"},
        aggregation_mode="secagg+",
        aggregation_params={"num-shares": 3, "reconstruction-threshold": 2},
    )
    witnesses = {
        i: InstitutionWitness(directory / f"{i}.witness.jsonl", i, k, public_key_bytes(server_key))
        for i, k in inst_keys.items()
    }
    server_s: list[float] = []
    inst_s: list[float] = []
    clock = time.perf_counter
    for rnd in range(1, rounds + 1):
        server = inst = 0.0
        t = clock()
        auditor.round_opened(rnd, config_hash({"round": rnd}), list(INSTITUTIONS), {"num-shares": 3})
        server += clock() - t
        for name, key in inst_keys.items():
            t = clock()
            receipt = make_receipt(key, name, auditor.log_id, rnd, _h(f"{name}{rnd}"), _h(name))
            inst += clock() - t
            t = clock()
            auditor.receipt(receipt)
            server += clock() - t
        t = clock()
        auditor.round_closed(rnd, list(INSTITUTIONS), _h(f"model{rnd}"), {"loss": 0.25, "auc_pr": 0.8125})
        cp, proof_for = auditor.checkpoint()
        server += clock() - t
        for witness in witnesses.values():
            last = witness.last_checkpoint.tree_size if witness.last_checkpoint else 0
            t = clock()
            proof = proof_for(last)
            server += clock() - t
            t = clock()
            countersignature = witness.witness(cp, proof)
            inst += clock() - t
            t = clock()
            auditor.record_witness(countersignature)
            server += clock() - t
        server_s.append(server)
        inst_s.append(inst)
    for witness in witnesses.values():
        witness.close()
    auditor.close("completed", _h("final"))
    auditor.close_file()
    return server_s, inst_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--round-seconds", type=float, default=1.3, help="typical demo round wall time (s)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    if args.rounds < 1 or args.round_seconds <= 0:
        parser.error("--rounds must be >= 1 and --round-seconds > 0")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        server_s, inst_s = measure(Path(tmp), args.rounds)
    total = [a + b for a, b in zip(server_s, inst_s)]
    med_server, med_inst, med_total = (statistics.median(x) for x in (server_s, inst_s, total))
    percent = 100 * med_total / args.round_seconds
    print(f"{args.rounds} rounds, 3 institutions, 9 server records + 3 institution records per round (fsync each)")
    print(f"server calls       median {med_server * 1e3:7.2f} ms per round ({100 * med_server / args.round_seconds:.2f} % of {args.round_seconds} s)")
    print(f"institutions' part median {med_inst * 1e3:7.2f} ms per round (receipt signing, witnessing)")
    print(f"total              median {med_total * 1e3:7.2f} ms per round = {percent:.2f} % of a {args.round_seconds} s round "
          f"(target <= {TARGET_PERCENT:.0f} %: {'met' if percent <= TARGET_PERCENT else 'NOT met'})")


if __name__ == "__main__":
    main()
