"""Suite-wide settings: Flower never phones home from tests."""

import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
# Four test workers share 2 cores: each simulated run gets a one-core Ray
# cluster, so one ClientApp actor (one PyTorch import) instead of two. Measured
# on its own (2026-12-03): a run took the same time and 26-30 CPU-seconds
# instead of 35-39 (fedfraud/simulation.py, FEDFRAUD_SIMULATION_CPUS).
os.environ.setdefault("FEDFRAUD_SIMULATION_CPUS", "1")


import pytest

#: Tests that start Flower simulations (Ray) or Deployment Engine federations,
#: in chains: each chain runs on one worker, in order, and its module fixtures
#: are built once. Two chains of simulations, each starting its own Ray
#: cluster (1 CPU, above) per run, of about equal length, and one chain of
#: Deployment Engine federations (each with its own SuperLink on free ports).
#: They spend most of their time waiting (Ray and Flower start-up,
#: SuperNode polls, ClientApp processes, a killed SuperNode's 60 s), so the
#: quick tests run beside them (pyproject: ``-n 4``; the short gateway chain
#: goes to whichever worker is free).
#: Measured on 2 cores (2026-12-03): one simulation chain beside the
#: deployment chain took 15 min (the Ray chain the longest); two took 13; a
#: fifth worker (the deployment chain split in two, or in three) overloaded
#: the machine (load 12-18) and timed out SecAgg+ stages. The first matching
#: prefix of a test's id wins.
_GROUPS = {
    "simulation-a": ("adversarial/test_dishonest_serverapp.py",
                     "adversarial/test_ckks_hostile_contribution.py",
                     "integration/test_byo_federation.py", "integration/test_ckks.py"),
    "simulation-b": ("integration/",),
    # The fleet gateway's attacks start a SuperLink of their own but run no
    # round: a short chain of its own, off the deployment chain (the longest).
    "gateway": ("deployment/test_gateway.py",),
    "deployment": ("deployment/",),
}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, naming the file, if the data the suite is given is missing or another file."""
    from tests.shared_data import insurance_problem

    problem = insurance_problem()
    if problem is not None:
        raise pytest.UsageError(problem)


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
