"""Verification step 3 of :func:`audit.verify.verify_log`: what the server log's records mean.

The authentic records (step 1) are read in order, each through the typed
view of its kind (:mod:`audit.record_views`), with one check per numbered
sub-step:

3.1  Genesis comes first and exactly once, and names this log's run.
3.2  The keys in the genesis equal the trusted keys (key substitution).
3.3  Rounds open in order, one at a time; refusals and dropouts name an open round.
3.4  Every receipt verifies under the trusted key and names this log and round.
3.5  A round closes with survivors that all signed receipts, and the receipts' Merkle root.
3.6  A checkpoint commits to exactly the records before it.
3.7  A witness record holds a valid countersignature of a checkpoint of this log.
3.8  Every node that took part in a secure round proved a roster identity.
3.9  A ckks round's ciphertext hashes belong to a ckks run's open round.
3.10 gbdt: the bin agreement, each histogram sum and each tree belong to the open round.
3.11 run_closed comes after the last round and states the log's round count.

Alongside, the Merkle tree over all records is built (for steps 4 and 5) and
the policy-relevant facts are noted for step 6.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import CanonicalEncodingError, canonical_dumps, sha256_hex
from .checkpoint import SignedCheckpoint, verify_countersignature
from .errors import AuditError
from .keys import public_key_b64
from .lines import Line
from .merkle import MerkleFrontier, leaf_hash, root
from .receipt import receipt_leaf, verify_receipt
from .record import Record, RecordKind
from .record_views import (
    CheckpointBody,
    CiphertextsBody,
    DropoutBody,
    GbdtBody,
    GenesisBody,
    GenesisInstitution,
    PolicyRefusalBody,
    ReceiptBody,
    RoundClosedBody,
    RoundOpenedBody,
    RunClosedBody,
    WitnessBody,
    as_stated,
    items,
    member,
    members,
    required,
)
from .verdict import Checks, RoundSummary, Verdict
from .verify_history import SeenCheckpoint
from .verify_policy import At, GenesisEvent, PolicyEvent, PolicyHashEvent, RoundEvent, TreeEvent
from .verify_roster import check_participants

__all__ = ["BOOKKEEPING", "Content", "check_content"]

#: Records that only witness the log: they may follow run_closed and need no witness themselves.
BOOKKEEPING = frozenset({RecordKind.CHECKPOINT, RecordKind.WITNESS})


@dataclass
class Content:
    """What step 3 learned from the server log (read by steps 4-6 and the report)."""

    trusted: Mapping[str, Ed25519PublicKey]
    frontier: MerkleFrontier = field(default_factory=MerkleFrontier)
    #: Merkle roots of the first ``n`` records, for the sizes steps 4 and 5 need.
    roots: dict[int, bytes] = field(default_factory=dict)
    #: Every signed checkpoint seen: the institutions' (step 2), then the server log's.
    signed_cps: list[SeenCheckpoint] = field(default_factory=list)
    genesis: dict[str, Any] | None = None
    genesis_view: GenesisBody | None = None
    genesis_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    policy_hashes: dict[str, str] = field(default_factory=dict)
    rounds: list[RoundSummary] = field(default_factory=list)
    current: RoundSummary | None = None
    round_receipts: list[dict[str, Any]] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    run_closed: dict[str, Any] | None = None
    in_log_cps: dict[int, SignedCheckpoint] = field(default_factory=dict)
    #: The largest checkpoint each institution's witness record in the server log covers.
    server_witnessed: dict[str, int] = field(default_factory=dict)
    #: Records up to the last one that is not bookkeeping (these must be witnessed).
    last_substantive: int = 0
    policy_events: list[PolicyEvent] = field(default_factory=list)


@dataclass(frozen=True)
class _Here:
    """The record being checked, to report a failure of step 3 at it."""

    checks: Checks
    src: str
    ln: Line
    record: Record

    @property
    def at(self) -> At:
        return At(self.record.seq, self.ln.number, self.ln.offset)

    def fail(self, name: str, verdict: Verdict, message: str, expected: str | None = None,
             found: str | None = None) -> None:
        self.checks.fail("3", name, verdict, message, source=self.src, seq=self.record.seq,
                         line=self.ln.number, offset=self.ln.offset, expected=expected, found=found)


def check_content(
    good: Sequence[tuple[Line, Record]],
    trusted: Mapping[str, Ed25519PublicKey],
    inst_cps: Sequence[SeenCheckpoint],
    checks: Checks,
    src: str,
) -> Content:
    """Step 3 over the authentic records of the server log, in order.

    A record whose body is malformed (a member of the wrong shape) is
    TAMPERED; checking goes on with the next record.
    """
    state = Content(trusted, signed_cps=list(inst_cps))
    wanted_sizes = {c.cp.tree_size for c in inst_cps}
    for ln, record in good:
        size = state.frontier.size
        if size in wanted_sizes:
            state.roots[size] = state.frontier.root()
        here = _Here(checks, src, ln, record)
        try:
            _check_record(state, here)
        except (AuditError, AttributeError, TypeError, CanonicalEncodingError) as exc:
            here.fail("content", Verdict.TAMPERED, f"record {record.seq} ({record.kind.value}) is malformed: {exc}")
        finally:
            state.frontier.append(leaf_hash(bytes.fromhex(record.hash)))
            if record.kind not in BOOKKEEPING:
                state.last_substantive = state.frontier.size
    if state.frontier.size in wanted_sizes:
        state.roots[state.frontier.size] = state.frontier.root()
    if state.genesis is None and good:
        checks.fail("3", "genesis", Verdict.TAMPERED, "the log has no genesis record", source=src)
    elif not good:
        checks.fail("3", "genesis", Verdict.TAMPERED, "the log holds no verifiable record", source=src)
    checks.passed("3", "content", "genesis, rounds, receipts, checkpoints and witnesses are consistent", src)
    return state


def _check_record(state: Content, here: _Here) -> None:
    """Check one record: genesis first, nothing but bookkeeping after run_closed, then by kind."""
    record, kind = here.record, here.record.kind
    if kind is RecordKind.GENESIS:
        _genesis(state, here)
        return
    if state.genesis is None:
        here.fail("genesis", Verdict.TAMPERED, f"record {record.seq} ({kind.value}) comes before any genesis")
        return
    if state.run_closed is not None and kind not in BOOKKEEPING:
        here.fail("order", Verdict.TAMPERED, f"{kind.value} record after run_closed")
        return
    check = _BY_KIND.get(kind)
    if check is None:
        here.fail("record kind", Verdict.TAMPERED, f"{kind.value} records do not belong in a server log")
        return
    check(state, here)


def _genesis(state: Content, here: _Here) -> None:
    """Steps 3.1 and 3.2."""
    record = here.record
    # 3.1 Genesis comes first and exactly once, and names this log's run.
    if state.genesis is not None or record.seq != 0:
        here.fail("genesis", Verdict.TAMPERED, f"record {record.seq} is a second or misplaced genesis")
        return
    state.genesis = record.body
    view = state.genesis_view = GenesisBody.of(record.body)
    if view.run_id != record.log_id.run_id or view.federation_id != record.log_id.federation_id:
        here.fail("genesis", Verdict.TAMPERED, "genesis names another federation/run than its log id")
    if view.run_config_hash != sha256_hex(canonical_dumps(view.run_config)):
        here.fail("genesis", Verdict.TAMPERED, "run_config_hash is not the hash of run_config",
                  expected=sha256_hex(canonical_dumps(view.run_config)), found=str(view.run_config_hash))
    # 3.2 Keys in the genesis must equal the trusted keys (key substitution).
    for entry in members(view.institutions):
        inst = GenesisInstitution.of(entry)
        if inst.id not in state.trusted:
            here.fail("key substitution", Verdict.TAMPERED,
                      f"genesis lists institution {inst.id!r}, which has no trusted key")
            continue
        inst_id = str(inst.id)  # a key of ``trusted``, so a str already
        expected_b64 = public_key_b64(state.trusted[inst_id])
        if not isinstance(inst.public_key, str) or not hmac.compare_digest(inst.public_key, expected_b64):
            here.fail("key substitution", Verdict.TAMPERED,
                      f"genesis lists a public key for {inst_id!r} that differs from its trusted key",
                      expected=expected_b64, found=str(inst.public_key))
            continue
        state.genesis_keys[inst_id] = state.trusted[inst_id]
        state.policy_hashes[inst_id] = str(inst.policy_hash)
    state.policy_events.append(GenesisEvent(here.at, view.aggregation_mode()))


def _round_opened(state: Content, here: _Here) -> None:
    """Step 3.3: a round opens after the previous one closed, with a cohort of genesis institutions."""
    view = RoundOpenedBody.of(here.record.body)
    rnd = view.round
    last = state.rounds[-1].round if state.rounds else 0
    if state.current is not None or rnd != last + 1:
        here.fail("round order", Verdict.TAMPERED, f"round {rnd} opened out of order (after round {last})",
                  expected=f"round {last + 1}", found=f"round {rnd}")
        return
    cohort = members(view.cohort)
    unknown = [c for c in cohort if c not in state.genesis_keys]
    if unknown:
        here.fail("cohort", Verdict.TAMPERED, f"round {rnd} cohort names unknown institutions {unknown}")
    state.current = RoundSummary(as_stated(rnd), cohort=cohort, seq_opened=here.record.seq)
    state.rounds.append(state.current)
    state.round_receipts, state.dropped = [], set()


def _policy_refusal(state: Content, here: _Here) -> None:
    """Step 3.3: a refusal names the open round (or round 0, before any) and a genesis institution."""
    view = PolicyRefusalBody.of(here.record.body)
    rnd, inst, current = view.round, view.institution, state.current
    if rnd != 0 and (current is None or rnd != current.round):
        here.fail("round order", Verdict.TAMPERED, f"refusal for round {rnd}, which is not open")
        return
    if inst not in state.genesis_keys:
        here.fail("institution", Verdict.TAMPERED, f"refusal names unknown institution {inst!r}")
        return
    state.policy_events.append(PolicyHashEvent(here.at, str(inst), view.policy_hash))
    if current is not None:
        current.refusals.append({"institution": inst, "rules": view.rules})


def _dropout(state: Content, here: _Here) -> None:
    """Step 3.3: a dropout names the open round and members of its cohort."""
    view = DropoutBody.of(here.record.body)
    current = state.current
    if current is None or view.round != current.round:
        here.fail("round order", Verdict.TAMPERED, f"dropout for round {view.round}, which is not open")
        return
    insts = members(view.institutions)
    if any(i not in current.cohort for i in insts):
        here.fail("cohort", Verdict.TAMPERED, f"dropout names institutions outside the cohort: {insts}")
    state.dropped.update(insts)
    current.dropouts.append({"institutions": insts, "stage": view.stage})


def _receipt(state: Content, here: _Here) -> None:
    """Step 3.4: a receipt verifies under its institution's trusted key and names this log and round."""
    view = ReceiptBody.of(here.record.body)
    receipt, inst, current = view.receipt, view.institution, state.current
    if current is None or view.round != current.round:
        here.fail("round order", Verdict.TAMPERED, f"receipt for round {view.round}, which is not open")
        return
    if inst not in state.genesis_keys or not isinstance(receipt, dict) or receipt.get("institution") != inst:
        here.fail("receipt", Verdict.TAMPERED, f"receipt record names institution {inst!r} inconsistently")
        return
    inst_id = str(inst)  # a key of ``genesis_keys``, so a str already
    try:
        verify_receipt(receipt, state.genesis_keys[inst_id], log_id=here.record.log_id,
                       server_round=current.round, institution_id=inst_id)
    except AuditError as exc:
        here.fail("receipt", Verdict.TAMPERED, f"receipt of {inst!r} in round {current.round}: {exc}")
        return
    if inst not in current.cohort or inst in current.receipts:
        here.fail("receipt", Verdict.TAMPERED, f"receipt of {inst!r} is outside the cohort or duplicated")
        return
    current.receipts.append(inst_id)
    state.round_receipts.append(receipt)
    state.policy_events.append(PolicyHashEvent(here.at, inst_id, receipt.get("policy_hash")))


def _round_closed(state: Content, here: _Here) -> None:
    """Step 3.5: survivors were in the cohort, did not drop out and signed receipts; the receipts' root."""
    view = RoundClosedBody.of(here.record.body)
    current = state.current
    if current is None or view.round != current.round:
        here.fail("round order", Verdict.TAMPERED, f"round {view.round} closed but not open")
        return
    survivors = members(view.cohort)
    current.survivors, current.closed, current.seq_closed = survivors, True, here.record.seq
    current.model_hash = as_stated(view.model_hash)
    current.metrics = items(view.metrics)
    bad = [s for s in survivors if s not in current.cohort or s in state.dropped]
    no_receipt = [s for s in survivors if s not in current.receipts]
    if bad:
        here.fail("cohort", Verdict.TAMPERED,
                  f"round {current.round}: survivors {bad} were not in the cohort or dropped out")
    if no_receipt:
        here.fail("receipt", Verdict.TAMPERED,
                  f"round {current.round}: the server claims {no_receipt} took part, but no receipt signed by them exists")
    expected_root = root([receipt_leaf(r) for r in state.round_receipts]).hex()
    if view.receipts_root != expected_root or view.receipt_count != len(state.round_receipts):
        here.fail("receipts root", Verdict.TAMPERED,
                  f"round {current.round}: receipts_root does not match the logged receipts",
                  expected=expected_root, found=str(view.receipts_root))
    state.policy_events.append(RoundEvent(here.at, current.round, survivors, sorted(current.metrics)))
    state.current = None


def _checkpoint(state: Content, here: _Here) -> None:
    """Step 3.6: a checkpoint of this log at its own position, whose root is that of the records before it."""
    record = here.record
    cp = SignedCheckpoint.from_dict(CheckpointBody.of(record.body).checkpoint)
    # The record signature already authenticates this checkpoint under the
    # server key; its own signature only matters as evidence, so it is
    # checked in step 4 when a conflict uses it.
    if cp.log_id != record.log_id or cp.tree_size != record.seq:
        here.fail("checkpoint", Verdict.TAMPERED,
                  f"checkpoint in record {record.seq} covers size {cp.tree_size} of another log or position")
        return
    state.signed_cps.append(SeenCheckpoint(cp, here.src, f"server log, record {record.seq} (line {here.ln.number})",
                                           False, True, record.seq, here.ln.number))
    actual = state.frontier.root().hex()
    if not hmac.compare_digest(actual, cp.root):
        here.fail("checkpoint", Verdict.TAMPERED,
                  f"checkpoint of size {cp.tree_size} does not match the records before it",
                  expected=actual, found=cp.root)
        return
    state.in_log_cps[cp.tree_size] = cp
    state.roots[cp.tree_size] = bytes.fromhex(actual)


def _witness(state: Content, here: _Here) -> None:
    """Step 3.7: a genesis institution's valid countersignature of a checkpoint in this log."""
    view = WitnessBody.of(here.record.body)
    inst = view.institution
    if inst not in state.genesis_keys:
        here.fail("witness", Verdict.TAMPERED, f"witness record names unknown institution {inst!r}")
        return
    cs = view.countersignature
    if not isinstance(cs, dict) or member(cs, "institution") != inst:
        here.fail("witness", Verdict.TAMPERED, "witness record names another institution than its countersignature")
        return
    inst_id = str(inst)  # a key of ``genesis_keys``, so a str already
    cp = verify_countersignature(cs, state.genesis_keys[inst_id])
    ours = state.in_log_cps.get(cp.tree_size)
    if ours is None or not ours.same_as(cp):
        here.fail("witness", Verdict.TAMPERED,
                  f"{inst_id} countersigned a checkpoint of size {cp.tree_size} that is not in this log")
        return
    state.server_witnessed[inst_id] = max(state.server_witnessed.get(inst_id, 0), cp.tree_size)


def _participants(state: Content, here: _Here) -> None:
    """Step 3.8: every node of a secure round proved a roster identity."""
    check_participants(here.record.body, state.genesis_keys,
                       lambda name, verdict, message: here.fail(name, verdict, message))


def _ciphertexts(state: Content, here: _Here) -> None:
    """Step 3.9: ciphertext hashes of the cohort, in a ckks run's open round."""
    mode = state.genesis_view.aggregation_mode() if state.genesis_view is not None else ""
    view = CiphertextsBody.of(here.record.body)
    current = state.current
    if mode != "ckks":
        here.fail("aggregation", Verdict.TAMPERED, f"ciphertexts recorded in a {mode!r} run")
    elif current is None or view.round != current.round:
        here.fail("round order", Verdict.TAMPERED, f"ciphertexts for round {view.round}, which is not open")
    elif any(i not in current.cohort for i in members(view.ciphertexts)):
        here.fail("cohort", Verdict.TAMPERED, "ciphertexts of institutions outside the cohort")


def _gbdt(state: Content, here: _Here) -> None:
    """Step 3.10: a gbdt record of the open round.

    A histogram sum holds a verified receipt of every contributor, all of the
    round's cohort, at least two of them; a tree has no node below the run's
    small-cell floor.
    """
    kind = here.record.kind
    view = GbdtBody.of(here.record.body)
    current = state.current
    if current is None or view.round != current.round:
        here.fail("round order", Verdict.TAMPERED, f"{kind.value} for round {view.round}, which is not open")
        return
    if kind is RecordKind.GBDT_SUM:
        senders: list[str] = []
        for receipt in required(view.receipts, "receipts"):
            inst = receipt.get("institution") if isinstance(receipt, dict) else None
            if inst not in state.genesis_keys or inst not in current.cohort or inst in senders:
                here.fail("receipt", Verdict.TAMPERED, f"histogram receipt of {inst!r} is outside the cohort or duplicated")
                break
            try:
                verify_receipt(receipt, state.genesis_keys[inst], log_id=here.record.log_id,
                               server_round=current.round, institution_id=inst)
            except AuditError as exc:
                here.fail("receipt", Verdict.TAMPERED, f"histogram receipt of {inst!r} in round {current.round}: {exc}")
                break
            senders.append(inst)
        if len(senders) < 2:
            here.fail("cohort", Verdict.POLICY_VIOLATED, f"a histogram sum ({view.task}) of fewer than two institutions")
    elif kind is RecordKind.GBDT_TREE:
        smallest = int(required(view.smallest_node_rows, "smallest_node_rows"))
        floor = int(required(view.min_child_rows, "min_child_rows"))
        if smallest < floor:
            here.fail("small cells", Verdict.POLICY_VIOLATED,
                      f"tree {view.index} has a node of {smallest} rows, below the run's minimum of {floor}")
        state.policy_events.append(TreeEvent(here.at, current.round, smallest))


def _run_closed(state: Content, here: _Here) -> None:
    """Step 3.11: the run closes after its last round closed, stating the log's round count."""
    view = RunClosedBody.of(here.record.body)
    if state.current is not None:
        here.fail("round order", Verdict.TAMPERED, f"run closed while round {state.current.round} is open")
    if view.rounds != (state.rounds[-1].round if state.rounds else 0):
        here.fail("run closed", Verdict.TAMPERED, "run_closed states a round count that differs from the log")
    state.run_closed = here.record.body


_BY_KIND: dict[RecordKind, Callable[[Content, _Here], None]] = {
    RecordKind.ROUND_OPENED: _round_opened,
    RecordKind.POLICY_REFUSAL: _policy_refusal,
    RecordKind.DROPOUT: _dropout,
    RecordKind.RECEIPT: _receipt,
    RecordKind.ROUND_CLOSED: _round_closed,
    RecordKind.CHECKPOINT: _checkpoint,
    RecordKind.WITNESS: _witness,
    RecordKind.PARTICIPANTS: _participants,
    RecordKind.CIPHERTEXTS: _ciphertexts,
    RecordKind.GBDT_BINS: _gbdt,
    RecordKind.GBDT_SUM: _gbdt,
    RecordKind.GBDT_TREE: _gbdt,
    RecordKind.RUN_CLOSED: _run_closed,
}
