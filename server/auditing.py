"""The server's side of the audit trail, wired to Flower.

:class:`audit.run.RunAuditor` (Flower-free) writes the signed, chained log;
this module feeds it from the round loop and runs the witnessing exchange:
after every round, and once more after the run is closed, the server signs a
checkpoint and asks every institution (through Flower's ``get_properties``)
to check and countersign it. Each institution keeps the checkpoint in its
own local log; the server records each countersignature it receives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.common import Code, GetPropertiesIns
from flwr.server.client_proxy import ClientProxy
from flwr.supercore import log

from audit.canonical import canonical_dumps, strict_loads
from audit.run import RunAuditor, config_hash
from fedfraud import __version__
from fedfraud.errors import FedFraudError
from fedfraud.settings import RunSettings
from policy import Policy

AUDIT_FILE = "audit.jsonl"
WARNING = 30


class ServerAudit:
    """One run's audit log plus the institutions' witnessing of it."""

    def __init__(self, auditor: RunAuditor, timeout: float) -> None:
        self.auditor = auditor
        self.timeout = timeout
        self.last_witnessed: dict[str, int] = {}

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

    def witness(self, proxies: Iterable[ClientProxy], server_round: int) -> list[str]:
        """Checkpoint the log and collect every institution's countersignature.

        Returns the institutions that countersigned. One that does not answer
        or refuses is logged as a warning; its own local log will show where
        its view of the log stopped.
        """
        checkpoint, proof_for = self.auditor.checkpoint()
        checkpoint_text = canonical_dumps(checkpoint).decode("utf-8")
        signed: list[str] = []
        for proxy in proxies:
            institution = str(proxy.cid)
            config = {
                "task": "witness",
                "checkpoint": checkpoint_text,
            }
            # The proof is only meaningful from the size this node last saw;
            # the witness refuses a checkpoint that does not extend it.
            last = self.last_witnessed.get(institution, 0)
            config["proof"] = json.dumps(proof_for(last) if last else [])
            try:
                res = proxy.get_properties(
                    GetPropertiesIns(config=config), timeout=self.timeout, group_id=server_round
                )
            except Exception as exc:  # noqa: BLE001 - a node failure must not stop the run
                log(WARNING, "witnessing: node %s did not answer (%s)", institution, type(exc).__name__)
                continue
            if res.status.code != Code.OK or "countersignature" not in res.properties:
                log(WARNING, "witnessing: node %s refused the checkpoint", institution)
                continue
            countersignature = strict_loads(str(res.properties["countersignature"]))
            try:
                self.auditor.record_witness(countersignature)
            except FedFraudError as exc:
                log(WARNING, "witnessing: rejected a countersignature: %s", exc)
                continue
            name = str(countersignature.get("institution"))
            self.last_witnessed[institution] = int(checkpoint["tree_size"])
            signed.append(name)
        return sorted(signed)
