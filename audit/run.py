"""The server's audit recorder for one federated run (Flower-free).

:class:`RunAuditor` turns the server's events into records, in an enforced
order (fail closed: an event out of order raises instead of being logged)::

    start -> { round_opened -> (policy_refusal | dropout | receipt)* -> round_closed
               -> checkpoint -> record_witness* }* -> close -> checkpoint -> record_witness*

A log is only VALID to the verifier once ``close`` has been followed by a
checkpoint that at least one institution countersigned (and whose local log
the verifier is given).  No raw data, update, key or secret is ever logged:
only ids, hashes, parameters, and the metrics the caller chose to release.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_dumps, sha256_hex
from .checkpoint import SignedCheckpoint, verify_countersignature
from .errors import AuditError, AuditSequenceError, ReceiptError
from .keys import fingerprint, public_key_b64, public_key_from_b64, public_key_from_bytes
from .log import AuditLogWriter, Clock
from .receipt import receipts_root, verify_receipt
from .record import LogId, Record, RecordKind

__all__ = ["RunAuditor", "config_hash", "CheckpointBundle"]

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")

#: ``(checkpoint_dict, proof_for)``; ``proof_for(old_size)`` returns the hex
#: RFC 9162 consistency proof from ``old_size`` to this checkpoint.
CheckpointBundle = tuple[dict[str, Any], Callable[[int], list[str]]]


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of a configuration dict."""
    return sha256_hex(canonical_dumps(dict(config)))


def _check_hex(name: str, value: object) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise AuditError(f"{name} must be 64 lower-case hex digits (SHA-256)")
    return value


def _check_round(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AuditError("server_round must be an integer >= 1")
    return value


def _ids(name: str, values: Sequence[str]) -> list[str]:
    result = list(values)
    if any(not isinstance(v, str) or not v for v in result):
        raise AuditError(f"{name} must be a list of non-empty institution ids")
    if len(set(result)) != len(result):
        raise AuditError(f"{name} lists an institution twice")
    return result


class RunAuditor:
    """Records one run into a signed, chained audit log.

    Build with :meth:`create` (new log file).  All methods return the
    :class:`~audit.record.Record` they appended, except :meth:`checkpoint`.
    """

    def __init__(self, writer: AuditLogWriter) -> None:
        self._writer = writer
        self._started = False
        self._closed = False
        self._inst_keys: dict[str, Ed25519PublicKey] = {}
        self._policy_hashes: dict[str, str] = {}
        self._round = 0
        self._open = False
        self._cohort: list[str] = []
        self._dropped: set[str] = set()
        self._receipts: list[dict[str, Any]] = []
        self._checkpoints: dict[int, SignedCheckpoint] = {}

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        signing_key: Ed25519PrivateKey,
        federation_id: str,
        run_id: str,
        *,
        clock: Clock | None = None,
    ) -> "RunAuditor":
        """Create a new server audit log for ``run_id`` (the file must not exist)."""
        log_id = LogId(federation_id, run_id, fingerprint(signing_key))
        return cls(AuditLogWriter.create(path, signing_key, log_id, clock=clock))

    @property
    def log_id(self) -> LogId:
        """The log id every record carries (give it to institutions for receipts)."""
        return self._writer.log_id

    @property
    def writer(self) -> AuditLogWriter:
        """The underlying log writer."""
        return self._writer

    def _require_open_round(self, server_round: int) -> None:
        if not self._started or self._closed:
            raise AuditSequenceError("run is not in progress")
        if not self._open or server_round != self._round:
            raise AuditSequenceError(f"round {server_round} is not the open round")

    def start(
        self,
        *,
        code_version: str,
        run_config: Mapping[str, Any],
        institutions: Sequence[Mapping[str, Any]],
        run_plan: Mapping[str, Any],
        aggregation_mode: str,
        aggregation_params: Mapping[str, Any],
    ) -> Record:
        """Append the genesis record (first, exactly once).

        Parameters
        ----------
        code_version : str
            The product version / commit running the server.
        run_config : mapping
            The run configuration (hashed and stored; must hold no secrets).
        institutions : sequence of mappings
            Each ``{"id": str, "public_key": bytes (32 raw) or base64 str,
            "policy_hash": hex}``.
        run_plan : mapping
            The combined run plan (the strictest of all policies).
        aggregation_mode : str
            e.g. ``"secagg+"`` or ``"ckks"``.
        aggregation_params : mapping
            The mode's parameters (shares, threshold, ranges, ...).
        """
        if self._started:
            raise AuditSequenceError("genesis already written")
        entries = []
        for inst in institutions:
            inst_id = inst.get("id")
            if not isinstance(inst_id, str) or not inst_id or inst_id in self._inst_keys:
                raise AuditError("institution ids must be unique non-empty strings")
            raw = inst.get("public_key")
            key = public_key_from_bytes(bytes(raw)) if isinstance(raw, (bytes, bytearray)) else public_key_from_b64(str(raw))
            policy_hash = _check_hex(f"policy_hash of {inst_id}", inst.get("policy_hash"))
            self._inst_keys[inst_id] = key
            self._policy_hashes[inst_id] = policy_hash
            entries.append({"id": inst_id, "public_key": public_key_b64(key), "policy_hash": policy_hash})
        if not entries:
            raise AuditError("a run needs at least one institution")
        if not isinstance(aggregation_mode, str) or not aggregation_mode:
            raise AuditError("aggregation_mode must be a non-empty string")
        log_id = self._writer.log_id
        body = {
            "federation_id": log_id.federation_id,
            "run_id": log_id.run_id,
            "code_version": code_version,
            "run_config": dict(run_config),
            "run_config_hash": config_hash(run_config),
            "institutions": entries,
            "run_plan": dict(run_plan),
            "aggregation": {"mode": aggregation_mode, "params": dict(aggregation_params)},
        }
        record = self._writer.append(RecordKind.GENESIS, body)
        self._started = True
        return record

    def round_opened(
        self, server_round: int, config_hash: str, cohort: Sequence[str], secagg_params: Mapping[str, Any]
    ) -> Record:
        """Open a round: its config hash, selected cohort and SecAgg+/CKKS parameters."""
        if not self._started or self._closed:
            raise AuditSequenceError("run is not in progress")
        if self._open:
            raise AuditSequenceError(f"round {self._round} is still open")
        if _check_round(server_round) != self._round + 1:
            raise AuditSequenceError(f"round {server_round} opened after round {self._round}")
        members = _ids("cohort", cohort)
        unknown = [m for m in members if m not in self._inst_keys]
        if unknown:
            raise AuditError(f"cohort names institutions not in the genesis: {unknown}")
        record = self._writer.append(
            RecordKind.ROUND_OPENED,
            {
                "round": server_round,
                "config_hash": _check_hex("config_hash", config_hash),
                "cohort": members,
                "secagg": dict(secagg_params),
            },
        )
        self._round, self._open = server_round, True
        self._cohort, self._dropped, self._receipts = members, set(), []
        return record

    def policy_refusal(
        self, server_round: int, institution_id: str, rules: Sequence[str], policy_hash: str
    ) -> Record:
        """Record that an institution refused a round under its policy (round 0: before any round)."""
        if not self._started or self._closed:
            raise AuditSequenceError("run is not in progress")
        if server_round != 0:
            self._require_open_round(server_round)
        if institution_id not in self._inst_keys:
            raise AuditError(f"unknown institution {institution_id!r}")
        rule_list = [str(r) for r in rules]
        if not rule_list:
            raise AuditError("a refusal names at least one rule")
        return self._writer.append(
            RecordKind.POLICY_REFUSAL,
            {
                "round": server_round,
                "institution": institution_id,
                "rules": rule_list,
                "policy_hash": _check_hex("policy_hash", policy_hash),
            },
        )

    def participants(
        self, binding: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]
    ) -> Record:
        """Record every node that answered a secure round's first stage, with its key.

        ``binding`` names the federation, Flower run, round and task; each node
        entry holds its Flower node id, the institution it claimed, whether its
        signed key advertisement verified under that institution's genesis key
        (``verified``), and the advertisement itself (``seal_key``,
        ``mask_key``, ``signature``, hex), so the verifier can check the claim.
        A node that claims no institution of the genesis is recorded too: the
        verifier flags the run.
        """
        if not self._started or self._closed:
            raise AuditSequenceError("run is not in progress")
        entries = []
        for node in nodes:
            entry = {
                "node": str(int(node["node"])),  # Flower node ids are 64-bit
                "institution": str(node["institution"]),
                "verified": bool(node["verified"]),
                "seal_key": str(node["seal_key"]),
                "mask_key": str(node["mask_key"]),
                "signature": str(node["signature"]),
            }
            if entry["verified"] and entry["institution"] not in self._inst_keys:
                raise AuditError(f"a verified participant must be a genesis institution: {entry['institution']!r}")
            entries.append(entry)
        bound: dict[str, Any] = {
            "federation": str(binding["federation"]),
            "run": str(int(binding["run"])),  # Flower run ids exceed I-JSON integers
            "round": _check_round(binding["round"]) if binding["round"] else 0,
            "task": str(binding["task"]),
        }
        if binding.get("weight_bound"):
            # An auto max-weight is signed into every advertisement of a
            # training round: the verifier needs it to check them.
            bound["weight_bound"] = int(binding["weight_bound"])
        body = {"binding": bound, "nodes": sorted(entries, key=lambda e: int(str(e["node"])))}
        return self._writer.append(RecordKind.PARTICIPANTS, body)

    def ciphertexts(self, server_round: int, body: Mapping[str, Any]) -> Record:
        """Record a ckks round: parameter set, context hash, hashes of every ciphertext.

        Never the ciphertexts themselves: ``ciphertexts`` maps each institution
        to the SHA-256 of each ciphertext it sent, ``sum`` those of the
        homomorphic sum the institutions decrypted, ``model_id`` its id.
        """
        self._require_open_round(server_round)
        per_inst = {str(k): [_check_hex("ciphertext", h) for h in v] for k, v in dict(body["ciphertexts"]).items()}
        unknown = [i for i in per_inst if i not in self._inst_keys]
        if unknown:
            raise AuditError(f"ciphertexts of institutions not in the genesis: {unknown}")
        return self._writer.append(
            RecordKind.CIPHERTEXTS,
            {
                "round": server_round,
                "params": str(body["params"]),
                "context_hash": _check_hex("context_hash", body["context_hash"]),
                "ciphertexts": per_inst,
                "sum": [_check_hex("sum", h) for h in body["sum"]],
                "model_id": _check_hex("model_id", body["model_id"]),
            },
        )

    def gbdt_bins(self, server_round: int, bins: Sequence[int], contributors: Sequence[str]) -> Record:
        """Record the bin agreement of a gbdt run: bins per column and who was summed."""
        self._require_open_round(server_round)
        members = _ids("contributors", contributors)
        if any(m not in self._inst_keys for m in members):
            raise AuditError(f"bin counts of institutions not in the genesis: {members}")
        return self._writer.append(
            RecordKind.GBDT_BINS,
            {"round": server_round, "bins": [int(b) for b in bins], "contributors": members},
        )

    def gbdt_sum(
        self,
        server_round: int,
        task: str,
        shape: Sequence[int],
        sum_sha256: str,
        receipts: Sequence[dict[str, Any]],
    ) -> Record:
        """Record one histogram sum: task, shape, SHA-256 of the totals, the contributors' receipts.

        Each receipt must verify under its institution's genesis key and name
        this log and round; its digest covers that institution's own vector.

        Raises
        ------
        ReceiptError
            If a receipt does not verify, or two come from one institution.
        """
        self._require_open_round(server_round)
        seen: list[str] = []
        for receipt in receipts:
            inst = receipt.get("institution") if isinstance(receipt, dict) else None
            if not isinstance(inst, str) or inst not in self._inst_keys or inst in seen:
                raise ReceiptError(f"histogram receipt from {inst!r}: unknown or repeated")
            verify_receipt(receipt, self._inst_keys[inst], log_id=self.log_id,
                           server_round=server_round, institution_id=inst)
            seen.append(inst)
        return self._writer.append(
            RecordKind.GBDT_SUM,
            {"round": server_round, "task": str(task), "shape": [int(d) for d in shape],
             "sum_sha256": _check_hex("sum_sha256", sum_sha256), "receipts": list(receipts)},
        )

    def gbdt_tree(
        self, server_round: int, index: int, tree_hash: str, nodes: int, smallest: int, floor: int
    ) -> Record:
        """Record a grown tree: its index in the ensemble, hash, size and smallest node's rows."""
        self._require_open_round(server_round)
        return self._writer.append(
            RecordKind.GBDT_TREE,
            {"round": server_round, "index": int(index), "tree_hash": _check_hex("tree_hash", tree_hash),
             "nodes": int(nodes), "smallest_node_rows": int(smallest), "min_child_rows": int(floor)},
        )

    def dropout(self, server_round: int, institution_ids: Sequence[str], stage: str) -> Record:
        """Record institutions that dropped out at a protocol stage of the open round."""
        self._require_open_round(server_round)
        members = _ids("institution_ids", institution_ids)
        if not members or any(m not in self._cohort for m in members):
            raise AuditError("dropouts must be members of the round's cohort")
        record = self._writer.append(
            RecordKind.DROPOUT, {"round": server_round, "institutions": members, "stage": str(stage)}
        )
        self._dropped.update(members)
        return record

    def receipt(self, receipt: dict[str, Any]) -> Record:
        """Verify an institution's signed receipt and record it verbatim.

        Raises
        ------
        ReceiptError
            If it does not verify under the genesis key of the institution, or
            names another log/round, or the institution is not in the cohort.
        """
        if not isinstance(receipt, dict):
            raise ReceiptError("receipt must be a dict")
        inst = receipt.get("institution")
        self._require_open_round(self._round)
        if not isinstance(inst, str) or inst not in self._inst_keys or inst not in self._cohort:
            raise ReceiptError(f"receipt from {inst!r}, which is not in round {self._round}'s cohort")
        verify_receipt(
            receipt, self._inst_keys[inst], log_id=self.log_id, server_round=self._round, institution_id=inst
        )
        if any(r["institution"] == inst for r in self._receipts):
            raise ReceiptError(f"second receipt from {inst!r} in round {self._round}")
        record = self._writer.append(
            RecordKind.RECEIPT, {"round": self._round, "institution": inst, "receipt": receipt}
        )
        self._receipts.append(receipt)
        return record

    def round_closed(
        self,
        server_round: int,
        surviving_cohort: Sequence[str],
        model_hash: str,
        metrics: Mapping[str, float | int],
    ) -> Record:
        """Close the open round: survivors, aggregated model hash, released metrics, receipts root.

        Every survivor must have a logged receipt in this round.
        """
        self._require_open_round(server_round)
        survivors = _ids("surviving_cohort", surviving_cohort)
        bad = [s for s in survivors if s not in self._cohort or s in self._dropped]
        if bad:
            raise AuditError(f"survivors not in the cohort or dropped out: {bad}")
        with_receipt = {r["institution"] for r in self._receipts}
        missing = [s for s in survivors if s not in with_receipt]
        if missing:
            raise AuditError(f"survivors without a receipt: {missing}")
        released = dict(metrics)
        if any(not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) for k, v in released.items()):
            raise AuditError("metrics must map names to numbers")
        record = self._writer.append(
            RecordKind.ROUND_CLOSED,
            {
                "round": server_round,
                "cohort": survivors,
                "model_hash": _check_hex("model_hash", model_hash),
                "metrics": released,
                "receipts_root": receipts_root(self._receipts),
                "receipt_count": len(self._receipts),
            },
        )
        self._open = False
        return record

    def checkpoint(self) -> CheckpointBundle:
        """Sign a checkpoint over all records so far (and log it).

        Returns
        -------
        (dict, callable)
            The checkpoint to send to every institution, and ``proof_for``:
            given the tree size an institution last witnessed, the hex
            consistency proof it needs.
        """
        if not self._started:
            raise AuditSequenceError("no genesis yet")
        if self._open:
            raise AuditSequenceError("checkpoints are taken between rounds")
        cp = self._writer.checkpoint()
        self._checkpoints[cp.tree_size] = cp
        writer = self._writer

        def proof_for(old_size: int) -> list[str]:
            return writer.consistency_proof(old_size, cp.tree_size)

        return cp.to_dict(), proof_for

    def record_witness(self, countersignature: dict[str, Any]) -> Record:
        """Verify an institution's countersignature and record it as a ``witness`` record."""
        if not isinstance(countersignature, dict):
            raise AuditError("countersignature must be a dict")
        inst = countersignature.get("institution")
        if not isinstance(inst, str) or inst not in self._inst_keys:
            raise AuditError(f"countersignature from unknown institution {inst!r}")
        cp = verify_countersignature(countersignature, self._inst_keys[inst])
        ours = self._checkpoints.get(cp.tree_size)
        if ours is None or not ours.same_as(cp):
            raise AuditError("countersignature covers a checkpoint this log never issued")
        return self._writer.append(
            RecordKind.WITNESS, {"institution": inst, "countersignature": countersignature}
        )

    def close(self, reason: str = "completed", final_model_hash: str | None = None) -> Record:
        """Append ``run_closed``.  Follow with :meth:`checkpoint` and the witnesses."""
        if not self._started or self._closed:
            raise AuditSequenceError("run is not in progress")
        if self._open:
            raise AuditSequenceError(f"round {self._round} is still open")
        body: dict[str, Any] = {"rounds": self._round, "reason": str(reason)}
        body["final_model_hash"] = None if final_model_hash is None else _check_hex("final_model_hash", final_model_hash)
        record = self._writer.append(RecordKind.RUN_CLOSED, body)
        self._closed = True
        return record

    def close_file(self) -> None:
        """Close the log file."""
        self._writer.close()
