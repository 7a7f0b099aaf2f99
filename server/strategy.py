"""FedAvg with the fraud task's bookkeeping: cohorts, dropouts, audit, pooled metrics.

Under SecAgg+ the strategy never sees an individual update: Flower's workflow
hands it results that all carry the already-unmasked *sum*, so averaging them
returns that aggregate unchanged. What the strategy adds:

* it refuses to accept a round whose surviving cohort is below what every
  policy requires (the global model is then left unchanged, and the round
  says so);
* it records every round in the audit log: opened, receipts, refusals,
  dropouts, closed (with the released metrics), then the witnessed checkpoint;
* it pools evaluation by *summing score counts* across institutions, then
  computes every metric once on the sum, which is exact (up to the score
  grid) where averaging per-institution metrics would be wrong for AUC and F1.
"""

from __future__ import annotations

import math
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
from flwr.supercore import log

from audit.canonical import strict_loads
from fedfraud.errors import FedFraudError, ProtocolError
from fedfraud.settings import RunSettings
from fedfraud.wire import Refusal, decode_counts, update_digest
from fraud.metrics import SCORE_GRID_BINS, choose_threshold, metrics_from_histograms
from policy import RunPlan

from .auditing import ServerAudit
from .planning import release

WARNING = 30


@dataclass
class RoundLog:
    """What the server learned in one round (nothing per-institution but names)."""

    server_round: int
    started: float
    fit_started: float = 0.0
    fit_seconds: float = 0.0
    fit_done: bool = False
    cohort: list[str] = field(default_factory=list)
    dropouts: list[str] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    accepted: bool = False
    refusal: str = ""
    model_hash: str = ""
    threshold: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    evaluated_by: list[str] = field(default_factory=list)
    witnessed_by: list[str] = field(default_factory=list)


class FraudFedAvg(FedAvg):  # type: ignore[misc]
    """FedAvg that enforces the plan's cohort, audits every round and pools metrics."""

    def __init__(
        self,
        settings: RunSettings,
        plan: RunPlan,
        audit: ServerAudit,
        initial_parameters: Parameters,
        on_round_end: Callable[[RoundLog], None],
        refusals: Callable[[int], list[Refusal]],
    ) -> None:
        n = len(settings.institutions)
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=n,
            min_evaluate_clients=1,
            min_available_clients=n,
            initial_parameters=initial_parameters,
            accept_failures=True,
        )
        self.settings = settings
        self.plan = plan
        self.audit = audit
        self.on_round_end = on_round_end
        self.refusals = refusals
        self.latest: list[npt.NDArray[np.float32]] = parameters_to_ndarrays(initial_parameters)
        self.rounds: dict[int, RoundLog] = {}
        self.client_manager: ClientManager | None = None

    def _round(self, server_round: int) -> RoundLog:
        if server_round not in self.rounds:
            self.rounds[server_round] = RoundLog(server_round, started=time.monotonic())
        return self.rounds[server_round]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Select every institution, open the round in the audit log."""
        self.client_manager = client_manager
        self._round(server_round).fit_started = time.monotonic()
        pairs: list[tuple[ClientProxy, FitIns]] = super().configure_fit(
            server_round, parameters, client_manager
        )
        config = {"server-round": server_round, "log-id": self.audit.log_id_text}
        for _, ins in pairs:
            ins.config.update(config)
        self.audit.round_opened(
            server_round, config, self.settings.institutions, self.settings.secagg.as_record()
        )
        return pairs

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Record receipts, refusals and dropouts; accept the sum only if the cohort allows."""
        log_ = self._round(server_round)
        log_.fit_done = True
        log_.fit_seconds = round(time.monotonic() - log_.fit_started, 4)
        survivors: list[str] = []
        for _, res in results:
            receipt_text = res.metrics.get("receipt")
            try:
                receipt = strict_loads(str(receipt_text))
                self.audit.auditor.receipt(receipt)
            except FedFraudError as exc:
                # A result without a valid receipt does not count as taking part.
                log(WARNING, "round %s: a result without a valid receipt: %s", server_round, exc)
                continue
            survivors.append(str(receipt["institution"]))
        log_.cohort = sorted(survivors)
        try:
            self.plan.check_cohort(len(survivors))
        except FedFraudError as exc:
            log_.refusal = str(exc)
            return None, {}
        if len(survivors) != len(results):
            log_.refusal = "results without a valid receipt"
            return None, {}
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.latest = parameters_to_ndarrays(parameters)
            log_.accepted = True
        return parameters, metrics

    def _record_absent(self, log_: RoundLog) -> None:
        """Log the round's refusals (from the tap) and its other dropouts."""
        refusals = [
            r for r in self.refusals(log_.server_round) if r.institution in self.settings.institutions
        ]
        for refusal in refusals:
            log_.refusals.append({"institution": refusal.institution, "rules": list(refusal.rules)})
            if len(refusal.policy_hash) == 64:
                self.audit.auditor.policy_refusal(
                    log_.server_round, refusal.institution, list(refusal.rules), refusal.policy_hash
                )
        refusers = {r.institution for r in refusals}
        log_.dropouts = sorted(set(self.settings.institutions) - set(log_.cohort) - refusers)
        if log_.dropouts:
            stage = "secagg+" if log_.fit_done else "secagg+ halted"
            self.audit.auditor.dropout(log_.server_round, log_.dropouts, stage)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Ask every institution to evaluate the global model locally."""
        self.client_manager = client_manager
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
        """Pool the institutions' score counts, close the round, have it witnessed."""
        log_ = self._round(server_round)
        if not log_.fit_done:
            # SecAgg+ halted before aggregation: nobody's update was used.
            log_.refusal = "secure aggregation halted (too few institutions)"
        self._record_absent(log_)
        if results:
            pooled, threshold = pool_evaluation(
                [res for _, res in results], self.settings.fn_cost, self.settings.fp_cost
            )
            log_.threshold = threshold
            log_.metrics, log_.withheld = release(self.plan, pooled)
        log_.evaluated_by = sorted(str(res.metrics.get("institution", "?")) for _, res in results)
        log_.model_hash = update_digest(self.latest)
        self.audit.auditor.round_closed(
            server_round,
            log_.cohort,
            log_.model_hash,
            {
                k: v
                for k, v in log_.metrics.items()
                if isinstance(v, (int, float)) and math.isfinite(v)
            },
        )
        log_.witnessed_by = self.witness(server_round)
        self.on_round_end(log_)
        loss = log_.metrics.get("loss")
        return (float(loss) if isinstance(loss, float) else None), {}

    def witness(self, server_round: int) -> list[str]:
        """Have the institutions witness the log as it stands."""
        if self.client_manager is None:
            return []
        return self.audit.witness(self.client_manager.all().values(), server_round)


def pool_evaluation(
    results: list[EvaluateRes], fn_cost: float, fp_cost: float
) -> tuple[dict[str, Any], float]:
    """Pooled metrics on the combined test sets from summed score counts.

    The operating threshold is chosen on the summed *training* counts (never
    on test data) to minimise ``fn_cost * FN + fp_cost * FP``, then held
    fixed for the test counts. Returns the metrics and the threshold.
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
    metrics = {
        "loss": weighted_loss / max(total_examples, 1),
        "precision": float(pooled.precision),
        "recall": float(pooled.recall),
        "f1": float(pooled.f1),
        "auc_roc": float(pooled.auc_roc),
        "auc_pr": float(pooled.auc_pr),
        "false_negatives": int(pooled.fn),
        "false_positives": int(pooled.fp),
        "true_positives": int(pooled.tp),
        "true_negatives": int(pooled.tn),
        "num_examples": int(pooled.num_examples),
    }
    return metrics, float(threshold)
