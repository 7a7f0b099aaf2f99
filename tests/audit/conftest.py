"""Fixtures for the audit tests (helpers live in audit_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit_support import BuiltRun, build_run  # noqa: F401 - re-exported for fixtures


@pytest.fixture
def built_run(tmp_path: Path) -> BuiltRun:
    return build_run(tmp_path / "run")


@pytest.fixture(scope="session")
def pristine_run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    """One valid run shared by tests that only read it (copy before mutating)."""
    return build_run(tmp_path_factory.mktemp("pristine"))
