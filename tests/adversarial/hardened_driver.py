"""A dishonest server, hand-played against fedfraud's real ClientApp.

The counterpart of :mod:`stock_flower` for fedfraud's hardened SecAgg+: the
server side of the protocol played at the message level, with the freedom to
lie at any stage. The victims are the product's own ``client.app:app`` with
real site folders (policy, Ed25519 key, pinned partner keys, round ledger)
and real data, exactly as an institution runs it.

The honest parts reuse the product's own crypto (``secagg.*``): a dishonest
server may use anything it likes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

from client.app import app
from fedfraud.simulation import default_run_config, project_dir
from fedfraud.sites import prepare_demo_sites
from fraud.features import FEATURE_COLUMNS
from fraud.generator_files import ensure_federation_data
from fraud.model import build_model, get_weights
from secagg import hardened as hc
from secagg.masks import add_mod, decode_integer_sum, mask_stream, unpack
from secagg.protocol import PROTOCOL_NAME, RECORD, Field, Stage
from secagg.shamir import combine_shares

NAMES = ("bank-a", "bank-b", "insurer-c")
FEDERATION = "fedfraud-demo"


@dataclass
class Party:
    """One institution's real ClientApp and the Flower context its SuperNode keeps."""

    name: str
    node_id: int
    context: Context

    def restart(self) -> None:
        """A fresh ClientApp process: the in-memory protocol state is gone."""
        self.context = Context(
            run_id=self.context.run_id,
            node_id=self.node_id,
            node_config=dict(self.context.node_config),
            state=RecordDict(),
            run_config=dict(self.context.run_config),
        )


def make_federation(root: Path, names: Sequence[str] = NAMES, rows: int = 600) -> dict[str, Any]:
    """Real data and real site folders for ``names``; returns the run config."""
    ensure_federation_data(root / "data", list(names), rows, 3)
    sites = prepare_demo_sites(root / "demo", names, project_dir() / "policies")
    config = default_run_config()
    config.update(
        {
            "institutions": ",".join(names),
            "data-dir": str(root / "data"),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(root / "run"),
            "run-name": "attacked",
            "local-epochs": 1,
        }
    )
    return config


def parties(config: Mapping[str, Any], names: Sequence[str] = NAMES) -> list[Party]:
    """The institutions' ClientApps, node ids 101, 102, ... (partition order)."""
    everyone = str(config["institutions"]).split(",")
    return [
        Party(
            name,
            101 + everyone.index(name),
            Context(
                run_id=1,
                node_id=101 + everyone.index(name),
                node_config={"partition-id": everyone.index(name)},
                state=RecordDict(),
                run_config=dict(config),
            ),
        )
        for name in names
    ]


def global_model(seed: int = 42) -> list[npt.NDArray[np.float32]]:
    """The model a server would send (the run's initial model)."""
    return get_weights(build_model(len(FEATURE_COLUMNS), seed=seed))


def send(
    party: Party,
    stage: Stage,
    fields: Mapping[str, Any],
    server_round: int = 1,
    run_id: int = 1,
    fitins: FitIns | None = None,
) -> dict[str, Any]:
    """Send one protocol message to the real ClientApp; return its reply's fields.

    Raises whatever the ClientApp raises: a refusal is an exception carrying a
    ``fedfraud-refusal/1:`` token.
    """
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = 0
    content = compat.fitins_to_recorddict(fitins, True) if fitins is not None else RecordDict()
    content.config_records[RECORD] = ConfigRecord(
        {Field.STAGE: stage.value, Field.PROTOCOL: PROTOCOL_NAME, **fields}  # type: ignore[dict-item]
    )
    message = Message(
        content=content,
        dst_node_id=party.node_id,
        message_type=MessageType.TRAIN,
        group_id=str(server_round),
    )
    reply = app(message, party.context)
    if reply.has_error():
        raise RuntimeError(reply.error.reason)
    return dict(reply.content.config_records[RECORD])


#: The training weight bound the driver announces. The run's max-weight is
#: auto (the default), so the bound is signed into every advertisement.
SETUP_WEIGHT = 100000.0


def binding_of(federation: str, run_id: int, server_round: int, task: str) -> hc.Binding:
    """The round binding the institutions sign (with the announced weight bound)."""
    return hc.Binding(federation, run_id, server_round, task, SETUP_WEIGHT)


def setup_fields(task: str = "train", sample_num: int = 3, **changes: Any) -> dict[str, Any]:
    """The setup stage's fields with the run's agreed parameters (or ``changes``)."""
    fields: dict[str, Any] = {
        Field.TASK: task,
        Field.NUM_SHARES: 3,
        Field.THRESHOLD: 2,
        Field.CLIPPING_RANGE: 8.0,
        Field.QUANTIZATION_RANGE: 2**24,
        Field.MODULUS_RANGE: 2**32,
        Field.MAX_WEIGHT: SETUP_WEIGHT,
        Field.SAMPLE_NUM: sample_num,
    }
    fields.update(changes)
    return fields


def advert_of(party: Party, reply: Mapping[str, Any]) -> hc.Advertisement:
    """The advertisement in a setup reply."""
    return hc.Advertisement(
        party.node_id,
        str(reply[Field.INSTITUTION]),
        bytes(reply[Field.SEAL_KEY]),
        bytes(reply[Field.MASK_KEY]),
        bytes(reply[Field.SIGNATURE]),
    )


def listing(adverts: Sequence[hc.Advertisement]) -> dict[str, Any]:
    """The share-keys stage's fields for a list of advertisements."""
    return {
        Field.NODES: [a.node_id for a in adverts],
        Field.INSTITUTIONS: [a.institution for a in adverts],
        Field.SEAL_KEYS: [a.seal_key for a in adverts],
        Field.MASK_KEYS: [a.mask_key for a in adverts],
        Field.SIGNATURES: [a.signature for a in adverts],
    }


@dataclass
class Transcript:
    """Everything a server sees of one round (it is what an attacker works from)."""

    binding: hc.Binding
    adverts: dict[int, hc.Advertisement] = field(default_factory=dict)
    boxes: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    masked: dict[int, npt.NDArray[np.uint32]] = field(default_factory=dict)
    shapes: list[str] = field(default_factory=list)
    signatures: dict[int, bytes] = field(default_factory=dict)


def play_until_masked(
    victims: Sequence[Party],
    task: str = "train",
    server_round: int = 1,
    run_id: int = 1,
    model: list[npt.NDArray[Any]] | None = None,
) -> Transcript:
    """Honest setup, share-keys and collect stages; the masked vectors are kept."""
    binding = binding_of(federation_of(victims), run_id, server_round, task)
    transcript = Transcript(binding)
    for party in victims:
        reply = send(party, Stage.SETUP, setup_fields(task, len(victims)), server_round, run_id)
        transcript.adverts[party.node_id] = advert_of(party, reply)
    adverts = [transcript.adverts[n] for n in sorted(transcript.adverts)]
    transcript.boxes = {p.node_id: [] for p in victims}
    for party in victims:
        reply = send(party, Stage.SHARE_KEYS, listing(adverts), server_round, run_id)
        for dst, box in zip(reply[Field.DESTINATIONS], reply[Field.BOXES], strict=True):
            transcript.boxes[dst].append((party.node_id, box))
    weights = model if model is not None else global_model()
    config = {"server-round": server_round, "task": task}
    for party in victims:
        fitins = FitIns(ndarrays_to_parameters(weights), dict(config))
        incoming = transcript.boxes[party.node_id]
        reply = send(
            party,
            Stage.COLLECT,
            {Field.SOURCES: [s for s, _ in incoming], Field.BOXES: [b for _, b in incoming]},
            server_round,
            run_id,
            fitins,
        )
        size = int(reply[Field.SIZE])
        transcript.masked[party.node_id] = unpack(bytes(reply[Field.MASKED]), size, 2**32)
        transcript.shapes = [str(s) for s in reply["shapes"]]
    return transcript


def federation_of(victims: Sequence[Party]) -> str:
    """The federation id the victims' run config names."""
    return str(victims[0].context.run_config["federation-id"])


def consistency(victims: Sequence[Party], transcript: Transcript, survivors: Sequence[int]) -> None:
    """Honest consistency round: every victim signs the survivor set."""
    b = transcript.binding
    for party in victims:
        reply = send(party, Stage.CONSISTENCY, {Field.SURVIVORS: list(survivors)}, b.server_round, b.run_id)
        transcript.signatures[party.node_id] = bytes(reply[Field.SIGNATURE])


def unmask_fields(
    transcript: Transcript, active: Sequence[int], dead: Sequence[int]
) -> dict[str, Any]:
    """An unmask message with every consistency signature collected so far."""
    signers = sorted(transcript.signatures)
    return {
        Field.SIGNERS: signers,
        Field.SIGNATURES: [transcript.signatures[n] for n in signers],
        Field.ACTIVE: list(active),
        Field.DEAD: list(dead),
    }


def honest_aggregate(victims: Sequence[Party], transcript: Transcript) -> npt.NDArray[np.int64]:
    """Finish an evaluation or statistics round honestly; return the exact integer sum."""
    nodes = sorted(p.node_id for p in victims)
    consistency(victims, transcript, nodes)
    b = transcript.binding
    seeds: dict[int, list[bytes]] = {n: [] for n in nodes}
    for party in victims:
        reply = send(party, Stage.UNMASK, unmask_fields(transcript, nodes, []), b.server_round, b.run_id)
        for owner, share in zip(reply[Field.OWNERS], reply[Field.SHARES], strict=True):
            seeds[owner].append(share)
    digest = hc.cohort_digest(b, transcript.adverts.values())
    total = np.zeros_like(next(iter(transcript.masked.values())))
    for vector in transcript.masked.values():
        total = add_mod(total, vector, 2**32)
    for node, shares in seeds.items():
        key = hc.self_mask_key(combine_shares(shares, 2), b, digest, transcript.adverts[node].institution)
        total = add_mod(total, mask_stream(key, total.size, 2**32), 2**32, -1)
    return decode_integer_sum(total, len(nodes))


def play_ckks_until_collected(
    victims: Sequence[Party],
    server_round: int = 1,
    task: str = "train",
    model_id: str = "initial",
) -> dict[str, Any]:
    """An honest ckks round up to the collect stage, naming the model ``model_id``.

    A training round deals the CKKS key (one institution seals it to each
    other); an evaluation sums counts only. Returns each victim's collect
    reply fields, or the exception it raised, by institution.
    """
    setup = setup_fields(task, len(victims))
    adverts = [advert_of(p, send(p, Stage.SETUP, setup, server_round)) for p in victims]
    boxes: dict[int, list[tuple[int, bytes]]] = {p.node_id: [] for p in victims}
    dealt: dict[str, Any] = {}
    for party in victims:
        reply = send(party, Stage.SHARE_KEYS, listing(adverts), server_round)
        for dst, box in zip(reply[Field.DESTINATIONS], reply[Field.BOXES], strict=True):
            boxes[dst].append((party.node_id, box))
        if Field.CKKS_CONTEXT in reply:
            dealt = {"node": party.node_id, **reply}
    envelopes = (
        dict(zip(dealt[Field.CKKS_RECIPIENTS], dealt[Field.CKKS_ENVELOPES], strict=True)) if dealt else {}
    )
    outcomes: dict[str, Any] = {}
    for party in victims:
        fields: dict[str, Any] = {
            Field.SOURCES: [s for s, _ in boxes[party.node_id]],
            Field.BOXES: [b for _, b in boxes[party.node_id]],
        }
        if dealt:
            fields[Field.CKKS_CONTEXT] = dealt[Field.CKKS_CONTEXT]
            fields[Field.CKKS_DEALER] = dealt["node"]
        if party.node_id in envelopes:
            fields[Field.CKKS_ENVELOPE] = envelopes[party.node_id]
        config = {"server-round": server_round, "task": task, "ckks-model-id": model_id}
        fitins = FitIns(ndarrays_to_parameters(global_model()), config)  # type: ignore[arg-type]
        try:
            outcomes[party.name] = send(party, Stage.COLLECT, fields, server_round, fitins=fitins)
        except Exception as exc:  # noqa: BLE001 - a refusal is an outcome the caller checks
            outcomes[party.name] = exc
    return outcomes
