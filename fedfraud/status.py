"""``fedfraud status``: what a federation is doing, from its files (and its SuperLink).

Read-only. For a run directory (default: the newest under ``--runs-dir``) it
reports

* the **run state**: ``finished`` (``summary.json`` written), ``running``
  (the server folder's run lock is held by this run), or ``stopped`` (neither:
  the ServerApp ended without finishing, see :mod:`server.busy`);
* the **rounds**: recorded, aggregated and requested, and the last round's
  released metrics;
* the **audit log**: records, the last record's kind and time, the last
  checkpoint and who has witnessed it;
* with ``--superlink CONNECTION`` (a connection of the operator's ``flwr``
  configuration), the **SuperNodes** the SuperLink knows, online or not,
  each named by the institution that proved that node id in the run's
  audit log (Flower's own listing shows node ids only).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.record import RecordKind
from core.errors import InputError
from core.layout import RunLayout, ServerLayout


@dataclass
class RunStatus:
    """Everything ``fedfraud status`` reports about one run."""

    run_dir: str
    run_name: str
    state: str
    server_dir: str
    lock_holder: dict[str, Any] | None
    rounds_requested: int
    rounds_recorded: int
    rounds_aggregated: int
    last_round: dict[str, Any] | None
    audit_records: int
    audit_last_kind: str
    audit_last_time: str
    checkpoint_size: int
    checkpoint_witnessed_by: list[str]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    #: A stopped run's last accepted model (``<run-dir>/model.npz``) and its round, if it has one.
    resume_model: str = ""
    resume_round: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def newest_run(runs_dir: Path) -> Path:
    """The most recently started run directory under ``runs_dir``."""
    if not runs_dir.is_dir():
        raise InputError(f"{runs_dir}: no such folder of runs")
    runs = [p for p in runs_dir.iterdir() if RunLayout(p).config.is_file()]
    if not runs:
        raise InputError(f"{runs_dir}: holds no run directory (no */config.json)")
    return max(runs, key=lambda p: RunLayout(p).config.stat().st_mtime)


def lock_holder(server_dir: Path) -> dict[str, Any] | None:
    """Who holds the server folder's run lock now (None if nobody does)."""
    path = ServerLayout(server_dir).run_lock
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            return holder if isinstance(holder, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _audit(run_dir: Path) -> tuple[list[dict[str, Any]], int, list[str]]:
    """(records, last checkpoint's size, institutions that witnessed it) of the run's log."""
    path = RunLayout(run_dir).audit_log
    records: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line)["record"])
            except (ValueError, KeyError, TypeError):
                break  # a torn last line: the verifier says more
    size = 0
    witnesses: list[str] = []
    for record in records:
        body = record.get("body", {})
        if record.get("kind") == RecordKind.CHECKPOINT.value:
            size = int(body.get("checkpoint", {}).get("tree_size", 0))
            witnesses = []
        elif record.get("kind") == RecordKind.WITNESS.value:
            signed = body.get("countersignature", body)
            who = signed.get("institution") if isinstance(signed, dict) else None
            if isinstance(who, str) and who not in witnesses:
                witnesses.append(who)
    return records, size, sorted(witnesses)


def _node_names(records: list[dict[str, Any]]) -> dict[int, str]:
    """Node id -> institution, as proved by signed advertisements in the audit log."""
    names: dict[int, str] = {}
    for record in records:
        if record.get("kind") != RecordKind.PARTICIPANTS.value:
            continue
        for node in record.get("body", {}).get("nodes", []):
            if node.get("verified") is True:
                names[int(node["node"])] = str(node["institution"])
    return names


def superlink_nodes(connection: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The SuperLink's SuperNodes (``flwr supernode list``), named from the audit log."""
    from fedfraud.simulation import flower_tool

    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [flower_tool("flwr"), "supernode", "list", connection, "--format", "json"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"cannot ask the SuperLink {connection!r}: {exc}") from exc
    text = result.stdout
    start = text.find("{")
    try:
        listing = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        listing = {}
    if result.returncode != 0 or not isinstance(listing, dict) or "nodes" not in listing:
        raise InputError(
            f"`flwr supernode list {connection}` failed ({result.returncode}): "
            + (text + result.stderr).strip()[-500:]
        )
    names = _node_names(records)
    nodes = []
    for node in listing.get("nodes", []):
        node_id = int(node.get("node-id", node.get("node_id", -1)))
        nodes.append({
            "node_id": node_id,
            "institution": names.get(node_id, "unknown (not proved in this run's audit log)"),
            "status": str(node.get("status", "?")),
            "last_seen": str(node.get("online-at") or node.get("offline-at") or ""),
        })
    return sorted(nodes, key=lambda n: (n["institution"], n["node_id"]))


def run_status(run_dir: Path, server_dir: Path | None = None, connection: str | None = None) -> RunStatus:
    """Read a run directory (and its server folder) into a :class:`RunStatus`."""
    from server.rundir import read_rounds

    config_path = RunLayout(run_dir).config
    if not config_path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        run_config = dict(config["run_config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{config_path}: unreadable run config: {exc}") from exc
    server = server_dir or Path(str(run_config.get("server-dir", "")))
    run_name = str(config.get("run_name") or run_config.get("run-name") or run_dir.name)
    holder = lock_holder(server) if str(server) else None
    if RunLayout(run_dir).summary.is_file():
        state = "finished"
    elif holder is not None and holder.get("run_name") == run_name:
        state = "running"
    else:
        state = "stopped (no summary.json and no ServerApp holds the run lock)"
    rounds = read_rounds(run_dir)
    records, size, witnesses = _audit(run_dir)
    last = records[-1] if records else {}
    last_round = None
    if rounds:
        final = rounds[-1]
        last_round = {
            "round": final.get("server_round"),
            "accepted": final.get("accepted"),
            "refusal": final.get("refusal") or "",
            "cohort": final.get("cohort"),
            "metrics": final.get("metrics") or {},
        }
    return RunStatus(
        run_dir=str(run_dir),
        run_name=run_name,
        state=state,
        server_dir=str(server),
        lock_holder=holder,
        rounds_requested=int(run_config.get("num-server-rounds", 0)),
        rounds_recorded=len(rounds),
        rounds_aggregated=sum(1 for r in rounds if r.get("accepted")),
        last_round=last_round,
        audit_records=len(records),
        audit_last_kind=str(last.get("kind", "")),
        audit_last_time=str(last.get("ts", "")),
        checkpoint_size=size,
        checkpoint_witnessed_by=witnesses,
        nodes=superlink_nodes(connection, records) if connection else [],
        **_resume(run_dir, state, rounds),
    )


def _resume(run_dir: Path, state: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """For a stopped run: the model its last accepted round left, to start a new run from."""
    accepted = [int(r.get("server_round", 0)) for r in rounds if r.get("accepted")]
    model = RunLayout(run_dir).weights
    if not state.startswith("stopped") or not accepted or not model.is_file():
        return {}
    return {"resume_model": str(model.resolve()), "resume_round": max(accepted)}


def render(status: RunStatus, now: dt.datetime | None = None) -> list[str]:
    """The status as lines for a person (nothing wrapped or styled)."""
    lines = [f"run {status.run_name}: {status.state}", f"  run directory: {status.run_dir}"]
    holder = status.lock_holder
    if holder is not None:
        lines.append(
            f"  server folder {status.server_dir}: busy with run {holder.get('run_name')!r} "
            f"(Flower run {holder.get('flower_run')}, pid {holder.get('pid')}, started {holder.get('started')})"
        )
    elif status.server_dir:
        lines.append(f"  server folder {status.server_dir}: idle")
    lines.append(
        f"  rounds: {status.rounds_recorded} of {status.rounds_requested} recorded, "
        f"{status.rounds_aggregated} aggregated"
    )
    if status.last_round is not None:
        last = status.last_round
        metrics = last["metrics"]
        shown = ", ".join(
            f"{k} {metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k} {metrics[k]}"
            for k in ("auc_pr", "recall", "false_negatives")
            if k in metrics
        )
        verdict = "aggregated" if last["accepted"] else f"not aggregated ({last['refusal']})"
        lines.append(f"  last round {last['round']}: {verdict}; {shown or 'no metrics released'}")
    if status.audit_records:
        lines.append(
            f"  audit log: {status.audit_records} records, last {status.audit_last_kind} at "
            f"{status.audit_last_time}; last checkpoint of {status.checkpoint_size} records witnessed by "
            f"{', '.join(status.checkpoint_witnessed_by) or 'nobody yet'}"
        )
    else:
        lines.append("  audit log: none yet")
    if status.resume_model:
        lines.append(
            f"  the run cannot resume; its last accepted model (round {status.resume_round}) is "
            f"{status.resume_model}. Start a new run from it with: --set initial-model={status.resume_model}"
        )
    elif status.state.startswith("stopped"):
        lines.append("  the run cannot resume and accepted no round: start a new run")
    for node in status.nodes:
        lines.append(
            f"  SuperNode {node['node_id']}: {node['institution']}, {node['status']}"
            + (f" (last seen {node['last_seen']})" if node["last_seen"] else "")
        )
    return lines
