"""Typed, read-only views of the record bodies the verifier reads.

A record's body is whatever JSON object the signer wrote: the verifier must
read it without trusting its shape.  Each view names the members of one
record kind (as :class:`audit.run.RunAuditor` and
:class:`audit.witness.InstitutionWitness` write them), reads them from the
body once, with the default a missing member stands for, and keeps each
value exactly as found.  Members the verifier only compares or shows are
typed ``object``: a value of the wrong type simply fails the comparison.
Members it takes apart are narrowed where it uses them, and a value of the
wrong shape then raises ``TypeError``/``AttributeError``, which the verifier
reports as a malformed record, never as a pass.

Building a view never raises, so a view can be built for every record
before any check runs.  The one exception is :class:`ParticipantsBody`: the
verifier needs every member of a participants record, so it is parsed
strictly, in one place, and a malformed one is rejected whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from .errors import RecordFormatError

__all__ = [
    "JSONValue",
    "MISSING",
    "member",
    "members",
    "items",
    "required",
    "as_stated",
    "GenesisBody",
    "GenesisInstitution",
    "RoundOpenedBody",
    "PolicyRefusalBody",
    "DropoutBody",
    "ReceiptBody",
    "RoundClosedBody",
    "CheckpointBody",
    "WitnessBody",
    "WitnessRefusedBody",
    "CiphertextsBody",
    "GbdtBody",
    "RunClosedBody",
    "ParticipantNode",
    "ParticipantsBody",
    "countersigned_size",
]

#: Any JSON value, exactly as the log holds it (checked before it is relied on).
JSONValue = object


class _Missing:
    """The marker of a required member the body does not hold."""

    def __repr__(self) -> str:
        return "MISSING"


#: A required member that is absent (see :func:`required`).
MISSING: Any = _Missing()


def member(obj: JSONValue, name: str, default: JSONValue = None) -> JSONValue:
    """``obj.get(name, default)`` for a JSON object.

    Raises
    ------
    AttributeError
        If ``obj`` is not a JSON object (a malformed record).
    """
    return cast("dict[str, JSONValue]", obj).get(name, default)


def members(value: JSONValue) -> list[Any]:
    """``list(value)``: the elements of a JSON array (the keys of an object).

    Raises
    ------
    TypeError
        If ``value`` cannot be iterated (a malformed record).
    """
    return list(cast("Iterable[Any]", value))


def items(value: JSONValue) -> dict[str, Any]:
    """``dict(value)``: a copy of a JSON object.

    Raises
    ------
    TypeError, ValueError
        If ``value`` is not a mapping or a sequence of pairs.
    """
    return dict(cast("dict[str, Any]", value))


def as_stated(value: JSONValue) -> Any:
    """A value kept for the report exactly as the log states it (it is shown, never relied on)."""
    return value


def required(value: JSONValue, name: str) -> Any:
    """A required member's value.

    Raises
    ------
    KeyError
        If the body does not hold ``name`` (``value`` is :data:`MISSING`).
    """
    if value is MISSING:
        raise KeyError(name)
    return value


@dataclass(frozen=True, slots=True)
class GenesisInstitution:
    """One entry of the genesis ``institutions`` list: ``{"id", "public_key", "policy_hash"}``."""

    id: JSONValue
    public_key: JSONValue
    policy_hash: JSONValue

    @classmethod
    def of(cls, entry: JSONValue) -> GenesisInstitution:
        """Read one entry.

        Raises
        ------
        AttributeError
            If the entry is not a JSON object.
        """
        return cls(member(entry, "id"), member(entry, "public_key"), member(entry, "policy_hash"))


@dataclass(frozen=True, slots=True)
class GenesisBody:
    """``genesis``: the run's identity, configuration, institutions and aggregation."""

    run_id: JSONValue
    federation_id: JSONValue
    run_config: JSONValue
    run_config_hash: JSONValue
    institutions: JSONValue
    """A list of :class:`GenesisInstitution` entries (default ``[]``)."""
    aggregation: JSONValue
    """``{"mode": str, "params": {...}}`` (default ``{}``)."""

    @classmethod
    def of(cls, body: dict[str, Any]) -> GenesisBody:
        """Read a genesis body."""
        return cls(body.get("run_id"), body.get("federation_id"), body.get("run_config"),
                   body.get("run_config_hash"), body.get("institutions", []), body.get("aggregation", {}))

    def aggregation_mode(self) -> str:
        """The aggregation mode, lower case (``""`` if none is named).

        Raises
        ------
        AttributeError
            If ``aggregation`` is not a JSON object.
        """
        return str(member(self.aggregation, "mode", "")).lower()


@dataclass(frozen=True, slots=True)
class RoundOpenedBody:
    """``round_opened``: the round number and the selected cohort."""

    round: JSONValue
    cohort: JSONValue
    """A list of institution ids (default ``[]``)."""

    @classmethod
    def of(cls, body: dict[str, Any]) -> RoundOpenedBody:
        """Read a round_opened body."""
        return cls(body.get("round"), body.get("cohort", []))


@dataclass(frozen=True, slots=True)
class PolicyRefusalBody:
    """``policy_refusal``: an institution refused a round (0: before any) under its policy."""

    round: JSONValue
    institution: JSONValue
    rules: JSONValue
    """The rules it named (default ``[]``)."""
    policy_hash: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> PolicyRefusalBody:
        """Read a policy_refusal body."""
        return cls(body.get("round"), body.get("institution"), body.get("rules", []), body.get("policy_hash"))


@dataclass(frozen=True, slots=True)
class DropoutBody:
    """``dropout``: institutions that left the open round at a protocol stage."""

    round: JSONValue
    institutions: JSONValue
    """A list of institution ids (default ``[]``)."""
    stage: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> DropoutBody:
        """Read a dropout body."""
        return cls(body.get("round"), body.get("institutions", []), body.get("stage"))


@dataclass(frozen=True, slots=True)
class ReceiptBody:
    """``receipt``: an institution's signed receipt of the open round, verbatim."""

    round: JSONValue
    institution: JSONValue
    receipt: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> ReceiptBody:
        """Read a receipt body."""
        return cls(body.get("round"), body.get("institution"), body.get("receipt"))


@dataclass(frozen=True, slots=True)
class RoundClosedBody:
    """``round_closed``: survivors, model hash, released metrics and the receipts' Merkle root."""

    round: JSONValue
    cohort: JSONValue
    """The surviving institutions (default ``[]``)."""
    model_hash: JSONValue
    metrics: JSONValue
    """``{name: number}`` (default ``{}``)."""
    receipts_root: JSONValue
    receipt_count: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> RoundClosedBody:
        """Read a round_closed body."""
        return cls(body.get("round"), body.get("cohort", []), body.get("model_hash"), body.get("metrics", {}),
                   body.get("receipts_root"), body.get("receipt_count"))


@dataclass(frozen=True, slots=True)
class CheckpointBody:
    """``checkpoint``: the server's signed checkpoint of the records before it."""

    checkpoint: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> CheckpointBody:
        """Read a checkpoint body."""
        return cls(body.get("checkpoint"))


@dataclass(frozen=True, slots=True)
class WitnessBody:
    """``witness`` (server log and institution log): an institution's countersignature."""

    institution: JSONValue
    countersignature: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> WitnessBody:
        """Read a witness body."""
        return cls(body.get("institution"), body.get("countersignature"))


@dataclass(frozen=True, slots=True)
class WitnessRefusedBody:
    """``witness_refused`` (institution log): a checkpoint the institution refused."""

    institution: JSONValue
    checkpoint: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> WitnessRefusedBody:
        """Read a witness_refused body."""
        return cls(body.get("institution"), body.get("checkpoint"))


@dataclass(frozen=True, slots=True)
class CiphertextsBody:
    """``ciphertexts``: a ckks round's ciphertext hashes, by institution."""

    round: JSONValue
    ciphertexts: JSONValue
    """``{institution: [sha256 hex]}`` (default ``{}``)."""

    @classmethod
    def of(cls, body: dict[str, Any]) -> CiphertextsBody:
        """Read a ciphertexts body."""
        return cls(body.get("round"), body.get("ciphertexts", {}))


@dataclass(frozen=True, slots=True)
class GbdtBody:
    """``gbdt_bins``, ``gbdt_sum`` and ``gbdt_tree``: one step of a boosted-tree round.

    ``receipts`` (gbdt_sum) and ``smallest_node_rows``/``min_child_rows``
    (gbdt_tree) are required: read them with :func:`required`.
    """

    round: JSONValue
    task: JSONValue
    index: JSONValue
    receipts: JSONValue
    smallest_node_rows: JSONValue
    min_child_rows: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> GbdtBody:
        """Read a gbdt_bins, gbdt_sum or gbdt_tree body."""
        return cls(body.get("round"), body.get("task"), body.get("index"), body.get("receipts", MISSING),
                   body.get("smallest_node_rows", MISSING), body.get("min_child_rows", MISSING))


@dataclass(frozen=True, slots=True)
class RunClosedBody:
    """``run_closed``: the number of rounds the run had and why it ended."""

    rounds: JSONValue

    @classmethod
    def of(cls, body: dict[str, Any]) -> RunClosedBody:
        """Read a run_closed body."""
        return cls(body.get("rounds"))


@dataclass(frozen=True, slots=True)
class ParticipantNode:
    """One node of a secure round, as the server recorded it, with its key advertisement."""

    node: int
    institution: str
    verified: bool
    """The server's claim that the advertisement verified (the verifier re-checks it)."""
    seal_key: bytes
    mask_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ParticipantsBody:
    """``participants``: the nodes that answered a secure round's first stage, and its binding.

    The binding (federation, Flower run, round, task and the announced
    weight bound) is what every advertisement of the round signs.
    """

    federation: str
    run: int
    round: int
    task: str
    weight_bound: float
    nodes: tuple[ParticipantNode, ...]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ParticipantsBody:
        """Parse a participants body strictly.

        Raises
        ------
        RecordFormatError
            If a member is missing or of the wrong shape.
        """
        try:
            raw = body["binding"]
            binding = (str(raw["federation"]), int(raw["run"]), int(raw["round"]), str(raw["task"]),
                       float(int(raw.get("weight_bound", 0))))
            nodes = tuple(
                ParticipantNode(int(n["node"]), str(n["institution"]), n["verified"] is True,
                                bytes.fromhex(n["seal_key"]), bytes.fromhex(n["mask_key"]),
                                bytes.fromhex(n["signature"]))
                for n in body["nodes"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordFormatError(f"participants record is malformed ({exc!r})") from exc
        return cls(*binding, nodes)


def countersigned_size(countersignature: JSONValue) -> JSONValue:
    """The tree size of the checkpoint a countersignature covers (None if it is not an object).

    Raises
    ------
    AttributeError
        If the countersignature's ``checkpoint`` member is not a JSON object.
    """
    if not isinstance(countersignature, dict):
        return None
    return member(member(countersignature, "checkpoint", {}), "tree_size")
