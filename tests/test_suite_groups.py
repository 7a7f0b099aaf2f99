"""The suite's own plumbing: Flower-running tests stay in their xdist groups."""

import pytest


def test_flower_running_tests_carry_their_xdist_group(request: pytest.FixtureRequest) -> None:
    # Each chain of Flower-running tests shares its module fixtures on one
    # worker; the groups keep it so, and xdist ignores marks added too late.
    items = request.session.items
    grouped = {
        item.nodeid: {m.args[0] for m in item.iter_markers("xdist_group")}
        for item in items
        if "/tests/deployment/" in item.path.as_posix() or "/tests/integration/" in item.path.as_posix()
    }
    assert all(groups for groups in grouped.values()), "a Flower-running test has no group"
    if getattr(request.config.option, "loadgroup", False):
        # xdist's worker appends the group to the id when it saw the mark in time.
        assert all("@" in node_id for node_id in grouped), "xdist did not see the groups"
