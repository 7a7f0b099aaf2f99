"""A ClientApp whose institution insurer-c corrupts its ckks contribution.

The product's ClientApp, with one mod in front of fedfraud's SecAgg+ mod: on
insurer-c's node (partition 2) it flips one bit in the first ciphertext of
its encrypted contribution, after signing, as a malicious institution (or
anything between it and the server) could.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client.app import client_fn
from client.secagg_mod import hardened_secagg_mod
from secagg.protocol import RECORD, Field

TAMPERER = 2


def tamper(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flip a bit of insurer-c's first ciphertext on its way out."""
    reply = call_next(msg, ctxt)
    if ctxt.node_config.get("partition-id") != TAMPERER or reply.has_error():
        return reply
    record = reply.content.config_records.get(RECORD)
    if record is None or Field.CKKS_BLOBS not in record:
        return reply
    blobs = [bytes(b) for b in record[Field.CKKS_BLOBS]]  # type: ignore[union-attr]
    first = bytearray(blobs[0])
    first[len(first) // 2] ^= 0x01
    blobs[0] = bytes(first)
    fields = dict(record)
    fields[Field.CKKS_BLOBS] = blobs
    reply.content.config_records[RECORD] = ConfigRecord(fields)
    return reply


app = ClientApp(client_fn=client_fn, mods=[tamper, hardened_secagg_mod])
