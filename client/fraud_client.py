"""The institution's Flower client: local training, evaluation and witnessing.

Training returns the full updated weights; fedfraud's SecAgg+ mod
(:mod:`client.secagg_mod`, outside this class) quantizes and masks them, so
the server only ever sees the sum.
With the update goes a receipt signed with the institution's own key.
Evaluation sends score *counts* on a fixed grid, never scores or rows, and
only into SecAgg+, so the server learns their sum over institutions alone.
``get_properties`` is the channel for audit checkpoints: the institution checks
that each one extends what it saw before, countersigns it and keeps it in its
own local audit log.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from flwr.app import Context
from flwr.client import NumPyClient

from audit.canonical import canonical_dumps, strict_loads
from audit.receipt import make_receipt
from audit.witness import InstitutionWitness
from core.errors import ProtocolError
from federation.settings import Aggregation, ModelKind, RunSettings
from core.wire import Refusal, update_digest
from secagg.secure_sum import LOSS_SCALE, to_counts, to_fixed_point
from fraud.metrics import SCORE_GRID_BINS, score_histograms
from fraud.model import build_model, get_weights, set_weights
from fraud.train import TrainConfig, evaluate_loss, predict_scores, train_local
from secagg.params import check_update_in_range, check_weight

from .data import LocalData
from .gate import Institution, RoundRefused, RoundView, check_round, load_institution
from .node import InstitutionNode
from .secagg_adapter import ObservedSecAgg, observed_secagg

Arrays = list[npt.NDArray[Any]]
Config = dict[str, bool | bytes | float | int | str]
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


#: ``model = "gbdt"``: binned rows and margins kept between the levels of a
#: run in this process (each level adds only the trees that are new).
_MARGINS: Any = None


def _margin_cache() -> Any:
    global _MARGINS
    if _MARGINS is None:
        from fraud.gbdt import MarginCache

        _MARGINS = MarginCache()
    return _MARGINS


def round_seed(settings: RunSettings, institution_id: str, server_round: int) -> int:
    """A distinct, reproducible training seed per run, institution and round."""
    index = settings.institutions.index(institution_id)
    return settings.seed * 1_000_003 + server_round * 1_009 + index


def _round(config: Config) -> int:
    value = config.get("server-round")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("instructions carry no round number")
    return value


class FraudClient(NumPyClient):
    """One institution's participation in a run."""

    def __init__(self, context: Context, settings: RunSettings, node: InstitutionNode) -> None:
        self.context = context
        self.settings = settings
        self.node = node
        self.institution: Institution = load_institution(node, settings)
        self.data = LocalData(node, settings)

    def fit(self, parameters: Arrays, config: Config) -> tuple[Arrays, int, Config]:
        """Train locally on this round's global model, inside SecAgg+ only.

        The same SecAgg+ channel carries the round's private evaluation
        (``task = "evaluate"``), see :meth:`_evaluate_securely`.
        """
        task = config.get("task", "train")
        if task == "evaluate":
            return self._evaluate_securely(parameters, config)
        if task == "stats":
            return self._share_statistics(config)
        if task == "bins":
            return self._share_bins(config)
        if isinstance(task, str) and task.startswith("histogram-"):
            return self._share_histograms(parameters, config)
        if task != "train":
            raise ProtocolError(f"unknown task {task!r}")
        # 1. The round must run inside SecAgg+, with parameters this
        #    institution agreed to and a cohort its policy accepts, before
        #    the institution touches its data.
        server_round = _round(config)
        unsafe = self.settings.aggregation is Aggregation.UNSAFE_PLAIN
        secagg = None if unsafe else observed_secagg(self.context)
        cohort = self.settings.institutions if secagg is None else secagg.cohort
        observed = check_round(
            RoundView(self.node.institution_id, server_round, secagg, cohort),
            self.settings,
            self.institution,
        )
        # 2. Train on the private training split.
        spec = config.get("feature-spec")
        features, labels = self.data.arrays("train", spec)
        model = build_model(self.data.n_features(spec), seed=self.settings.seed)
        set_weights(model, parameters)
        train_config = TrainConfig(
            local_epochs=self.settings.local_epochs,
            batch_size=self.settings.batch_size,
            lr=self.settings.lr,
            seed=round_seed(self.settings, self.node.institution_id, server_round),
            prox_mu=self.settings.fedprox_mu,
        )
        result = train_local(model, features, labels, train_config)
        weights = get_weights(model)
        # 3. Refuse to send anything SecAgg+ would clip or overflow on.
        if secagg is not None:
            check_weight(result.num_examples, observed.max_weight)
        check_update_in_range(weights, observed.clipping_range, names=_layer_names(model))
        # 4. A signed receipt: this institution, this log, this round, this update.
        return weights, result.num_examples, self._receipt(config, weights)

    def _gate_secure_task(self, config: Config, histograms: bool = False) -> ObservedSecAgg:
        """The gate for a SecAgg+ task that is not training (evaluation, statistics, histograms)."""
        secagg = observed_secagg(self.context)
        return check_round(
            RoundView(
                self.node.institution_id, _round(config), secagg, secagg.cohort, training=False,
                histograms=histograms,
            ),
            self.settings,
            self.institution,
        )

    def _receipt(self, config: Config, arrays: Arrays) -> Config:
        """The result's metrics: this institution and, if the log is named, a signed
        receipt over ``arrays`` (what this institution sends into the secure sum)."""
        metrics: Config = {"institution": self.node.institution_id}
        log_id = config.get("log-id")
        if isinstance(log_id, str) and log_id:
            receipt = make_receipt(
                self.institution.signing_key,
                self.node.institution_id,
                strict_loads(log_id),
                _round(config),
                update_digest(arrays),
                self.institution.policy.policy_hash,
            )
            metrics["receipt"] = canonical_dumps(receipt).decode("utf-8")
        return metrics

    def _share_bins(self, config: Config) -> tuple[Arrays, int, Config]:
        """The bin agreement: grid counts of every column, rows and frauds (summed exactly)."""
        from fraud.gbdt import fine_counts

        self._gate_secure_task(config, histograms=True)
        features, labels = self.data.arrays("train", config.get("feature-spec"))
        vector = np.concatenate(
            [
                to_counts(fine_counts(features).ravel(), "bin grid counts"),
                to_counts([labels.shape[0], int(labels.sum())], "training rows and frauds"),
            ]
        )
        return [vector], 1, {"institution": self.node.institution_id}

    def _share_histograms(self, parameters: Arrays, config: Config) -> tuple[Arrays, int, Config]:
        """One level of the tree being grown: per open node, feature and bin, the
        row count and the sums of gradients and hessians of this site's training
        rows, into the exact secure sum only.

        Refused (before the data is read) if this institution's policy does not
        allow histograms, or a node to be summed holds fewer rows across the
        federation than its small-cell rule (as the server states them: the
        audit log records them, and the verifier checks them).
        """
        from fraud.gbdt import Ensemble, gradients, level_histograms

        self._gate_secure_task(config, histograms=True)
        ensemble = Ensemble.from_array(parameters[0]) if len(parameters) == 1 else None
        if ensemble is None or ensemble.growing is None:
            raise ProtocolError("a histogram task must carry the ensemble and the tree being grown")
        tree = ensemble.growing
        terms = self.institution.policy.histograms
        floor = terms.min_child_rows if terms is not None else 1
        small = [n for n in tree.open if tree.rows[n] < floor]
        if small:
            raise RoundRefused(
                Refusal(
                    institution=self.node.institution_id,
                    server_round=_round(config),
                    rules=(
                        f"histograms.min_child_rows: the server asks for sums of node(s) "
                        f"{small[:5]} holding fewer than {floor} rows across the federation",
                    ),
                    policy_hash=self.institution.policy.policy_hash,
                )
            )
        features, labels = self.data.arrays("train", config.get("feature-spec"))
        if features.shape[1] != len(ensemble.edges):
            raise ProtocolError(
                f"the ensemble's bins cover {len(ensemble.edges)} columns, this site's data {features.shape[1]}"
            )
        binned, margin = _margin_cache().margins(self.data.cache_key("train"), features, ensemble)
        grad, hess = gradients(margin, labels)
        vector = level_histograms(binned, grad, hess, tree, ensemble.params.max_bins).vector()
        return [vector], 1, self._receipt(config, [vector])

    def _evaluate_securely(self, parameters: Arrays, config: Config) -> tuple[Arrays, int, Config]:
        """Score the global model on the test split; send counts into SecAgg+ only.

        The vector holds whole numbers only, summed exactly
        (:mod:`secagg.secure_sum`): the score counts of each class on a fixed
        grid, for the test and the training split, the total test loss in
        fixed point and the number of test examples. No weight and no scale
        depends on the number of rows.
        """
        self._gate_secure_task(config)
        spec = config.get("feature-spec")
        test_x, test_y = self.data.arrays("test", spec)
        train_x, train_y = self.data.arrays("train", spec)
        count = int(test_y.shape[0])
        if self.settings.model is ModelKind.GBDT:
            from fraud.gbdt import Ensemble, log_loss_total

            ensemble = Ensemble.from_array(parameters[0])
            test_scores, train_scores = ensemble.predict(test_x), ensemble.predict(train_x)
            loss_total = log_loss_total(test_scores, test_y)
        else:
            model = build_model(self.data.n_features(spec), seed=self.settings.seed)
            set_weights(model, parameters)
            loss_total = evaluate_loss(model, test_x, test_y) * count
            test_scores, train_scores = predict_scores(model, test_x), predict_scores(model, train_x)
        pos, neg = score_histograms(test_scores, test_y, SCORE_GRID_BINS)
        train_pos, train_neg = score_histograms(train_scores, train_y, SCORE_GRID_BINS)
        vector = np.concatenate(
            [
                to_counts(np.concatenate([pos, neg, train_pos, train_neg]), "evaluation counts"),
                to_fixed_point([loss_total], LOSS_SCALE, "evaluation loss"),
                to_counts([count], "test examples"),
            ]
        )
        return [vector], 1, {"institution": self.node.institution_id}

    def _share_statistics(self, config: Config) -> tuple[Arrays, int, Config]:
        """Send this site's training statistics, inside SecAgg+ only (summed exactly).

        The training row count (from which ``max-weight`` auto follows) and,
        for bring-your-own data, the counts, sums and sums of squares of the
        (signed-log) numeric columns, from which the server derives the
        shared scaling. Nothing else leaves.
        """
        self._gate_secure_task(config)
        return [self.data.numeric_stats_vector()], 1, {"institution": self.node.institution_id}

    def get_properties(self, config: Config) -> Config:
        """Witness an audit checkpoint: check, countersign, keep a local copy."""
        if config.get("task") != "witness":
            raise ProtocolError(f"unknown request {config.get('task')!r}")
        checkpoint_text = config.get("checkpoint")
        proof_text = config.get("proof")
        if not isinstance(checkpoint_text, str) or not isinstance(proof_text, str):
            raise ProtocolError("witness request lacks a checkpoint or proof")
        checkpoint = strict_loads(checkpoint_text)
        try:
            proof = json.loads(proof_text)
        except ValueError as exc:
            raise ProtocolError("witness request has a malformed proof") from exc
        if not isinstance(checkpoint, dict) or not isinstance(proof, list):
            raise ProtocolError("witness request is malformed")
        run_id = str(checkpoint.get("log_id", {}).get("run_id", ""))
        if not run_id:
            raise ProtocolError("checkpoint names no run")
        self.node.audit_dir.mkdir(parents=True, exist_ok=True)
        witness = InstitutionWitness(
            self.node.audit_dir / f"{_SAFE_NAME.sub('_', run_id)}.jsonl",
            self.node.institution_id,
            self.institution.signing_key,
            self.institution.server_key,
        )
        try:
            countersignature = witness.witness(checkpoint, [str(p) for p in proof])
        finally:
            witness.close()
        return {
            "institution": self.node.institution_id,
            "countersignature": json.dumps(countersignature, sort_keys=True),
        }


def _layer_names(model: torch.nn.Module) -> list[str]:
    return list(model.state_dict().keys())
