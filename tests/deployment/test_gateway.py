"""The fleet gateway in front of a real SuperLink, with real SuperNodes, on 127.0.0.1.

Flower 1.42's SuperLink serves the Fleet, Control and Runtime APIs on one
port and authenticates no Control API caller. The SuperLink here listens on
loopback (``Deployment.host``); outsiders and institutions reach only the
gateway. Each test is named after the attack it stops, and where it can,
shows that the same request straight to the SuperLink succeeds (so the test
would fail without the gateway). Every process is stopped by a finalizer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfraud.deployment import (
    CONNECTION_NAME,
    Deployment,
    write_connection,
)
from core.errors import ConfigError, InputError
from fedfraud.gateway import (
    DEFAULT_MAX_BODY_BYTES,
    GATEWAY_ID,
    Endpoint,
    GatewayProcess,
    GatewaySettings,
    PathPolicy,
    Refusal,
)
from core.layout import Layout
from fedfraud.federation_file import Federation, load_federation
from fedfraud.pki import make_supernode_auth_key
from fedfraud.simulation import flower_env, flower_tool, free_port
from fraud.generator_files import ensure_federation_data
# Imported under the name pytest gives the module (its rootdir-relative
# package, "deployment"), so it works with `pytest` and `python -m pytest`
# alike and is never imported twice.
from deployment.test_deployment import (
    INSTITUTIONS,
    ROWS,
    TASK_POLL_INTERVAL,
    _federation_file,
    two_sided_provisioning,
)

CONTROL_PATH = "/v1/control/list-runs"
PROTOBUF = {"content-type": "application/protobuf"}


@dataclass
class Behind:
    """A SuperLink on loopback, its fleet gateway, and an outsider's ``flwr`` home."""

    deployment: Deployment
    gateway: GatewayProcess
    outsider_home: Path
    registered: dict[str, int]

    @property
    def layout(self) -> Layout:
        return self.deployment.layout

    def superlink_log(self) -> str:
        return (self.deployment.work_dir / "logs" / "superlink.log").read_text(
            encoding="utf-8", errors="replace"
        )

    def gateway_log(self) -> str:
        return self.gateway.log_path.read_text(encoding="utf-8", errors="replace")

    def outsider_flwr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``flwr`` as an outsider runs it: the CA certificate and the gateway's address."""
        return subprocess.run(  # noqa: S603 - fixed argv
            [flower_tool("flwr"), *args],
            env=flower_env(self.outsider_home),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Federation, Layout]:
    """Three institutions' data and two-sided provisioning (as in test_deployment)."""
    root = tmp_path_factory.mktemp("gateway-federation")
    ensure_federation_data(root / "data", list(INSTITUTIONS), ROWS, 7)
    federation = load_federation(_federation_file(root))
    two_sided_provisioning(federation, root / "keys")
    return federation, Layout((root / "keys").resolve())


@pytest.fixture(scope="module")
def behind(
    provisioned: tuple[Federation, Layout],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Behind]:
    """SuperLink on 127.0.0.1 with every institution registered; the gateway in front."""
    federation, layout = provisioned
    work = tmp_path_factory.mktemp("gateway-work")
    deployment = Deployment(layout, federation, work, task_poll_interval=TASK_POLL_INTERVAL)
    request.addfinalizer(deployment.close)
    deployment.start_superlink()
    registered = deployment.register_all(INSTITUTIONS)
    settings = GatewaySettings(
        listen=Endpoint("127.0.0.1", free_port()),
        upstream=Endpoint.parse(deployment.address, "--upstream"),
        ca_cert=layout.ca_cert,
        ssl_certfile=layout.server_cert,
        ssl_keyfile=layout.server_key,
    )
    gateway = GatewayProcess(
        settings,
        work / "logs" / "gateway.log",
        log_level="DEBUG",  # one line per forwarded request, to show SuperNodes used it
        # The deployment's own spawn: its close() stops the gateway too.
        spawn=lambda name, argv, log: deployment._spawn(name, argv, work / "gateway-home", log),
    )
    gateway.start()
    outsider_home = work / "outsider-home"
    write_connection(outsider_home, gateway.address, layout.ca_cert)
    yield Behind(deployment, gateway, outsider_home, registered)
    started = list(deployment.processes)
    deployment.close()
    assert all(not p.alive() for p in started), "processes left running"


@pytest.fixture(scope="module")
def online_through_gateway(behind: Behind) -> Behind:
    """Every institution's SuperNode, pointed at the gateway, online.

    Each starts exactly as ``Deployment.start_supernode`` starts it (the
    institution's ``fedfraud supernode`` with its approved code), through a
    view of the deployment whose ``address`` is the gateway's: the view
    shares the deployment's process list and SuperNode map, so the
    deployment's close() stops them and its wait_online() sees them.
    """
    via_gateway = dataclasses.replace(behind.deployment, fleet_address=behind.gateway.address)
    for name in INSTITUTIONS:
        via_gateway.start_supernode(name)
    behind.deployment.wait_online(len(INSTITUTIONS))
    return behind


# -- the rule, without processes ------------------------------------------------------

# Each attack is a request target as sent on the wire; none may reach the SuperLink.
ATTACKS = {
    "control_api": CONTROL_PATH,
    "runtime_api": "/v1/runtime/get-nodes",
    "dot_dot_out_of_fleet": "/v1/fleet/../control/list-runs",
    "dot_then_dot_dot": "/v1/fleet/./../control/list-runs",
    "encoded_dots": "/v1/fleet/%2e%2e/control/list-runs",
    "encoded_dots_upper": "/v1/fleet/%2E%2E/control/list-runs",
    "encoded_slash": "/v1/fleet/..%2fcontrol/list-runs",
    "double_slash_prefix": "//v1/control/list-runs",
    "double_slash_in_fleet": "/v1/fleet//../control/list-runs",
    "upper_case_control": "/V1/CONTROL/list-runs",
    "upper_case_fleet": "/V1/FLEET/pull-messages",
    "path_parameter": "/v1/fleet/..;/control/list-runs",
    "trailing_slash": "/v1/fleet/pull-messages/",
    "absolute_form": "https://127.0.0.1/v1/control/list-runs",
    "openapi_schema": "/openapi.json",
    "swagger_docs": "/docs",
}


@pytest.mark.parametrize("target", ATTACKS.values(), ids=ATTACKS.keys())
def test_path_policy_refuses_every_attack_target(target: str) -> None:
    with pytest.raises(Refusal) as info:
        PathPolicy().check("POST", target.encode("ascii"))
    assert info.value.status == 403


def test_path_policy_forwards_every_path_flowers_supernode_calls() -> None:
    # Read from Flower's own client, so an upgrade that adds a path outside
    # /v1/fleet/ fails here instead of in production.
    import flwr.supernode.fleet_http_client as fleet_client

    paths = re.findall(r'path="([^"]+)"', inspect.getsource(fleet_client))
    assert len(paths) == 12
    for path in paths:
        assert PathPolicy().check("POST", path.encode("ascii")) == path


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS", "HEAD", "CONNECT"])
def test_path_policy_refuses_methods_the_fleet_api_does_not_use(method: str) -> None:
    with pytest.raises(Refusal, match="not used by the Fleet API"):
        PathPolicy().check(method, b"/v1/fleet/pull-messages")


@pytest.mark.parametrize("entry", ["/", "/v1/", "/v1/control/", "/V1/Runtime/x/", "/v1/fleet/../"])
def test_allowlist_that_would_open_a_protected_api_is_refused(
    entry: str, provisioned: tuple[Federation, Layout]
) -> None:
    _, layout = provisioned
    with pytest.raises(ConfigError, match="--allow"):
        _settings(layout, allow=(entry,))


def test_gateway_refuses_to_start_in_front_of_a_remote_superlink(
    provisioned: tuple[Federation, Layout],
) -> None:
    _, layout = provisioned
    # Arrange / Act: the CLI, as an operator would type it.
    result = _gateway_cli(layout, "--upstream", "192.0.2.10:9093")
    # Assert
    assert result.returncode == ConfigError.exit_code
    assert "--upstream: 192.0.2.10:9093 is not a loopback address" in result.stderr
    assert "--unsafe-remote-upstream" in result.stderr


def test_gateway_names_a_missing_certificate_file(
    provisioned: tuple[Federation, Layout], tmp_path: Path
) -> None:
    _, layout = provisioned
    missing = tmp_path / "nowhere" / "ca.pem"
    result = _gateway_cli(layout, "--ca-cert", str(missing))
    assert result.returncode == InputError.exit_code
    assert f"--ca-cert: {missing} does not exist" in result.stderr


# -- real SuperLink, real gateway ----------------------------------------------------------


def test_outsider_cannot_list_runs_through_the_fleet_gateway(behind: Behind) -> None:
    forwarded = f'"POST {CONTROL_PATH} HTTP/1.1"'
    before = behind.superlink_log().count(forwarded)
    # Act: the outsider's `flwr ls`, aimed at the gateway with the public CA certificate.
    outsider = behind.outsider_flwr("ls", CONNECTION_NAME)
    # Assert: refused with the gateway's reason...
    assert outsider.returncode != 0
    assert "fedfraud fleet gateway: the SuperLink's Control API is not served" in (
        outsider.stdout + outsider.stderr
    )
    # ...logged with method, path and peer...
    assert re.search(
        rf"refused POST '{CONTROL_PATH}' from 127\.0\.0\.1:\d+ \(403\)", behind.gateway_log()
    )
    # ...and never forwarded, while the same command on loopback does list runs:
    # without the gateway, anyone who can reach the port could.
    assert behind.superlink_log().count(forwarded) == before
    listing = behind.deployment.flwr("ls", CONNECTION_NAME, "--format", "json")
    assert json.loads(listing[listing.find("{") :])["success"] is True
    assert behind.superlink_log().count(forwarded) > before


def test_outsider_cannot_register_a_rogue_supernode_through_the_fleet_gateway(
    behind: Behind, tmp_path: Path
) -> None:
    # Arrange: a well-formed SuperNode public key the federation never saw.
    _, public = make_supernode_auth_key()
    rogue = tmp_path / "rogue.pub"
    rogue.write_bytes(public)
    # Act
    result = behind.outsider_flwr(
        "supernode", "register", str(rogue), CONNECTION_NAME, "--name", "rogue"
    )
    # Assert: refused, and the SuperLink (asked on loopback) knows only the
    # institutions, which the `behind` fixture registered with this very
    # command on loopback: without the gateway, it would have worked.
    assert result.returncode != 0
    assert "fedfraud fleet gateway" in result.stdout + result.stderr
    assert "/v1/control/register-node" in behind.gateway_log()
    node_ids = {int(node["node-id"]) for node in behind.deployment.nodes()}
    assert node_ids == set(behind.registered.values())


def test_path_traversal_to_the_control_api_is_refused(behind: Behind) -> None:
    # Arrange: raw requests, byte for byte (httpx would normalise "..").
    log_before = len(behind.superlink_log())
    # Act
    answers = {name: _raw_post(behind, target) for name, target in ATTACKS.items()}
    # Assert: every one refused by the gateway itself, with its marker...
    for name, (status, body) in answers.items():
        assert status == 403, name
        assert json.loads(body)["gateway"] == GATEWAY_ID, name
    # ...and none reached the SuperLink's Control API.
    new_lines = behind.superlink_log()[log_before:]
    assert "/control/" not in new_lines and "%2e" not in new_lines.lower()
    # Control: the same raw helper does get a canonical Fleet path through (the
    # SuperLink's node authentication answers, not the gateway).
    status, body = _raw_post(behind, "/v1/fleet/get-run")
    assert status == 401
    assert GATEWAY_ID not in body.decode("utf-8", "replace")


def test_oversized_body_is_refused_before_it_reaches_the_superlink(behind: Behind) -> None:
    status, body = _raw_post(
        behind, "/v1/fleet/push-object", content_length=DEFAULT_MAX_BODY_BYTES + 1
    )
    assert status == 413
    assert json.loads(body)["gateway"] == GATEWAY_ID


def test_supernode_reaches_the_superlink_through_the_fleet_gateway(
    online_through_gateway: Behind,
) -> None:
    behind = online_through_gateway
    # Assert: the SuperLink (asked on loopback) lists every institution online...
    online = [n for n in behind.deployment.nodes() if n.get("status") == "online"]
    assert len(online) == len(INSTITUTIONS)
    # ...and their requests went through the gateway...
    assert '"POST /v1/fleet/activate-node HTTP/1.1" 200' in behind.superlink_log()
    assert re.search(r"forwarded POST '/v1/fleet/activate-node' from 127\.0\.0\.1:\d+: 200",
                     behind.gateway_log())
    # ...and the gateway logged no SuperNode's signature, key or timestamp header.
    assert "flwr-signature" not in behind.gateway_log().lower()
    assert "flwr-public-key" not in behind.gateway_log().lower()


# -- mutual TLS ---------------------------------------------------------------------------


def test_mtls_gateway_refuses_a_client_without_a_federation_certificate(
    behind: Behind, tmp_path: Path
) -> None:
    # Arrange: a second gateway that requires client certificates from the
    # federation's CA, a client certificate from it, and one from a stranger.
    layout = behind.layout
    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    member = _client_cert(tmp_path / "member", (ca_key, ca_cert.subject))
    stranger = _client_cert(tmp_path / "stranger", None)
    settings = _settings(
        layout,
        upstream=Endpoint.parse(behind.deployment.address, "--upstream"),
        client_ca=layout.ca_cert,
        max_body_bytes=1024,
    )
    log = tmp_path / "mtls-gateway.log"
    with GatewayProcess(settings, log, probe_client_cert=member) as gateway:
        gateway.start()
        base = f"https://{gateway.address}"
        # Act / Assert: without a certificate, or with a stranger's, no TLS session.
        for cert in (None, stranger):
            with httpx.Client(verify=_client_tls(layout, cert)) as client:
                with pytest.raises(httpx.TransportError):
                    client.post(f"{base}/v1/fleet/get-run", content=b"")
        with httpx.Client(verify=_client_tls(layout, member)) as client:
            # A member's request reaches the SuperLink (its node auth answers)...
            fleet = client.post(f"{base}/v1/fleet/get-run", content=b"", headers=PROTOBUF)
            assert fleet.status_code == 401 and GATEWAY_ID not in fleet.text
            # ...but a certificate opens neither the Control API nor a big body.
            control = client.post(f"{base}{CONTROL_PATH}", content=b"")
            assert control.status_code == 403 and control.json()["gateway"] == GATEWAY_ID
            big = client.post(f"{base}/v1/fleet/push-object", content=b"x" * 2048)
            assert big.status_code == 413
    assert not gateway.managed or not gateway.managed.alive()


# -- helpers --------------------------------------------------------------------------------


def _settings(layout: Layout, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "listen": Endpoint("127.0.0.1", free_port()),
        "upstream": Endpoint("127.0.0.1", 9),
        "ca_cert": layout.ca_cert,
        "ssl_certfile": layout.server_cert,
        "ssl_keyfile": layout.server_key,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


def _gateway_cli(layout: Layout, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``python -m fedfraud.gateway`` with valid arguments, some replaced."""
    options = {
        "--listen": f"127.0.0.1:{free_port()}",
        "--upstream": "127.0.0.1:9",
        "--ca-cert": str(layout.ca_cert),
        "--ssl-certfile": str(layout.server_cert),
        "--ssl-keyfile": str(layout.server_key),
    }
    options.update(dict(zip(overrides[::2], overrides[1::2], strict=True)))
    argv = [sys.executable, "-m", "fedfraud.gateway"]
    for option, value in options.items():
        argv += [option, value]
    return subprocess.run(  # noqa: S603 - fixed argv
        argv, capture_output=True, text=True, timeout=60, check=False
    )


def _raw_post(behind: Behind, target: str, content_length: int = 0) -> tuple[int, bytes]:
    """One HTTP/1.1 POST over TLS with ``target`` exactly as given; (status, body)."""
    host, port = behind.gateway.address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(behind.layout.ca_cert))
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/protobuf\r\n"
        f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    )
    data = b""
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(head.encode("ascii"))
            while chunk := tls.recv(65536):
                data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split(b" ")[1]), body


def _client_tls(layout: Layout, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.ca_cert))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def _client_cert(
    stem: Path, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None
) -> tuple[Path, Path]:
    """A TLS client certificate (clientAuth), self-signed when ``issuer`` is None."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem.name)])
    issuer_key, issuer_name = issuer or (key, subject)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA384())
    )
    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
