"""Fixtures for the fraud package: real generated data, small and seeded."""

from __future__ import annotations

import pandas as pd
import pytest

from fraud.compare import ComparisonResult, run_comparison
from fraud.features import to_arrays
from fraud.generator import (
    DEFAULT_INSTITUTIONS,
    default_profiles,
    generate_institution,
    institution_seed,
    split_train_test,
)


@pytest.fixture(scope="session")
def federation_frames() -> dict[str, pd.DataFrame]:
    """The three default institutions, 20,000 rows each, seed 11."""
    return {
        p.name: generate_institution(p, 20_000, institution_seed(11, p.name))
        for p in default_profiles(DEFAULT_INSTITUTIONS)
    }


@pytest.fixture(scope="session")
def small_comparison(federation_frames: dict[str, pd.DataFrame]) -> ComparisonResult:
    """A one-round comparison on 3,000 rows per institution (the reports add their own model)."""
    trains, tests, vals = {}, {}, []
    for name, frame in federation_frames.items():
        train, rest = split_train_test(frame.iloc[:3_000], 0.4, 1)
        val, test = split_train_test(rest, 0.5, 2)
        trains[name], tests[name] = to_arrays(train), to_arrays(test)
        vals.append(val)
    return run_comparison(
        trains, tests, to_arrays(pd.concat(vals)), rounds=1, local_epochs=1, batch_size=256, lr=3e-3, seed=0
    )
