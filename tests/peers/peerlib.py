"""Shared helpers for the peer tests: processes, waits, ports, HTTP, gRPC Check, psql.

Everything here has a bounded wait and a clear error; nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_TEMPLATE = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"
PG = dict(host="127.0.0.1", port=5432, user="postgres")

# Rows of the oracle comparison, printed at the end of the run (conftest's terminal summary).
ORACLE_ROWS: list[tuple[str, str, str, str]] = []


# --------------------------------------------------------------------------- processes


# Children get SIGTERM if the pytest process dies. Through setpriv, not a preexec_fn: a
# preexec_fn makes Python fork() (not vfork) and run code in the child, where grpcio's fork
# handlers, with its pollers' threads gone, can abort the child before it execs.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"]


class Proc:
    """A child process with its output in a log file, stopped by `stop()`."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.err_path = log_dir / f"{name}.err.log"
        self._out = open(self.log_path, "wb")
        self._err = open(self.err_path, "wb")
        self.popen = subprocess.Popen(
            DIE_WITH_PARENT + self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        out = []
        for path in (self.log_path, self.err_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = []
            if text:
                out.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out) or "(no output)"

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        for handle in (self._out, self._err):
            try:
                handle.close()
            except OSError:
                pass


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    proc: Proc | None = None,
    interval: float = 0.1,
) -> None:
    """Polls `predicate` until true; fails with `what`, the last error and the log tail."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{what}: {proc.name} exited with {proc.popen.returncode}\n{proc.tail()}"
            )
        try:
            if predicate():
                return
        except Exception as error:  # noqa: BLE001 - reported below
            last_error = error
        time.sleep(interval)
    detail = f"; last error: {last_error!r}" if last_error else ""
    tail = f"\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tail}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run(argv: Sequence[str], timeout: float, what: str, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command to completion, failing with its output when it fails or hangs."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{what}: no answer within {timeout:.0f}s: {error.output}") from error
    if done.returncode != 0:
        raise RuntimeError(
            f"{what}: exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
    return done


# --------------------------------------------------------------------------- PostgreSQL


def psql(sql: str, db: str = "postgres", timeout: float = 30) -> list[list[str]]:
    """Runs SQL as the postgres superuser (trust auth on 127.0.0.1); rows as lists of text."""
    done = run(
        [
            "psql", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], "-d", db,
            "-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-F", "\t", "-c", sql,
        ],
        timeout=timeout,
        what=f"psql on {db}",
    )
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def db_url(db: str, port: int | None = None) -> str:
    return f"postgres://{PG['user']}@{PG['host']}:{port or PG['port']}/{db}"


def sql_literal(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- HTTP


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str | bytes]] = (),
    body: bytes | None = None,
    host: str = "127.0.0.1",
    timeout: float = 15,
) -> HttpResponse:
    """One HTTP/1.1 request with exactly these headers (repeats and raw bytes allowed)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return HttpResponse(response.status, response.getheaders(), data)
    finally:
        conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- gRPC Check


@dataclass
class CheckCall:
    """A CheckRequest as Envoy would build it, in either header form."""

    method: str = "GET"
    path: str = "/users/current.json"
    headers: list[tuple[str, str | bytes]] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)
    raw: bool = False
    host: str = "redmine.example"
    # The request body as Envoy's `with_request_body` sends it (with its Content-Length).
    body: bytes | None = None

    def to_proto(self) -> external_auth_pb2.CheckRequest:
        request = external_auth_pb2.CheckRequest()
        attributes = request.attributes
        attributes.source.address.socket_address.address = "203.0.113.7"
        attributes.source.address.socket_address.port_value = 40000
        http_request_ = attributes.request.http
        http_request_.id = new_id()
        http_request_.method = self.method
        http_request_.path = self.path
        http_request_.host = self.host
        http_request_.scheme = "http"
        http_request_.protocol = "HTTP/1.1"
        pseudo = [(":authority", self.host), (":method", self.method), (":path", self.path)]
        all_headers = pseudo + [(k.lower(), v) for k, v in self.headers]
        if self.body is not None:
            all_headers.append(("content-length", str(len(self.body))))
            http_request_.size = len(self.body)
            http_request_.raw_body = self.body
            try:
                http_request_.body = self.body.decode()
            except UnicodeDecodeError:
                pass
        if self.raw:
            for name, value in all_headers:
                entry = http_request_.header_map.headers.add()
                entry.key = name
                entry.raw_value = value if isinstance(value, bytes) else value.encode()
        else:
            joined: dict[str, str] = {}
            for name, value in all_headers:
                text = value.decode() if isinstance(value, bytes) else value
                # Envoy joins a repeated header with a comma in the `headers` map.
                joined[name] = f"{joined[name]},{text}" if name in joined else text
            for name, value in joined.items():
                http_request_.headers[name] = value
        for key, value in self.context.items():
            attributes.context_extensions[key] = value
        return request


class AuthzClient:
    """The official Envoy stubs (xds-protos) against one redmine-authz instance."""

    def __init__(self, port: int):
        self.port = port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def check(self, call: CheckCall | external_auth_pb2.CheckRequest, timeout: float = 5):
        request = call.to_proto() if isinstance(call, CheckCall) else call
        return self.stub.Check(request, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def ok_headers(response) -> dict[str, str]:
    """Identity headers of an allowed CheckResponse, name -> value."""
    return {h.header.key: h.header.value for h in response.ok_response.headers}


def denied_headers(response) -> dict[str, str]:
    return {h.header.key.lower(): h.header.value for h in response.denied_response.headers}


def http_status_of(response) -> int:
    """The HTTP status a CheckResponse asks Envoy for: 200 when allowed."""
    if response.status.code == 0:
        return 200
    return int(response.denied_response.status.code)


def insert_oauth_token(
    db_name: str,
    token: str,
    owner_id: int | None,
    scopes: str,
    expires_in: int | None = None,
    created_at: str = "now() AT TIME ZONE 'UTC'",
    revoked_at: str = "NULL",
) -> None:
    """Adds a Doorkeeper access token the way Redmine 6.1 stores it: the lowercase hex
    SHA-256 of the token, timestamps without zone (UTC here). `created_at`/`revoked_at`
    are SQL expressions."""
    psql(
        "INSERT INTO oauth_access_tokens "
        "(resource_owner_id, application_id, token, expires_in, scopes, created_at, revoked_at) "
        f"SELECT {'NULL' if owner_id is None else int(owner_id)}, id, {sql_literal(sha256_hex(token))}, "
        f"{'NULL' if expires_in is None else int(expires_in)}, {sql_literal(scopes)}, {created_at}, {revoked_at} "
        "FROM oauth_applications WHERE uid = 'demo-client'",
        db=db_name,
    )


class FreezableTcpProxy:
    """A TCP proxy (here: in front of PostgreSQL) that can hold all traffic, so the database
    looks alive but never answers: connections stay open, bytes stop flowing."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        import threading

        self.target = (target_host, target_port)
        self._frozen = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="db-proxy", daemon=True).start()

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._frozen.is_set() and not self._closed:
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.thaw()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
