"""The fleet gateway: a TLS reverse proxy that lets SuperNodes, and only SuperNodes, in.

What it protects against
------------------------
Flower 1.42's open-source SuperLink serves three APIs on **one** HTTPS port:

* the Fleet API (``/v1/fleet/...``), which SuperNodes call;
* the Control API (``/v1/control/...``), which the ``flwr`` CLI calls
  (``flwr ls``, ``flwr run``, ``flwr supernode register``);
* the Runtime API (``/v1/runtime/...``), which the SuperLink's own SuperExec
  and ServerApp processes call.

The Control API authenticates no caller: without Flower's enterprise OIDC
plugin the SuperLink loads ``NoOpControlAuthnPlugin``
(``flwr/superlink/config_loader.py``). TLS does not help, because the CA
certificate is public by design (every institution holds it), and SuperNode
authentication does not help either: it guards the Fleet API only
(``flwr/superlink/routers/fleet/node_auth.py``). So anyone who can reach the
SuperLink's port can list and stop runs, submit an app, and register a
SuperNode key of their own, which then passes SuperNode authentication.

The fix: the SuperLink listens on the loopback interface of the operator's
machine only, and institutions reach this gateway instead. The gateway
terminates TLS (optionally requiring client certificates), forwards the Fleet
API to the SuperLink over TLS on loopback, and refuses everything else with
403 and a reason, logging each refusal (method, path, peer address; never a
body or a header, so no SuperNode signature or token reaches a log).

What SuperNodes need
--------------------
A Flower 1.42 SuperNode calls exactly twelve endpoints, every one a ``POST``
under ``/v1/fleet/`` (``flwr/supernode/fleet_http_client.py``, driven by
``flwr/supernode/fleet_http_connection.py`` from
``flwr/supernode/start_client_internal.py``): register-node, activate-node,
deactivate-node, unregister-node, send-node-heartbeat, pull-messages,
push-messages, get-run, get-fab, push-object, pull-object and
confirm-message-received. It never calls ``/health`` (its own health server
is a local gRPC one), so the default allowlist is ``/v1/fleet/`` alone. The
gateway answers ``GET /health`` itself, without asking the SuperLink, so
that a load balancer or :class:`GatewayProcess` can tell it is up.

Path checks
-----------
Only a *canonical* path is forwarded: ASCII, no percent-encoding, no empty,
``.`` or ``..`` segment, nothing outside ``[A-Za-z0-9._~-]`` in a segment.
This matters: ``httpx`` (like most HTTP clients) removes dot segments when it
builds the upstream URL, so a proxy that checked ``/v1/fleet/../control/x``
for the ``/v1/fleet/`` prefix and forwarded it would reach
``/v1/control/x``. Refusing every non-canonical path, rather than
normalising it, leaves no second interpretation to disagree with.

What it does not cover
----------------------
* The gateway helps only if the SuperLink is reachable *nowhere else*: start
  it with ``--host 127.0.0.1``, and never with ``FLWR_INTERNAL_GRPC_CONTROL_API=1``
  or ``FLWR_INTERNAL_GRPC_FLEET_API=1`` in its environment (Flower 1.42 then
  also starts its old gRPC Control/Fleet servers, on 0.0.0.0:9093/9092 by
  default; ``flwr/superlink/cli/flower_superlink.py``).
* Anyone on the operator's machine can still use the Control API on loopback.
* Flower 1.42's SuperNode cannot present a client certificate (its httpx
  client takes only a CA), so ``--client-ca`` needs a TLS sidecar at each
  institution; SuperNode authentication (signed requests) stays the SuperNode's
  credential either way.

Run it with ``python -m fedfraud.gateway --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from core.errors import ConfigError, FedFraudError, InputError, ProtocolError

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from fedfraud.simulation import ManagedProcess

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_MAX_BODY_BYTES",
    "Endpoint",
    "FleetGatewayApp",
    "GatewayProcess",
    "GatewaySettings",
    "PathPolicy",
    "Refusal",
    "gateway_command",
    "main",
    "serve",
]

#: Marker carried by every refusal body and log record, so that a reader (or
#: a parser) knows which component, and which version of its format, wrote it.
GATEWAY_ID: Final = "fedfraud-fleet-gateway"
FORMAT_VERSION: Final = 1
FLEET_PREFIX: Final = "/v1/fleet/"
DEFAULT_ALLOW: Final = (FLEET_PREFIX,)
#: The SuperLink's APIs that must never be reachable through the gateway,
#: whatever ``--allow`` says (Flower 1.42 route prefixes).
PROTECTED_APIS: Final = {"/v1/control/": "Control", "/v1/runtime/": "Runtime"}
#: The Fleet API is POST-only (``flwr/superlink/routers/fleet/router.py``).
FORWARDED_METHODS: Final = frozenset({"POST"})
HEALTH_PATH: Final = b"/health"
#: Flower 1.42's SuperLink reads a whole request body without a limit (its
#: old gRPC APIs allowed 2 GiB - 1), but a SuperNode never sends a large one:
#: arrays are split into chunks of at most 5 MiB
#: (``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``) and every object is pushed in a
#: request of its own. 64 MiB leaves twelve-fold headroom and keeps the
#: memory an outsider can make the gateway hold bounded.
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Flower's own client waits 30 s for a Fleet call; the gateway waits longer
#: for the SuperLink so that the SuperNode's timeout, not ours, decides.
DEFAULT_UPSTREAM_TIMEOUT: Final = 60.0
UPSTREAM_CONNECT_TIMEOUT: Final = 10.0
#: How long a client may take to send a whole request body (slow-body
#: clients would otherwise hold a connection open for ever).
DEFAULT_CLIENT_TIMEOUT: Final = 60.0
DEFAULT_MAX_CONNECTIONS: Final = 512
#: A SuperNode pulls every few seconds and sends a heartbeat about every
#: 24 s; 30 s keeps its connection open between pulls.
KEEP_ALIVE_SECONDS: Final = 30
GRACEFUL_SHUTDOWN_SECONDS: Final = 5
STARTUP_TIMEOUT: Final = 30.0
#: What the gateway logs once it accepts connections.
READY_MARK: Final = "fleet gateway ready on https://"
MAX_LOGGED_PATH: Final = 200
#: How the gateway's own answers begin, so that ``flwr`` users see who refused.
_PREFIX: Final = "fedfraud fleet gateway: "

logger = logging.getLogger("fedfraud.gateway")

# One path segment: no empty segment, no leading dot (so neither "." nor
# ".."), and only RFC 3986 unreserved characters.
_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_CANONICAL_PATH = re.compile(rf"(?:/{_SEGMENT})+")
_CANONICAL_PREFIX = re.compile(rf"(?:/{_SEGMENT})+/")

# Hop-by-hop headers (RFC 9110 section 7.6.1) and the proxies' old friends.
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers the gateway sets itself (or that only its client may set):
# a client's own X-Forwarded-For would otherwise be trusted by the SuperLink,
# whose uvicorn believes proxy headers from 127.0.0.1.
_REQUEST_DROP: Final = _HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-proto",
    b"x-real-ip",
}
_RESPONSE_DROP: Final = _HOP_BY_HOP | {b"server", b"date"}


class Refusal(ProtocolError):
    """A request the gateway does not forward; ``status`` is the HTTP answer.

    The message is sent to the client, so it names the rule, never a secret.
    """

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


# ---------------------------------------------------------------------------
# Settings (validated once, here)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A ``host:port`` pair; IPv6 hosts are written ``[::1]:9093``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str) -> Endpoint:
        """Parse ``HOST:PORT``; ``option`` names the flag in error messages.

        Raises
        ------
        ConfigError
            If ``text`` is not ``HOST:PORT`` with a port in 1..65535.
        """
        host, sep, port_text = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(
                f"{option}: expected HOST:PORT with a port in 1..65535, found {text!r}"
            )
        return cls(host, int(port_text))

    @property
    def address(self) -> str:
        """``host:port`` as Flower's ``--superlink`` option takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def is_loopback(self) -> bool:
        """Whether the host is ``localhost`` or a literal loopback address (no DNS)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs, checked in one place (``__post_init__``).

    Parameters
    ----------
    listen : Endpoint
        Where the gateway accepts SuperNodes (TLS).
    upstream : Endpoint
        The SuperLink, on loopback unless ``unsafe_remote_upstream``.
    ca_cert : Path
        CA certificate that the SuperLink's certificate must chain to.
    ssl_certfile, ssl_keyfile : Path
        The gateway's own TLS certificate and key (the SuperLink's will do:
        its SANs name the federation's host).
    client_ca : Path, optional
        If given, every client must present a certificate signed by this CA
        (mutual TLS). Flower 1.42's SuperNode cannot present one itself, so
        this suits deployments with a client-side TLS sidecar.
    allow : tuple of str
        Paths forwarded: an entry ending in ``/`` is a prefix, any other an
        exact path. Entries must be canonical and may never reach the Control
        or Runtime API.
    max_body_bytes : int
        Largest request body forwarded; larger ones get 413.
    upstream_timeout : float
        Seconds to wait for the SuperLink's answer (502/504 otherwise,
        which Flower's SuperNode retries).
    client_timeout : float
        Seconds a client may take to send a whole request body (408 otherwise).
    max_connections : int
        Concurrent connections served; more get 503 (retried by SuperNodes).
    unsafe_remote_upstream : bool
        Allow an upstream that is not a loopback address. That exposes the
        SuperLink's port to the network between the two, which defeats the
        gateway's purpose unless that network is trusted; it logs a warning.

    Raises
    ------
    InputError
        If a certificate or key file is missing or is not a file.
    ConfigError
        If an address, limit or allowlist entry is unsafe or malformed.
    """

    listen: Endpoint
    upstream: Endpoint
    ca_cert: Path
    ssl_certfile: Path
    ssl_keyfile: Path
    client_ca: Path | None = None
    allow: tuple[str, ...] = DEFAULT_ALLOW
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    unsafe_remote_upstream: bool = False

    def __post_init__(self) -> None:
        # 1. Every file exists (the message names the option and the file).
        files = {
            "--ca-cert": self.ca_cert,
            "--ssl-certfile": self.ssl_certfile,
            "--ssl-keyfile": self.ssl_keyfile,
            "--client-ca": self.client_ca,
        }
        for option, path in files.items():
            if path is not None and not path.is_file():
                raise InputError(f"{option}: {path} does not exist or is not a file")
        # 2. The SuperLink is on this machine's loopback, unless told otherwise.
        if not self.upstream.is_loopback():
            if not self.unsafe_remote_upstream:
                raise ConfigError(
                    f"--upstream: {self.upstream.address} is not a loopback address; the "
                    "SuperLink must listen on 127.0.0.1 (or ::1) of this machine so that "
                    "only the gateway reaches it. Pass --unsafe-remote-upstream only if the "
                    "network between the gateway and the SuperLink is trusted."
                )
            logger.warning(
                "UNSAFE: upstream %s is not on loopback; the SuperLink's Control API is "
                "reachable by anyone on the network between the gateway and the SuperLink",
                self.upstream.address,
            )
        # 3. The gateway does not proxy to itself.
        if self.listen == self.upstream:
            raise ConfigError(
                f"--listen and --upstream are the same address ({self.listen.address})"
            )
        # 4. The allowlist is canonical and never covers a protected API.
        PathPolicy(self.allow)
        # 5. Limits are positive.
        limits = {
            "--max-body-bytes": self.max_body_bytes,
            "--upstream-timeout": self.upstream_timeout,
            "--client-timeout": self.client_timeout,
            "--max-connections": self.max_connections,
        }
        for option, value in limits.items():
            if not value > 0:
                raise ConfigError(f"{option}: must be positive, found {value!r}")


def _check_allow_entry(entry: str) -> None:
    if not (_CANONICAL_PREFIX.fullmatch(entry) or _CANONICAL_PATH.fullmatch(entry)):
        raise ConfigError(
            f"--allow: {entry!r} is not a canonical path ('/a/b/' for a prefix, '/a/b' for "
            "one path; segments of [A-Za-z0-9._~-], no '.', '..' or empty segment)"
        )
    lowered = entry.lower()
    for api, name in PROTECTED_APIS.items():
        # The entry lies inside the API, or the API lies inside the entry.
        if lowered.startswith(api) or (entry.endswith("/") and api.startswith(lowered)):
            raise ConfigError(
                f"--allow: {entry!r} would open the SuperLink's {name} API ({api}), "
                "which the fleet gateway never forwards"
            )


# ---------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PathPolicy:
    """Which requests are forwarded: POST to a canonical path on the allowlist.

    Parameters
    ----------
    allow : tuple of str
        Prefixes (ending in ``/``) and exact paths.

    Raises
    ------
    ConfigError
        If ``allow`` is empty, an entry is not canonical, or an entry would
        reach the Control or Runtime API.
    """

    allow: tuple[str, ...] = DEFAULT_ALLOW

    def __post_init__(self) -> None:
        if not self.allow:
            raise ConfigError("--allow: at least one path prefix is needed")
        for entry in self.allow:
            _check_allow_entry(entry)

    def check(self, method: str, raw_path: bytes) -> str:
        """Return the path to forward, exactly as received.

        Parameters
        ----------
        method : str
            The request method.
        raw_path : bytes
            The request target's path as sent, before any decoding.

        Raises
        ------
        Refusal
            With the reason, if the request must not reach the SuperLink.
        """
        # 1. The Fleet API is POST-only.
        if method not in FORWARDED_METHODS:
            raise Refusal(f"method {method} is not used by the Fleet API")
        # 2. The path as sent, not as some decoder reads it.
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise Refusal("the path is not ASCII") from None
        # 3. No percent-encoding: no Fleet path needs it, and decoding it
        #    differently from the SuperLink is how "%2e%2e" bypasses prefixes.
        if "%" in path:
            raise Refusal("percent-encoded paths are not forwarded")
        # 4. Canonical form only: no empty ("//"), "." or ".." segment. Such
        #    a path is refused, not normalised, so no second reading exists.
        if not _CANONICAL_PATH.fullmatch(path):
            raise Refusal(
                "the path is not canonical (empty, '.' or '..' segments, a trailing '/', "
                "or characters outside [A-Za-z0-9._~-])"
            )
        # 5. Never the Control or Runtime API, in any letter case.
        lowered = path.lower() + "/"
        for api, name in PROTECTED_APIS.items():
            if lowered.startswith(api):
                raise Refusal(
                    f"the SuperLink's {name} API is not served on this port; only the "
                    f"Fleet API ({FLEET_PREFIX}) for SuperNodes is"
                )
        # 6. The allowlist, letter case as written.
        if not any(_allowed(entry, path) for entry in self.allow):
            raise Refusal(
                f"only the Fleet API ({FLEET_PREFIX}) for SuperNodes is served on this port"
            )
        return path


def _allowed(entry: str, path: str) -> bool:
    return path.startswith(entry) if entry.endswith("/") else path == entry


def forwarded_request_headers(
    headers: Iterable[tuple[bytes, bytes]], peer_host: str
) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop and proxy ones, plus ours.

    ``X-Forwarded-For`` carries the client's address (the SuperLink's uvicorn
    trusts it from 127.0.0.1 and logs it), whatever the client claimed.
    """
    headers = list(headers)
    dropped = _REQUEST_DROP | _connection_tokens(headers)
    kept = [(name.lower(), value) for name, value in headers if name.lower() not in dropped]
    kept.append((b"x-forwarded-for", peer_host.encode("ascii", "replace")))
    kept.append((b"x-forwarded-proto", b"https"))
    return kept


def forwarded_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The SuperLink's response headers minus hop-by-hop ones (and its server/date)."""
    headers = list(headers)
    dropped = _RESPONSE_DROP | _connection_tokens(headers)
    return [(name.lower(), value) for name, value in headers if name.lower() not in dropped]


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop (RFC 9110 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    )


# ---------------------------------------------------------------------------
# The ASGI application
# ---------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class FleetGatewayApp:
    """ASGI app: answer ``/health``, refuse what :class:`PathPolicy` refuses, forward the rest.

    Parameters
    ----------
    settings : GatewaySettings
        Validated settings.
    upstream_tls : ssl.SSLContext
        Client context that verifies the SuperLink (see :func:`upstream_ssl_context`).
    """

    def __init__(self, settings: GatewaySettings, upstream_tls: ssl.SSLContext) -> None:
        self.settings = settings
        self.policy = PathPolicy(settings.allow)
        self._upstream_tls = upstream_tls
        self._base_url = httpx.URL(f"https://{settings.upstream.address}")
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (HTTP and lifespan; nothing else)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # -- lifespan ---------------------------------------------------------------

    def _upstream_client(self) -> httpx.AsyncClient:
        if self._client is None:
            client = httpx.AsyncClient(
                verify=self._upstream_tls,
                timeout=httpx.Timeout(
                    self.settings.upstream_timeout, connect=UPSTREAM_CONNECT_TIMEOUT
                ),
                limits=httpx.Limits(
                    max_connections=self.settings.max_connections, max_keepalive_connections=64
                ),
                # No proxy from the environment, no redirects: the one place
                # requests go is the SuperLink.
                trust_env=False,
                follow_redirects=False,
            )
            # httpx adds its own Accept, Accept-Encoding and User-Agent; the
            # SuperLink should see the SuperNode's request, not ours.
            for name in ("accept", "accept-encoding", "user-agent"):
                del client.headers[name]
            self._client = client
        return self._client

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._upstream_client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests -----------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        peer = _peer(scope)
        # 1. The gateway's own health check (the SuperLink is not asked).
        if raw_path == HEALTH_PATH and method in ("GET", "HEAD"):
            await _respond(send, 200, {"status": "ok"}, head=method == "HEAD")
            return
        try:
            # 2. The rule.
            path = self.policy.check(method, raw_path)
            # 3. The body, bounded in size and time.
            body = await self._read_body(scope, receive)
        except Refusal as refusal:
            self._log_refusal(method, raw_path, peer, refusal)
            await _respond(send, refusal.status, {"detail": f"{_PREFIX}{refusal}"})
            return
        except _ClientGone:
            return
        # 4. Forward to the SuperLink.
        await self._forward(scope, send, method, path, body, peer)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise Refusal(f"request body larger than {limit} bytes", status=413)

        async def collect() -> bytes:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise Refusal(f"request body larger than {limit} bytes", status=413)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

        try:
            return await asyncio.wait_for(collect(), timeout=self.settings.client_timeout)
        except TimeoutError:
            raise Refusal(
                f"request body not received within {self.settings.client_timeout:g} s", status=408
            ) from None

    async def _forward(
        self, scope: Scope, send: Send, method: str, path: str, body: bytes, peer: tuple[str, int]
    ) -> None:
        query: bytes = scope.get("query_string", b"")
        target = path.encode("ascii") + (b"?" + query if query else b"")
        client = self._upstream_client()
        request = client.build_request(
            method,
            self._base_url.copy_with(raw_path=target),
            headers=forwarded_request_headers(scope["headers"], peer[0]),
            content=body,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            logger.warning("upstream timed out on %s %r: %s", method, path, type(exc).__name__)
            await _respond(send, 504, {"detail": f"{_PREFIX}the SuperLink did not answer in time"})
            return
        except httpx.HTTPError as exc:
            logger.warning("upstream unreachable for %s %r: %s", method, path, type(exc).__name__)
            await _respond(send, 502, {"detail": f"{_PREFIX}the SuperLink is not reachable"})
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": forwarded_response_headers(response.headers.raw),
                }
            )
            # Raw bytes: any Content-Encoding passes through with its header.
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # The status line is gone; closing the connection is all that is left.
            logger.warning("upstream failed mid-response on %r: %s", path, type(exc).__name__)
        finally:
            await response.aclose()
        logger.debug("forwarded %s %r from %s:%d: %d", method, path, *peer, response.status_code)

    def _log_refusal(
        self, method: str, raw_path: bytes, peer: tuple[str, int], refusal: Refusal
    ) -> None:
        # The path is the client's: repr() escapes control characters so it
        # cannot forge log lines; bodies and headers are never logged.
        shown = raw_path[:MAX_LOGGED_PATH].decode("ascii", "backslashreplace")
        logger.warning(
            "%s/%d refused %s %r from %s:%d (%d): %s",
            GATEWAY_ID, FORMAT_VERSION, method[:16], shown, *peer, refusal.status, refusal,
        )


def _peer(scope: Scope) -> tuple[str, int]:
    client = scope.get("client")
    if not client:
        return ("unknown", 0)
    return (str(client[0]), int(client[1]))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1").strip())
    return None


async def _respond(send: Send, status: int, payload: dict[str, Any], head: bool = False) -> None:
    """A small JSON answer from the gateway itself, with its format marker.

    ``detail`` is where Flower's CLI looks for an error's message
    (``flwr/cli/utils.py``), so ``flwr`` shows the reason as it is.
    """
    body = json.dumps({**payload, "gateway": GATEWAY_ID, "version": FORMAT_VERSION}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


# ---------------------------------------------------------------------------
# TLS and serving
# ---------------------------------------------------------------------------


def server_ssl_context(settings: GatewaySettings) -> ssl.SSLContext:
    """TLS 1.2+ server context; with ``client_ca``, client certificates are required.

    Raises
    ------
    InputError
        If the certificate, key or client CA cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    except (ssl.SSLError, OSError) as exc:
        raise InputError(
            f"--ssl-certfile/--ssl-keyfile: cannot load the pair {settings.ssl_certfile} / "
            f"{settings.ssl_keyfile} ({exc.__class__.__name__})"
        ) from exc
    if settings.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(settings.client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise InputError(
                f"--client-ca: cannot load {settings.client_ca} as a CA certificate"
            ) from exc
    return context


def upstream_ssl_context(settings: GatewaySettings) -> ssl.SSLContext:
    """Client context that verifies the SuperLink's certificate (chain and name).

    Raises
    ------
    InputError
        If the CA certificate cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_cert))
    except (ssl.SSLError, OSError) as exc:
        raise InputError(f"--ca-cert: cannot load {settings.ca_cert} as a CA certificate") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def serve(settings: GatewaySettings) -> None:
    """Run the gateway until SIGINT/SIGTERM (blocking).

    Raises
    ------
    InputError
        If a certificate or key cannot be loaded (checked before binding).
    """
    import uvicorn

    server_tls = server_ssl_context(settings)
    app = FleetGatewayApp(settings, upstream_ssl_context(settings))
    config = uvicorn.Config(
        app,
        host=settings.listen.host,
        port=settings.listen.port,
        # h11: the strict, pure-Python HTTP/1.1 parser; no WebSockets at all.
        http="h11",
        ws="none",
        lifespan="on",
        ssl_certfile=str(settings.ssl_certfile),
        ssl_context_factory=lambda _config, _default: server_tls,
        log_config=None,
        access_log=False,
        server_header=False,
        # The gateway is the edge: a client's X-Forwarded-For is not believed.
        proxy_headers=False,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    listener = _bind(settings.listen)

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[listener]))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            logger.info(
                "%s%s -> https://%s (allow: %s; client certificates: %s; max body: %d bytes)",
                READY_MARK,
                settings.listen.address,
                settings.upstream.address,
                ", ".join(settings.allow),
                "required" if settings.client_ca else "not required",
                settings.max_body_bytes,
            )
        await task

    with listener:
        asyncio.run(run())


def _bind(endpoint: Endpoint) -> socket.socket:
    """A bound socket for uvicorn, so that a taken port is a clear error, not a traceback.

    Raises
    ------
    ConfigError
        If the address cannot be bound (taken, or not this machine's).
    """
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoint.host, endpoint.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--listen: cannot listen on {endpoint.address}: {exc.strerror or exc}"
        ) from exc
    return sock


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

_EPILOG = """\
Only POST requests to a canonical path under an --allow prefix are forwarded
(default: /v1/fleet/, everything a Flower 1.42 SuperNode calls). The Control
API (/v1/control/, the flwr CLI) and the Runtime API (/v1/runtime/) are never
forwarded, whatever --allow says; run `flwr` on the SuperLink's machine,
against its loopback address. GET /health is answered by the gateway itself.

Every refusal is logged with method, path and peer address (never bodies or
headers).

example:
  flower-superlink ... --host 127.0.0.1 --port 9093
  python -m fedfraud.gateway --listen 0.0.0.0:9443 --upstream 127.0.0.1:9093 \\
      --ca-cert keys/superlink/ca.pem --ssl-certfile keys/superlink/server.pem \\
      --ssl-keyfile keys/superlink/server.key
  flower-supernode --superlink superlink.example.org:9443 ...

exit codes:
  0  stopped by SIGINT
  2  invalid configuration (address, allowlist, limits), or --listen cannot be bound
  3  a certificate or key file is missing or unreadable
  (stopped by SIGTERM, it ends as SIGTERM does, after a graceful shutdown)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedfraud.gateway",
        description=(
            "Fleet gateway: a TLS reverse proxy in front of a Flower 1.42 SuperLink that\n"
            "forwards the Fleet API (SuperNodes) and refuses the Control and Runtime APIs,\n"
            "which Flower's SuperLink serves on the same port without authenticating\n"
            "Control API callers. Keep the SuperLink on 127.0.0.1; expose only this."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address the gateway accepts SuperNodes on (TLS)")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT",
                        help="the SuperLink; must be a loopback address (127.0.0.1:9093)")
    parser.add_argument("--ca-cert", required=True, type=Path, metavar="CA.pem",
                        help="CA certificate the SuperLink's certificate must chain to")
    parser.add_argument("--ssl-certfile", required=True, type=Path, metavar="CERT",
                        help="the gateway's TLS certificate (PEM; the SuperLink's will do)")
    parser.add_argument("--ssl-keyfile", required=True, type=Path, metavar="KEY",
                        help="its private key (PEM)")
    parser.add_argument("--client-ca", type=Path, metavar="CA.pem",
                        help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--allow", action="append", metavar="PREFIX",
                        help="forward this path prefix ('/a/b/') or exact path ('/a/b'); "
                             "repeatable; replaces the default /v1/fleet/")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, metavar="N",
                        help="largest request body forwarded (default: %(default)s = 64 MiB)")
    parser.add_argument("--upstream-timeout", type=float, default=DEFAULT_UPSTREAM_TIMEOUT,
                        metavar="SECONDS",
                        help="wait this long for the SuperLink (default: %(default)s)")
    parser.add_argument("--client-timeout", type=float, default=DEFAULT_CLIENT_TIMEOUT,
                        metavar="SECONDS",
                        help="a client's time to send a request body (default: %(default)s)")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        metavar="N", help="concurrent connections (default: %(default)s)")
    parser.add_argument("--unsafe-remote-upstream", action="store_true",
                        help="allow a non-loopback --upstream (exposes the SuperLink's port "
                             "to the network in between; logged as UNSAFE)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="DEBUG also logs every forwarded request (default: %(default)s)")
    return parser


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    """Build (and so validate) :class:`GatewaySettings` from parsed arguments."""
    return GatewaySettings(
        listen=Endpoint.parse(args.listen, "--listen"),
        upstream=Endpoint.parse(args.upstream, "--upstream"),
        ca_cert=args.ca_cert,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        client_ca=args.client_ca,
        allow=tuple(dict.fromkeys(args.allow)) if args.allow else DEFAULT_ALLOW,
        max_body_bytes=args.max_body_bytes,
        upstream_timeout=args.upstream_timeout,
        client_timeout=args.client_timeout,
        max_connections=args.max_connections,
        unsafe_remote_upstream=args.unsafe_remote_upstream,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m fedfraud.gateway``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logger.setLevel(args.log_level)
    # httpx logs every upstream request at INFO (one line per SuperNode poll
    # and heartbeat) and httpcore every socket event at DEBUG; the gateway's
    # own DEBUG line per forwarded request says what matters.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        settings = settings_from_args(args)
        serve(settings)
    except FedFraudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------------------
# As a child process (tests, the deployment runner)
# ---------------------------------------------------------------------------

#: Starts a process in a session of its own: (name, argv, log file) -> process.
#: ``Deployment._spawn`` fits once its home folder is bound.
Spawner = Callable[[str, list[str], Path], "ManagedProcess"]


def gateway_command(settings: GatewaySettings, log_level: str = "INFO") -> list[str]:
    """``python -m fedfraud.gateway ...`` for ``settings`` (this interpreter)."""
    command = [
        sys.executable, "-m", "fedfraud.gateway",
        "--listen", settings.listen.address,
        "--upstream", settings.upstream.address,
        "--ca-cert", str(settings.ca_cert),
        "--ssl-certfile", str(settings.ssl_certfile),
        "--ssl-keyfile", str(settings.ssl_keyfile),
        "--max-body-bytes", str(settings.max_body_bytes),
        "--upstream-timeout", repr(settings.upstream_timeout),
        "--client-timeout", repr(settings.client_timeout),
        "--max-connections", str(settings.max_connections),
        "--log-level", log_level,
    ]
    if settings.client_ca is not None:
        command += ["--client-ca", str(settings.client_ca)]
    for entry in settings.allow:
        command += ["--allow", entry]
    if settings.unsafe_remote_upstream:
        command.append("--unsafe-remote-upstream")
    return command


def _spawn_own_session(name: str, command: list[str], log_path: Path) -> ManagedProcess:
    from fedfraud.simulation import ManagedProcess

    from fedfraud.simulation import spawn_logged

    process = spawn_logged(command, {**os.environ, "PYTHONUNBUFFERED": "1"}, log_path)
    return ManagedProcess(name, process, log_path)


@dataclass
class GatewayProcess:
    """The gateway as a child process; a context manager that stops it.

    Parameters
    ----------
    settings : GatewaySettings
        What to run.
    log_path : Path
        The gateway's log (stdout and stderr).
    spawn : Spawner, optional
        How to start the process, e.g. a ``Deployment``'s, so that the
        deployment also stops it; by default a session of its own.
    probe_client_cert : tuple of Path, optional
        (certificate, key) for the readiness probe when the gateway requires
        client certificates; without it, readiness is read from the log.
    log_level : str
        ``DEBUG`` also logs every forwarded request (method, path, peer, status).
    """

    settings: GatewaySettings
    log_path: Path
    spawn: Spawner | None = None
    probe_client_cert: tuple[Path, Path] | None = None
    log_level: str = "INFO"
    managed: ManagedProcess | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        """``host:port`` for SuperNodes' ``--superlink``."""
        return self.settings.listen.address

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """Start the gateway and wait until it answers over TLS; return its address.

        Raises
        ------
        RunFailed
            If it exits during start-up or is not ready within ``timeout``.
        """
        from fedfraud.simulation import RunFailed, log_tail

        spawn = self.spawn or _spawn_own_session
        self.managed = managed = spawn(
            "fleet-gateway", gateway_command(self.settings, self.log_level), self.log_path
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if not managed.alive():
                raise RunFailed(
                    f"the fleet gateway exited during start-up ({managed.process.returncode}); "
                    f"see {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RunFailed(
                    f"the fleet gateway did not start within {timeout:g}s; see {self.log_path}"
                )
            time.sleep(0.1)
        return self.address

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); safe to call twice."""
        # The gateway starts no children, so a dead one leaves nothing behind
        # (and its process group id may already belong to someone else).
        if self.managed is not None and self.managed.alive():
            self.managed.stop()

    def _ready(self) -> bool:
        if self.settings.client_ca is not None and self.probe_client_cert is None:
            try:
                return READY_MARK in self.log_path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return False
        context = ssl.create_default_context(cafile=str(self.settings.ca_cert))
        if self.probe_client_cert is not None:
            context.load_cert_chain(*map(str, self.probe_client_cert))
        host = self.settings.listen.host
        # A wildcard listener is probed on loopback (in the certificate's SANs).
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        url_host = f"[{host}]" if ":" in host else host
        url = f"https://{url_host}:{self.settings.listen.port}/health"
        try:
            with urllib.request.urlopen(  # noqa: S310 - fixed https URL
                url, timeout=1.0, context=context
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


if __name__ == "__main__":
    main()
