"""Wire format of the hardened SecAgg+ protocol: stages, field names, limits.

Both sides (the server workflow and the institution's mod) read and write
these fields in one Flower ``ConfigRecord`` named :data:`RECORD`. Every field
an institution reads is checked here for type and size before anything else
happens: a malformed or oversized message is refused by name.

Stages, in order (the server sends, the institution replies):

1. ``setup``: run parameters and task -> signed round keys (advertisement);
2. ``share-keys``: every advertisement -> shares sealed for each neighbour;
3. ``collect-masked-vectors``: the shares sealed for this institution, and the
   model -> the masked vector (plus a signed receipt for training);
4. ``consistency``: the survivor set -> a signature over it;
5. ``unmask``: the survivors' signatures -> the shares that remove the masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from core.errors import ProtocolError

#: Name of the ConfigRecord carrying the protocol's fields.
RECORD = "fedfraud.secagg"
#: Name of the institution's protocol state in its Flower context.
STATE_RECORD = "fedfraud.secagg.state"

#: Most institutions a round may list (bounds every list field).
MAX_PARTIES = 1000
#: Most entries of a masked vector (2**26: a 64M-parameter model).
MAX_VECTOR = 2**26
#: Largest sealed box of shares, signature or key, in bytes.
MAX_BOX = 4096


class Stage(StrEnum):
    """The protocol's stages, in order."""

    SETUP = "setup"
    SHARE_KEYS = "share-keys"
    COLLECT = "collect-masked-vectors"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    #: ``ckks`` mode only: the encrypted sum and the mask correction -> each
    #: survivor decrypts the model for itself (the server never can).
    DECRYPT = "decrypt"

    def next(self) -> Stage | None:
        """The stage that must follow this one (None after unmask)."""
        order = list(Stage)
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None


class Task(StrEnum):
    """What a secure round sums."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    STATS = "stats"
    #: ``model = "gbdt"``: the bin agreement (grid counts of every column).
    BINS = "bins"
    #: ``model = "gbdt"``: one depth level of one tree, sent as
    #: ``histogram-<tree>-<level>`` (:func:`histogram_task`), so each level of
    #: a round is its own one-time (run, round, task).
    HISTOGRAM = "histogram"


#: Trees one round may grow, and levels of one tree (bounds of a histogram task).
MAX_TREES_PER_ROUND, MAX_TREE_LEVELS = 100, 8


def histogram_task(tree: int, level: int) -> str:
    """The task name of one level of one tree of a round."""
    if not (0 <= tree < MAX_TREES_PER_ROUND and 0 <= level < MAX_TREE_LEVELS):
        raise ProtocolError(f"no histogram task for tree {tree}, level {level}")
    return f"{Task.HISTOGRAM.value}-{tree}-{level}"


def parse_task(text: object) -> tuple[Task, str]:
    """(kind, full name) of a task name; raise ProtocolError for anything else."""
    if isinstance(text, str):
        if text in set(Task) and text != Task.HISTOGRAM.value:
            return Task(text), text
        parts = text.split("-")
        if (
            len(parts) == 3
            and parts[0] == Task.HISTOGRAM.value
            and all(p.isdigit() and len(p) <= 3 for p in parts[1:])
            and histogram_task(int(parts[1]), int(parts[2])) == text
        ):
            return Task.HISTOGRAM, text
    raise ProtocolError(f"unknown task {str(text)[:40]!r}")


class Field(StrEnum):
    """Field names of the protocol's ConfigRecord."""

    STAGE = "stage"
    PROTOCOL = "protocol"
    TASK = "task"
    NUM_SHARES = "num-shares"
    THRESHOLD = "threshold"
    CLIPPING_RANGE = "clipping-range"
    QUANTIZATION_RANGE = "quantization-range"
    MODULUS_RANGE = "modulus-range"
    MAX_WEIGHT = "max-weight"
    SAMPLE_NUM = "sample-num"
    INSTITUTION = "institution"
    SEAL_KEY = "seal-key"
    MASK_KEY = "mask-key"
    SIGNATURE = "signature"
    NODES = "nodes"
    INSTITUTIONS = "institutions"
    SEAL_KEYS = "seal-keys"
    MASK_KEYS = "mask-keys"
    SIGNATURES = "signatures"
    DESTINATIONS = "destinations"
    SOURCES = "sources"
    BOXES = "boxes"
    MASKED = "masked"
    SIZE = "size"
    SURVIVORS = "survivors"
    SIGNERS = "signers"
    ACTIVE = "active"
    DEAD = "dead"
    OWNERS = "owners"
    KINDS = "kinds"
    SHARES = "shares"
    # ckks mode (secagg.ckks)
    CKKS_CONTEXT = "ckks-context"
    CKKS_DEALER = "ckks-dealer"
    CKKS_ENVELOPE = "ckks-envelope"
    CKKS_ENVELOPES = "ckks-envelopes"
    CKKS_RECIPIENTS = "ckks-recipients"
    CKKS_BLOBS = "ckks-blobs"
    CKKS_SIGNATURE = "ckks-signature"
    CKKS_CORRECTION = "ckks-correction"
    CKKS_CONTRIBUTORS = "ckks-contributors"
    MODEL_ID = "model-id"
    MODEL_HASH = "model-hash"
    SHAPES = "shapes"


class ShareKind(StrEnum):
    """Which secret a released share belongs to."""

    #: The self-mask seed of a survivor.
    SEED = "seed"
    #: The mask private key of a dropped institution.
    MASK = "mask"


def get_int(fields: Mapping[str, Any], name: Field, low: int = 0, high: int = 2**63 - 1) -> int:
    """An int field within ``[low, high]``."""
    value = fields.get(name)
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"field {name.value!r} must be an integer in [{low}, {high}]")
    return value


def get_float(fields: Mapping[str, Any], name: Field) -> float:
    """A finite float field."""
    value = fields.get(name)
    if type(value) is not float or value != value or value in (float("inf"), float("-inf")):
        raise ProtocolError(f"field {name.value!r} must be a finite float")
    return value


#: The SecAgg+ settings a round's first stage announces, one row each: the
#: :class:`secagg.params.SecAggSettings` attribute, its wire field, its type
#: and the bounds an institution accepts before it compares the value with
#: its own settings. The server writes them with :func:`announce`, the
#: institution reads them with :func:`read_announced`: one table for both.
ANNOUNCED: tuple[tuple[str, Field, type, int, int], ...] = (
    ("num_shares", Field.NUM_SHARES, int, 2, 1000),
    ("reconstruction_threshold", Field.THRESHOLD, int, 1, 1000),
    ("clipping_range", Field.CLIPPING_RANGE, float, 0, 0),
    ("quantization_range", Field.QUANTIZATION_RANGE, int, 1, 2**32),
    ("modulus_range", Field.MODULUS_RANGE, int, 2, 2**32),
    ("max_weight", Field.MAX_WEIGHT, float, 0, 0),
)


def announce(settings: Any, max_weight: float) -> dict[str, Any]:
    """The fields announcing ``settings`` (a ``SecAggSettings``), with the round's weight bound."""
    values = {name: getattr(settings, name) for name, *_ in ANNOUNCED}
    values["max_weight"] = max_weight
    return {field: float(values[name]) if kind is float else int(values[name]) for name, field, kind, *_ in ANNOUNCED}


def read_announced(fields: Mapping[str, Any]) -> dict[str, int | float]:
    """The announced settings, by attribute name, each checked for type and bounds.

    Raises
    ------
    ProtocolError
        Naming the first field that is missing, of the wrong type or out of bounds.
    """
    return {
        name: get_int(fields, field, low, high) if kind is int else get_float(fields, field)
        for name, field, kind, low, high in ANNOUNCED
    }


def get_str(fields: Mapping[str, Any], name: Field, max_len: int = 200) -> str:
    """A short str field."""
    value = fields.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ProtocolError(f"field {name.value!r} must be a string of 1 to {max_len} characters")
    return value


def get_bytes(fields: Mapping[str, Any], name: Field, max_len: int = MAX_BOX) -> bytes:
    """A bytes field of at most ``max_len`` bytes."""
    value = fields.get(name)
    if not isinstance(value, bytes) or not 0 < len(value) <= max_len:
        raise ProtocolError(f"field {name.value!r} must be 1 to {max_len} bytes")
    return value


def get_list(
    fields: Mapping[str, Any], name: Field, kind: type, max_items: int = MAX_PARTIES, max_len: int = MAX_BOX
) -> list[Any]:
    """A list field whose items all have type ``kind`` (bounded count and size)."""
    value = fields.get(name)
    if not isinstance(value, list) or len(value) > max_items:
        raise ProtocolError(f"field {name.value!r} must be a list of at most {max_items} items")
    for index, item in enumerate(value, start=1):
        if type(item) is not kind:
            raise ProtocolError(f"field {name.value!r} must hold only {kind.__name__} items")
        problem = _item_problem(item, max_len)
        if problem:
            raise ProtocolError(f"field {name.value!r}: item {index} of {len(value)} {problem}")
    return value


def _item_problem(item: Any, max_len: int) -> str:
    """Why ``item`` is out of bounds ("" when it is not); sizes only, never content."""
    if isinstance(item, (bytes, str)) and not 0 < len(item) <= max_len:
        return f"has {len(item)} {'bytes' if isinstance(item, bytes) else 'characters'}, outside [1, {max_len}]"
    if isinstance(item, int) and not 0 <= item < 2**64:
        return "is an integer outside [0, 2**64)"
    return ""


def same_length(*lists: list[Any]) -> None:
    """Parallel list fields must have one length."""
    if len({len(items) for items in lists}) > 1:
        raise ProtocolError("parallel list fields differ in length")


def get_stage(fields: Mapping[str, Any]) -> Stage:
    """The stage a message asks for; also checks the protocol marker."""
    if fields.get(Field.PROTOCOL) != PROTOCOL_NAME:
        raise ProtocolError(
            f"message is not {PROTOCOL_NAME} (found {str(fields.get(Field.PROTOCOL))[:40]!r})"
        )
    value = fields.get(Field.STAGE)
    try:
        return Stage(str(value))
    except ValueError:
        raise ProtocolError(f"unknown stage {str(value)[:40]!r}") from None


#: The version marker every message carries.
PROTOCOL_NAME = "fedfraud-secagg/1"
