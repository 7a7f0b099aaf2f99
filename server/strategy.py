"""FedAvg with the fraud task's bookkeeping: cohorts, dropouts, audit, pooled metrics.

Under SecAgg+ the strategy never sees an individual update: Flower's workflow
hands it results that all carry the already-unmasked *sum*, so averaging them
returns that aggregate unchanged. What the strategy adds:

* it refuses to accept a round whose surviving cohort is below what every
  policy requires (the global model is then left unchanged, and the round
  says so);
* it records every round in the audit log: opened, receipts, refusals,
  dropouts, closed (with the released metrics), then the witnessed checkpoint;
* it computes every metric once, from the institutions' score counts summed
  under SecAgg+ (:mod:`server.evaluation`), which is exact up to the score
  grid where averaging per-institution metrics would be wrong for AUC and F1;
  the operating threshold comes from the synthetic validation set.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.common import (
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
from core.errors import FedFraudError
from federation.settings import Aggregation, ModelKind, RunSettings
from core.wire import CKKS_INITIAL_MODEL, EARLY_STOPPING, Refusal, update_digest
from fraud.compare import ThresholdRule
from fraud.metrics import metrics_from_histograms
from policy import RunPlan

from .auditing import ServerAudit
from .evaluation import EvaluationSums
from .planning import release, withhold_counts_of_another_cohort
from .validation import DEFAULT_THRESHOLD, ByoValidation, ValidationSet

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
    threshold_source: str = ""
    validation_auc_pr: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    evaluated_by: list[str] = field(default_factory=list)
    witnessed_by: list[str] = field(default_factory=list)
    #: gbdt: the round grew no tree because early stopping ended the boosting.
    stopped: bool = False


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
        validation: ValidationSet | ByoValidation | None,
    ) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=settings.min_cohort,
            min_evaluate_clients=1,
            min_available_clients=settings.min_cohort,
            initial_parameters=initial_parameters,
            accept_failures=True,
        )
        self.settings = settings
        self.plan = plan
        self.audit = audit
        self.on_round_end = on_round_end
        self.refusals = refusals
        self.validation: ValidationSet | ByoValidation | None = validation
        self.threshold_rule = ThresholdRule(
            fn_cost=settings.fn_cost,
            fp_cost=settings.fp_cost,
            recall_target=settings.recall_target or None,
        )
        #: The agreed feature spec of a bring-your-own-data run ("" otherwise).
        self.feature_spec = ""
        self.latest: list[npt.NDArray[np.float32]] = parameters_to_ndarrays(initial_parameters)
        #: ckks mode: the id and hash of the model the institutions hold (the
        #: server holds only the public initial model in ``latest``).
        self.ckks = settings.aggregation is Aggregation.CKKS
        self.ckks_model_id = CKKS_INITIAL_MODEL
        self.ckks_model_hash = ""
        self.rounds: dict[int, RoundLog] = {}
        self.client_manager: ClientManager | None = None
        #: The Grid the round loop runs on (set by it), for witnessing requests.
        self.grid: Any = None
        #: The evaluated cohort whose count metrics were released (one per run).
        self.count_cohort: tuple[str, ...] | None = None

    def _round(self, server_round: int) -> RoundLog:
        if server_round not in self.rounds:
            self.rounds[server_round] = RoundLog(server_round, started=time.monotonic())
        return self.rounds[server_round]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Select every institution, open the round in the audit log."""
        self.client_manager = client_manager
        pairs: list[tuple[ClientProxy, FitIns]] = super().configure_fit(
            server_round, parameters, client_manager
        )
        config = self.open_round(server_round)
        for _, ins in pairs:
            ins.config.update(config)
        return pairs

    def open_round(self, server_round: int) -> dict[str, Scalar]:
        """Open the round in the audit log; return the config every task of it carries."""
        self._round(server_round).fit_started = time.monotonic()
        config: dict[str, Scalar] = {
            "server-round": server_round, "log-id": self.audit.log_id_text, **self.task_config()
        }
        self.audit.round_opened(
            server_round, config, self.settings.institutions, self.settings.secagg.as_record()
        )
        return config

    def accept_trees(
        self,
        server_round: int,
        receipts: list[str],
        cohort: list[str],
        model: Parameters | None,
        why_none: str = "no tree was grown this round",
    ) -> bool:
        """``model = "gbdt"``: close the round's sums like :meth:`aggregate_fit` closes an update.

        ``receipts`` are the institutions' signed receipts of the round's last
        histogram sum; ``model`` the ensemble with the round's trees (None if
        no tree was grown). Returns whether the round is accepted.
        """
        log_ = self._round(server_round)
        log_.fit_done = bool(cohort)
        log_.fit_seconds = round(time.monotonic() - log_.fit_started, 4)
        if model is None and why_none.startswith(EARLY_STOPPING):
            # Boosting has ended on purpose: nobody was asked for anything, so
            # nobody dropped out and no aggregation halted.
            log_.stopped = True
            log_.refusal = why_none
            return False
        survivors = self._record_receipts(server_round, receipts)
        log_.cohort = sorted(survivors)
        if model is None:
            log_.refusal = log_.refusal or why_none
            return False
        try:
            self.plan.check_cohort(len(survivors))
        except FedFraudError as exc:
            log_.refusal = str(exc)
            return False
        if sorted(survivors) != sorted(cohort):
            log_.refusal = "histogram sums without a valid receipt"
            return False
        self.latest = parameters_to_ndarrays(model)
        log_.accepted = True
        return True

    def task_config(self) -> dict[str, Scalar]:
        """What every task of the run needs besides the round (the feature spec)."""
        config: dict[str, Scalar] = {"feature-spec": self.feature_spec} if self.feature_spec else {}
        if self.ckks:
            config["ckks-model-id"] = self.ckks_model_id
        return config

    def nothing_to_evaluate(self) -> str:
        """Why this round has no model to evaluate ("" when it has one).

        In ckks mode the institutions evaluate the model they decrypted; until
        a training round has produced one there is none (they refuse to
        evaluate the public initial model), so the server does not ask.
        """
        if self.ckks and self.ckks_model_id == CKKS_INITIAL_MODEL:
            return "ckks: no training round has produced a model the institutions hold"
        if self.settings.model is ModelKind.GBDT and self.latest[0].size == 0:
            return "gbdt: no tree has been grown yet"
        return ""

    def model_hash(self) -> str:
        """Hash of the current global model (in ckks mode, as the institutions decrypted it)."""
        if self.settings.model is ModelKind.GBDT:
            # The hash of model.json, as the run directory saves it (sha256sum checks it).
            return hashlib.sha256(self.latest[0].tobytes()).hexdigest()
        return self.ckks_model_hash or update_digest(self.latest)

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
        survivors = self._record_receipts(
            server_round, [str(res.metrics.get("receipt")) for _, res in results]
        )
        log_.cohort = sorted(survivors)
        try:
            self.plan.check_cohort(len(survivors))
        except FedFraudError as exc:
            log_.refusal = str(exc)
            return None, {}
        if len(survivors) != len(results):
            log_.refusal = "results without a valid receipt"
            return None, {}
        if self.ckks:
            return self._accept_encrypted(server_round, results, log_)
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.latest = parameters_to_ndarrays(parameters)
            log_.accepted = True
        return parameters, metrics

    def _record_receipts(self, server_round: int, texts: list[str]) -> list[str]:
        """Log each valid signed receipt; return the institutions that sent one.

        A result without a valid receipt does not count as taking part.
        """
        survivors: list[str] = []
        for text in texts:
            try:
                receipt = strict_loads(text)
                self.audit.receipt(receipt)
            except FedFraudError as exc:
                log(WARNING, "round %s: a result without a valid receipt: %s", server_round, exc)
                continue
            survivors.append(str(receipt["institution"]))
        return survivors

    def _accept_encrypted(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], log_: RoundLog
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """ckks mode: record the ciphertexts' hashes; keep the model's id, never the model."""
        ids = {str(res.metrics.get("ckks-model-id", "")) for _, res in results}
        hashes = {str(res.metrics.get("model-hash", "")) for _, res in results}
        records = {str(res.metrics.get("ckks-record", "")) for _, res in results}
        if len(ids) != 1 or len(hashes) != 1 or len(records) != 1 or "" in ids | hashes | records:
            log_.refusal = "ckks: no single decrypted model"
            return None, {}
        self.ckks_model_id, self.ckks_model_hash = ids.pop(), hashes.pop()
        self.audit.ciphertexts(server_round, strict_loads(records.pop()))
        log_.accepted = True
        return Parameters([], ""), {}

    def _record_absent(self, log_: RoundLog) -> None:
        """Log the round's refusals (from the tap) and its other dropouts."""
        refusals = [
            r for r in self.refusals(log_.server_round) if r.institution in self.settings.institutions
        ]
        for refusal in refusals:
            log_.refusals.append({"institution": refusal.institution, "rules": list(refusal.rules)})
            if _is_policy_hash(refusal.policy_hash):
                self.audit.policy_refusal(
                    log_.server_round, refusal.institution, list(refusal.rules), refusal.policy_hash
                )
            else:
                # A refusal that names no policy hash is still on the record:
                # as the institution leaving the round, with its stated rules.
                self.audit.dropout(
                    log_.server_round,
                    [refusal.institution],
                    "refused without a policy hash: " + "; ".join(refusal.rules)[:500],
                )
        refusers = {r.institution for r in refusals}
        log_.dropouts = sorted(set(self.settings.institutions) - set(log_.cohort) - refusers)
        if log_.dropouts:
            stage = "secagg+" if log_.fit_done else "secagg+ halted"
            self.audit.dropout(log_.server_round, log_.dropouts, stage)

    def close_round(self, server_round: int, sums: EvaluationSums | None) -> None:
        """Pool the securely summed evaluation, close the round, have it witnessed."""
        log_ = self._round(server_round)
        if log_.stopped:
            pass  # gbdt: boosting stopped early; the refusal says so, nobody was absent
        else:
            if not log_.fit_done:
                # SecAgg+ halted before aggregation: nobody's update was used.
                log_.refusal = "secure aggregation halted (too few institutions)"
            self._record_absent(log_)
        validation = self.validation_set()
        if validation is not None and not self.ckks:
            log_.threshold, log_.validation_auc_pr = validation.choose(self.latest, self.threshold_rule)
            log_.threshold_source = (
                f"{self.threshold_rule.describe()} (synthetic releases of "
                + ", ".join(validation.sources)
                + ")"
            )
        elif sums is not None:
            # No synthetic validation: choose on the securely summed counts of
            # the institutions' *training* splits (never on test data).
            log_.threshold = float(self.threshold_rule.choose(sums.train_pos, sums.train_neg))
            log_.threshold_source = (
                f"{self.threshold_rule.describe()}, on the summed training counts "
                "(no synthetic validation released)"
            )
        else:
            log_.threshold = DEFAULT_THRESHOLD
            log_.threshold_source = "default: no evaluation this round"
        if sums is not None:
            pooled = pooled_metrics(sums, log_.threshold)
            log_.metrics, log_.withheld = release(self.plan, pooled)
            log_.evaluated_by = sums.institutions
            before = self.count_cohort
            self.count_cohort = withhold_counts_of_another_cohort(
                log_.metrics, log_.withheld, tuple(log_.evaluated_by), before
            )
            if before is not None and tuple(log_.evaluated_by) != before:
                log(WARNING, "round %s: count metrics withheld (evaluated by another cohort)",
                    server_round)
        log_.model_hash = self.model_hash()
        self.audit.round_closed(
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

    def validation_set(self) -> ValidationSet | None:
        """The synthetic releases as model inputs (bring-your-own: once the scaling is agreed)."""
        validation = self.validation
        if isinstance(validation, ByoValidation):
            if not self.feature_spec:
                return None
            validation = self.validation = validation.encoded(self.feature_spec)
        return validation

    def witness(self, server_round: int) -> list[str]:
        """Have the institutions witness the log as it stands."""
        if self.client_manager is None or self.grid is None:
            return []
        node_ids = [proxy.node_id for proxy in self.client_manager.all().values()]
        return self.audit.witness(self.grid, node_ids, server_round)


def _is_policy_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def pooled_metrics(sums: EvaluationSums, threshold: float) -> dict[str, Any]:
    """Metrics on the combined test sets from the securely summed counts."""
    pooled = metrics_from_histograms(sums.test_pos, sums.test_neg, threshold)
    return {
        "loss": sums.loss,
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
