"""The institution's side of the hardened SecAgg+ protocol (replaces ``secaggplus_mod``).

Every training message reaches the client only through this mod. It keeps
the protocol's state in the ClientApp context (as Flower's mod does) and
decides every step from what the institution knows itself: its run settings,
its own policy, the partner keys it pinned in its site folder and its round
ledger. Nothing the server says is taken on trust:

* **setup**: the parameters must equal the run's agreed values and meet the
  bound of the protocol's security analysis (:func:`secagg.params.check_threshold`)
  and the institution's own policy; the (run, round, task) is claimed once;
* **share-keys**: each peer's key advertisement must verify against the key
  this institution pinned for that peer; the cohort it counts is the set of
  verified advertisements;
* **collect-masked-vectors**: shares must come sealed from verified
  neighbours; the model is checked against the ledger (no differencing); the
  update is masked with AES-CTR streams keyed by full X25519 secrets;
* **consistency**: the claimed survivors must fit what it saw; it signs them;
* **unmask**: at least ``t`` survivors must have signed the very same set; the
  active and dead lists must match it exactly (disjoint, itself not dead);
  seed shares go out for survivors only, key shares for dropouts only.

Any failure aborts the round for this institution with a named reason: in its
own refusal log, and in a refusal token the server writes to its audit log.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cached_property
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from audit.keys import load_private_key, load_public_key
from core.errors import CryptoError, FedFraudError, ProtocolError
from federation.settings import Aggregation, RunSettings
from core.wire import Refusal, update_digest
from secagg import ckks
from secagg import hardened as hc
from secagg.masks import add_mod, encode_contribution, encode_integers, mask_stream, pack, shape_text
from secagg.params import check_threshold
from secagg.protocol import (
    MAX_VECTOR,
    PROTOCOL_NAME,
    RECORD,
    STATE_RECORD,
    Field,
    ShareKind,
    Stage,
    Task,
    read_announced,
    get_bytes,
    get_int,
    get_list,
    get_stage,
    get_str,
    parse_task,
    same_length,
)
from secagg.shamir import split_secret

from . import ckks_mode
from .gate import Institution, RoundRefused, RoundView, check_round, load_institution
from .ledger import LedgerRefusal, RoundLedger
from .node import InstitutionNode, require_file
from .session import institution_node, run_settings
from .secagg_adapter import load_state, state_parameters


class TaskFailed(RuntimeError):
    """The client's own task failed inside the protocol (reported as a dropout)."""


class _Party:
    """Everything the mod needs about this institution, loaded at most once per message.

    The policy and keys are read from the site folder only by the stages that
    use them, through :func:`client.gate.load_institution`, which parses them
    once per process while their bytes stay the same (the client reuses that
    parse); the run settings and node come from :mod:`client.session`.
    """

    def __init__(self, settings: RunSettings, node: InstitutionNode) -> None:
        self.settings = settings
        self.node = node

    @cached_property
    def institution(self) -> Institution:
        """The institution's policy and signing key (checked: right id, in force)."""
        return load_institution(self.node, self.settings)

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        """The institution's Ed25519 key alone (stages that check no policy rule)."""
        if "institution" in self.__dict__:
            return self.institution.signing_key
        return load_private_key(require_file(self.node.signing_key_path, "institution signing key"))

    def pinned_key(self, institution_id: str) -> Ed25519PublicKey:
        """This institution's own key, or the key it pinned for a partner."""
        if institution_id == self.node.institution_id:
            return self.signing_key.public_key()
        return load_public_key(self.node.partner_key_path(institution_id))


def hardened_secagg_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Run one stage of the hardened SecAgg+ protocol for this institution."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    settings = run_settings(ctxt)
    if RECORD not in msg.content.config_records:
        if settings.aggregation is Aggregation.UNSAFE_PLAIN:
            # The opted-in benchmark baseline: the client's gate still checks
            # this institution's own, bounded consent before it trains.
            return call_next(msg, ctxt)
        raise ProtocolError(
            "training requested outside fedfraud's SecAgg+ (no protocol record); refusing"
        )
    node = institution_node(ctxt, settings)
    party = _Party(settings, node)
    fields = dict(msg.content.config_records[RECORD])
    server_round = _round_of(msg)
    try:
        stage = get_stage(fields)
        state = load_state(ctxt)
        if stage is not Stage.SETUP:
            previous = state.get("stage")
            expected = Stage(previous).next() if previous in set(Stage) else None
            if stage is not expected:
                raise ProtocolError(
                    f"stage {stage.value!r} out of order (expected "
                    f"{expected.value if expected else 'setup'!r})"
                )
            if state["round"] != server_round or state["run"] != msg.metadata.run_id:
                raise ProtocolError("message belongs to another run or round than the protocol")
        handler = _HANDLERS[stage]
        reply_fields, content = handler(party, msg, ctxt, fields, state, call_next)
    except RoundRefused as refused:
        _abort(ctxt, party, refused.refusal.rules, server_round)
        raise
    except (FedFraudError, LedgerRefusal) as exc:
        stage_name = str(fields.get(Field.STAGE, "?"))[:40]
        rule = str(exc) if str(exc).startswith(("secagg.", "protection.")) else f"secagg.{stage_name}: {exc}"
        refusal = Refusal(
            institution=node.institution_id,
            server_round=server_round,
            rules=(rule,),
            policy_hash=party.institution.policy.policy_hash,
        )
        _abort(ctxt, party, refusal.rules, server_round)
        raise RoundRefused(refusal) from exc
    reply_fields[Field.PROTOCOL] = PROTOCOL_NAME
    content.config_records[RECORD] = ConfigRecord(reply_fields)  # type: ignore[arg-type]
    return Message(content, reply_to=msg)


# -- state -------------------------------------------------------------------


def _save_state(ctxt: Context, state: dict[str, Any]) -> None:
    ctxt.state.config_records[STATE_RECORD] = ConfigRecord({"json": json.dumps(state)})


def _abort(ctxt: Context, party: _Party, rules: tuple[str, ...], server_round: int) -> None:
    """Forget the round's secrets and write the reason to the institution's own log."""
    _save_state(ctxt, {"stage": "aborted"})
    party.node.audit_dir.mkdir(parents=True, exist_ok=True)
    entry = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(),
        "institution": party.node.institution_id,
        "run_name": party.settings.run_name,
        "round": server_round,
        "rules": list(rules),
    }
    with party.node.refusal_log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def _round_of(msg: Message) -> int:
    try:
        return int(msg.metadata.group_id)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("message carries no round number") from exc


def _binding(party: _Party, state: dict[str, Any]) -> hc.Binding:
    bound = float(state["max_weight"]) if party.settings.secagg.auto_weight else 0.0
    return hc.Binding(party.settings.federation_id, state["run"], state["round"], state["task"], bound)


def _adverts(state: dict[str, Any]) -> dict[str, hc.Advertisement]:
    return {
        a["institution"]: hc.Advertisement(
            a["node"],
            a["institution"],
            bytes.fromhex(a["seal"]),
            bytes.fromhex(a["mask"]),
            bytes.fromhex(a["sig"]),
        )
        for a in state["adverts"]
    }


def _round_keys(state: dict[str, Any]) -> hc.RoundKeys:
    return hc.RoundKeys(
        X25519PrivateKey.from_private_bytes(bytes.fromhex(state["seal_sk"])),
        X25519PrivateKey.from_private_bytes(bytes.fromhex(state["mask_sk"])),
        bytes.fromhex(state["seed"]),
    )


# -- stages ------------------------------------------------------------------

Handled = tuple[dict[str, Any], RecordDict]

#: Ledger key of the cohort bound to the base ensemble of a tree's levels.
GBDT_TREE_KEY = "gbdt-tree"


def _setup(
    party: _Party, msg: Message, ctxt: Context, fields: dict[str, Any], _: dict[str, Any], __: Any
) -> Handled:
    settings = party.settings
    task, task_name = parse_task(fields.get(Field.TASK))
    state: dict[str, Any] = {
        "stage": Stage.SETUP.value,
        "run": msg.metadata.run_id,
        "round": _round_of(msg),
        "task": task_name,
        **read_announced(fields),
        "sample_num": get_int(fields, Field.SAMPLE_NUM, 0, 1000),
    }
    # 1-2. The parameters must be exactly the run's agreed values (the server
    #      may not pick them), and the round must pass the institution's own
    #      policy: both decided by the gate, in one place.
    check_round(
        RoundView(party.node.institution_id, state["round"], state_parameters(state),
                  tuple(settings.institutions), training=task is Task.TRAIN,
                  histograms=task in (Task.BINS, Task.HISTOGRAM)),
        settings,
        party.institution,
    )
    # 3. One time only: each (run, round, task), and the policy's max_rounds.
    RoundLedger(party.node.ledger_path).claim_round(
        state["run"], state["round"], task_name, party.institution.policy.protection.max_rounds
    )
    # 4. Fresh keys, advertised under this institution's own signature.
    keys = hc.RoundKeys.generate()
    binding = _binding(party, state)
    advert = hc.advertise(
        party.institution.signing_key, binding, msg.metadata.dst_node_id,
        party.node.institution_id, keys,
    )
    state.update(
        seal_sk=hc.private_bytes(keys.seal_private).hex(),
        mask_sk=keys.mask_secret().hex(),
        seed=keys.seed.hex(),
        node=msg.metadata.dst_node_id,
    )
    _save_state(ctxt, state)
    return {
        Field.INSTITUTION: party.node.institution_id,
        Field.SEAL_KEY: advert.seal_key,
        Field.MASK_KEY: advert.mask_key,
        Field.SIGNATURE: advert.signature,
    }, RecordDict()


def _pinned_keys(party: _Party) -> dict[str, Ed25519PublicKey]:
    """This institution's own key and those of the partners it pinned and accepts."""
    me = party.node.institution_id
    accepted = set(party.institution.policy.data_use.accepted_partners) | {me}
    return {
        name: party.pinned_key(name)
        for name in party.settings.institutions
        if name in accepted and (name == me or party.node.partner_key_path(name).is_file())
    }


def _share_keys(
    party: _Party, msg: Message, ctxt: Context, fields: dict[str, Any], state: dict[str, Any], _: Any
) -> Handled:
    me = party.node.institution_id
    nodes = get_list(fields, Field.NODES, int)
    names = get_list(fields, Field.INSTITUTIONS, str, max_len=100)
    seals = get_list(fields, Field.SEAL_KEYS, bytes, max_len=32)
    masks = get_list(fields, Field.MASK_KEYS, bytes, max_len=32)
    sigs = get_list(fields, Field.SIGNATURES, bytes, max_len=64)
    same_length(nodes, names, seals, masks, sigs)
    binding = _binding(party, state)
    pinned = _pinned_keys(party)
    # 1. Every advertisement must verify against a key pinned on this side:
    #    an unknown institution or a key the server made is refused.
    verified: dict[str, hc.Advertisement] = {}
    for node, name, seal, mask, sig in zip(nodes, names, seals, masks, sigs, strict=True):
        if name not in pinned:
            raise CryptoError(
                f"secagg.unknown-peer: {name[:60]!r} is not a partner whose key this institution pinned"
            )
        advert = hc.Advertisement(node, name, seal, mask, sig)
        hc.verify_advertisement(pinned[name], binding, advert)
        if name in verified:
            raise ProtocolError(f"secagg.duplicate-peer: {name} is listed twice")
        verified[name] = advert
    if len({a.node_id for a in verified.values()}) != len(verified) or len(
        {a.seal_key for a in verified.values()} | {a.mask_key for a in verified.values()}
    ) != 2 * len(verified):
        raise ProtocolError("secagg.duplicate-peer: node ids or keys repeat")
    # 2. Its own advertisement must be there, unchanged.
    own = verified.get(me)
    keys = _round_keys(state)
    if (
        own is None
        or own.node_id != state["node"]
        or not hc.same_bytes(own.seal_key, keys.seal_public)
        or not hc.same_bytes(own.mask_key, keys.mask_public)
    ):
        raise ProtocolError("secagg.own-keys: this institution's keys are missing or altered")
    # 3. The cohort it counts is the verified one; check it against its policy
    #    and the threshold bound for its neighbourhood.
    cohort = sorted(verified)
    neighbourhood = hc.neighbours(cohort, me, state["num_shares"])
    check_threshold(state["reconstruction_threshold"], len(neighbourhood))
    state["adverts"] = [
        {"node": a.node_id, "institution": a.institution, "seal": a.seal_key.hex(),
         "mask": a.mask_key.hex(), "sig": a.signature.hex()}
        for a in verified.values()
    ]
    state["stage"] = Stage.SHARE_KEYS.value
    check_round(
        RoundView(me, state["round"], state_parameters(state), tuple(cohort),
                  training=state["task"] == Task.TRAIN,
                  histograms=parse_task(state["task"])[0] in (Task.BINS, Task.HISTOGRAM)),
        party.settings,
        party.institution,
    )
    # 4. Share the self-mask seed and the mask key with the neighbourhood.
    digest = hc.cohort_digest(binding, verified.values())
    xs = {name: index + 1 for index, name in enumerate(neighbourhood)}
    seed_shares = split_secret(keys.seed, state["reconstruction_threshold"], list(xs.values()))
    mask_shares = split_secret(keys.mask_secret(), state["reconstruction_threshold"], list(xs.values()))
    destinations, boxes = [], []
    held: dict[str, list[str]] = {me: [seed_shares[xs[me]].hex(), mask_shares[xs[me]].hex()]}
    for name in neighbourhood:
        if name == me:
            continue
        peer = verified[name]
        destinations.append(peer.node_id)
        boxes.append(
            hc.seal_shares(keys, peer.seal_key, binding, digest, me, name,
                           seed_shares[xs[name]], mask_shares[xs[name]])
        )
    floor = max(party.settings.min_cohort, party.institution.policy.protection.min_cohort_size)
    state.update(
        digest=digest.hex(), neighbours=list(neighbourhood), held=held, cohort_floor=floor
    )
    reply: dict[str, Any] = {Field.DESTINATIONS: destinations, Field.BOXES: boxes}
    # 5. ckks mode: the dealer makes the round's CKKS key and seals it to the others.
    if _ckks_training(party, state) and me == ckks_mode.dealer_of(cohort):
        extra, secret = ckks_mode.deal(
            me, party.signing_key, verified, binding, digest, state["modulus_range"]
        )
        reply.update(extra)
        state["ckks_secret"] = secret
    _save_state(ctxt, state)
    return reply, RecordDict()


def _ckks_training(party: _Party, state: dict[str, Any]) -> bool:
    return party.settings.aggregation is Aggregation.CKKS and state["task"] == Task.TRAIN.value


def _own_model(party: _Party, msg: Message, state: dict[str, Any]) -> None:
    """ckks mode: train or evaluate the model this institution decrypted, not the server's.

    The server never holds the model; it names it by its id. Training starts
    from the run's public initial model it sends only until this institution
    holds a decrypted model of the run (round 1, or a later round when every
    earlier one failed); never is the initial model evaluated, nor a run
    rolled back to it.
    """
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    model_id = str(fitins.config.get("ckks-model-id", ""))
    if model_id == ckks_mode.INITIAL_MODEL:
        if state["task"] != Task.TRAIN.value:
            raise ProtocolError(
                "ckks.model: the initial model is for training only "
                f"(this is round {state['round']}, task {state['task']})"
            )
        if ckks_mode.holds_model(party.node, state["run"]):
            raise ProtocolError(
                "ckks.model: this institution already holds a model of this run; "
                f"the server asked it to train the initial model again (round {state['round']})"
            )
        return
    arrays = ckks_mode.load_model(party.node, state["run"], model_id)
    fitins.parameters = ndarrays_to_parameters(arrays)
    content = compat.fitins_to_recorddict(fitins, keep_input=True)
    content.config_records[RECORD] = msg.content.config_records[RECORD]
    msg.content = content


def _collect(
    party: _Party,
    msg: Message,
    ctxt: Context,
    fields: dict[str, Any],
    state: dict[str, Any],
    call_next: ClientAppCallable,
) -> Handled:
    me = party.node.institution_id
    sources = get_list(fields, Field.SOURCES, int)
    boxes = get_list(fields, Field.BOXES, bytes)
    same_length(sources, boxes)
    binding = _binding(party, state)
    digest = bytes.fromhex(state["digest"])
    adverts = _adverts(state)
    by_node = {a.node_id: a for a in adverts.values()}
    neighbourhood = set(state["neighbours"])
    keys = _round_keys(state)
    # 1. Shares must come sealed from verified neighbours, once each.
    held: dict[str, list[str]] = state["held"]
    for source, box in zip(sources, boxes, strict=True):
        peer = by_node.get(source)
        if peer is None or peer.institution not in neighbourhood or peer.institution == me:
            raise ProtocolError(f"secagg.unknown-peer: shares from node {source}, not a neighbour")
        if peer.institution in held:
            raise ProtocolError(f"secagg.duplicate-peer: two share boxes from {peer.institution}")
        seed_share, mask_share = hc.open_shares(
            keys, peer.seal_key, binding, digest, peer.institution, me, box
        )
        held[peer.institution] = [seed_share.hex(), mask_share.hex()]
    if len(held) < state["reconstruction_threshold"]:
        raise ProtocolError(
            f"secagg.threshold: shares from {len(held)} institutions, {state['reconstruction_threshold']} needed"
        )
    # 2. The task and round of the instructions must be the ones set up, and
    #    the model must not have been summed under another cohort before.
    if party.settings.aggregation is Aggregation.CKKS and state["task"] != Task.STATS.value:
        try:
            _own_model(party, msg, state)
        except ckks_mode.ModelMissing as exc:
            # It missed the round that made the model: it sits this one out.
            _save_state(ctxt, {"stage": "aborted"})
            raise TaskFailed(str(exc)) from exc
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    task = str(fitins.config.get("task", Task.TRAIN.value))
    if task != state["task"] or fitins.config.get("server-round") != state["round"]:
        raise ProtocolError("secagg.binding: the instructions name another task or round")
    sent = parameters_to_ndarrays(fitins.parameters)
    model_hash = update_digest(sent)
    cohort = sorted(adverts)
    ledger = RoundLedger(party.node.ledger_path)
    ledger.check_model(task, model_hash, cohort, record=False)
    base_hash = ""
    if parse_task(task)[0] is Task.HISTOGRAM:
        # Every level of a tree is summed over one cohort (see fraud.gbdt.base_digest).
        from fraud.gbdt import base_digest

        if len(sent) != 1:
            raise ProtocolError("secagg.binding: a histogram task carries one ensemble")
        base_hash = base_digest(sent[0])
        ledger.check_model(GBDT_TREE_KEY, base_hash, cohort, record=False)
    state.update(stage=Stage.COLLECT.value, held=held, model_hash=model_hash, base_hash=base_hash)
    _save_state(ctxt, state)
    # 3. The client computes its contribution (its gate runs again inside).
    try:
        reply = call_next(msg, ctxt)
    except RoundRefused:
        raise
    except FedFraudError as exc:
        # The institution's own task failed (missing data, an update out of
        # range): a dropout, not a protocol refusal. Forget the round's secrets.
        _save_state(ctxt, {"stage": "aborted"})
        raise TaskFailed(f"{type(exc).__name__}: {exc}") from exc
    if reply.has_error():
        raise ProtocolError(f"secagg.client: {str(reply.error.reason)[:200]}")
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    arrays = parameters_to_ndarrays(fitres.parameters)
    if 1 + sum(int(np.size(a)) for a in arrays) > MAX_VECTOR:
        raise ProtocolError("secagg.size: the vector exceeds the protocol's limit")
    # 4. Quantize, then add the self mask and one pairwise mask per neighbour
    #    that shared keys, each a fresh AES-CTR stream.
    modulus = state["modulus_range"]
    if state["task"] == Task.TRAIN.value:
        total = encode_contribution(
            arrays,
            fitres.num_examples / state["max_weight"],
            state["clipping_range"],
            state["quantization_range"],
        )
    else:
        # Counts and fixed-point totals: summed exactly, with no weight.
        total = encode_integers(np.concatenate([np.asarray(a).ravel() for a in arrays]))
    size = int(total.size)
    total = add_mod(total, mask_stream(hc.self_mask_key(keys.seed, binding, digest, me), size, modulus), modulus)
    for name in sorted(held):
        if name == me:
            continue
        key = hc.pair_mask_key(keys.mask_private, adverts[name].mask_key, binding, digest, me, name)
        total = add_mod(total, mask_stream(key, size, modulus), modulus, hc.pair_sign(me, name))
    state["u2"] = sorted(held)
    # The example count stays inside the masked vector; nothing else of the
    # update leaves (metrics carry the institution's name and signed receipt).
    clear = FitRes(Status(Code.OK, "masked"), Parameters([], ""), 0, fitres.metrics)
    shapes = [shape_text(a) for a in arrays]
    state.update(size=size, shapes=shapes)
    out: dict[str, Any] = {Field.SIZE: size, Field.SHAPES: shapes}
    if _ckks_training(party, state):
        # 5. ckks mode: the masked words leave only encrypted under the round's key.
        dealer = ckks_mode.dealer_of(sorted(adverts))
        keys_ckks = ckks_mode.receive_key(
            state, fields, me, party.pinned_key(dealer), keys.seal_private, binding, digest
        )
        out.update(ckks_mode.encrypt(keys_ckks, total, party.signing_key, binding))
    else:
        out[Field.MASKED] = pack(total)
    _save_state(ctxt, state)
    return out, compat.fitres_to_recorddict(clear, keep_input=False)


def _consistency(
    party: _Party, msg: Message, ctxt: Context, fields: dict[str, Any], state: dict[str, Any], _: Any
) -> Handled:
    me = party.node.institution_id
    by_node = {a.node_id: a for a in _adverts(state).values()}
    survivors_nodes = get_list(fields, Field.SURVIVORS, int)
    if len(set(survivors_nodes)) != len(survivors_nodes) or any(n not in by_node for n in survivors_nodes):
        raise ProtocolError("secagg.consistency: survivors include unknown or repeated nodes")
    survivors = sorted(by_node[n].institution for n in survivors_nodes)
    neighbourhood = set(state["neighbours"])
    u2 = set(state["u2"])
    # 1. It must itself be a survivor, and a neighbour can only have survived
    #    if it shared keys with this institution.
    if me not in survivors:
        raise ProtocolError("secagg.consistency: this institution is missing from the survivors")
    if (set(survivors) & neighbourhood) - u2:
        raise ProtocolError("secagg.consistency: a claimed survivor never shared keys")
    if len(set(survivors) & neighbourhood) < state["reconstruction_threshold"]:
        raise ProtocolError(
            f"secagg.threshold: {len(set(survivors) & neighbourhood)} surviving neighbours, "
            f"{state['reconstruction_threshold']} needed"
        )
    # 2. The sum must still cover the cohort its policy and the run require:
    #    a server that drops partners here would otherwise shrink the cohort
    #    after the check at share-keys.
    floor = state["cohort_floor"]
    if len(survivors) < floor:
        raise ProtocolError(
            f"protection.min_cohort_size: the sum would combine {len(survivors)} institutions, "
            f"this institution needs at least {floor}"
        )
    # 3. The differencing rule, recorded now: once signed, shares may follow.
    ledger = RoundLedger(party.node.ledger_path)
    ledger.check_model(state["task"], state["model_hash"], survivors, record=True)
    if state.get("base_hash"):
        ledger.check_model(GBDT_TREE_KEY, state["base_hash"], survivors, record=True)
    binding = _binding(party, state)
    signature = hc.sign_consistency(
        party.signing_key, binding, bytes.fromhex(state["digest"]), survivors
    )
    state.update(stage=Stage.CONSISTENCY.value, u3=survivors)
    _save_state(ctxt, state)
    return {Field.SIGNATURE: signature}, RecordDict()


def _unmask(
    party: _Party, msg: Message, ctxt: Context, fields: dict[str, Any], state: dict[str, Any], _: Any
) -> Handled:
    me = party.node.institution_id
    adverts = _adverts(state)
    by_node = {a.node_id: a for a in adverts.values()}
    signers = get_list(fields, Field.SIGNERS, int)
    signatures = get_list(fields, Field.SIGNATURES, bytes, max_len=64)
    active_nodes = get_list(fields, Field.ACTIVE, int)
    dead_nodes = get_list(fields, Field.DEAD, int)
    same_length(signers, signatures)
    survivors: list[str] = state["u3"]
    # 1. At least t survivors must have signed exactly the set this one signed
    #    (checked against the keys it pinned; it stops at t valid signatures).
    signed = {
        by_node[n].institution: s
        for n, s in zip(signers, signatures, strict=True)
        if n in by_node and by_node[n].institution in survivors
    }
    valid = hc.count_consistency_signatures(
        party.pinned_key, _binding(party, state), bytes.fromhex(state["digest"]), survivors, signed,
        enough=state["reconstruction_threshold"],
    )
    if len(valid) < state["reconstruction_threshold"]:
        raise CryptoError(
            f"secagg.consistency: {len(valid)} valid signatures of the survivor set, "
            f"{state['reconstruction_threshold']} needed"
        )
    # 2. The lists must be exactly what the signed set implies: disjoint, this
    #    institution not dead, survivors active, neighbours lost after sharing dead.
    if set(active_nodes) & set(dead_nodes):
        raise ProtocolError("secagg.overlap: a node is listed as both active and dead")
    if any(n not in by_node for n in active_nodes + dead_nodes):
        raise ProtocolError("secagg.unmask: unknown nodes in the active or dead list")
    active = {by_node[n].institution for n in active_nodes}
    dead = {by_node[n].institution for n in dead_nodes}
    if me in dead:
        raise ProtocolError("secagg.overlap: this institution is listed as dead")
    neighbourhood = set(state["neighbours"])
    held = state["held"]
    if active != set(survivors) & neighbourhood or dead != (set(held) - set(survivors)):
        raise ProtocolError("secagg.unmask: active or dead list differs from the signed survivors")
    # 3. Release: self-mask seed shares for survivors, mask-key shares for the dead.
    owners, kinds, shares = [], [], []
    for name in sorted(active):
        owners.append(adverts[name].node_id)
        kinds.append(ShareKind.SEED.value)
        shares.append(bytes.fromhex(held[name][0]))
    for name in sorted(dead):
        owners.append(adverts[name].node_id)
        kinds.append(ShareKind.MASK.value)
        shares.append(bytes.fromhex(held[name][1]))
    after: dict[str, Any] = {"stage": Stage.UNMASK.value, "run": state["run"], "round": state["round"]}
    if _ckks_training(party, state):
        # Kept for the decrypt stage only: the round key and the model's layout.
        keep = ("task", "ckks_secret", "size", "shapes", "modulus_range", "clipping_range",
                "quantization_range", "u3")
        after.update({k: state[k] for k in keep})
    _save_state(ctxt, after)
    return {Field.OWNERS: owners, Field.KINDS: kinds, Field.SHARES: shares}, RecordDict()


def _decrypt(
    party: _Party, msg: Message, ctxt: Context, fields: dict[str, Any], state: dict[str, Any], _: Any
) -> Handled:
    if party.settings.aggregation is not Aggregation.CKKS or not state.get("ckks_secret"):
        raise ProtocolError("secagg.stage: decrypt outside a ckks training round")
    cap = ckks_mode.PARAMS.ciphertext_cap
    blobs = get_list(fields, Field.CKKS_BLOBS, bytes, max_items=MAX_VECTOR // ckks_mode.PARAMS.slots + 1,
                     max_len=cap)
    correction = get_bytes(fields, Field.CKKS_CORRECTION, 4 * MAX_VECTOR)
    contributors = get_int(fields, Field.CKKS_CONTRIBUTORS, 1, 1000)
    model_id = get_str(fields, Field.MODEL_ID, 64)
    # 1. The sum must be over exactly the survivors this institution signed.
    if contributors != len(state["u3"]):
        raise ProtocolError("ckks.decrypt: the sum is not over the signed survivors")
    # 2. The model id names exactly these ciphertexts.
    if not hc.same_bytes(model_id.encode(), ckks.model_id_of(blobs).encode()):
        raise ProtocolError("ckks.decrypt: the model id does not name the encrypted sum")
    # 3. Decrypt, remove the masks, keep the model at this institution only.
    arrays = ckks_mode.decrypt_model(state, blobs, correction, contributors)
    model_hash = ckks_mode.save_model(party.node, state["run"], state["round"], model_id, arrays)
    ckks_mode.forget(state["ckks_secret"])
    _save_state(ctxt, {"stage": Stage.DECRYPT.value, "run": state["run"], "round": state["round"]})
    return {Field.MODEL_HASH: model_hash}, RecordDict()


_HANDLERS = {
    Stage.SETUP: _setup,
    Stage.SHARE_KEYS: _share_keys,
    Stage.COLLECT: _collect,
    Stage.CONSISTENCY: _consistency,
    Stage.UNMASK: _unmask,
    Stage.DECRYPT: _decrypt,
}

