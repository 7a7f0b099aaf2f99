"""Ed25519 verification for the audit verifier: in this process, or across cores.

Every Ed25519 verification of the audit package (record signatures, receipts,
countersignatures, checkpoints) goes through :func:`verify_ed25519`.  Outside
:func:`run_with_signature_pool` it is exactly ``public_key.verify(signature,
message)``.  Inside it, a whole verification runs twice at most:

1. **Speculative run.**  Every signature is *assumed* to verify: the call
   returns at once and the triple (raw key, signature, message) is queued for
   a pool of worker processes, which verify batches of them while this process
   carries on with everything else (decoding, canonical checks, hashes, chain,
   Merkle tree, content).
2. If every queued signature verified, the run followed exactly the path the
   in-process run takes (each ``verify`` returned normally in both), so its
   result is the in-process result and is returned.
3. Otherwise (a signature failed, the run raised, or the pool broke), the run
   is repeated in this process with the pool's answers known: a signature the
   pool checked is answered from its result, any other is verified here.  The
   result is again exactly the in-process result, now with the failures.

So the verdict, every check and every message are those of the in-process
verification for any input; the pool only changes *where* the Ed25519
arithmetic runs.  A failure costs one more pass over the log without new
signature work.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["verify_ed25519", "available_cpus", "run_with_signature_pool"]

T = TypeVar("T")

#: Signatures sent to a worker at a time (large enough that pickling and
#: inter-process hand-over cost little next to ~70 µs per verification).
BATCH_SIZE = 500

#: (raw public key, signature, signed message)
_Task = tuple[bytes, bytes, bytes]


class _Deferred:
    """Step 1: answer "verifies" to every call, and have the pool check it."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool
        self._raw: dict[int, tuple[Ed25519PublicKey, bytes]] = {}
        self._batch: list[_Task] = []
        self.sent: list[tuple[list[_Task], Future[bytes]]] = []

    def verify(self, public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
        # The key object is kept beside its raw bytes so its id stays unique.
        known = self._raw.get(id(public_key))
        if known is None:
            known = self._raw[id(public_key)] = (public_key, public_key.public_bytes_raw())
        self._batch.append((known[1], signature, message))
        if len(self._batch) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.sent.append((batch, self._pool.submit(_verify_batch, batch)))

    def answers(self) -> list[tuple[list[_Task], bytes]]:
        """Each queued batch with the pool's answers, one byte per signature (waits for the pool)."""
        self.flush()
        return [(batch, future.result()) for batch, future in self.sent]


class _Known:
    """Step 3: answer from the pool's results; verify anything else here."""

    def __init__(self, known: dict[_Task, bool]) -> None:
        self._known = known

    def verify(self, public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
        ok = self._known.get((public_key.public_bytes_raw(), signature, message))
        if ok is None:
            public_key.verify(signature, message)
        elif not ok:
            raise InvalidSignature


_ORACLE: ContextVar[_Deferred | _Known | None] = ContextVar("audit_signature_oracle", default=None)


def verify_ed25519(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Verify an Ed25519 signature (RFC 8032) like ``public_key.verify``.

    Raises
    ------
    cryptography.exceptions.InvalidSignature
        If it does not verify (inside :func:`run_with_signature_pool`, possibly
        only in the repeated run; see the module docstring).
    """
    oracle = _ORACLE.get()
    if oracle is None:
        public_key.verify(signature, message)
    else:
        oracle.verify(public_key, signature, message)


# Worker side: keys are parsed once per process.
_WORKER_KEYS: dict[bytes, Ed25519PublicKey] = {}


def _verify_batch(batch: list[_Task]) -> bytes:
    """One byte per signature: 1 if it verifies, 0 if not."""
    out = bytearray(len(batch))
    for index, (raw_key, signature, message) in enumerate(batch):
        key = _WORKER_KEYS.get(raw_key)
        if key is None:
            key = _WORKER_KEYS[raw_key] = Ed25519PublicKey.from_public_bytes(raw_key)
        try:
            key.verify(signature, message)
            out[index] = 1
        except InvalidSignature:
            pass
    return bytes(out)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _start_method() -> str | None:
    """``"fork"`` where workers can be forked safely, else None (verify in-process).

    Forking starts workers in milliseconds, and is safe on Linux while this
    process has a single thread.  The other start methods are not used: they
    cost a fresh interpreter per worker and re-import the caller's
    ``__main__`` module, which a script without a ``__name__`` guard would
    run again.
    """
    if (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and threading.active_count() == 1):
        return "fork"
    return None


def run_with_signature_pool(run: Callable[[], T], workers: int) -> T:
    """Return ``run()`` with its Ed25519 verifications done by ``workers`` processes.

    ``run`` must be deterministic apart from its signature checks (it is
    called twice when a signature fails).  The result is what ``run()``
    returns outside this function (see the module docstring).
    """
    # 1. Speculative run: signatures assumed good, checked by the pool meanwhile.
    method = _start_method()
    if method is None:
        return run()  # workers cannot be forked safely here: verify in-process
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    except (OSError, ValueError, ImportError, NotImplementedError):
        return run()  # no processes here (e.g. a sandbox): verify in-process
    try:
        # Fork the workers now, while this process is small: forked later,
        # every page of parsed records it then touched would be copied.
        pool.submit(_verify_batch, [])
    except (BrokenProcessPool, OSError, RuntimeError):
        pool.shutdown(wait=True, cancel_futures=True)
        return run()
    deferred = _Deferred(pool)
    known: dict[_Task, bool] = {}
    try:
        token = _ORACLE.set(deferred)
        try:
            result = run()
        finally:
            _ORACLE.reset(token)
        # 2. Every signature verified: the speculative result is the result.
        answers = deferred.answers()
        if all(0 not in flags for _, flags in answers):
            return result
        known = {task: flag == 1 for batch, flags in answers for task, flag in zip(batch, flags)}
    except (BrokenProcessPool, OSError):
        known = {}  # the pool failed: verify everything in the repeated run
    except Exception:  # noqa: BLE001 - the repeated run raises it again, exactly
        known = {}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    # 3. Repeat in this process with the pool's answers known.
    token = _ORACLE.set(_Known(known))
    try:
        return run()
    finally:
        _ORACLE.reset(token)
