"""The server's side of fedfraud's hardened SecAgg+ (a Flower fit workflow).

It keeps the shape and the Strategy contract of Flower's
``SecAggPlusWorkflow`` (setup, share keys, collect masked vectors, unmask;
``configure_fit`` before, ``aggregate_fit`` with the unmasked sum after) and
adds the consistency round of Bonawitz et al. (CCS 2017) before unmasking.
The server here is only a relay and a calculator: every check that protects
an institution runs on the institution's side (:mod:`client.secagg_mod`), so
a server that deviates from this code gains nothing but an aborted round.

It is also the one module on the server side that touches Flower internals:
the workflow's context records, and the legacy message format of the
witnessing request.
"""

from __future__ import annotations

from collections.abc import Mapping
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext
from flwr.serverapp import Grid
from flwr.supercore import log

from audit.canonical import canonical_dumps
from core.errors import CryptoError, FedFraudError, ProtocolError
from secagg import hardened as hc
from secagg import ckks
from secagg.masks import (
    add_mod,
    decode_integer_sum,
    decode_sum,
    mask_stream,
    pack,
    unflatten,
    unpack,
)
from secagg.params import SecAggSettings
from secagg.protocol import (
    MAX_VECTOR,
    PROTOCOL_NAME,
    RECORD,
    Field,
    ShareKind,
    Stage,
    Task,
    announce,
    get_bytes,
    get_int,
    get_list,
    get_str,
    same_length,
)
from secagg.shamir import combine_shares

from .grid_tap import RefusalTap

INFO, WARNING = 20, 30


@dataclass
class _Round:
    """What the server holds during one secure round (never an individual update)."""

    binding: hc.Binding
    fitins: dict[int, RecordDict] = field(default_factory=dict)
    proxies: dict[int, Any] = field(default_factory=dict)
    adverts: dict[int, hc.Advertisement] = field(default_factory=dict)
    shared: set[int] = field(default_factory=set)
    forward: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    total: npt.NDArray[np.uint32] | None = None
    size: int = 0
    shapes: list[str] = field(default_factory=list)
    results: dict[int, FitRes] = field(default_factory=dict)
    signatures: dict[int, bytes] = field(default_factory=dict)
    failures: list[Any] = field(default_factory=list)
    # ckks mode
    ckks_public: ckks.PublicCKKS | None = None
    ckks_context: bytes = b""
    ckks_dealer: int = 0
    ckks_envelopes: dict[int, bytes] = field(default_factory=dict)
    contributions: dict[int, ckks.Contribution] = field(default_factory=dict)
    ciphertext_hashes: dict[str, list[str]] = field(default_factory=dict)


class HardenedSecAggWorkflow:
    """A Flower fit workflow running fedfraud's hardened SecAgg+ for one task."""

    def __init__(self, secagg: SecAggSettings, federation_id: str, ckks_mode: bool = False) -> None:
        self.secagg = secagg
        self.federation_id = federation_id
        #: ``ckks`` mode: contributions arrive encrypted, the server adds
        #: ciphertexts and the institutions decrypt (training rounds only).
        self.ckks = ckks_mode
        #: ckks mode: the id and hash of the last model the institutions
        #: decrypted (the server never holds the model itself).
        self.model_id = ""
        self.model_hash = ""
        #: ckks mode: what the audit log records of the last round (hashes only).
        self.ckks_record: dict[str, Any] | None = None
        self.roster: dict[str, Ed25519PublicKey] = {}
        #: Sum of the survivors' example counts (``sum r_i * max-weight``) of
        #: the last training round; set after a successful unmask.
        self.total_weight = 0.0
        #: The training weight bound announced as ``max-weight``: the run's
        #: fixed value, or in auto mode the federation's securely summed row
        #: total (set by :meth:`set_weight_bound` before training starts).
        self.weight_bound = 0.0 if secagg.auto_weight else float(secagg.max_weight)

    def set_weight_bound(self, total_rows: int) -> None:
        """Auto ``max-weight``: weights become ``n_i / total_rows`` (they sum to 1)."""
        if self.secagg.auto_weight:
            self.weight_bound = float(max(int(total_rows), 1))

    # -- Flower workflow entry point -------------------------------------------------
    def __call__(self, grid: Grid, context: Any) -> None:
        """Run one secure round: configure, five stages, aggregate."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected Flower's LegacyContext, found {type(context).__name__}")
        server_round = current_round(context)
        parameters = compat.arrayrecord_to_parameters(
            context.state.array_records[_main_params()], keep_input=True
        )
        pairs = context.strategy.configure_fit(server_round, parameters, context.client_manager)
        if not pairs:
            log(INFO, "secure round %s: no institutions selected", server_round)
            return
        task = str(pairs[0][1].config.get("task", Task.TRAIN.value))
        self.roster = dict(grid.roster) if isinstance(grid, RefusalTap) else {}
        if self.ckks and not self.roster:
            raise ProtocolError("ckks mode needs the institutions' roster keys to check contributions")
        if task == Task.TRAIN.value and not self.weight_bound:
            log(WARNING, "secure round %s: max-weight is auto, but no statistics round set "
                "the federation's row total; halted, nothing aggregated", server_round)
            return
        bound = self.weight_bound if self.secagg.auto_weight else 0.0
        state = _Round(hc.Binding(self.federation_id, grid.run.run_id, server_round, task, bound))
        for proxy, fitins in pairs:
            state.fitins[proxy.node_id] = compat.fitins_to_recorddict(fitins, True)
            state.proxies[proxy.node_id] = proxy
        aggregate = None
        try:
            if self._setup(grid, state) and self._share_keys(grid, state) and self._collect(grid, state):
                survivors = self._consistency(grid, state)
                if survivors:
                    aggregate = self._unmask(grid, state, survivors)
        except FedFraudError as exc:
            log(WARNING, "secure round %s (%s) halted: %s", server_round, task, exc)
        if aggregate is None:
            log(INFO, "secure round %s (%s): halted, nothing aggregated", server_round, task)
            return
        results = []
        for node_id, fitres in state.results.items():
            fitres.parameters = aggregate
            fitres.num_examples = 1
            if self.ckks:
                fitres.metrics["ckks-model-id"] = self.model_id
                fitres.metrics["model-hash"] = self.model_hash
                fitres.metrics["ckks-record"] = canonical_dumps(self.ckks_record).decode("utf-8")
            results.append((state.proxies[node_id], fitres))
        parameters_aggregated, metrics = context.strategy.aggregate_fit(
            server_round, results, state.failures
        )
        if parameters_aggregated:
            context.state.array_records[_main_params()] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True
            )
            context.history.add_metrics_distributed_fit(server_round=server_round, metrics=metrics)

    # -- stages ------------------------------------------------------------------
    def _send(
        self, grid: Grid, state: _Round, stage: Stage, payloads: dict[int, dict[str, Any]]
    ) -> dict[int, dict[str, Any]]:
        """Send one stage's messages; return each good reply's fields by node."""
        messages = []
        for node_id, fields in payloads.items():
            content = state.fitins[node_id] if stage is Stage.COLLECT else RecordDict()
            content.config_records[RECORD] = ConfigRecord(
                {Field.STAGE: stage.value, Field.PROTOCOL: PROTOCOL_NAME, **fields}
            )
            messages.append(
                Message(
                    content=content,
                    dst_node_id=node_id,
                    message_type=MessageType.TRAIN,
                    group_id=str(state.binding.server_round),
                )
            )
        replies: dict[int, dict[str, Any]] = {}
        for reply in grid.send_and_receive(messages, timeout=self.secagg.timeout):
            if reply.has_error():
                state.failures.append(Exception(reply.error.reason))
                continue
            record = reply.content.config_records.get(RECORD)
            if record is None or record.get(Field.PROTOCOL) != PROTOCOL_NAME:
                state.failures.append(Exception("reply without the protocol record"))
                continue
            replies[reply.metadata.src_node_id] = dict(record)
            if stage is Stage.COLLECT:
                state.results[reply.metadata.src_node_id] = compat.recorddict_to_fitres(
                    reply.content, keep_input=True
                )
        return replies

    def _base_fields(self, state: _Round, sample_num: int) -> dict[str, Any]:
        return {
            Field.TASK: state.binding.task,
            **announce(self.secagg, self.weight_bound),
            Field.SAMPLE_NUM: sample_num,
        }

    def _setup(self, grid: Grid, state: _Round) -> bool:
        fields = self._base_fields(state, len(state.fitins))
        replies = self._send(grid, state, Stage.SETUP, {n: dict(fields) for n in state.fitins})
        roster = grid.roster if isinstance(grid, RefusalTap) else {}
        participants: list[dict[str, Any]] = []
        for node_id, reply in sorted(replies.items()):
            try:
                advert = hc.Advertisement(
                    node_id,
                    get_str(reply, Field.INSTITUTION, 100),
                    get_bytes(reply, Field.SEAL_KEY, 32),
                    get_bytes(reply, Field.MASK_KEY, 32),
                    get_bytes(reply, Field.SIGNATURE, 64),
                )
            except ProtocolError as exc:
                state.failures.append(exc)
                participants.append(_participant(node_id, None, verified=False))
                continue
            verified = self._on_roster(roster, state, advert)
            participants.append(_participant(node_id, advert, verified=verified))
            if verified or not roster:
                state.adverts[node_id] = advert
        if isinstance(grid, RefusalTap) and grid.on_participants is not None:
            b = state.binding
            grid.on_participants(
                {"federation": b.federation, "run": b.run_id, "round": b.server_round, "task": b.task,
                 "weight_bound": b.weight_bound},
                participants,
            )
        return self._enough(state, len(state.adverts), Stage.SETUP)

    def _on_roster(
        self, roster: Mapping[str, Ed25519PublicKey], state: _Round, advert: hc.Advertisement
    ) -> bool:
        """Whether a node proved a roster identity no other node of the round proved.

        A node that cannot (a SuperNode someone registered through the
        SuperLink's open Control API, say) is left out of the round: it gets
        no peer's keys and no further stage. Institutions check the same on
        their side against their own pinned keys.
        """
        if not roster:
            return False
        key = roster.get(advert.institution)
        if key is None:
            state.failures.append(ProtocolError(f"node {advert.node_id}: {advert.institution!r} is not on the roster"))
            return False
        try:
            hc.verify_advertisement(key, state.binding, advert)
        except CryptoError as exc:
            state.failures.append(exc)
            return False
        if any(a.institution == advert.institution for a in state.adverts.values()):
            state.failures.append(ProtocolError(f"node {advert.node_id}: {advert.institution!r} is already in the round"))
            return False
        return True

    def _share_keys(self, grid: Grid, state: _Round) -> bool:
        adverts = [state.adverts[n] for n in sorted(state.adverts)]
        listing: dict[str, Any] = {
            Field.NODES: [a.node_id for a in adverts],
            Field.INSTITUTIONS: [a.institution for a in adverts],
            Field.SEAL_KEYS: [a.seal_key for a in adverts],
            Field.MASK_KEYS: [a.mask_key for a in adverts],
            Field.SIGNATURES: [a.signature for a in adverts],
        }
        replies = self._send(grid, state, Stage.SHARE_KEYS, {a.node_id: listing for a in adverts})
        state.forward = {n: [] for n in replies}
        for node_id, reply in replies.items():
            destinations = get_list(reply, Field.DESTINATIONS, int)
            boxes = get_list(reply, Field.BOXES, bytes)
            same_length(destinations, boxes)
            state.shared.add(node_id)
            for destination, box in zip(destinations, boxes, strict=True):
                if destination in state.forward:
                    state.forward[destination].append((node_id, box))
        if self.ckks and state.binding.task == Task.TRAIN.value:
            self._take_ckks_key(state, replies)
        return self._enough(state, len(state.shared), Stage.SHARE_KEYS)

    def _take_ckks_key(self, state: _Round, replies: dict[int, dict[str, Any]]) -> None:
        """Keep the dealer's public context (refusing any key in it) and its sealed envelopes."""
        dealer_name = min(a.institution for a in state.adverts.values())
        dealer = next(n for n, a in state.adverts.items() if a.institution == dealer_name)
        reply = replies.get(dealer)
        if reply is None:
            raise ProtocolError(f"ckks: the dealer {dealer_name} did not share the round key")
        context = get_bytes(reply, Field.CKKS_CONTEXT, 16384)
        # Refuses a context carrying a secret, Galois or relinearization key:
        # the server never deserializes a secret key.
        state.ckks_public = ckks.PublicCKKS.load(context, None, ckks.DEFAULT_PARAMETERS)
        recipients = get_list(reply, Field.CKKS_RECIPIENTS, int)
        envelopes = get_list(reply, Field.CKKS_ENVELOPES, bytes, max_len=1 << 20)
        same_length(recipients, envelopes)
        state.ckks_context, state.ckks_dealer = context, dealer
        state.ckks_envelopes = dict(zip(recipients, envelopes, strict=True))

    def _collect(self, grid: Grid, state: _Round) -> bool:
        payloads: dict[int, dict[str, Any]] = {
            n: {
                Field.SOURCES: [src for src, _ in state.forward[n]],
                Field.BOXES: [box for _, box in state.forward[n]],
            }
            for n in state.forward
        }
        encrypted = state.ckks_public is not None
        if encrypted:
            for node_id, fields in payloads.items():
                fields[Field.CKKS_CONTEXT] = state.ckks_context
                fields[Field.CKKS_DEALER] = state.ckks_dealer
                if node_id in state.ckks_envelopes:
                    fields[Field.CKKS_ENVELOPE] = state.ckks_envelopes[node_id]
        replies = self._send(grid, state, Stage.COLLECT, payloads)
        modulus = self.secagg.modulus_range
        for node_id, reply in sorted(replies.items()):
            try:
                size = get_int(reply, Field.SIZE, 1, 2**26)
                shapes = [str(s) for s in reply.get(Field.SHAPES, [])]
                if state.size == 0:
                    state.size, state.shapes = size, shapes
                    state.total = None if encrypted else np.zeros(size, dtype=np.uint32)
                if size != state.size or shapes != state.shapes:
                    raise ProtocolError(f"node {node_id}: masked vector of another shape")
                if encrypted:
                    self._take_contribution(state, node_id, reply)
                    continue
                masked = unpack(get_bytes(reply, Field.MASKED, 4 * size), size, modulus)
            except (ProtocolError, CryptoError) as exc:
                # That institution's contribution is left out, by name and
                # reason; the round goes on with the others.
                who = state.adverts[node_id].institution if node_id in state.adverts else "?"
                log(WARNING, "secure round %s (%s): contribution of %s (node %s) refused: %s",
                    state.binding.server_round, state.binding.task, who, node_id, exc)
                state.failures.append(exc)
                state.results.pop(node_id, None)
                continue
            if state.total is not None:
                state.total = add_mod(state.total, masked, modulus)
        return self._enough(state, len(state.results), Stage.COLLECT)

    def _take_contribution(self, state: _Round, node_id: int, reply: dict[str, Any]) -> None:
        """Check one institution's encrypted contribution before anything is added.

        Its signature (under the institution's roster key) binds the
        ciphertexts to this round and this context: a bit flip, a ciphertext
        of another context or round, or one the server or another node made
        is refused; then the ciphertexts' framing, count and sizes.
        """
        if state.ckks_public is None:
            raise ProtocolError("ckks: no round key context")
        institution = state.adverts[node_id].institution
        blobs = get_list(reply, Field.CKKS_BLOBS, bytes, max_items=MAX_VECTOR // ckks.DEFAULT_PARAMETERS.slots + 1,
                         max_len=ckks.DEFAULT_PARAMETERS.ciphertext_cap)
        signature = get_bytes(reply, Field.CKKS_SIGNATURE, 64)
        key = self.roster.get(institution)
        if key is None:
            raise ProtocolError(f"ckks: {institution} has no roster key to check its contribution")
        ckks.verify_contribution(key, signature, state.binding.encode(), state.ckks_public.context_hash, blobs)
        state.contributions[node_id] = state.ckks_public.load_contribution(blobs, state.size)
        state.ciphertext_hashes[institution] = [hashlib.sha256(b).hexdigest() for b in blobs]

    def _decrypt(self, grid: Grid, state: _Round, survivors: list[int], correction: Any) -> Any:
        """ckks mode: add the survivors' ciphertexts; each survivor decrypts the model itself."""
        if state.ckks_public is None:
            raise ProtocolError("ckks: no round key context")
        missing = [n for n in survivors if n not in state.contributions]
        if missing:
            raise ProtocolError(f"ckks: survivors without a checked contribution: {missing}")
        blobs = state.ckks_public.add([state.contributions[n] for n in survivors])
        model_id = ckks.model_id_of(blobs)
        # Only survivors every policy allows to receive the model decrypt it.
        allowed = grid.model_recipients if isinstance(grid, RefusalTap) else None
        receivers = [n for n in survivors if allowed is None or state.adverts[n].institution in allowed]
        if not receivers:
            raise ProtocolError("ckks: no survivor may receive the model under the policies")
        fields: dict[str, Any] = {
            Field.CKKS_BLOBS: blobs,
            Field.CKKS_CORRECTION: pack(correction),
            Field.CKKS_CONTRIBUTORS: len(survivors),
            Field.MODEL_ID: model_id,
        }
        replies = self._send(grid, state, Stage.DECRYPT, {n: dict(fields) for n in receivers})
        hashes = {get_str(r, Field.MODEL_HASH, 64) for r in replies.values()}
        if len(replies) < len(receivers) or len(hashes) != 1:
            raise ProtocolError(
                f"ckks: {len(replies)} of {len(receivers)} recipients decrypted, "
                f"{len(hashes)} distinct models"
            )
        self.model_id, self.model_hash = model_id, hashes.pop()
        self.ckks_record = {
            "params": ckks.DEFAULT_PARAMETERS.name,
            "context_hash": state.ckks_public.context_hash,
            "ciphertexts": dict(sorted(state.ciphertext_hashes.items())),
            "sum": [hashlib.sha256(b).hexdigest() for b in blobs],
            "model_id": model_id,
        }
        # The server holds no model: the strategy gets no parameters to average.
        return Parameters([], "")

    def _consistency(self, grid: Grid, state: _Round) -> list[int]:
        survivors = sorted(state.results)
        replies = self._send(
            grid, state, Stage.CONSISTENCY, {n: {Field.SURVIVORS: survivors} for n in survivors}
        )
        for node_id, reply in replies.items():
            try:
                state.signatures[node_id] = get_bytes(reply, Field.SIGNATURE, 64)
            except ProtocolError as exc:
                state.failures.append(exc)
        if not self._enough(state, len(state.signatures), Stage.CONSISTENCY):
            return []
        return survivors

    def _unmask(self, grid: Grid, state: _Round, survivors: list[int]) -> Any:
        names = {n: a.institution for n, a in state.adverts.items()}
        cohort = sorted(names.values())
        node_of = {a.institution: n for n, a in state.adverts.items()}
        survivor_set = set(survivors)
        dead_set = state.shared - survivor_set
        signers = sorted(state.signatures)
        payloads: dict[int, dict[str, Any]] = {}
        for node_id in signers:
            hood = {node_of[i] for i in hc.neighbours(cohort, names[node_id], self.secagg.num_shares)}
            payloads[node_id] = {
                Field.SIGNERS: signers,
                Field.SIGNATURES: [state.signatures[n] for n in signers],
                Field.ACTIVE: sorted(hood & survivor_set),
                Field.DEAD: sorted(hood & dead_set & _sent_to(state, node_id)),
            }
        replies = self._send(grid, state, Stage.UNMASK, payloads)
        seeds: dict[int, list[bytes]] = {n: [] for n in survivors}
        masks: dict[int, list[bytes]] = {n: [] for n in dead_set}
        for reply in replies.values():
            owners = get_list(reply, Field.OWNERS, int)
            kinds = get_list(reply, Field.KINDS, str)
            shares = get_list(reply, Field.SHARES, bytes)
            same_length(owners, kinds, shares)
            for owner, kind, share in zip(owners, kinds, shares, strict=True):
                target = seeds if kind == ShareKind.SEED.value else masks
                if owner in target:
                    target[owner].append(share)
        return self._remove_masks(grid, state, survivors, seeds, masks, names, cohort)

    def _remove_masks(
        self,
        grid: Grid,
        state: _Round,
        survivors: list[int],
        seeds: dict[int, list[bytes]],
        masks: dict[int, list[bytes]],
        names: dict[int, str],
        cohort: list[str],
    ) -> Any:
        s = self.secagg
        t = s.reconstruction_threshold
        binding = state.binding
        digest = hc.cohort_digest(binding, state.adverts.values())
        if state.size <= 0:
            raise ProtocolError("no masked vectors to unmask")
        # What, added to the masked sum, removes every mask: built from zero,
        # so in ckks mode it goes to the institutions, who add it after
        # decrypting (the server never holds the masked sum in the clear).
        total = np.zeros(state.size, dtype=np.uint32)
        # 1. Every survivor's self mask, from its rebuilt seed.
        for node_id in survivors:
            seed = combine_shares(seeds[node_id], t)
            key = hc.self_mask_key(seed, binding, digest, names[node_id])
            total = add_mod(total, mask_stream(key, state.size, s.modulus_range), s.modulus_range, -1)
        # 2. The pairwise masks survivors added for each dropout, from its rebuilt key.
        node_of = {a.institution: n for n, a in state.adverts.items()}
        for dead in masks:
            private = X25519PrivateKey.from_private_bytes(combine_shares(masks[dead], t))
            for peer in hc.neighbours(cohort, names[dead], s.num_shares):
                peer_node = node_of[peer]
                if peer_node not in survivors or dead not in _sent_to(state, peer_node):
                    continue
                key = hc.pair_mask_key(
                    private, state.adverts[peer_node].mask_key, binding, digest, names[dead], peer
                )
                sign = hc.pair_sign(peer, names[dead])
                total = add_mod(total, mask_stream(key, state.size, s.modulus_range), s.modulus_range, -sign)
        if self.ckks:
            return self._decrypt(grid, state, survivors, total)
        if state.total is None:
            raise ProtocolError("no masked vectors to unmask")
        total = add_mod(state.total, total, s.modulus_range)
        if binding.task != Task.TRAIN.value:
            # 3a. Counts and fixed-point totals: the exact integer sum.
            exact = decode_integer_sum(total, len(survivors))
            return ndarrays_to_parameters(unflatten(exact, state.shapes))
        # 3b. Dequantize: the weighted sum and the sum of weights; divide.
        weight, flat = decode_sum(total, len(survivors), s.clipping_range, s.quantization_range)
        self.total_weight = float(round(weight * self.weight_bound))
        arrays = [a.astype(np.float32) for a in unflatten(flat, state.shapes)]
        return ndarrays_to_parameters(arrays)

    def _enough(self, state: _Round, count: int, stage: Stage) -> bool:
        floor = max(2, self.secagg.reconstruction_threshold)
        if count < floor:
            log(WARNING, "secure round %s: %s institutions after %s, %s needed",
                state.binding.server_round, count, stage.value, floor)
            return False
        return True


def _participant(node_id: int, advert: hc.Advertisement | None, *, verified: bool) -> dict[str, Any]:
    """One node of a participants record (its advertisement, never any secret)."""
    return {
        "node": node_id,
        "institution": advert.institution if advert else "",
        "verified": verified,
        "seal_key": advert.seal_key.hex() if advert else "",
        "mask_key": advert.mask_key.hex() if advert else "",
        "signature": advert.signature.hex() if advert else "",
    }


def _sent_to(state: _Round, node_id: int) -> set[int]:
    """The nodes whose shares were forwarded to ``node_id``."""
    return {src for src, _ in state.forward.get(node_id, [])}


def _main_params() -> str:
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    return str(MAIN_PARAMS_RECORD)


def current_round(context: Any) -> int:
    """The round Flower's default workflow is in (kept in the context's state)."""
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

    return int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])


def secagg_workflow(
    secagg: SecAggSettings, federation_id: str, ckks_mode: bool = False
) -> HardenedSecAggWorkflow:
    """The hardened SecAgg+ workflow for a run's settings (``ckks_mode`` for ckks training)."""
    return HardenedSecAggWorkflow(secagg, federation_id, ckks_mode)


def witness_request(
    grid: Any, node_id: int, config: dict[str, Any], server_round: int, timeout: float
) -> Any:
    """A legacy ``get_properties`` message (the institution's client answers it)."""
    from flwr.common import GetPropertiesIns
    from flwr.common.constant import MessageTypeLegacy

    return Message(
        content=compat.getpropertiesins_to_recorddict(GetPropertiesIns(config=config)),
        dst_node_id=node_id,
        message_type=MessageTypeLegacy.GET_PROPERTIES,
        group_id=str(server_round),
        ttl=timeout,
    )


def witness_reply(reply: Any) -> dict[str, Any]:
    """The properties of a ``get_properties`` reply (empty if the status is not OK)."""
    from flwr.common import Code

    res = compat.recorddict_to_getpropertiesres(reply.content)
    if res.status.code != Code.OK:
        return {}
    return dict(res.properties)


