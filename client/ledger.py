"""The institution's own memory of what it contributed: one-time rounds.

A dishonest server can learn one institution's contribution by *differencing*:
have the same model trained or evaluated by {A, B, C}, then by {A, B}, and
subtract the two honest sums. It can also replay a round, or run more rounds
than the institution's policy allows. Flower's client keeps no memory between
runs, so the institution keeps its own, in its site folder (``state/``, mode
0700; the file 0600), where a restart does not reset it:

* each (run, round, task) is accepted once;
* a model (by hash) is trained, or evaluated, under one set of survivors only,
  across every run of this site: the same model under another cohort is
  refused;
* the training rounds of each run are counted against the policy's
  ``max_rounds``.

Writes are atomic (temporary file, then rename), so a crash leaves either the
old or the new ledger, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from core.errors import InputError

LEDGER_VERSION = "fedfraud-ledger/1"


class LedgerRefusal(Exception):
    """The ledger forbids this step; the text names the rule."""


class RoundLedger:
    """The site's ledger file; every method reads it fresh and writes it whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": LEDGER_VERSION, "rounds": [], "models": {}, "training": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: the round ledger cannot be read: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            raise InputError(f"{self.path}: not a {LEDGER_VERSION} file; refusing to continue")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def claim_round(self, run_id: int, server_round: int, task: str, max_rounds: int) -> None:
        """Accept (run, round, task) once; count training rounds against ``max_rounds``.

        Raises
        ------
        LedgerRefusal
            On a replayed round, or a training round beyond the policy's limit.
        """
        data = self._load()
        key = f"{run_id}:{server_round}:{task}"
        if key in data["rounds"]:
            raise LedgerRefusal(
                f"secagg.one-time: run {run_id} round {server_round} task {task} was "
                "already taken part in; a replayed round is refused"
            )
        if task == "train":
            trained = data["training"].setdefault(str(run_id), [])
            if len(trained) >= max_rounds:
                raise LedgerRefusal(
                    f"protection.max_rounds: this institution already trained {len(trained)} "
                    f"rounds of run {run_id}, its policy allows {max_rounds}"
                )
            trained.append(server_round)
        data["rounds"].append(key)
        self._save(data)

    def check_model(self, task: str, model_hash: str, cohort: list[str], record: bool) -> None:
        """Refuse the same model for the same task under a different cohort.

        With ``record`` the cohort is written (the moment the institution
        signs the survivor set: from then on its shares may be released).
        """
        data = self._load()
        key = f"{task}:{model_hash}"
        seen = data["models"].get(key)
        wanted = sorted(cohort)
        if seen is not None and seen != wanted:
            raise LedgerRefusal(
                f"secagg.differencing: this model was already summed for {task!r} with "
                f"{', '.join(seen)}; refusing it with {', '.join(wanted)} (the difference "
                "of the two sums would reveal an institution's contribution)"
            )
        if record and seen is None:
            data["models"][key] = wanted
            self._save(data)
