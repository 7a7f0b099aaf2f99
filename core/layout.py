"""Where every party's files live on disk, spelled once.

Three folders make a federation on disk:

* an institution's **site folder** (:class:`SiteLayout`): everything the
  institution controls: its policy, its keys, its audit logs, the partner
  keys it pinned, its round ledger, the code it approved;
* an institution's **data folder** (:class:`DataLayout`): its
  ``train.csv`` and ``test.csv``, which never leave it;
* the **server's folder** (:class:`ServerLayout`, run config ``server-dir``):
  its audit key and its copies of the institutions' policies and schemas.

``fedfraud demo`` plays every party on one machine under one folder
(:class:`DemoSites`): ``sites/<id>/`` and ``server/``.

Each run writes a **run directory** (:class:`RunLayout`, run config
``run-dir``): its config, rounds, audit log, model and the files that let
an institution use the model.

``fedfraud provision init`` writes all of them under one output folder
(:class:`Layout`): the CA, the SuperLink's TLS files, ``server/`` and
``institutions/<id>/``. The names here are what existing folders hold: change
one and every provisioned federation stops working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The federation's schema (bring-your-own data) in an institution's site folder.
SCHEMA_FILE = "schema.toml"
#: The folder of an institution's site that holds the partner keys it pinned.
PARTNERS_DIR = "partners"
#: The bundles an institution approved (:mod:`client.approval`), in its site folder.
APPROVALS_FILE = "approved-code.json"
#: An institution's two data splits, in its data folder.
TRAIN_FILE = "train.csv"
TEST_FILE = "test.csv"
#: The file by which a party (the server in its folder, an institution in its
#: site folder) opts in, itself, to an ``unsafe-plain`` benchmark run.
UNSAFE_OPT_IN = "UNSAFE-ALLOW-PLAIN"
#: The run lock in the server's folder (one run per federation at a time).
LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class SiteLayout:
    """An institution's site folder.

    ``provision institution`` and ``provision init`` write the keys, the
    policy and the node config; the ClientApp reads them and writes the audit
    logs, the refusals and the ledger.
    """

    root: Path

    # Written by provisioning --------------------------------------------------

    @property
    def policy(self) -> Path:
        """Its own policy, enforced on its side (never taken from the server)."""
        return self.root / "policy.toml"

    @property
    def audit_key(self) -> Path:
        """Its Ed25519 signing key for receipts and countersignatures (PEM PKCS#8, 0600)."""
        return self.root / "signing.key"

    @property
    def audit_pub(self) -> Path:
        """The public half of :attr:`audit_key` (PEM)."""
        return self.root / "signing.pub"

    @property
    def server_audit_pub(self) -> Path:
        """The server audit key it trusts for checkpoints."""
        return self.root / "server-audit.pub"

    @property
    def schema(self) -> Path:
        """The federation's schema (bring-your-own data), read by its ClientApp."""
        return self.root / SCHEMA_FILE

    @property
    def auth_key(self) -> Path:
        """SuperNode auth private key (OpenSSH, EC P-384), mode 0600."""
        return self.root / "supernode-auth.key"

    @property
    def auth_pub(self) -> Path:
        """SuperNode auth public key (OpenSSH), registered at the SuperLink."""
        return self.root / "supernode-auth.pub"

    @property
    def ca_cert(self) -> Path:
        """Copy of the federation's CA certificate (to check the SuperLink)."""
        return self.root / "ca.pem"

    @property
    def node_config(self) -> Path:
        """Node config for ``flower-supernode --node-config``."""
        return self.root / "node-config.toml"

    @property
    def registration(self) -> Path:
        """Public keys the institution sends the operator (``provision institution``)."""
        return self.root / "registration.json"

    @property
    def partners_dir(self) -> Path:
        """The partner keys it pinned (its approved roster)."""
        return self.root / PARTNERS_DIR

    def partner_key(self, institution_id: str) -> Path:
        """The pinned Ed25519 public key of one partner."""
        return self.partners_dir / f"{institution_id}.pub"

    @property
    def approvals(self) -> Path:
        """The app bundles it approved (:mod:`client.approval`)."""
        return self.root / APPROVALS_FILE

    # Written while it takes part ----------------------------------------------

    @property
    def audit_dir(self) -> Path:
        """Its own audit logs, one per run, and :attr:`refusal_log`."""
        return self.root / "audit"

    @property
    def refusal_log(self) -> Path:
        """Its own record of every round and bundle it refused (JSON lines)."""
        return self.audit_dir / "refusals.jsonl"

    @property
    def state_dir(self) -> Path:
        """Its round ledger and the CKKS model it alone can read."""
        return self.root / "state"

    @property
    def ledger(self) -> Path:
        """The round ledger (one-time rounds, differencing, max_rounds)."""
        return self.state_dir / "secagg-ledger.json"

    def ckks_model(self, run: int) -> Path:
        """The global model of ``ckks`` run ``run``, decrypted here and kept here only (0600)."""
        return self.state_dir / f"ckks-model-{run}.npz"

    def ckks_model_meta(self, run: int) -> Path:
        """Round, model id and hash of :meth:`ckks_model`."""
        return self.state_dir / f"ckks-model-{run}.json"

    def newest_ckks_model(self) -> Path | None:
        """The most recently written :meth:`ckks_model`, if any."""
        return max(self.state_dir.glob("ckks-model-*.npz"), key=lambda p: p.stat().st_mtime, default=None)

    @property
    def unsafe_opt_in(self) -> Path:
        """Its own bounded consent to an ``unsafe-plain`` benchmark run, if it gave one."""
        return self.root / UNSAFE_OPT_IN

    @property
    def shim_dir(self) -> Path:
        """Where the ``flwr-clientapp`` shim behind its approved-code check is written."""
        return self.root / "bin"

    @property
    def flower_home(self) -> Path:
        """``FLWR_HOME`` of its Flower processes (installed bundles, SuperNode state)."""
        return self.root / "flower-home"

    @property
    def synthetic_dir(self) -> Path:
        """The synthetic validation releases it made (``fedfraud`` demo)."""
        return self.root / "synthetic"

    @property
    def logs_dir(self) -> Path:
        """Logs of its SuperNode (``fedfraud supernode``)."""
        return self.root / "logs"


@dataclass(frozen=True)
class DataLayout:
    """An institution's data folder (which may be elsewhere than its site)."""

    root: Path

    @property
    def train(self) -> Path:
        """Its training split (never leaves the site)."""
        return self.root / TRAIN_FILE

    @property
    def test(self) -> Path:
        """Its test split (never leaves the site)."""
        return self.root / TEST_FILE

    @property
    def splits(self) -> tuple[Path, Path]:
        """:attr:`train` and :attr:`test`, in that order."""
        return self.train, self.test


@dataclass(frozen=True)
class ServerLayout:
    """The server's folder (run config ``server-dir``)."""

    root: Path

    @property
    def audit_key(self) -> Path:
        """The server's Ed25519 audit signing key (0600)."""
        return self.root / "audit.key"

    @property
    def audit_pub(self) -> Path:
        """The server's Ed25519 audit public key."""
        return self.root / "audit.pub"

    @property
    def policies_dir(self) -> Path:
        """The copies of the institutions' policies the server was given."""
        return self.root / "policies"

    def policy(self, institution_id: str) -> Path:
        """The server's copy of one institution's policy."""
        return self.policies_dir / f"{institution_id}.toml"

    @property
    def schemas_dir(self) -> Path:
        """The copies of the institutions' schemas (bring-your-own data)."""
        return self.root / "schemas"

    def schema(self, institution_id: str) -> Path:
        """The server's copy of one institution's schema."""
        return self.schemas_dir / f"{institution_id}.toml"

    def schemas(self, institution_ids: Iterable[str]) -> dict[str, Path]:
        """:meth:`schema` of each institution, in the order given."""
        return {institution: self.schema(institution) for institution in institution_ids}

    @property
    def validation_dir(self) -> Path:
        """Synthetic validation releases the institutions gave the server."""
        return self.root / "validation"

    @property
    def unsafe_opt_in(self) -> Path:
        """The server's own bounded consent to an ``unsafe-plain`` benchmark run, if it gave one."""
        return self.root / UNSAFE_OPT_IN

    @property
    def run_lock(self) -> Path:
        """The lock a run holds while it runs (one run per federation at a time)."""
        return self.root / LOCK_FILE


def server_schema_file(server_dir: Path, institution_id: str) -> Path:
    """Where the server in ``server_dir`` keeps its copy of an institution's schema."""
    return ServerLayout(server_dir).schema(institution_id)


@dataclass(frozen=True)
class DemoSites:
    """Where the demo's parties keep their files (``fedfraud demo``: one machine plays every party)."""

    root: Path

    @property
    def sites_dir(self) -> Path:
        """Parent of every institution's site folder."""
        return self.root / "sites"

    @property
    def server_dir(self) -> Path:
        """The server's folder (its audit key and the policies it knows)."""
        return self.root / "server"

    @property
    def server(self) -> ServerLayout:
        """What is in :attr:`server_dir`."""
        return ServerLayout(self.server_dir)

    def site(self, institution: str) -> Path:
        """One institution's site folder."""
        return self.sites_dir / institution

    def site_layout(self, institution: str) -> SiteLayout:
        """What is in one institution's :meth:`site` folder."""
        return SiteLayout(self.site(institution))


@dataclass(frozen=True)
class Layout:
    """Everything ``fedfraud provision init`` writes under ``root``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (public)."""
        return self.root / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA private key: keep it offline once provisioning is done."""
        return self.root / "ca" / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The SuperLink's TLS certificate."""
        return self.root / "superlink" / "server.pem"

    @property
    def server_key(self) -> Path:
        """The SuperLink's TLS private key."""
        return self.root / "superlink" / "server.key"

    @property
    def superlink_ca(self) -> Path:
        """Copy of the CA certificate beside the SuperLink's files."""
        return self.root / "superlink" / "ca.pem"

    @property
    def server_dir(self) -> Path:
        """The server's folder (run config ``server-dir``)."""
        return self.root / "server"

    @property
    def server(self) -> ServerLayout:
        """What is in :attr:`server_dir`."""
        return ServerLayout(self.server_dir)

    @property
    def server_audit_key(self) -> Path:
        """The server's Ed25519 audit signing key."""
        return self.server.audit_key

    @property
    def server_audit_pub(self) -> Path:
        """The server's Ed25519 audit public key."""
        return self.server.audit_pub

    def server_policy(self, institution_id: str) -> Path:
        """The server's copy of an institution's policy."""
        return self.server.policy(institution_id)

    @property
    def trusted_keys(self) -> Path:
        """``{institution: base64 raw Ed25519 public key}`` for ``audit verify --keys``."""
        return self.root / "trusted_keys.json"

    @property
    def manifest(self) -> Path:
        """What was provisioned: public data only."""
        return self.root / "federation.json"

    def institution(self, institution_id: str) -> SiteLayout:
        """One institution's site folder."""
        return SiteLayout(self.root / "institutions" / institution_id)


#: The files of a run directory (run config ``run-dir``), by name.
CONFIG_FILE = "config.json"
ROUNDS_FILE = "rounds.jsonl"
SUMMARY_FILE = "summary.json"
AUDIT_FILE = "audit.jsonl"
MODEL_FILE = "model.pt"
WEIGHTS_FILE = "model.npz"
#: ``model = "gbdt"``: the ensemble as JSON, and a numpy-only scorer for it.
GBDT_FILE = "model.json"
GBDT_SCORER_FILE = "score_gbdt.py"
SCORING_FILE = "scoring.json"
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_MD = "model_card.md"
FLOWER_LOG = "flower.log"


@dataclass(frozen=True)
class RunLayout:
    """One run's directory on the server: what the ServerApp writes, and the launcher's Flower log."""

    root: Path

    @property
    def config(self) -> Path:
        """The run config and plan, written first (a run directory is one that holds it)."""
        return self.root / CONFIG_FILE

    @property
    def rounds(self) -> Path:
        """One JSON line per finished round."""
        return self.root / ROUNDS_FILE

    @property
    def summary(self) -> Path:
        """Written last: the run finished."""
        return self.root / SUMMARY_FILE

    @property
    def audit_log(self) -> Path:
        """The server's signed audit log."""
        return self.root / AUDIT_FILE

    @property
    def weights(self) -> Path:
        """The MLP's weights by layer name (the last accepted model while the run goes on)."""
        return self.root / WEIGHTS_FILE

    @property
    def gbdt_model(self) -> Path:
        """``model = "gbdt"``: the ensemble as JSON."""
        return self.root / GBDT_FILE

    @property
    def scoring(self) -> Path:
        """What ``fedfraud score`` needs to apply the model to new rows."""
        return self.root / SCORING_FILE

    @property
    def model_card_json(self) -> Path:
        """The model card, for machines."""
        return self.root / MODEL_CARD_JSON

    @property
    def model_card_md(self) -> Path:
        """The model card, for people."""
        return self.root / MODEL_CARD_MD

    @property
    def flower_log(self) -> Path:
        """Flower's own output for the run (written by the launcher)."""
        return self.root / FLOWER_LOG
