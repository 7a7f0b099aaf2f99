"""FedAvg with the fraud task's bookkeeping: cohorts, dropouts, pooled metrics.

Under SecAgg+ the strategy never sees an individual update: Flower's workflow
hands it results that all carry the already-unmasked *sum*, so averaging them
returns that aggregate unchanged. What the strategy adds:

* it refuses to accept a round whose surviving cohort is below the run's
  minimum (the global model is then left unchanged, and the round says so);
* it pools evaluation by *summing score counts* across institutions, then
  computes every metric once on the sum, which is exact (up to the score
  grid) where averaging per-institution metrics would be wrong for AUC and F1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from fedfraud.errors import ProtocolError
from fedfraud.settings import RunSettings
from fedfraud.wire import decode_counts
from fraud.metrics import SCORE_GRID_BINS, choose_threshold, metrics_from_histograms


@dataclass
class RoundLog:
    """What the server learned in one round (nothing per-institution but names)."""

    server_round: int
    started: float
    cohort: list[str] = field(default_factory=list)
    dropouts: list[str] = field(default_factory=list)
    fit_started: float = 0.0
    fit_seconds: float = 0.0
    accepted: bool = False
    refusal: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


class FraudFedAvg(FedAvg):  # type: ignore[misc]
    """FedAvg that enforces the minimum cohort and pools metrics from counts."""

    def __init__(
        self,
        settings: RunSettings,
        initial_parameters: Parameters,
        on_round_end: Callable[[RoundLog], None],
    ) -> None:
        n = len(settings.institutions)
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=n,
            min_evaluate_clients=settings.min_cohort,
            min_available_clients=n,
            initial_parameters=initial_parameters,
            accept_failures=True,
        )
        self.settings = settings
        self.on_round_end = on_round_end
        self.latest: list[npt.NDArray[np.float32]] = parameters_to_ndarrays(initial_parameters)
        self.rounds: dict[int, RoundLog] = {}

    def _round(self, server_round: int) -> RoundLog:
        if server_round not in self.rounds:
            self.rounds[server_round] = RoundLog(server_round, started=time.monotonic())
        return self.rounds[server_round]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Select every institution and tell it the round number."""
        self._round(server_round).fit_started = time.monotonic()
        pairs: list[tuple[ClientProxy, FitIns]] = super().configure_fit(
            server_round, parameters, client_manager
        )
        for _, ins in pairs:
            ins.config["server-round"] = server_round
        return pairs

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Accept the SecAgg+ aggregate only if enough institutions survived."""
        log = self._round(server_round)
        log.fit_seconds = round(time.monotonic() - log.fit_started, 4)
        log.cohort = sorted(str(res.metrics.get("institution", "?")) for _, res in results)
        log.dropouts = sorted(set(self.settings.institutions) - set(log.cohort))
        if len(results) < self.settings.min_cohort:
            log.refusal = (
                f"surviving cohort {len(results)} is below min-cohort {self.settings.min_cohort}"
            )
            return None, {}
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.latest = parameters_to_ndarrays(parameters)
            log.accepted = True
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Ask every institution to evaluate the global model locally."""
        pairs: list[tuple[ClientProxy, EvaluateIns]] = super().configure_evaluate(
            server_round, parameters, client_manager
        )
        for _, ins in pairs:
            ins.config["server-round"] = server_round
        return pairs

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Sum the institutions' score counts and compute pooled metrics once."""
        log = self._round(server_round)
        metrics = pool_evaluation(
            [res for _, res in results], self.settings.fn_cost, self.settings.fp_cost
        )
        metrics["evaluated_by"] = sorted(
            str(res.metrics.get("institution", "?")) for _, res in results
        )
        log.metrics = metrics
        self.on_round_end(log)
        loss = metrics.get("loss")
        return (float(loss) if isinstance(loss, float) else None), {}


def pool_evaluation(
    results: list[EvaluateRes], fn_cost: float, fp_cost: float
) -> dict[str, Any]:
    """Pooled metrics on the combined test sets from summed score counts.

    The operating threshold is chosen on the summed *training* counts (never
    on test data) to minimise ``fn_cost * FN + fp_cost * FP``, then held
    fixed for the test counts.
    """
    if not results:
        raise ProtocolError("no institution returned an evaluation")
    sums = {
        key: np.zeros(SCORE_GRID_BINS, dtype=np.int64)
        for key in ("test-pos", "test-neg", "train-pos", "train-neg")
    }
    total_examples = 0
    weighted_loss = 0.0
    for res in results:
        for key, acc in sums.items():
            acc += decode_counts(res.metrics.get(key), SCORE_GRID_BINS)
        total_examples += res.num_examples
        weighted_loss += res.num_examples * float(res.loss)
    threshold = choose_threshold(
        sums["train-pos"], sums["train-neg"], fn_cost=fn_cost, fp_cost=fp_cost
    )
    pooled = metrics_from_histograms(sums["test-pos"], sums["test-neg"], threshold)
    return {
        "loss": weighted_loss / max(total_examples, 1),
        "threshold": float(threshold),
        "precision": float(pooled.precision),
        "recall": float(pooled.recall),
        "f1": float(pooled.f1),
        "auc_roc": float(pooled.auc_roc),
        "auc_pr": float(pooled.auc_pr),
        "false_negatives": int(pooled.fn),
        "false_positives": int(pooled.fp),
        "true_positives": int(pooled.tp),
        "num_examples": int(pooled.num_examples),
    }
