"""Benchmark: the CKKS layer of the ``ckks`` aggregation mode against SecAgg+ masking alone.

What is measured
----------------
For each model size (default 10,000, 100,000 and 1,000,000 parameters), with
the default parameter set (``secagg.ckks.DEFAULT_PARAMETERS``: N=4096, a
109-bit modulus, symmetric-key encryption) and words modulo 2**32:

1. **encrypt**: ``secagg.ckks.encrypt_words`` of one institution's masked
   words (including serialization), and the words per second it reaches;
2. **aggregate**: the server's work for ``--contributors`` institutions
   (default 10): ``PublicCKKS.load_contribution`` of every contribution (all
   the checks on hostile input) plus ``PublicCKKS.add`` (with serialization
   of the sum); signature checks are not included;
3. **decrypt**: ``secagg.ckks.decrypt_words`` of the sum (checks, decryption,
   rounding, reduction);
4. **bytes on the wire per parameter**: the serialized ciphertexts of one
   contribution divided by the parameter count (SecAgg+ alone sends 4);
5. **largest decoding error** of the sum before rounding (must stay far below
   0.25, the margin ``decrypt_words`` allows; the script fails otherwise),
   and whether the decoded sum equals the plain sum modulo 2**32 exactly.

The **baseline** is what SecAgg+ already costs one institution for the same
size, measured in the same run: ``secagg.masks.mask_stream`` of the size
(one AES-256-CTR mask) plus ``secagg.masks.add_mod`` onto the words. Ratios
are CKKS step / baseline, both medians.

How
---
Each size gets one untimed warm-up, then ``--repeats`` rounds in which the
baseline and the CKKS steps alternate in order (baseline first on even
rounds, last on odd ones), so slow drift of a shared machine hits both.
Words come from a seeded generator (benchmark data, not masks). The table
reports medians; compare ratios from one run, not absolute times across runs.

Usage::

    .venv/bin/python bench/bench_ckks.py --sizes 10000,100000,1000000 --repeats 5 \\
        [--contributors 10] [--json bench-ckks.json]

Progress goes to stderr; the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from core.errors import ProtocolError
from secagg.ckks import (
    DEFAULT_PARAMETERS,
    CKKSKeys,
    PublicCKKS,
    decrypt_words,
    encrypt_words,
)
from secagg.masks import add_mod, mask_stream

MODULUS = 2**32
BASELINE, ENCRYPT, AGGREGATE, DECRYPT = "baseline", "encrypt", "aggregate", "decrypt"
STEPS = (BASELINE, ENCRYPT, AGGREGATE, DECRYPT)


def progress(text: str) -> None:
    """One progress line on stderr."""
    print(f"[bench-ckks {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def make_words(count: int, size: int) -> list[npt.NDArray[np.uint32]]:
    """``count`` vectors of ``size`` uniform words modulo 2**32 (seeded benchmark data)."""
    return [
        np.random.default_rng(20_000 + i)
        .integers(0, MODULUS, size, dtype=np.uint64)
        .astype(np.uint32)
        for i in range(count)
    ]


class Round:
    """Everything one size needs, built once; each step is timed on its own."""

    def __init__(self, size: int, contributors: int) -> None:
        self.size = size
        self.contributors = contributors
        self.keys = CKKSKeys.generate()
        self.public = PublicCKKS.load(
            self.keys.public_context(), self.keys.context_hash(), DEFAULT_PARAMETERS
        )
        self.words = make_words(contributors, size)
        self.plain_sum = (np.sum(np.stack(self.words).astype(np.uint64), axis=0) % MODULUS).astype(
            np.uint32
        )
        # Every contribution encrypted once; encrypt() times one of them again.
        self.contributions = [encrypt_words(self.keys, w) for w in self.words]
        self.encrypted_sum: list[bytes] = []

    def baseline(self) -> float:
        key = os.urandom(32)
        start = time.perf_counter()
        add_mod(self.words[0], mask_stream(key, self.size, MODULUS), MODULUS)
        return time.perf_counter() - start

    def encrypt(self) -> float:
        start = time.perf_counter()
        encrypt_words(self.keys, self.words[0])
        return time.perf_counter() - start

    def aggregate(self) -> float:
        start = time.perf_counter()
        loaded = [self.public.load_contribution(blobs, self.size) for blobs in self.contributions]
        self.encrypted_sum = self.public.add(loaded)
        return time.perf_counter() - start

    def decrypt(self) -> float:
        if not self.encrypted_sum:
            self.aggregate()
        start = time.perf_counter()
        total = decrypt_words(self.keys, self.encrypted_sum, self.size, MODULUS, self.contributors)
        seconds = time.perf_counter() - start
        if not np.array_equal(total, self.plain_sum):
            raise AssertionError(f"size {self.size}: the decrypted sum differs from the plain sum")
        return seconds

    def max_error(self) -> float:
        """Largest distance of a decoded slot of the sum from the exact integer sum."""
        if not self.encrypted_sum:
            self.aggregate()
        # TenSEAL directly, on the institutions' own context: the raw decoding.
        context = self.keys._context
        raw = np.concatenate(
            [
                np.asarray(ts.ckks_vector_from(context, blob).decrypt())
                for blob in self.encrypted_sum
            ]
        )
        exact = np.sum(np.stack(self.words).astype(np.float64), axis=0)
        return float(np.max(np.abs(raw - exact)))

    def wire_bytes_per_param(self) -> float:
        return sum(len(blob) for blob in self.contributions[0]) / self.size


def bench_size(size: int, contributors: int, repeats: int) -> dict[str, Any]:
    """Warm-up, then ``repeats`` alternating rounds of the baseline and the CKKS steps."""
    bench = Round(size, contributors)
    steps = {
        BASELINE: bench.baseline,
        ENCRYPT: bench.encrypt,
        AGGREGATE: bench.aggregate,
        DECRYPT: bench.decrypt,
    }
    for fn in steps.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in STEPS}
    for index in range(repeats):
        order = STEPS if index % 2 == 0 else STEPS[::-1]
        for name in order:
            times[name].append(steps[name]())
        progress(
            f"size {size:,} repeat {index + 1}/{repeats}: "
            + ", ".join(f"{n} {times[n][-1] * 1e3:.1f}ms" for n in STEPS)
        )
    medians = {name: statistics.median(values) for name, values in times.items()}
    error = bench.max_error()
    if not error < 0.1:
        raise AssertionError(
            f"size {size}: decoding error {error:.3g} is too close to the 0.25 margin"
        )
    return {
        "params": size,
        "contributors": contributors,
        "repeats": repeats,
        "seconds": times,
        "median_seconds": medians,
        "encrypt_words_per_second": size / medians[ENCRYPT],
        "ratio_over_baseline": {n: medians[n] / medians[BASELINE] for n in STEPS if n != BASELINE},
        "wire_bytes_per_param": bench.wire_bytes_per_param(),
        "secagg_wire_bytes_per_param": 4.0,
        "ciphertexts": DEFAULT_PARAMETERS.chunks(size),
        "max_decode_error": error,
        "exact": True,
    }


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    n = report["contributors"]
    lines = [
        (
            f"CKKS layer ({report['parameter_set']}, symmetric key, words mod 2**32), medians; "
            "ratio = CKKS step / SecAgg+ masking baseline (mask_stream + add_mod) in the same run"
        ),
        "",
        (
            "| params | repeats | baseline (ms) | encrypt (ms) | ratio | encrypt Mwords/s | "
            f"aggregate {n} (ms) | ratio | decrypt (ms) | ratio | B/param CKKS | B/param SecAgg+ | "
            "max decode err | exact |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for e in report["sizes"]:
        m, r = e["median_seconds"], e["ratio_over_baseline"]
        lines.append(
            f"| {e['params']:,} | {e['repeats']} | {m[BASELINE] * 1e3:.2f} | "
            f"{m[ENCRYPT] * 1e3:.1f} | {r[ENCRYPT]:.0f}x | {e['encrypt_words_per_second'] / 1e6:.2f} | "
            f"{m[AGGREGATE] * 1e3:.1f} | {r[AGGREGATE]:.0f}x | {m[DECRYPT] * 1e3:.1f} | {r[DECRYPT]:.0f}x | "
            f"{e['wire_bytes_per_param']:.2f} | {e['secagg_wire_bytes_per_param']:.0f} | "
            f"{e['max_decode_error']:.1e} | {'yes' if e['exact'] else 'NO'} |"
        )
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers, e.g. 10000,100000")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_ckks.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("10000,100000,1000000"),
        help="comma list of parameter counts, default 10000,100000,1000000",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed rounds per size (after a warm-up), default 5"
    )
    parser.add_argument(
        "--contributors",
        type=int,
        default=10,
        help="institutions whose contributions the server adds, default 10",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results as JSON here"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        DEFAULT_PARAMETERS.check_capacity(args.contributors, MODULUS)
    except ProtocolError as exc:
        parser.error(str(exc))

    report: dict[str, Any] = {
        "benchmark": "bench_ckks",
        "parameter_set": DEFAULT_PARAMETERS.name,
        "contributors": args.contributors,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "tenseal": ts.__version__,
        },
        "sizes": [],
    }
    started = time.perf_counter()
    for size in args.sizes:
        progress(f"size {size:,}: {DEFAULT_PARAMETERS.chunks(size)} ciphertexts per contribution")
        report["sizes"].append(bench_size(size, args.contributors, args.repeats))
    report["total_seconds"] = time.perf_counter() - started
    report["machine"]["load_average_end"] = list(os.getloadavg())
    print(markdown(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
        progress(f"wrote {args.json}")
    progress(f"done in {report['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
