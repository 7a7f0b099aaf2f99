"""Boosted trees from summed histograms (fraud.gbdt): sums, splits, bins, the saved model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, InputError
from fraud.gbdt import (
    FINE_BINS,
    FINE_HIGH,
    FINE_LOW,
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
    train_pooled,
)
from fraud import gbdt_scorer


def _parts(seed: int = 0, sizes: tuple[int, ...] = (700, 500, 900)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three institutions' rows: a signal in two columns, a binary column, noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, n in enumerate(sizes):
        x = rng.normal(i * 0.3, 1.0, size=(n, 5)).astype(np.float32)
        x[:, 3] = rng.integers(0, 2, n)
        logit = 1.8 * x[:, 0] - 1.2 * x[:, 1] * x[:, 3] - 2.5
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        parts.append((x, y))
    return parts


PARAMS = GbdtParams(max_depth=3, learning_rate=0.3, min_child_rows=15, max_bins=16)


def test_sums_of_institutions_equal_the_sums_of_the_concatenation() -> None:
    parts = _parts()
    edges = edges_from_counts(sum(fine_counts(x) for x, _ in parts), PARAMS.max_bins)
    tree = Tree()
    per_part = []
    for x, y in parts:
        g, h = gradients(np.full(y.size, -1.0), y)
        per_part.append(level_histograms(bin_rows(x, edges), g, h, tree, PARAMS.max_bins))
    x_all = np.concatenate([x for x, _ in parts])
    y_all = np.concatenate([y for _, y in parts])
    g, h = gradients(np.full(y_all.size, -1.0), y_all)
    pooled = level_histograms(bin_rows(x_all, edges), g, h, tree, PARAMS.max_bins)
    assert np.array_equal(sum(p.counts for p in per_part), pooled.counts)
    assert np.allclose(sum(p.grads for p in per_part), pooled.grads, atol=1e-9)
    # Every row is in exactly one bin of every feature.
    assert np.all(pooled.counts.sum(axis=2) == y_all.size)


def test_federated_trees_equal_single_table_trees_up_to_fixed_point() -> None:
    parts = _parts(1)
    federated = train_pooled(parts, 6, PARAMS)
    x_all = np.concatenate([x for x, _ in parts])
    y_all = np.concatenate([y for _, y in parts])
    single = train_pooled([(x_all, y_all)], 6, PARAMS)
    assert federated.edges == single.edges and federated.base_score == single.base_score
    for mine, theirs in zip(federated.trees, single.trees, strict=True):
        assert (mine.feature, mine.bin, mine.left, mine.right, mine.rows) == (
            theirs.feature, theirs.bin, theirs.left, theirs.right, theirs.rows)
        # Three institutions each round a sum to 2**-16: leaf values agree to that.
        assert np.allclose(mine.value, theirs.value, atol=1e-4)
    assert federated.trees[0].feature[0] == 0  # the strongest signal splits first


def test_boosting_learns_the_signal() -> None:
    parts = _parts(2)
    ensemble = train_pooled(parts, 15, PARAMS)
    x_test, y_test = _parts(3)[0]
    scores = ensemble.predict(x_test)
    base = float(y_test.mean())
    from sklearn.metrics import average_precision_score

    assert average_precision_score(y_test, scores) > 2 * base
    assert np.all((scores > 0) & (scores < 1))


def test_bins_come_from_the_public_grid() -> None:
    x = np.column_stack([np.linspace(-3, 3, 1000), np.repeat([0.0, 1.0], 500), np.full(1000, 40.0)])
    edges = edges_from_counts(fine_counts(x), 8)
    width = (FINE_HIGH - FINE_LOW) / FINE_BINS
    for cuts in edges:
        assert all(((c - FINE_LOW) / width).is_integer() for c in cuts)
    assert 5 <= len(edges[0]) <= 7  # quantiles of a spread column
    assert len(edges[1]) == 1 and 0.0 < edges[1][0] <= 1.0  # a binary column: one cut
    assert edges[2] == []  # every value beyond the grid: nothing to split
    binned = bin_rows(x, edges)
    assert binned[:, 1].tolist() == [0] * 500 + [1] * 500


def test_small_cell_rule_refuses_small_children() -> None:
    # One outlier row: a split isolating it would have a child of one row.
    x = np.zeros((200, 1), dtype=np.float32)
    x[0, 0] = 5.0
    y = np.zeros(200, dtype=np.float32)
    y[0] = 1.0
    y[1:6] = 1.0
    ensemble = train_pooled([(x, y)], 1, GbdtParams(max_depth=2, min_child_rows=20))
    assert ensemble.trees[0].feature == [-1]  # no admissible split: one leaf
    loose = train_pooled([(x, y)], 1, GbdtParams(max_depth=2, min_child_rows=1))
    assert loose.trees[0].feature[0] == 0 and min(loose.trees[0].rows) == 1


def test_grow_level_refuses_sums_of_another_shape() -> None:
    tree = Tree()
    bad = LevelSums(np.zeros((2, 1, 4)), np.zeros((2, 1, 4)), np.zeros((2, 1, 4)))
    with pytest.raises(InputError, match="open"):
        grow_level(tree, bad, [[0.0]], PARAMS)
    with pytest.raises(InputError, match="expected"):
        LevelSums.from_vector(np.zeros(5), (1, 1, 4))


def test_standalone_scorer_reproduces_the_product_scores_exactly(tmp_path: Path) -> None:
    parts = _parts(4)
    ensemble = train_pooled(parts, 8, PARAMS, names=[f"c{i}" for i in range(5)])
    path = tmp_path / "model.json"
    path.write_text(ensemble.to_json(), encoding="utf-8")
    x = np.concatenate([x for x, _ in _parts(5)])
    product = ensemble.predict(x)
    standalone = gbdt_scorer.scores(gbdt_scorer.load(str(path)), x)
    assert np.array_equal(product, standalone)
    # As a script, on a CSV with the model's features (values printed with repr).
    csv = tmp_path / "rows.csv"
    lines = [",".join(f"c{i}" for i in range(5))] + [",".join(repr(float(v)) for v in row) for row in x[:50]]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, gbdt_scorer.__file__, str(path), str(csv)],
                         capture_output=True, text=True, check=True, timeout=60)
    printed = [float(v) for v in out.stdout.split()]
    assert printed == product[:50].tolist()


def test_saved_model_round_trips_and_hostile_files_are_refused() -> None:
    ensemble = train_pooled(_parts(6), 3, PARAMS)
    again = Ensemble.from_json(ensemble.to_json())
    assert again.to_json() == ensemble.to_json() and again.digest() == ensemble.digest()
    assert again.growing is None
    data = json.loads(ensemble.to_json())
    data["trees"][0]["left"][0] = 0  # a cycle back to the root
    with pytest.raises(InputError, match="links outside"):
        Ensemble.from_dict(data)
    data = json.loads(ensemble.to_json())
    data["format"] = "fedfraud-gbdt/0"
    with pytest.raises(InputError, match="not a fedfraud-gbdt/1"):
        Ensemble.from_dict(data)
    with pytest.raises(InputError):
        Ensemble.from_array(np.frombuffer(b"{not json", dtype=np.uint8))


@pytest.mark.parametrize(
    "changes, key",
    [({"max_depth": 0}, "gbdt-max-depth"), ({"learning_rate": 1.5}, "gbdt-learning-rate"),
     ({"max_bins": 300}, "gbdt-max-bins"), ({"min_child_rows": 0}, "gbdt-min-child-rows")],
)
def test_hyper_parameters_are_checked(changes: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        GbdtParams(**changes)  # type: ignore[arg-type]


def test_early_stopping_waits_for_patience_trees() -> None:
    from fraud.gbdt import EarlyStopping

    rule = EarlyStopping(2)
    assert [rule.update(loss, n) for n, loss in enumerate([0.5, 0.4, 0.41, 0.39, 0.395, 0.40], 1)][:5] == [""] * 5
    assert "not improved for 2 trees (best 0.39000 after 4 trees)" in rule.update(0.40, 6)
    assert EarlyStopping(0).update(9.9, 100) == ""


def test_margin_cache_adds_only_new_trees_and_starts_over_on_another_ensemble() -> None:
    from fraud.gbdt import MarginCache

    parts = _parts(7)
    full = train_pooled(parts, 5, PARAMS)
    x = parts[0][0]
    cache = MarginCache()
    for k in range(6):
        prefix = Ensemble(full.features, full.edges, full.base_score, PARAMS, full.trees[:k])
        _, margin = cache.margins("bank-a", x, prefix)
        assert np.array_equal(margin, prefix.margin_binned(bin_rows(x, full.edges)))
    # Another ensemble under the same key (not an extension): recomputed.
    other = train_pooled(_parts(8), 2, PARAMS)
    _, margin = cache.margins("bank-a", x, other)
    assert np.array_equal(margin, other.margin_binned(bin_rows(x, other.edges)))


def test_only_the_smaller_child_is_summed_and_its_sibling_is_derived() -> None:
    from fraud.gbdt import level_sums, summed_nodes

    parts = _parts(9)
    edges = edges_from_counts(sum(fine_counts(x) for x, _ in parts), PARAMS.max_bins)
    data = []
    for x, y in parts:
        g, h = gradients(np.full(y.size, -1.0), y)
        data.append((bin_rows(x, edges), g, h))
    tree = Tree()
    total = sum(level_histograms(b, g, h, tree, 16).vector() for b, g, h in data)
    sums, parents = level_sums(tree, total, {}, len(edges), 16)
    grow_level(tree, sums, edges, PARAMS)
    left, right = tree.open
    chosen = summed_nodes(tree)
    assert chosen == [left if tree.rows[left] <= tree.rows[right] else right]
    # Half the values travel; the other child's sums follow from the parent's.
    total = sum(level_histograms(b, g, h, tree, 16).vector() for b, g, h in data)
    assert total.size == 3 * 1 * len(edges) * 16
    derived, _ = level_sums(tree, total, parents, len(edges), 16)
    direct = sum(level_histograms(b, g, h, tree, 16, nodes=tree.open).vector() for b, g, h in data)
    both = LevelSums.from_vector(direct, (2, len(edges), 16))
    assert np.array_equal(derived.counts, both.counts)
    # Each institution rounds each sum once: the derived sums differ by at most that.
    assert np.max(np.abs(derived.grads - both.grads)) <= 3 / 2**16
