"""Suite-wide settings: Flower never phones home from tests."""

import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"


import pytest

#: Tests that start Flower simulations (Ray) or Deployment Engine federations,
#: in two chains: each chain runs on one worker, in order, so two Ray
#: clusters or two federations never run at once (on 2 cores that times out
#: SecAgg+ stages: four chains were tried and failed so) and the module
#: fixtures are built once. A third worker runs the quick tests beside them
#: (pyproject: ``-n 3``). The first matching prefix of a test's id wins.
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
        where = item.path.as_posix() + "::" + item.name
        for group, prefixes in _GROUPS.items():
            if any(f"/tests/{prefix}" in where for prefix in prefixes):
                item.add_marker(pytest.mark.xdist_group(group))
                break
