"""Private evaluation: every institution's test counts are summed under SecAgg+.

After each training round, Flower's default workflow runs its evaluation
step; fedfraud replaces it with :class:`SecureEvaluation`. The global model
goes to every institution, each scores its own test split and turns the
scores into counts on a fixed grid, and those counts enter a SecAgg+ round of
their own (see :mod:`secagg.secure_sum`). The server learns only the sum over
institutions: exact pooled metrics on the combined test sets, and nothing
about any one institution's results.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Context
from flwr.common import FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server import LegacyContext
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.serverapp import Grid

from federation.settings import RunSettings
from fraud.metrics import SCORE_GRID_BINS
from secagg.secure_sum import LOSS_SCALE, from_fixed_point, split

from .secagg_workflow import current_round, secagg_workflow

#: Layout of an institution's evaluation vector (whole numbers, summed
#: exactly): test positive-class counts, test negative-class counts, the same
#: two for the training split (used to choose the threshold when no synthetic
#: validation set exists), total test loss in fixed point
#: (:data:`secagg.secure_sum.LOSS_SCALE`), number of test examples.
EVAL_PARTS = (SCORE_GRID_BINS, SCORE_GRID_BINS, SCORE_GRID_BINS, SCORE_GRID_BINS, 1, 1)


class EvaluationSums:
    """The securely summed evaluation of one round (exact counts)."""

    def __init__(
        self, summed: npt.NDArray[np.int64], institutions: list[str], settings: RunSettings
    ) -> None:
        pos, neg, train_pos, train_neg, loss_total, count = split(summed, EVAL_PARTS)
        self.test_pos = pos
        self.test_neg = neg
        self.train_pos = train_pos
        self.train_neg = train_neg
        self.num_examples = int(count[0])
        self.loss = float(from_fixed_point(loss_total, LOSS_SCALE)[0]) / max(self.num_examples, 1)
        self.institutions = institutions
        self.settings = settings


class _SumStrategy(FedAvg):  # type: ignore[misc]
    """Sends the global model with an "evaluate" task; keeps the secure sum."""

    def __init__(
        self,
        settings: RunSettings,
        task: str,
        extra: dict[str, Scalar],
        parameters: Parameters | None = None,
    ) -> None:
        floor = settings.min_cohort
        super().__init__(min_fit_clients=floor, min_available_clients=floor, accept_failures=True)
        self.settings = settings
        self.task = task
        self.extra = extra
        #: What the institutions are sent (default: the global model).
        self.parameters = parameters
        #: The exact sum of the contributors' integer vectors.
        self.total: npt.NDArray[np.int64] | None = None
        self.institutions: list[str] = []
        #: The contributors' signed receipts, where the task returns one.
        self.receipts: list[str] = []

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        # Never wait for an institution that is gone: take every one online.
        available = client_manager.num_available()
        if available < self.settings.min_cohort:
            return []
        clients = client_manager.sample(
            num_clients=available, min_num_clients=self.settings.min_cohort
        )
        config: dict[str, Scalar] = {"task": self.task, "server-round": server_round, **self.extra}
        sent = self.parameters if self.parameters is not None else parameters
        return [(client, FitIns(sent, dict(config))) for client in clients]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if results:
            self.total = np.concatenate(
                [a.ravel() for a in parameters_to_ndarrays(results[0][1].parameters)]
            ).astype(np.int64)
            self.institutions = sorted(str(res.metrics.get("institution", "?")) for _, res in results)
            self.receipts = [str(res.metrics["receipt"]) for _, res in results if "receipt" in res.metrics]
        return None, {}


def secure_round(
    grid: Grid,
    context: LegacyContext,
    settings: RunSettings,
    task: str,
    extra: dict[str, Scalar],
    parameters: Parameters | None = None,
) -> _SumStrategy:
    """Run one exact SecAgg+ sum for ``task``; the returned strategy holds the sum.

    The institutions are sent ``parameters`` (default: the global model).
    """
    strategy = _SumStrategy(settings, task, extra, parameters)
    view = LegacyContext(
        context=context,
        config=context.config,
        strategy=strategy,
        client_manager=context.client_manager,
    )
    workflow = secagg_workflow(settings.secagg, settings.federation_id)
    workflow(grid, view)
    return strategy


class SecureEvaluation:
    """Flower evaluate-workflow that sums test counts under SecAgg+."""

    def __init__(
        self,
        settings: RunSettings,
        on_evaluated: Callable[[int, EvaluationSums | None], None],
        extra: Callable[[], dict[str, Scalar]],
        blocked: Callable[[], str] = lambda: "",
    ) -> None:
        self.settings = settings
        self.on_evaluated = on_evaluated
        self.extra = extra
        #: Why there is nothing to evaluate this round ("" when there is).
        self.blocked = blocked

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run one secure evaluation of the current global model."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected Flower's LegacyContext, found {type(context).__name__}")
        server_round = current_round(context)
        reason = self.blocked()
        if reason:
            log(INFO, "round %s: evaluation skipped: %s", server_round, reason)
            self.on_evaluated(server_round, None)
            return
        done = secure_round(grid, context, self.settings, "evaluate", self.extra())
        result = None
        if done.total is not None:
            result = EvaluationSums(done.total, done.institutions, self.settings)
        self.on_evaluated(server_round, result)
