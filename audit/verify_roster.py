"""Verification step 3.8 of :func:`audit.verify.verify_log`: every secure-round node is on the roster.

A ``participants`` record lists, for each node that answered a secure round's
first stage, the institution it claimed and its signed key advertisement.
The verifier re-checks each advertisement under that institution's key from
the genesis, so the server's own word that a node "verified" counts for
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .record_views import ParticipantsBody
from .verdict import Verdict

__all__ = ["check_participants"]

#: ``fail(name, verdict, message)``: report a failed check at the record.
Fail = Callable[[str, Verdict, str], None]


def check_participants(
    body: dict[str, Any],
    genesis_keys: dict[str, Ed25519PublicKey],
    fail: Fail,
) -> None:
    """Check a participants record: each node's advertisement, and that none is unknown.

    1. The record is well formed (else RecordFormatError: a malformed record).
    2. A node the server marks verified must carry an advertisement that
       verifies under its institution's genesis key (else the server lied:
       TAMPERED).
    3. A node that is not verified took part without proving a roster
       identity, and two nodes proving the same institution is one identity
       used twice: either breaks the federation's roster (POLICY_VIOLATED).
    """
    from core.errors import CryptoError
    from secagg.hardened import Advertisement, Binding, verify_advertisement

    view = ParticipantsBody.parse(body)
    binding = Binding(view.federation, view.run, view.round, view.task, view.weight_bound)
    where = f"round {binding.server_round} ({binding.task})"
    seen: dict[str, int] = {}
    for node in view.nodes:
        node_id, inst = node.node, node.institution
        if not node.verified:
            fail("roster", Verdict.POLICY_VIOLATED,
                 f"{where}: node {node_id} took part without proving an identity on the roster "
                 f"(claimed {inst or 'nothing'!r})")
            continue
        key = genesis_keys.get(inst)
        advert = Advertisement(node_id, inst, node.seal_key, node.mask_key, node.signature)
        try:
            if key is None:
                raise CryptoError(f"{inst!r} is not a genesis institution")
            verify_advertisement(key, binding, advert)
        except CryptoError as exc:
            fail("roster", Verdict.TAMPERED,
                 f"{where}: node {node_id} is recorded as {inst!r}, but its advertisement does not verify ({exc})")
            continue
        if inst in seen:
            fail("roster", Verdict.POLICY_VIOLATED,
                 f"{where}: nodes {seen[inst]} and {node_id} both proved the identity {inst!r}")
        seen[inst] = node_id
