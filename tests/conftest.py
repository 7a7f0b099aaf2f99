"""Suite-wide settings: Flower never phones home from tests."""

import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"


import pytest

#: Tests that start Flower simulations (Ray) or Deployment Engine federations,
#: in four chains: each chain runs on one worker, in order, so its module
#: fixtures are built once, and the four run beside each other and beside the
#: quick tests (pyproject: ``-n 4``). Measured with ``--durations``: the suite
#: spent about half its wall time waiting (SuperNode polls, stage timeouts,
#: Ray start-up) with one simulation chain and one deployment chain on two
#: workers; the chains are balanced by those figures. The first matching
#: prefix of a test's id wins.
_GROUPS = {
    "simulation-a": ("integration/test_simulation.py", "integration/test_gbdt_federation.py",
                     "integration/test_ckks.py", "adversarial/test_dishonest_serverapp.py"),
    "simulation-b": ("integration/", "adversarial/test_ckks_hostile_contribution.py"),
    "deployment-a": ("deployment/test_deployment.py::test_federation_over_tls",
                     "deployment/test_deployment.py::test_supernode_with_unregistered_key",
                     "deployment/test_byo_deployment.py", "deployment/test_gateway.py"),
    "deployment-b": ("deployment/",),
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
