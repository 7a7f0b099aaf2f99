"""Histogram gradient-boosted trees whose every input is a sum over rows.

The trainer never needs a row, only three sums per (tree node, feature, bin):
the row count, the sum of gradients and the sum of hessians of the logistic
loss. Those are what each institution computes on its own rows and sends
into the exact secure sum (:mod:`client.fraud_client`); the server adds
nothing but the sums up and chooses splits from the totals
(:mod:`server.gbdt`). The same functions, run on one concatenated data set,
are the pooled reference that the federated model must equal
(:func:`train_pooled`).

Pieces, in the order a run uses them:

1. **Bins** (:func:`fine_counts`, :func:`edges_from_counts`): each column is
   counted on a fixed public grid (:data:`FINE_BINS` cells of width 1/32 on
   ``[FINE_LOW, FINE_HIGH]``; values outside are counted in the end cells);
   from the summed counts, cut points at the grid boundaries nearest the
   federation's quantiles give at most ``max_bins`` bins per column.
2. **Levels** (:func:`level_histograms`, :func:`grow_level`): a tree is grown
   one depth level at a time; every open node of the level is split on the
   (feature, bin) of highest gain, subject to the L2 term, the minimum
   hessian and the minimum row count of each child.
3. **Scoring** (:class:`Ensemble`): ``margin = base_score + sum of leaf
   values``; a row goes left iff ``x < threshold``. The JSON form
   (:meth:`Ensemble.to_json`) is all a bank needs: :mod:`fraud.gbdt_scorer`
   scores it with numpy alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit

from fraud.gbdt_scorer import sigmoid

from core.errors import ConfigError, InputError

#: Marker and version of a saved ensemble.
GBDT_FORMAT = "fedfraud-gbdt/1"
#: The public grid of the bin agreement: cells of width 1/32 on [-16, 16].
FINE_LOW, FINE_HIGH, FINE_BINS = -16.0, 16.0, 1024
#: Fixed-point scale of summed gradients and hessians (|g| <= 1, h <= 1/4).
GRAD_SCALE = 2.0**16
#: Largest depth a run may ask for (the histogram of the last level has
#: ``2**(depth-1)`` nodes).
MAX_DEPTH = 8

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GbdtParams:
    """Hyper-parameters of a boosted ensemble (the run config's ``gbdt-*`` keys)."""

    max_depth: int = 4
    learning_rate: float = 0.1
    l2: float = 1.0
    min_hessian: float = 1e-3
    min_child_rows: int = 20
    max_bins: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= MAX_DEPTH:
            raise ConfigError(f"gbdt-max-depth must be in [1, {MAX_DEPTH}], found {self.max_depth}")
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"gbdt-learning-rate must be in (0, 1], found {self.learning_rate}")
        if not self.l2 >= 0 or not self.min_hessian >= 0:
            raise ConfigError("gbdt-l2 and gbdt-min-hessian must be >= 0")
        if self.min_child_rows < 1:
            raise ConfigError(f"gbdt-min-child-rows must be >= 1, found {self.min_child_rows}")
        if not 2 <= self.max_bins <= 255:
            raise ConfigError(f"gbdt-max-bins must be in [2, 255], found {self.max_bins}")


# -- 1. bins -------------------------------------------------------------------------------


def fine_counts(features: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Counts of each column on the public grid, shape ``[n_features, FINE_BINS]``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"features must be a matrix, found shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("features must be finite to be binned")
    width = (FINE_HIGH - FINE_LOW) / FINE_BINS
    cells = np.clip(np.floor((x - FINE_LOW) / width), 0, FINE_BINS - 1).astype(np.int64)
    offsets = np.arange(x.shape[1], dtype=np.int64) * FINE_BINS
    flat = np.bincount((cells + offsets).ravel(), minlength=x.shape[1] * FINE_BINS)
    return flat.reshape(x.shape[1], FINE_BINS).astype(np.int64)


def edges_from_counts(counts: npt.ArrayLike, max_bins: int) -> list[list[float]]:
    """Cut points per column from summed grid counts (at most ``max_bins - 1`` each).

    Cut ``k`` sits at the grid boundary where the cumulative count first
    reaches ``k / max_bins`` of the column's total; repeated boundaries
    collapse, and a boundary with every row on one side is dropped (it could
    never split anything).
    """
    table = np.asarray(counts, dtype=np.int64)
    width = (FINE_HIGH - FINE_LOW) / FINE_BINS
    edges: list[list[float]] = []
    for row in table:
        total = int(row.sum())
        below = np.cumsum(row)[:-1]  # rows below boundary j + 1
        cuts: list[int] = []
        for k in range(1, max_bins):
            j = int(np.searchsorted(below, k * total / max_bins, side="left"))
            if j < below.size and 0 < below[j] < total and (not cuts or cuts[-1] != j):
                cuts.append(j)
        edges.append([FINE_LOW + (j + 1) * width for j in cuts])
    return edges


def bin_rows(features: npt.ArrayLike, edges: list[list[float]]) -> npt.NDArray[np.uint8]:
    """Bin index of every value: the number of cut points ``<=`` it."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(edges):
        raise InputError(f"features have {x.shape[-1]} columns, the bins {len(edges)}")
    out = np.empty(x.shape, dtype=np.uint8)
    for j, cuts in enumerate(edges):
        out[:, j] = np.searchsorted(np.asarray(cuts, dtype=np.float64), x[:, j], side="right")
    return out


# -- 2. trees ------------------------------------------------------------------------------


@dataclass
class Tree:
    """One tree, as parallel arrays; node 0 is the root.

    An internal node has ``feature >= 0``: rows with bin ``<= bin`` (that is,
    ``x < threshold``) go to ``left``. A leaf has ``feature == -1`` and adds
    ``value`` to the margin. ``rows`` is the federation's row count of each
    node (from the summed counts). ``open`` lists the leaves still to be
    split while the tree grows.
    """

    feature: list[int] = field(default_factory=lambda: [-1])
    bin: list[int] = field(default_factory=lambda: [0])
    threshold: list[float] = field(default_factory=lambda: [0.0])
    left: list[int] = field(default_factory=lambda: [-1])
    right: list[int] = field(default_factory=lambda: [-1])
    value: list[float] = field(default_factory=lambda: [0.0])
    rows: list[int] = field(default_factory=lambda: [0])
    depth: list[int] = field(default_factory=lambda: [0])
    open: list[int] = field(default_factory=lambda: [0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature, "bin": self.bin, "threshold": self.threshold,
            "left": self.left, "right": self.right, "value": self.value,
            "rows": self.rows, "depth": self.depth, "open": self.open,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tree:
        try:
            tree = cls(**{k: list(data[k]) for k in (
                "feature", "bin", "threshold", "left", "right", "value", "rows", "depth", "open")})
        except (KeyError, TypeError) as exc:
            raise InputError(f"a tree is malformed: {exc}") from None
        tree.check()
        return tree

    def check(self) -> None:
        """Refuse a tree whose arrays disagree or whose links leave the tree."""
        n = len(self.feature)
        lengths = {len(getattr(self, k)) for k in ("bin", "threshold", "left", "right", "value", "rows", "depth")}
        if lengths != {n} or n < 1:
            raise InputError("a tree's arrays have different lengths")
        for i in range(n):
            if self.feature[i] >= 0:
                children = (self.left[i], self.right[i])
                if not all(i < c < n for c in children):
                    raise InputError(f"tree node {i} links outside the tree")
        if any(not 0 <= i < n or self.feature[i] != -1 for i in self.open):
            raise InputError("a tree's open nodes must be leaves")

    def assign(self, binned: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """The node each row ends in (a leaf or an open node)."""
        feature = np.asarray(self.feature, dtype=np.int64)
        cut = np.asarray(self.bin, dtype=np.int64)
        left = np.asarray(self.left, dtype=np.int64)
        right = np.asarray(self.right, dtype=np.int64)
        node = np.zeros(binned.shape[0], dtype=np.int64)
        rows = np.arange(binned.shape[0])
        for _ in range(max(self.depth) + 1):
            f = feature[node]
            inner = f >= 0
            if not inner.any():
                break
            goes_left = binned[rows, np.where(inner, f, 0)] <= cut[node]
            node = np.where(inner, np.where(goes_left, left[node], right[node]), node)
        return node

    def digest(self) -> str:
        """SHA-256 of the tree's canonical JSON (what the audit log records)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class LevelSums:
    """Per open node, feature and bin: row counts, gradient and hessian sums."""

    counts: Floats
    grads: Floats
    hessians: Floats

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.counts.shape)  # type: ignore[return-value]

    def vector(self) -> npt.NDArray[np.int64]:
        """This institution's sums for the exact secure sum (counts, then fixed point)."""
        from secagg.secure_sum import to_counts, to_fixed_point

        return np.concatenate(
            [
                to_counts(self.counts, "histogram counts"),
                to_fixed_point(self.grads, GRAD_SCALE, "gradient sums"),
                to_fixed_point(self.hessians, GRAD_SCALE, "hessian sums"),
            ]
        )

    @classmethod
    def from_vector(cls, summed: npt.ArrayLike, shape: tuple[int, int, int]) -> LevelSums:
        values = np.asarray(summed, dtype=np.float64)
        size = int(np.prod(shape))
        if values.size != 3 * size:
            raise InputError(f"histogram sums have {values.size} values, expected {3 * size}")
        return cls(
            values[:size].reshape(shape),
            (values[size : 2 * size] / GRAD_SCALE).reshape(shape),
            (values[2 * size :] / GRAD_SCALE).reshape(shape),
        )


def gradients(margin: Floats, labels: npt.ArrayLike) -> tuple[Floats, Floats]:
    """Gradient and hessian of the logistic loss at ``margin``."""
    p = expit(np.asarray(margin, dtype=np.float64))
    return p - np.asarray(labels, dtype=np.float64), p * (1.0 - p)


def _parents(tree: Tree) -> dict[int, int]:
    """Each child node's parent."""
    parent: dict[int, int] = {}
    for node, feature in enumerate(tree.feature):
        if feature >= 0:
            parent[tree.left[node]] = parent[tree.right[node]] = node
    return parent


def summed_nodes(tree: Tree) -> list[int]:
    """The open nodes whose sums the institutions send (the others are derived).

    Two children of one split hold, between them, exactly their parent's
    rows, so the server gets one child's sums as the parent's minus its
    sibling's: the institutions send only the child with fewer rows of each
    pair (the left one on a tie), and the root. The server learns nothing
    more than it would from both (it could subtract either way), and each
    level costs half the bytes and half the work.
    """
    parent = _parents(tree)
    opened = set(tree.open)
    chosen: list[int] = []
    for node in tree.open:
        up = parent.get(node)
        if up is None:
            chosen.append(node)
            continue
        sibling = tree.right[up] if tree.left[up] == node else tree.left[up]
        if sibling not in opened or (tree.rows[node], node) <= (tree.rows[sibling], sibling):
            chosen.append(node)
    return chosen


def level_sums(
    tree: Tree, summed: npt.ArrayLike, parents: dict[int, npt.NDArray[np.int64]], n_features: int, n_bins: int
) -> tuple[LevelSums, dict[int, npt.NDArray[np.int64]]]:
    """Every open node's sums from the secure sum of :func:`summed_nodes` and the parents'.

    ``summed`` is the exact integer sum of the institutions' vectors
    (:meth:`LevelSums.vector`); ``parents`` the integer sums of the nodes of
    the previous level (as returned by the previous call). Returns the
    level's :class:`LevelSums` in ``tree.open`` order and the integer sums of
    every open node (the parents of the next level).
    """
    chosen = summed_nodes(tree)
    cells = n_features * n_bins
    values = np.asarray(summed, dtype=np.int64)
    if values.size != 3 * len(chosen) * cells:
        raise InputError(f"histogram sums have {values.size} values, expected {3 * len(chosen) * cells}")
    parts = values.reshape(3, len(chosen), cells)
    ints: dict[int, npt.NDArray[np.int64]] = {node: parts[:, i, :] for i, node in enumerate(chosen)}
    parent = _parents(tree)
    for node in tree.open:
        if node in ints:
            continue
        up = parent[node]
        sibling = tree.right[up] if tree.left[up] == node else tree.left[up]
        if up not in parents or sibling not in ints:
            raise InputError(f"node {node}: neither summed nor derivable from its parent")
        ints[node] = parents[up] - ints[sibling]
    stacked = np.stack([ints[node] for node in tree.open], axis=1).reshape(3, len(tree.open), n_features, n_bins)
    sums = LevelSums(
        stacked[0].astype(np.float64),
        stacked[1].astype(np.float64) / GRAD_SCALE,
        stacked[2].astype(np.float64) / GRAD_SCALE,
    )
    return sums, {node: ints[node] for node in tree.open}


def level_histograms(
    binned: npt.NDArray[np.uint8],
    grad: Floats,
    hess: Floats,
    tree: Tree,
    n_bins: int,
    nodes: list[int] | None = None,
) -> LevelSums:
    """Per node of ``nodes`` (default: :func:`summed_nodes`), feature and bin: count and sums."""
    n, f = binned.shape
    wanted = summed_nodes(tree) if nodes is None else nodes
    node = tree.assign(binned)
    position = np.full(len(tree.feature), -1, dtype=np.int64)
    position[np.asarray(wanted, dtype=np.int64)] = np.arange(len(wanted))
    slot = position[node]
    keep = slot >= 0
    k = len(wanted)
    size = k * f * n_bins
    index = ((slot[keep, None] * f + np.arange(f)) * n_bins + binned[keep].astype(np.int64)).ravel()
    reps = np.repeat
    counts = np.bincount(index, minlength=size)
    grads = np.bincount(index, weights=reps(grad[keep], f), minlength=size)
    hess_sums = np.bincount(index, weights=reps(hess[keep], f), minlength=size)
    shape = (k, f, n_bins)
    return LevelSums(
        counts.reshape(shape).astype(np.float64),
        grads.reshape(shape).astype(np.float64),
        hess_sums.reshape(shape).astype(np.float64),
    )


def _leaf_value(g: float, h: float, params: GbdtParams) -> float:
    return float(-params.learning_rate * g / (h + params.l2))


def grow_level(tree: Tree, sums: LevelSums, edges: list[list[float]], params: GbdtParams) -> None:
    """Split every open node on its best (feature, bin); close the level.

    Children at ``max_depth`` become leaves at once (their values follow
    from the parent's sums), so a tree of depth ``d`` takes ``d`` levels of
    sums. A node with no admissible split becomes a leaf.
    """
    counts, grads, hess = sums.counts, sums.grads, sums.hessians
    if counts.shape[0] != len(tree.open):
        raise InputError(f"sums for {counts.shape[0]} nodes, the tree has {len(tree.open)} open")
    lam = params.l2
    still_open: list[int] = []
    for slot, node in enumerate(tree.open):
        c, g, h = counts[slot], grads[slot], hess[slot]
        total_c, total_g, total_h = float(c[0].sum()), float(g[0].sum()), float(h[0].sum())
        tree.rows[node] = int(round(total_c))
        cl, gl, hl = np.cumsum(c, axis=1)[:, :-1], np.cumsum(g, axis=1)[:, :-1], np.cumsum(h, axis=1)[:, :-1]
        cr, gr, hr = total_c - cl, total_g - gl, total_h - hl
        with np.errstate(divide="ignore", invalid="ignore"):  # l2 = 0: empty sides, masked below
            gain = gl**2 / (hl + lam) + gr**2 / (hr + lam) - total_g**2 / (total_h + lam)
        ok = (
            (cl >= params.min_child_rows) & (cr >= params.min_child_rows)
            & (hl >= params.min_hessian) & (hr >= params.min_hessian)
        )
        # A bin past a column's last cut point has no threshold.
        for j, cuts in enumerate(edges):
            ok[j, len(cuts):] = False
        gain = np.where(ok, gain, -np.inf)
        best = int(np.argmax(gain)) if gain.size else 0
        if not gain.size or not gain.flat[best] > 1e-12:
            tree.value[node] = _leaf_value(total_g, total_h, params)
            continue
        j, b = divmod(best, gain.shape[1])
        depth = tree.depth[node] + 1
        children = []
        for rows, gs, hs in ((cl[j, b], gl[j, b], hl[j, b]), (cr[j, b], gr[j, b], hr[j, b])):
            tree.feature.append(-1)
            tree.bin.append(0)
            tree.threshold.append(0.0)
            tree.left.append(-1)
            tree.right.append(-1)
            tree.value.append(_leaf_value(float(gs), float(hs), params))
            tree.rows.append(int(round(float(rows))))
            tree.depth.append(depth)
            children.append(len(tree.feature) - 1)
        tree.feature[node], tree.bin[node] = j, b
        tree.threshold[node] = float(edges[j][b])
        tree.left[node], tree.right[node] = children
        tree.value[node] = 0.0
        if depth < params.max_depth:
            still_open.extend(children)
    tree.open = still_open


# -- 3. the ensemble -----------------------------------------------------------------------


@dataclass
class Ensemble:
    """Bins, base score and trees: everything needed to score a row."""

    features: list[str]
    edges: list[list[float]]
    base_score: float
    params: GbdtParams
    trees: list[Tree] = field(default_factory=list)
    #: The tree being grown (while a round runs; never in a saved model).
    growing: Tree | None = None

    def margin_binned(self, binned: npt.NDArray[np.uint8]) -> Floats:
        margin = np.full(binned.shape[0], self.base_score, dtype=np.float64)
        for tree in self.trees:
            margin += np.asarray(tree.value, dtype=np.float64)[tree.assign(binned)]
        return margin

    def digest(self) -> str:
        """SHA-256 of the ensemble's JSON (the model hash of a gbdt run)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def predict(self, features: npt.ArrayLike) -> Floats:
        """Fraud scores in (0, 1) of raw feature rows."""
        return sigmoid(self.margin_binned(bin_rows(np.asarray(features, dtype=np.float32), self.edges)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": GBDT_FORMAT,
            "features": list(self.features),
            "edges": self.edges,
            "base_score": self.base_score,
            "params": {
                "max_depth": self.params.max_depth, "learning_rate": self.params.learning_rate,
                "l2": self.params.l2, "min_hessian": self.params.min_hessian,
                "min_child_rows": self.params.min_child_rows, "max_bins": self.params.max_bins,
            },
            "rule": "a row goes left iff x < threshold; margin = base_score + sum of leaf values; "
            "score = 1 / (1 + exp(-margin))",
            "trees": [t.to_dict() for t in self.trees],
            **({"growing": self.growing.to_dict()} if self.growing is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_array(self) -> npt.NDArray[np.uint8]:
        """The ensemble as one byte array (how it travels as Flower parameters)."""
        return np.frombuffer(self.to_json().encode("utf-8"), dtype=np.uint8).copy()

    @classmethod
    def from_dict(cls, data: Any) -> Ensemble:
        if not isinstance(data, dict) or data.get("format") != GBDT_FORMAT:
            raise InputError(f"not a {GBDT_FORMAT} model")
        try:
            params = GbdtParams(**data["params"])
            edges = [[float(v) for v in cuts] for cuts in data["edges"]]
            ensemble = cls(
                [str(n) for n in data["features"]], edges, float(data["base_score"]), params,
                [Tree.from_dict(t) for t in data["trees"]],
                Tree.from_dict(data["growing"]) if "growing" in data else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"a {GBDT_FORMAT} model is malformed: {exc}") from None
        if len(ensemble.features) != len(edges) or not math.isfinite(ensemble.base_score):
            raise InputError(f"a {GBDT_FORMAT} model is malformed: features and bins disagree")
        return ensemble

    @classmethod
    def from_json(cls, text: str | bytes) -> Ensemble:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"a {GBDT_FORMAT} model is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_array(cls, array: npt.ArrayLike) -> Ensemble:
        raw = np.asarray(array)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise InputError("a gbdt model travels as one byte array")
        return cls.from_json(raw.tobytes())


@dataclass
class EarlyStopping:
    """Stop once the validation loss has not improved for ``patience`` trees (0: never)."""

    patience: int
    best_loss: float = math.inf
    best_trees: int = 0

    def update(self, loss: float, trees: int) -> str:
        """Record the loss after ``trees`` trees; return why to stop ("" to go on)."""
        if not self.patience:
            return ""
        if loss < self.best_loss - 1e-7:
            self.best_loss, self.best_trees = loss, trees
            return ""
        if trees - self.best_trees >= self.patience:
            return (  # core.wire.EARLY_STOPPING starts it
                f"early stopping: the validation loss has not improved for {self.patience} trees "
                f"(best {self.best_loss:.5f} after {self.best_trees} trees)"
            )
        return ""


def weighted_log_loss(scores: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike) -> float:
    """Mean logistic loss of scores, rows weighted."""
    return float(np.average(_row_losses(scores, labels), weights=np.asarray(weights)))


def _row_losses(scores: npt.ArrayLike, labels: npt.ArrayLike) -> Floats:
    """Each row's logistic loss (scores clipped away from 0 and 1)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def base_digest(array: npt.ArrayLike) -> str:
    """Hash of the ensemble a tree is grown on (the travelling form, without the growing tree).

    Every level of one tree is summed over the same base; an institution
    binds the base to one cohort, so no two levels of a tree can be summed
    over different cohorts (their difference would reveal an institution's
    histogram of a node).
    """
    ensemble = Ensemble.from_array(array)
    ensemble.growing = None
    return ensemble.digest()


def log_loss_total(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Summed logistic loss of scores (clipped away from 0 and 1)."""
    return float(_row_losses(scores, labels).sum())


class MarginCache:
    """One site's binned rows and margins, kept between the levels of a run.

    Each level of each tree needs every row's margin under the ensemble so
    far; recomputing it costs a pass per tree. The cache keeps, per data key
    (file identity) and bins, the binned matrix and the margin after the
    trees it has seen, and adds only the trees that are new (it starts over
    if the ensemble is not an extension of what it saw). A few entries only:
    the train splits of the institutions sharing a process.
    """

    def __init__(self, kept: int = 3) -> None:
        self.kept = kept
        self._entries: dict[tuple[str, str], tuple[Any, list[str], Floats]] = {}

    def margins(self, key: str, features: npt.ArrayLike, ensemble: Ensemble) -> tuple[npt.NDArray[np.uint8], Floats]:
        """(binned rows, margin under ``ensemble``'s finished trees) of the data called ``key``."""
        bins_key = hashlib.sha256(json.dumps(ensemble.edges).encode("utf-8")).hexdigest()
        entry_key = (key, f"{bins_key}:{ensemble.base_score!r}")
        hashes = [tree.digest() for tree in ensemble.trees]
        entry = self._entries.pop(entry_key, None)
        if entry is None or entry[1] != hashes[: len(entry[1])]:
            binned = bin_rows(features, ensemble.edges)
            seen: list[str] = []
            margin = np.full(binned.shape[0], ensemble.base_score, dtype=np.float64)
        else:
            binned, seen, margin = entry
            margin = margin.copy()
        for tree in ensemble.trees[len(seen):]:
            margin += np.asarray(tree.value, dtype=np.float64)[tree.assign(binned)]
        self._entries[entry_key] = (binned, hashes, margin)
        while len(self._entries) > self.kept:
            self._entries.pop(next(iter(self._entries)))
        return binned, margin


def base_score(positives: int, rows: int) -> float:
    """The log-odds of the federation's fraud rate (the margin before any tree)."""
    if rows <= 0 or not 0 < positives < rows:
        raise InputError(f"boosting needs both classes: {positives} frauds in {rows} rows")
    return float(math.log(positives / (rows - positives)))


def train_pooled(
    parts: list[tuple[npt.ArrayLike, npt.ArrayLike]],
    n_trees: int,
    params: GbdtParams,
    names: list[str] | None = None,
) -> Ensemble:
    """The pooled reference: the same algorithm on the given parts' rows.

    ``parts`` are (features, labels) of each institution; their grid counts,
    label counts and level sums are added exactly as the secure sum adds
    them (fixed point included), so on the same parts the result is the
    federated model, tree by tree.
    """
    xs = [np.asarray(x, dtype=np.float32) for x, _ in parts]
    ys = [np.asarray(y, dtype=np.float64) for _, y in parts]
    counts = sum(fine_counts(x) for x in xs)
    edges = edges_from_counts(counts, params.max_bins)
    rows = sum(int(y.size) for y in ys)
    positives = sum(int(y.sum()) for y in ys)
    names = names or [f"f{j}" for j in range(xs[0].shape[1])]
    ensemble = Ensemble(names, edges, base_score(positives, rows), params)
    binned = [bin_rows(x, edges) for x in xs]
    n_bins = params.max_bins
    for _ in range(n_trees):
        tree = Tree()
        tree.rows[0] = rows
        grads = [gradients(ensemble.margin_binned(b), y) for b, y in zip(binned, ys, strict=True)]
        parents: dict[int, npt.NDArray[np.int64]] = {}
        while tree.open:
            total = sum(
                level_histograms(b, g, h, tree, n_bins).vector()
                for b, (g, h) in zip(binned, grads, strict=True)
            )
            sums, parents = level_sums(tree, total, parents, len(edges), n_bins)
            grow_level(tree, sums, edges, params)
        ensemble.trees.append(tree)
    return ensemble
