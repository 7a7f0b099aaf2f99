"""Warm ClientApp processes: one pre-loaded parent per SuperNode, one fork per task.

Flower 1.42's SuperExec starts a new ``flwr-clientapp`` process (fedfraud's
checking shim, :mod:`client.runner`) for every message an institution gets.
Each one paid for a fresh interpreter and its imports before doing any work:
about 1.45 CPU-seconds on this machine, and 4.2 more for PyTorch (with
TorchDynamo, which ``torch.optim`` loads) in the stages that train. A round
sends each institution a dozen messages.

``fedfraud supernode`` therefore starts this server beside the SuperNode
(:func:`start`). It imports Flower's ClientApp runtime, fedfraud's ClientApp
and the libraries it uses once, then waits. For each task the shim hands it
its arguments, environment, working folder and standard streams over a Unix
socket (:func:`forward`); the server forks, and the child runs exactly what
the cold shim would have run (:func:`client.runner.main`) with them. So:

- the bundle is still checked against the site's approvals before Flower
  unpacks it, and the ClientApp is still imported from the approved bundle:
  the child forgets the parent's copies of the bundle's packages first;
- no task sees another's state: every child is a new fork of a parent that
  never runs a ClientApp itself (NumPy's global generator is reseeded in the
  child, as a new interpreter would seed it; Python's ``random`` reseeds itself);
- only processes of the same user can ask: the socket is in a private folder
  and the server checks each peer's credentials.

The shim waits for its child and exits with its code; a shim that is
stopped stops its child. If the server is not running (disabled with
``FEDFRAUD_WARM_CLIENTAPP=0``, still loading, or gone) the shim starts cold,
as before. The shim's side imports nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

#: Where the shim finds the server's socket (set by :func:`start` for the SuperNode's processes).
SERVER_ENV = "FEDFRAUD_CLIENTAPP_SERVER"
#: ``0`` starts every ClientApp cold (no server).
ENABLE_ENV = "FEDFRAUD_WARM_CLIENTAPP"
#: What the server imports before it serves: the shim's own code and Flower's ClientApp runtime,
#: fedfraud's ClientApp with every stage's modules, and PyTorch's optimizer machinery.
PRELOAD = (
    "client.runner",
    "flwr.common.args",
    "flwr.supernode.runtime.run_clientapp",
    "client.app",
    "client.fraud_client",
    "client.ckks_mode",
    "fraud.train",
    "fraud.gbdt",
    "torch._dynamo",
)
#: What the server writes to the SuperNode's log once it listens.
READY_LINE = "fedfraud: warm ClientApp server ready; ClientApp tasks are forked from it"
_REQUEST_LIMIT = 1 << 20
_STOP = b"T"
_CODE = struct.Struct("<i")


# -- the shim's side (standard library only) ----------------------------------------


def forward(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int | None:
    """Run this task in a fork of the warm server; its exit code, or None to start cold.

    None only when nothing was started (no server, or it did not take the
    task); once the server took it, the task's outcome is the child's.
    """
    environ = dict(os.environ if env is None else env)
    path = environ.get(SERVER_ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
        payload = json.dumps({"argv": list(argv), "env": environ, "cwd": os.getcwd()}).encode()
        socket.send_fds(sock, [payload], [0, 1, 2])
    except OSError:
        sock.close()
        return None

    def stop(_signum: int, _frame: FrameType | None) -> None:
        try:
            sock.send(_STOP)
        except OSError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        reply = sock.recv(_CODE.size)
    except OSError:
        reply = b""
    finally:
        sock.close()
    if len(reply) != _CODE.size:
        return 1  # the server went away while the task ran
    code: int = _CODE.unpack(reply)[0]
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


# -- the server ----------------------------------------------------------------------


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class _Server:
    """The select loop: new tasks, stop requests, children that ended, the parent's end."""

    def __init__(self, path: Path, parent: int) -> None:
        self.path = path
        self.parent = parent
        self.children: dict[int, socket.socket] = {}  # child pid -> its shim's connection
        self.by_conn: dict[socket.socket, int] = {}
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(old)
        self.listener.listen(64)
        print(READY_LINE, file=sys.stderr, flush=True)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self.stopping and os.getppid() == self.parent:
                for key, _ in self.selector.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wakeups()
                    else:
                        self._from_shim(key.fileobj)  # type: ignore[arg-type]
                self._reap()
        finally:
            self._shutdown()

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            if _peer_uid(conn) != os.getuid():
                conn.close()
                return
            payload, fds, _, _ = socket.recv_fds(conn, _REQUEST_LIMIT, 3)
        except OSError:
            conn.close()
            return
        try:
            request = json.loads(payload)
            ok = len(fds) == 3 and isinstance(request, dict) and isinstance(request.get("argv"), list)
        except ValueError:
            ok = False
        if not ok:
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            _child(self, conn, fds, request)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.by_conn[conn] = pid
        self.selector.register(conn, selectors.EVENT_READ, "shim")

    def _from_shim(self, conn: socket.socket) -> None:
        """A stop request, or the shim is gone: either way its child stops."""
        try:
            conn.recv(16)
        except OSError:
            pass
        pid = self.by_conn.get(conn)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.selector.unregister(conn)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            self.by_conn.pop(conn, None)
            try:
                conn.send(_CODE.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass
            try:
                self.selector.unregister(conn)
            except (KeyError, ValueError):
                pass
            conn.close()

    def _shutdown(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for conn in list(self.by_conn):
            conn.close()
        self.listener.close()
        try:
            self.path.unlink()
            self.path.parent.rmdir()
        except OSError:
            pass


def _child(server: _Server, conn: socket.socket, fds: list[int], request: dict[str, Any]) -> NoReturn:
    """In the fork: become the shim's ClientApp process, then exit with its code."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server.selector.close()
        server.listener.close()
        for other in server.by_conn:
            other.close()
        conn.close()
        os.close(server.wake_r)
        os.close(server.wake_w)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(str(request.get("cwd") or "/"))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request.get("env") or {}).items()})
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()  # as a new interpreter would: from the OS's entropy
        argv = [str(a) for a in request["argv"]]
        sys.argv = ["flwr-clientapp", *argv]
        from client.runner import main

        main(argv, warm=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports anything on the shim's stderr
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def serve(path: Path, parent: int, preload: Sequence[str] = PRELOAD) -> None:
    """Import ``preload``, then fork a ClientApp process per task until ``parent`` ends or SIGTERM.

    If an import fails the server ends with the error, its folder removed and
    nothing listening: every task then starts cold.
    """
    import importlib

    try:
        for name in preload:
            importlib.import_module(name)
    except BaseException:
        try:
            path.parent.rmdir()
        except OSError:
            pass
        raise
    _Server(path, parent).run()


def start(env: MutableMapping[str, str]) -> Any:
    """Start the server for this SuperNode process; set ``SERVER_ENV`` in ``env``. None if disabled.

    The server watches this process and ends with it; its socket is in a
    new private folder under the system's temporary folder (a Unix socket's
    path must be short).
    """
    import subprocess
    import tempfile

    if env.get(ENABLE_ENV, "1").strip() == "0":
        env.pop(SERVER_ENV, None)
        return None
    folder = Path(tempfile.mkdtemp(prefix="fedfraud-clientapp-"))  # mode 0700
    path = folder / "server.sock"
    process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-P", "-m", __name__, str(path), str(os.getpid())], env=dict(env),
    )
    env[SERVER_ENV] = str(path)
    return process


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m client.warm_start SOCKET PARENT_PID``: the server (started by :func:`start`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m client.warm_start SOCKET PARENT_PID", file=sys.stderr)
        raise SystemExit(2)
    serve(Path(args[0]), int(args[1]))


if __name__ == "__main__":
    main()
