"""Suite-wide settings: Flower never phones home from tests."""

import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"


import pytest

#: Test files that start Flower simulations (one Ray cluster at a time) or a
#: Deployment Engine federation: each set runs on one worker, in order, so
#: simulations never compete for Ray and the module fixtures are built once.
_GROUPS = {
    "simulation": ("integration/", "adversarial/test_dishonest_serverapp.py",
                   "adversarial/test_ckks_hostile_contribution.py"),
    "deployment": ("deployment/",),
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put each Flower-running test in its group (pytest-xdist ``--dist loadgroup``).

    ``tryfirst``: xdist's worker reads the ``xdist_group`` marks in its own
    hook of the same name; marks added after it are silently ignored and the
    groups' tests spread over both workers (two Ray clusters at once).
    """
    for item in items:
        path = item.path.as_posix()
        for group, prefixes in _GROUPS.items():
            if any(f"/tests/{prefix}" in path for prefix in prefixes):
                item.add_marker(pytest.mark.xdist_group(group))
