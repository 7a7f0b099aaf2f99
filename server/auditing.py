"""The server's side of the audit trail, wired to Flower.

:class:`audit.run.RunAuditor` (Flower-free) writes the signed, chained log;
this module feeds it from the round loop and runs the witnessing exchange:
after every round, and once more after the run is closed, the server signs a
checkpoint and asks every institution at once (Flower's legacy
``get_properties`` request) to check and countersign it. Each institution keeps the checkpoint in its
own local log; the server records each countersignature it receives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.serverapp import Grid
from flwr.supercore import log

from audit.canonical import canonical_dumps, strict_loads
from audit.run import RunAuditor, config_hash
from core import __version__
from core.errors import FedFraudError
from core.layout import AUDIT_FILE
from federation.settings import RunSettings
from policy import Policy

from .model_card import AuditFacts
from .secagg_workflow import witness_reply, witness_request

WARNING = 30


class ServerAudit:
    """One run's audit log plus the institutions' witnessing of it."""

    def __init__(self, auditor: RunAuditor, timeout: float) -> None:
        self.auditor = auditor
        self.timeout = timeout
        self.last_witnessed: dict[int, int] = {}

    @classmethod
    def start(
        cls,
        settings: RunSettings,
        run_dir: Path,
        server_key: Ed25519PrivateKey,
        run_config: Mapping[str, Any],
        policies: Sequence[Policy],
        plan: Mapping[str, Any],
    ) -> ServerAudit:
        """Create the log and write its genesis record."""
        auditor = RunAuditor.create(
            run_dir / AUDIT_FILE, server_key, settings.federation_id, settings.run_name
        )
        auditor.start(
            code_version=f"fedfraud {__version__}",
            run_config=dict(run_config),
            institutions=[
                {
                    "id": p.institution_id,
                    "public_key": p.identity.public_key,
                    "policy_hash": p.policy_hash,
                }
                for p in policies
            ],
            run_plan=dict(plan),
            aggregation_mode=settings.aggregation.value,
            aggregation_params=settings.secagg.as_record(),
        )
        return cls(auditor, settings.secagg.timeout)

    @property
    def log_id_text(self) -> str:
        """The log id as canonical JSON, sent to institutions for their receipts."""
        return canonical_dumps(self.auditor.log_id.to_dict()).decode("utf-8")

    def round_opened(
        self, server_round: int, config: Mapping[str, Any], cohort: Sequence[str], params: Mapping[str, Any]
    ) -> None:
        """Record that a round opened."""
        self.auditor.round_opened(server_round, config_hash(dict(config)), list(cohort), dict(params))

    def receipt(self, receipt: dict[str, Any]) -> None:
        """Record an institution's signed receipt of the open round.

        Raises
        ------
        ReceiptError
            If it does not verify or its institution is not in the round's cohort.
        """
        self.auditor.receipt(receipt)

    def ciphertexts(self, server_round: int, body: Mapping[str, Any]) -> None:
        """Record a ckks round's ciphertext hashes (never the ciphertexts)."""
        self.auditor.ciphertexts(server_round, body)

    def policy_refusal(
        self, server_round: int, institution_id: str, rules: Sequence[str], policy_hash: str
    ) -> None:
        """Record that an institution refused the round under its policy."""
        self.auditor.policy_refusal(server_round, institution_id, rules, policy_hash)

    def dropout(self, server_round: int, institution_ids: Sequence[str], stage: str) -> None:
        """Record institutions that left the open round at a protocol stage."""
        self.auditor.dropout(server_round, institution_ids, stage)

    def round_closed(
        self,
        server_round: int,
        surviving_cohort: Sequence[str],
        model_hash: str,
        metrics: Mapping[str, float | int],
    ) -> None:
        """Close the open round: survivors, model hash and the released metrics."""
        self.auditor.round_closed(server_round, surviving_cohort, model_hash, metrics)

    def participants(self, binding: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> None:
        """Record every node that answered a secure round's first stage, with its signed key."""
        self.auditor.participants(binding, nodes)

    def gbdt_bins(self, server_round: int, bins: Sequence[int], contributors: Sequence[str]) -> None:
        """Record a gbdt run's bin agreement: bins per column and who was summed."""
        self.auditor.gbdt_bins(server_round, bins, contributors)

    def gbdt_sum(
        self, server_round: int, task: str, shape: Sequence[int], sum_sha256: str, receipts: Sequence[dict[str, Any]]
    ) -> None:
        """Record one histogram sum: its task, shape, hash of the totals and the contributors' receipts."""
        self.auditor.gbdt_sum(server_round, task, shape, sum_sha256, receipts)

    def gbdt_tree(
        self, server_round: int, index: int, tree_hash: str, nodes: int, smallest: int, floor: int
    ) -> None:
        """Record a grown tree: its index, hash, size and smallest node's rows."""
        self.auditor.gbdt_tree(server_round, index, tree_hash, nodes, smallest, floor)

    def close(self, final_model_hash: str) -> None:
        """Write the closing record of a completed run (witnessed next, then :meth:`close_file`)."""
        self.auditor.close("completed", final_model_hash)

    def close_file(self) -> None:
        """Flush and close the log file."""
        self.auditor.close_file()

    def facts(self, witnessed_by: Sequence[str]) -> AuditFacts:
        """The closed log's path, id, size, head hash and Merkle root, for the model card."""
        writer = self.auditor.writer
        records = writer.records
        return AuditFacts(
            log=str(writer.path),
            log_id=self.auditor.log_id.to_dict(),
            records=writer.size,
            head_hash=records[-1].hash if records else "",
            merkle_root=writer.tree_root(),
            final_checkpoint_witnessed_by=list(witnessed_by),
        )

    def witness(self, grid: Grid, node_ids: Iterable[int], server_round: int) -> list[str]:
        """Checkpoint the log and collect every institution's countersignature.

        One message per institution, all sent at once (Flower's legacy
        ``get_properties`` request, which the institution's client answers).
        Returns the institutions that countersigned. One that does not answer
        or refuses is logged as a warning; its own local log will show where
        its view of the log stopped.
        """
        checkpoint, proof_for = self.auditor.checkpoint()
        checkpoint_text = canonical_dumps(checkpoint).decode("utf-8")
        messages = []
        for node_id in node_ids:
            # The proof is only meaningful from the size this node last saw;
            # the witness refuses a checkpoint that does not extend it.
            last = self.last_witnessed.get(node_id, 0)
            config = {
                "task": "witness",
                "checkpoint": checkpoint_text,
                "proof": json.dumps(proof_for(last) if last else []),
            }
            messages.append(witness_request(grid, node_id, config, server_round, self.timeout))
        signed: list[str] = []
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                log(WARNING, "witnessing: node %s refused or failed", node_id)
                continue
            properties = witness_reply(reply)
            if "countersignature" not in properties:
                log(WARNING, "witnessing: node %s sent no countersignature", node_id)
                continue
            try:
                countersignature = strict_loads(str(properties["countersignature"]))
                self.auditor.record_witness(countersignature)
            except FedFraudError as exc:
                log(WARNING, "witnessing: rejected a countersignature: %s", exc)
                continue
            self.last_witnessed[node_id] = int(checkpoint["tree_size"])
            signed.append(str(countersignature.get("institution")))
        return sorted(signed)
