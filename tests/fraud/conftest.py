"""Fixtures for the fraud package: real generated data, small and seeded."""

from __future__ import annotations

import pandas as pd
import pytest

from fraud.generator import DEFAULT_INSTITUTIONS, default_profiles, generate_institution, institution_seed


@pytest.fixture(scope="session")
def federation_frames() -> dict[str, pd.DataFrame]:
    """The three default institutions, 20,000 rows each, seed 11."""
    return {
        p.name: generate_institution(p, 20_000, institution_seed(11, p.name))
        for p in default_profiles(DEFAULT_INSTITUTIONS)
    }
