"""The fit workflow of ``model = "gbdt"``: trees grown from securely summed histograms.

Each round grows ``gbdt-trees-per-round`` trees. Before the first tree of the
run, the **bin agreement**: every institution counts each column on the public
grid of :mod:`fraud.gbdt` and sends the counts, its training rows and frauds
into one exact secure sum; the server derives the bins (quantile cut points)
and the base score from the totals. Then, for every tree and depth level,
every institution computes per open node, feature and bin its row count and
gradient and hessian sums and sends them only into the exact secure sum
(the hardened SecAgg+ with its cohort floor, consistency check and one-time
rounds); the server chooses each split from the totals
(:func:`fraud.gbdt.grow_level`), under the strictest small-cell rule of the
policies, and sends the grown tree back with the next level.

Every level of a tree is summed over one cohort: a level summed without an
institution that took part in the previous one would, subtracted from it,
reveal that institution's histogram of a node. The institutions enforce this
themselves (:data:`client.secagg_mod.GBDT_TREE_KEY`); the server gives up the
tree instead of asking. Each sum is recorded in the audit log (its task, shape,
the hash of the totals and the contributors' signed receipts), and each tree
by its hash and its smallest node.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext
from flwr.serverapp import Grid
from flwr.supercore import log

from audit.canonical import strict_loads
from core.errors import FedFraudError, InputError
from federation.settings import RunSettings
from core.wire import EARLY_STOPPING
from fraud.gbdt import (
    FINE_BINS,
    EarlyStopping,
    Ensemble,
    GbdtParams,
    Tree,
    base_score,
    edges_from_counts,
    grow_level,
    level_sums,
    summed_nodes,
    weighted_log_loss,
)
from policy import RunPlan
from secagg.protocol import Task, histogram_task

from .evaluation import secure_round
from .secagg_workflow import _main_params, current_round
from .strategy import FraudFedAvg

INFO, WARNING = 20, 30


def run_params(settings: RunSettings, plan: RunPlan) -> GbdtParams:
    """The run's hyper-parameters, with the strictest policy's small-cell rule."""
    params = settings.gbdt_params()
    floor = max(params.min_child_rows, plan.histogram_min_child_rows)
    if floor == params.min_child_rows:
        return params
    return GbdtParams(
        max_depth=params.max_depth, learning_rate=params.learning_rate, l2=params.l2,
        min_hessian=params.min_hessian, min_child_rows=floor, max_bins=params.max_bins,
    )


class GbdtFit:
    """Flower fit workflow: the bin agreement once, then the round's trees."""

    def __init__(
        self, settings: RunSettings, plan: RunPlan, strategy: FraudFedAvg, features: list[str]
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.strategy = strategy
        self.features = features
        self.params = run_params(settings, plan)
        self.ensemble: Ensemble | None = None
        self.total_rows = 0
        #: Early stopping on the synthetic validation set.
        self.early = EarlyStopping(settings.gbdt_early_stopping)
        #: Why no more trees are grown ("" while boosting goes on).
        self.stopped = ""

    def __call__(self, grid: Grid, context: Context) -> None:
        """Grow this round's trees; hand the ensemble to the strategy and the evaluation."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected Flower's LegacyContext, found {type(context).__name__}")
        server_round = current_round(context)
        strategy = self.strategy
        strategy.client_manager = context.client_manager
        config = strategy.open_round(server_round)
        receipts: list[str] = []
        cohort: list[str] = []
        grown = 0
        try:
            if self.ensemble is None:
                self._agree_bins(grid, context, config)
            for index in range(self.settings.gbdt_trees_per_round):
                if self.stopped:
                    break
                done = self._grow_tree(grid, context, config, index)
                if done is None:
                    break
                receipts, cohort = done
                grown += 1
                self._check_early_stopping(server_round)
        except FedFraudError as exc:
            log(WARNING, "round %s: boosting halted: %s", server_round, exc)
        model = None
        if grown and self.ensemble is not None:
            model = ndarrays_to_parameters([self.ensemble.to_array()])
        why = self.stopped or "no tree was grown this round"
        if strategy.accept_trees(server_round, receipts, cohort, model, why) and model is not None:
            context.state.array_records[_main_params()] = compat.parameters_to_arrayrecord(model, True)
        log(INFO, "round %s: %s tree(s) grown, %s in the ensemble", server_round, grown,
            len(self.ensemble.trees) if self.ensemble is not None else 0)

    def _check_early_stopping(self, server_round: int) -> None:
        """Stop boosting once the validation loss has not improved for ``patience`` trees.

        The loss is the log-loss of the synthetic releases (the server's own
        validation set, weighted back to the real fraud rates); without
        releases, or with ``gbdt-early-stopping = 0``, every tree is grown.
        """
        validation = self.strategy.validation_set()
        if validation is None or self.ensemble is None:
            return
        loss = weighted_log_loss(
            self.ensemble.predict(validation.features), validation.labels, validation.row_weights
        )
        self.stopped = self.early.update(loss, len(self.ensemble.trees))
        assert not self.stopped or self.stopped.startswith(EARLY_STOPPING)
        if self.stopped:
            # Keep the ensemble of the best validation loss (the audit log
            # still records every tree that was grown).
            del self.ensemble.trees[self.early.best_trees:]
            log(INFO, "round %s: %s; %s trees kept", server_round, self.stopped, self.early.best_trees)

    # -- the secure sums -----------------------------------------------------------
    def _sum(
        self, grid: Grid, context: LegacyContext, config: dict[str, Any], task: str, model: Any
    ) -> tuple[np.ndarray, list[str], list[str]]:
        extra = {k: v for k, v in config.items() if k != "server-round"}
        done = secure_round(grid, context, self.settings, task, extra, model)
        if done.total is None:
            raise InputError(f"the secure sum of task {task} failed (see the refusals and dropouts)")
        floor = max(
            [self.settings.min_cohort]
            + [p.histograms.min_cohort_size for p in self.plan.policies if p.histograms is not None]
        )
        if len(done.institutions) < floor:
            raise InputError(f"task {task}: {len(done.institutions)} contributors, {floor} needed")
        return done.total, done.institutions, done.receipts

    def _agree_bins(self, grid: Grid, context: LegacyContext, config: dict[str, Any]) -> None:
        total, institutions, _ = self._sum(grid, context, config, Task.BINS.value, None)
        n_features = len(self.features)
        if total.size != n_features * FINE_BINS + 2:
            raise InputError(f"the bin agreement summed {total.size} values, expected {n_features * FINE_BINS + 2}")
        counts = total[: n_features * FINE_BINS].reshape(n_features, FINE_BINS)
        self.total_rows, positives = int(total[-2]), int(total[-1])
        edges = edges_from_counts(counts, self.params.max_bins)
        self.ensemble = Ensemble(self.features, edges, base_score(positives, self.total_rows), self.params)
        self.strategy.audit.gbdt_bins(
            current_round(context), [len(cuts) + 1 for cuts in edges], institutions
        )

    def _grow_tree(
        self, grid: Grid, context: LegacyContext, config: dict[str, Any], index: int
    ) -> tuple[list[str], list[str]] | None:
        """One tree, level by level, over one cohort; None if it could not be grown."""
        ensemble = self.ensemble
        assert ensemble is not None
        server_round = current_round(context)
        tree = Tree()
        tree.rows[0] = self.total_rows
        ensemble.growing = tree
        cohort: list[str] | None = None
        receipts: list[str] = []
        parents: dict[int, np.ndarray] = {}
        try:
            level = 0
            while tree.open:
                task = histogram_task(index, level)
                model = ndarrays_to_parameters([ensemble.to_array()])
                total, institutions, receipts = self._sum(grid, context, config, task, model)
                if cohort is not None and institutions != cohort:
                    log(WARNING, "round %s: tree %s lost an institution mid-tree; given up",
                        server_round, index)
                    return None
                cohort = institutions
                shape = (len(summed_nodes(tree)), len(ensemble.edges), self.params.max_bins)
                sums, parents = level_sums(tree, total, parents, len(ensemble.edges), self.params.max_bins)
                self.strategy.audit.gbdt_sum(
                    server_round, task, list(shape),
                    hashlib.sha256(np.asarray(total, dtype="<i8").tobytes()).hexdigest(),
                    [strict_loads(r) for r in receipts],
                )
                grow_level(tree, sums, ensemble.edges, self.params)
                level += 1
        finally:
            ensemble.growing = None
        ensemble.trees.append(tree)
        self.strategy.audit.gbdt_tree(
            server_round, len(ensemble.trees) - 1, tree.digest(), len(tree.feature),
            min(tree.rows), self.params.min_child_rows,
        )
        return receipts, cohort or []
