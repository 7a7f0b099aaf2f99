"""A dishonest server against boosted trees (``model = "gbdt"``), through the real ClientApp.

The histogram sums of one tree are linked: a node's histogram is the sum of
its children's. A server that sums level 0 over {A, B, C} and level 1 over
{A, B} learns C's histogram of the root by subtraction, and a server that
asks for the sums of a node of a handful of rows learns those rows'
gradients. Each attack is first shown to work on the numbers (the leak is
real), then played against fedfraud's real ClientApp (:mod:`hardened_driver`),
which refuses it by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fraud.features import load_arrays
from fraud.features import FEATURE_COLUMNS
from fraud.gbdt import (
    Ensemble,
    GbdtParams,
    LevelSums,
    Tree,
    bin_rows,
    edges_from_counts,
    fine_counts,
    gradients,
    grow_level,
    level_histograms,
)
from secagg.protocol import histogram_task

from .hardened_driver import honest_aggregate, make_federation, parties, play_until_masked, send, setup_fields
from .test_malicious_server import refused

PARAMS = GbdtParams(max_depth=3, learning_rate=0.3, min_child_rows=50, max_bins=16)


@pytest.fixture()
def federation(tmp_path: Path) -> dict[str, Any]:
    config = make_federation(tmp_path)
    config.update({"model": "gbdt", "gbdt-max-depth": 3, "gbdt-max-bins": 16})
    return config


def _data(config: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    return load_arrays(Path(config["data-dir"]) / name / "train.csv", "training data")


def _ensemble(config: dict[str, Any]) -> Ensemble:
    """What an honest server would start from: bins from the summed grid counts."""
    parts = [_data(config, n) for n in ("bank-a", "bank-b", "insurer-c")]
    edges = edges_from_counts(sum(fine_counts(x) for x, _ in parts), PARAMS.max_bins)
    rows = sum(int(y.size) for _, y in parts)
    ensemble = Ensemble(list(FEATURE_COLUMNS), edges, -3.5, PARAMS)
    ensemble.growing = Tree()
    ensemble.growing.rows[0] = rows
    return ensemble


def _level(ensemble: Ensemble) -> tuple[int, int, int]:
    assert ensemble.growing is not None
    return (len(ensemble.growing.open), len(ensemble.edges), PARAMS.max_bins)


def test_tree_level_differencing(federation: dict[str, Any]) -> None:
    ensemble = _ensemble(federation)
    # The leak, on the numbers: the root's sums over {A,B,C} minus its
    # children's sums over {A,B} are insurer-c's root histogram.
    sums = {}
    for name in ("bank-a", "bank-b", "insurer-c"):
        x, y = _data(federation, name)
        binned = bin_rows(x, ensemble.edges)
        g, h = gradients(ensemble.margin_binned(binned), y)
        sums[name] = (binned, g, h)
    root = sum(level_histograms(b, g, h, ensemble.growing, 16).vector() for b, g, h in sums.values())
    grown = Tree.from_dict(ensemble.growing.to_dict())
    grow_level(grown, LevelSums.from_vector(root, _level(ensemble)), ensemble.edges, PARAMS)
    assert len(grown.open) == 2
    children_ab = sum(level_histograms(*sums[n], grown, 16, nodes=grown.open).vector() for n in ("bank-a", "bank-b"))
    c_root = level_histograms(*sums["insurer-c"], ensemble.growing, 16)
    total_children = LevelSums.from_vector(children_ab, (2, len(ensemble.edges), 16))
    recovered = LevelSums.from_vector(root, _level(ensemble)).counts[0, 0] - total_children.counts[:, 0].sum(axis=0)
    assert np.array_equal(recovered, c_root.counts[0, 0])  # insurer-c's histogram, exactly

    # fedfraud: level 0 over {A,B,C} is summed honestly, then level 1 over
    # {A,B} is refused by both victims: a tree's levels are bound to one cohort.
    victims = parties(federation)
    transcript = play_until_masked(victims, task=histogram_task(0, 0), model=[ensemble.to_array()])
    summed = honest_aggregate(victims, transcript)
    assert np.array_equal(summed, root)  # the honest sum is exactly the pooled one
    ensemble.growing = grown
    with pytest.raises(Exception) as info:
        play_until_masked(victims[:2], task=histogram_task(0, 1), model=[ensemble.to_array()])
    assert "secagg.differencing" in str(info.value)


def test_small_cell_split(federation: dict[str, Any]) -> None:
    # The server claims an open node of 12 rows (a split isolating a few
    # customers): below every policy's histograms.min_child_rows (20).
    ensemble = _ensemble(federation)
    tree = ensemble.growing
    assert tree is not None
    tree.feature[0], tree.bin[0], tree.threshold[0] = 0, 0, ensemble.edges[0][0]
    tree.left[0], tree.right[0], tree.open = 1, 2, [1, 2]
    for rows in (12, tree.rows[0] - 12):
        tree.feature.append(-1)
        tree.bin.append(0)
        tree.threshold.append(0.0)
        tree.left.append(-1)
        tree.right.append(-1)
        tree.value.append(0.0)
        tree.rows.append(rows)
        tree.depth.append(1)
    victims = parties(federation)
    with pytest.raises(Exception) as info:
        play_until_masked(victims, task=histogram_task(0, 1), model=[ensemble.to_array()])
    assert "histograms.min_child_rows" in str(info.value)


def test_histograms_without_the_policys_consent(federation: dict[str, Any]) -> None:
    # bank-a's own policy has no [histograms] section: it refuses at setup,
    # before any key is made or any data read.
    site_policy = Path(federation["sites-dir"]) / "bank-a" / "policy.toml"
    text = site_policy.read_text(encoding="utf-8")
    site_policy.write_text(text[: text.index("[histograms]")], encoding="utf-8")
    bank_a = parties(federation)[0]
    rules = refused(send, bank_a, *_setup(histogram_task(0, 0)))
    assert "histograms.allowed" in rules
    assert "histograms.allowed" in refused(send, bank_a, *_setup("bins"))


def _setup(task: str) -> tuple[Any, ...]:
    from secagg.protocol import Stage

    return (Stage.SETUP, setup_fields(task, 3))


def test_unknown_or_out_of_range_histogram_tasks_are_refused(federation: dict[str, Any]) -> None:
    bank_a = parties(federation)[0]
    for task in ("histogram", "histogram-0-99", "histogram-1-x", "histogram-01-0", "histogram--1-0"):
        with pytest.raises(Exception, match="unknown task|no histogram task"):
            send(bank_a, *_setup(task))
