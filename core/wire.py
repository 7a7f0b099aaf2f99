"""Small wire formats of fedfraud's own: refusal tokens and update digests.

Each carries a version tag; decoding ignores (fails closed on) anything else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


# ---------------------------------------------------------------------------
# Refusals. An institution that refuses a round raises an error whose text
# carries a token, so the server can log *who* refused *which rules* under
# *which policy hash*, although Flower reports client errors as plain text.
# ---------------------------------------------------------------------------
_REFUSAL_TAG = "fedfraud-refusal/1:"
_REFUSAL_RE = re.compile(re.escape(_REFUSAL_TAG) + r"([A-Za-z0-9_-]+={0,2})")


@dataclass(frozen=True)
class Refusal:
    """One institution's refusal of one round."""

    institution: str
    server_round: int
    rules: tuple[str, ...]
    policy_hash: str

    def token(self) -> str:
        """The refusal as a tagged, base64url-encoded JSON token."""
        body = json.dumps(
            {
                "institution": self.institution,
                "round": self.server_round,
                "rules": list(self.rules),
                "policy_hash": self.policy_hash,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        return _REFUSAL_TAG + base64.urlsafe_b64encode(body).decode("ascii")


def find_refusals(text: str) -> list[Refusal]:
    """Every well-formed refusal token in an error text (malformed ones are ignored)."""
    found: list[Refusal] = []
    for match in _REFUSAL_RE.finditer(text):
        try:
            data = json.loads(base64.urlsafe_b64decode(match.group(1)))
            refusal = Refusal(
                institution=str(data["institution"]),
                server_round=int(data["round"]),
                rules=tuple(str(rule) for rule in data["rules"]),
                policy_hash=str(data["policy_hash"]),
            )
        except (ValueError, KeyError, TypeError):
            continue
        found.append(refusal)
    return found


def update_digest(weights: list[npt.NDArray[np.floating]]) -> str:
    """SHA-256 over a model update's arrays (shapes, dtypes and bytes), tagged.

    An institution signs this in its round receipt: a commitment to exactly the
    update it contributed, which reveals nothing usable about the update.
    """
    digest = hashlib.sha256(b"fedfraud/update/v1\x00")
    for array in weights:
        data = np.ascontiguousarray(array)
        digest.update(f"{data.dtype.str}{data.shape}".encode("ascii"))
        digest.update(data.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# ckks mode: the server names the model the institutions hold by an id.
# ---------------------------------------------------------------------------
#: The model id of a run's first training round: the public initial model,
#: which the server sends (every later model exists only at the institutions).
CKKS_INITIAL_MODEL = "initial"


#: Start of a round's refusal when boosted-tree training stopped on purpose
#: (early stopping on the validation releases): the round is finished, not failed.
EARLY_STOPPING = "early stopping:"
