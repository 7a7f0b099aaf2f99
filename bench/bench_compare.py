"""Benchmark: local-only vs pooled MLP vs pooled HGB on the built-in generator (AUC-PR, combined test set).

Three institutions x 20,000 rows, three federation seeds. Each seed: generate,
split 70/15/15 (train / validation / test) per institution, then
:func:`fraud.compare.run_comparison` with the README's federated budget
(10 rounds x 2 local epochs). Prints mean and spread (min-max) of the
combined-test AUC-PR per model.

The federated model is not trained here (this package knows nothing of
Flower). Hook: pass a callable as ``federated`` to :func:`run` -- it gets
``(seed, train_sets, test_sets, validation)`` and returns the federated
model's weights (or a torch module); it is then scored with
:func:`fraud.compare.add_model` and appears as the ``federated`` row.

Run: ``.venv/bin/python bench/bench_compare.py [--seeds 7 8 9] [--rows 20000]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fraud.compare import XY, add_model, run_comparison
from fraud.features import to_arrays
from fraud.generator import DEFAULT_INSTITUTIONS, default_profiles, generate_institution, institution_seed, split_train_test

FederatedHook = Callable[[int, dict[str, XY], dict[str, XY], XY], Any]


def _data(seed: int, rows: int) -> tuple[dict[str, XY], dict[str, XY], XY]:
    trains: dict[str, XY] = {}
    tests: dict[str, XY] = {}
    vals: list[pd.DataFrame] = []
    for profile in default_profiles(DEFAULT_INSTITUTIONS):
        inst_seed = institution_seed(seed, profile.name)
        frame = generate_institution(profile, rows, inst_seed)
        train, rest = split_train_test(frame, 0.3, inst_seed)
        val, test = split_train_test(rest, 0.5, inst_seed + 1)
        trains[profile.name], tests[profile.name] = to_arrays(train), to_arrays(test)
        vals.append(val)
    return trains, tests, to_arrays(pd.concat(vals, ignore_index=True))


def run(
    seeds: Sequence[int] = (7, 8, 9),
    rows: int = 20_000,
    rounds: int = 10,
    local_epochs: int = 2,
    federated: FederatedHook | None = None,
) -> dict[str, list[float]]:
    """Return ``{model: [AUC-PR per seed]}`` (plus ``base_rate``)."""
    table: dict[str, list[float]] = {}
    for seed in seeds:
        start = time.perf_counter()
        trains, tests, validation = _data(seed, rows)
        result = run_comparison(
            trains, tests, validation, rounds=rounds, local_epochs=local_epochs, batch_size=256, lr=3e-3, seed=seed
        )
        if federated is not None:
            result = add_model(result, "federated", federated(seed, trains, tests, validation))
        for name, value in result.auc_pr_table().items():
            table.setdefault(name, []).append(value)
        table.setdefault("base_rate", []).append(result.base_rate)
        print(f"seed {seed}: {time.perf_counter() - start:.1f}s")
    return table


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=2)
    args = parser.parse_args()
    table = run(args.seeds, args.rows, args.rounds, args.local_epochs)
    print(f"\nAUC-PR on the combined test set, {len(args.seeds)} seeds, {args.rows} rows x 3 institutions")
    print(f"{'model':<18} {'mean':>7} {'min':>7} {'max':>7}")
    for name, values in table.items():
        arr = np.asarray(values)
        print(f"{name:<18} {arr.mean():7.3f} {arr.min():7.3f} {arr.max():7.3f}")


if __name__ == "__main__":
    main()
