"""Private instances of the real services the test suite talks to.

Tests use real PostgreSQL, InfluxDB 1.x and Mosquitto over real sockets, never
mocks, so each class here starts its own throw-away server: in a temp
directory, on 127.0.0.1, on a free non-standard port, and only returns once a
protocol-level ping succeeds. Nothing here imports pytest, so the module can
also be used from scripts and benchmarks.

Every server is a context manager. ``stop()`` keeps the data directory and the
port, so ``start()`` brings the same server back (crash/outage tests);
``close()`` (or leaving the ``with`` block) stops it and deletes the temp dir.
Logs go to ``<tmpdir>/<name>.log``; a readiness failure raises
``ServiceError`` carrying the tail of that log.

The Debian packages are installed by ``scripts/install-services.sh``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "InfluxServer",
    "MosquittoServer",
    "PostgresServer",
    "Service",
    "ServiceError",
    "find_free_port",
    "mqtt_connect_rc",
]

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_RUNNING: weakref.WeakSet[Service] = weakref.WeakSet()


class ServiceError(RuntimeError):
    """A service could not be started or did not become ready."""


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (all sockets held open while choosing)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _service_user(preferred: str) -> pwd.struct_passwd | None:
    """The account to run a daemon as: ``preferred`` when we are root, else None (ourselves).

    PostgreSQL refuses to run as root and Mosquitto drops to its own user, so
    as root we start them directly as the package's system user instead.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(preferred)
    except KeyError:
        return None


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    """Give ``path`` and everything under it to ``user`` (no-op when None)."""
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the daemon if the test process dies, so none is left behind.

    The kernel ties this to the *thread* that forked, so it is only used for
    starts from the main thread (a start from a short-lived worker thread
    would otherwise kill the server when that thread ends).
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@atexit.register
def _stop_all() -> None:
    """Last-resort cleanup for servers a crashed fixture never stopped."""
    for service in list(_RUNNING):
        with contextlib.suppress(Exception):
            service.stop()


class Service:
    """Process lifecycle shared by all servers: spawn, wait ready, stop, clean up."""

    name: ClassVar[str] = "service"
    debian_packages: ClassVar[str] = ""
    run_as: ClassVar[str | None] = None
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout: ClassVar[float] = 30.0

    def __init__(self, base_dir: str | Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"mf-{self.name}-", dir=base_dir))
        self.log_path = self.dir / f"{self.name}.log"
        self.user = _service_user(self.run_as) if self.run_as else None
        self.port = find_free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    # -- hooks for subclasses -------------------------------------------------
    @classmethod
    def missing_binaries(cls) -> list[str]:
        """Binaries/files this service needs that are not installed."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """One-time setup before the first start (config files, initdb)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _run_logged(self, cmd: list[str], *, as_service_user: bool = False) -> None:
        """Run a setup command, appending its output to the log; ServiceError if it fails."""
        user = self.user if as_service_user else None
        with open(self.log_path, "ab") as log:
            result = subprocess.run(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                check=False,
            )
        if result.returncode != 0:
            self._fail(f"setup step {Path(cmd[0]).name} failed with code {result.returncode}")

    def _ping(self) -> None:
        """Raise unless the server answers at protocol level."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Start (or restart on the same dir and port) and block until ready."""
        if self.running:
            return self
        missing = self.missing_binaries()
        if missing:
            raise ServiceError(f"{self.name}: not installed: {', '.join(missing)}")
        began = time.monotonic()
        if not (self.dir / ".prepared").exists():
            self._prepare()
            (self.dir / ".prepared").touch()
        _chown_tree(self.dir, self.user)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill() reaches children
                preexec_fn=_die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
                user=self.user.pw_uid if self.user else None,
                group=self.user.pw_gid if self.user else None,
                extra_groups=[] if self.user else None,
            )
        _RUNNING.add(self)
        self._wait_ready(began)
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, began: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() - began < self.start_timeout:
            if self.proc is not None and self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode} during startup")
            if _tcp_open(self.port):
                try:
                    self._ping()
                    return
                except Exception as exc:
                    last_error = exc
            time.sleep(0.1)
        self.kill()
        self._fail(f"not ready after {self.start_timeout:.0f}s (last ping error: {last_error!r})")

    def _fail(self, why: str) -> None:
        raise ServiceError(
            f"{self.name} on port {self.port} {why}\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the service log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop (data kept, port kept): signal, wait, then SIGKILL the group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, like a crash."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        self.proc = None
        _RUNNING.discard(self)

    def close(self) -> None:
        """Stop and delete the temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- PostgreSQL -------------------------------------------------------------------


def _postgres_bindir() -> Path | None:
    """Newest /usr/lib/postgresql/<ver>/bin that has initdb (Debian keeps them off PATH)."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return candidates[-1] if candidates else None


_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresServer(Service):
    """A private PostgreSQL cluster (trust auth, loopback only).

    As root the cluster runs as the ``postgres`` system user the Debian
    package creates (postgres refuses to run as root); the whole temp dir is
    chowned to it. ``fsync=off`` only speeds things up: a killed postmaster
    still loses nothing already committed, because the OS page cache holds
    it, so ``kill()`` + ``start()`` is a faithful crash test.
    """

    name = "postgres"
    debian_packages = "postgresql"
    run_as = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients
    superuser = "postgres"

    def __init__(self, base_dir: str | Path | None = None) -> None:
        super().__init__(base_dir)
        if os.geteuid() == 0 and self.user is None:
            self.user = _service_user("nobody")
        self.bindir = _postgres_bindir()
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "sock"

    @classmethod
    def missing_binaries(cls) -> list[str]:
        bindir = _postgres_bindir()
        if bindir is None:
            return ["/usr/lib/postgresql/*/bin/initdb"]
        return [str(bindir / b) for b in ("postgres", "psql", "pg_isready") if not (bindir / b).exists()]

    @property
    def dsn(self) -> str:
        """``postgres://postgres@127.0.0.1:PORT/postgres`` (asyncpg/Tortoise style)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgres://{self.superuser}@{self.host}:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        assert self.bindir is not None
        return str(self.bindir / name)

    def _prepare(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-done earlier initdb
        self.socket_dir.mkdir(exist_ok=True)
        _chown_tree(self.dir, self.user)
        initdb = [self._bin("initdb"), "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync"]  # fmt: skip
        self._run_logged(initdb, as_service_user=True)

    def _command(self) -> list[str]:
        return [
            self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-h", self.host, "-k", str(self.socket_dir),
            "-c", "fsync=off", "-c", "logging_collector=off", "-c", "max_connections=200",
        ]  # fmt: skip

    def _ping(self) -> None:
        subprocess.run(
            [self._bin("pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-U", self.superuser,
             "-d", "postgres", "-t", "2"],
            check=True,
            timeout=5,
        )  # fmt: skip
        self.psql("SELECT 1")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command through psql over TCP; return its unaligned output."""
        result = subprocess.run(
            [self._bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", self.superuser, "-d", database, "-c", sql],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (plain identifier) and return its dsn."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting any sessions still using it."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- InfluxDB 1.x -----------------------------------------------------------------------

_INFLUX_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "info"

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = true
"""


class InfluxServer(Service):
    """A private InfluxDB 1.x (Debian's 1.6): v1 HTTP API on ``url``.

    The generated config puts meta/data/wal under the temp dir, moves the
    RPC bind address (default 8088) to a free port, disables reporting, the
    ``_internal`` monitor store and every other listener (graphite, collectd,
    opentsdb, udp). ``stop()``/``start()`` reuse dirs and both ports, which is
    what the outage tests rely on.
    """

    name = "influx"
    debian_packages = "influxdb"

    def __init__(self, base_dir: str | Path | None = None) -> None:
        super().__init__(base_dir)
        self.port, self.rpc_port = _free_ports(2)
        self.config_path = self.dir / "influxdb.conf"

    @classmethod
    def missing_binaries(cls) -> list[str]:
        return [] if shutil.which("influxd") else ["influxd"]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> None:
        self.config_path.write_text(
            _INFLUX_CONFIG.format(dir=self.dir, port=self.port, rpc_port=self.rpc_port)
        )

    def _command(self) -> list[str]:
        return [shutil.which("influxd") or "influxd", "run", "-config", str(self.config_path)]

    def _ping(self) -> None:
        with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as resp:
            if resp.status != 204:
                raise ServiceError(f"/ping answered {resp.status}")

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """POST an InfluxQL statement to /query and return the decoded JSON."""
        params = {"q": q} | ({"db": db} if db else {})
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as resp:
            result: dict[str, Any] = json.load(resp)
        return result


# -- Mosquitto -------------------------------------------------------------------------


def _dynsec_plugin() -> str | None:
    """Path of mosquitto_dynamic_security.so (from ``dpkg -L mosquitto``, else a glob)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["dpkg", "-L", "mosquitto"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.endswith("/mosquitto_dynamic_security.so") and os.path.exists(line):
                return line
    found = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") + glob.glob(
        "/usr/lib/mosquitto_dynamic_security.so"
    )
    return found[0] if found else None


def _mqtt_client(client_id: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)


# MQTT 3.1.1 CONNACK return codes by the names paho 2.x gives its ReasonCode.
_CONNACK_RC = {
    "Success": 0,
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}


def _loop_until(client: mqtt.Client, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"MQTT: no {what} within {timeout}s")
        client.loop(timeout=0.05)


def _disconnect(client: mqtt.Client) -> None:
    """Send DISCONNECT and let paho flush it, which also closes the socket."""
    with contextlib.suppress(Exception):
        client.disconnect()
        client.loop(timeout=0.1)


def mqtt_connect_rc(
    host: str, port: int, username: str | None = None, password: str | None = None, timeout: float = 5.0
) -> int:
    """Send one MQTT 3.1.1 CONNECT and return the CONNACK return code (0 ok, 5 not authorised).

    paho 2.x maps v3 codes to v5 ReasonCodes (5 -> 135); this maps them back
    so tests can assert on the code the broker actually sent.
    """
    client = _mqtt_client(f"probe-{secrets.token_hex(4)}")
    if username is not None:
        client.username_pw_set(username, password)
    result: list[int] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(_CONNACK_RC.get(rc.getName(), 255))
    try:
        client.connect(host, port, keepalive=10)
        _loop_until(client, lambda: bool(result), timeout, "CONNACK")
        return result[0]
    finally:
        _disconnect(client)


class MosquittoServer(Service):
    """A private Mosquitto 2.0 broker, by default with the dynamic-security plugin.

    Before the first start ``mosquitto_ctrl dynsec init FILE admin PASSWORD``
    writes the dynsec JSON; that admin client has the ``admin`` role, which may
    publish to ``$CONTROL/dynamic-security/#``. Anonymous clients are refused.
    With ``dynsec=False`` it is a plain ``allow_anonymous true`` broker.

    Control API as it works with mosquitto 2.0.11 (MQTT 3.1.1 is fine): the
    admin publishes to ``$CONTROL/dynamic-security/v1`` a JSON object::

        {"commands": [{"command": "listClients"}]}

        {"commands": [
          {"command": "createRole", "rolename": "dev",
           "acls": [{"acltype": "publishClientSend", "topic": "t/#", "allow": true}]},
          {"command": "createClient", "username": "dev1", "password": "s3cret",
           "roles": [{"rolename": "dev", "priority": 1}]}]}

    and gets on ``$CONTROL/dynamic-security/v1/response``::

        {"responses": [{"command": "listClients",
                        "data": {"totalCount": 1, "clients": ["admin"]}}]}
        {"responses": [{"command": "createRole"}, {"command": "createClient"}]}

    (a failed command carries ``"error": "..."``). ``dynsec()`` does this
    round trip. As root the broker runs as the ``mosquitto`` system user.
    """

    name = "mosquitto"
    debian_packages = "mosquitto mosquitto-clients"
    run_as = "mosquitto"
    control_topic = "$CONTROL/dynamic-security/v1"
    response_topic = "$CONTROL/dynamic-security/v1/response"

    def __init__(self, base_dir: str | Path | None = None, *, dynsec: bool = True) -> None:
        super().__init__(base_dir)
        self.dynsec_enabled = dynsec
        self.admin_username = "admin"
        self.admin_password = secrets.token_urlsafe(18)
        self.config_path = self.dir / "mosquitto.conf"
        self.dynsec_path = self.dir / "dynamic-security.json"

    @classmethod
    def missing_binaries(cls) -> list[str]:
        missing = [b for b in ("mosquitto", "mosquitto_ctrl") if shutil.which(b) is None]
        if _dynsec_plugin() is None:
            missing.append("mosquitto_dynamic_security.so")
        return missing

    def _prepare(self) -> None:
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "persistence false",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0 and self.user is None:
            lines.append("user root")  # no mosquitto account: do not try to drop to it
        if self.dynsec_enabled:
            self.dynsec_path.unlink(missing_ok=True)  # `dynsec init` refuses to overwrite
            self._run_logged(
                ["mosquitto_ctrl", "dynsec", "init", str(self.dynsec_path), self.admin_username,
                 self.admin_password]
            )  # fmt: skip
            lines += [
                "allow_anonymous false",
                f"plugin {_dynsec_plugin()}",
                f"plugin_opt_config_file {self.dynsec_path}",
            ]
        else:
            lines.append("allow_anonymous true")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [shutil.which("mosquitto") or "mosquitto", "-c", str(self.config_path)]

    def _ping(self) -> None:
        if self.dynsec_enabled:
            response = self.dynsec([{"command": "listClients"}], timeout=2)
            if "error" in response["responses"][0]:
                raise ServiceError(f"dynsec listClients failed: {response}")
        else:
            rc = mqtt_connect_rc(self.host, self.port, timeout=2)
            if rc != 0:
                raise ServiceError(f"CONNACK rc {rc}")

    def dynsec(self, commands: list[dict[str, Any]], timeout: float = 10.0) -> dict[str, Any]:
        """Send dynsec commands as admin and return the decoded response object."""
        client = _mqtt_client(f"dynsec-admin-{secrets.token_hex(4)}")
        client.username_pw_set(self.admin_username, self.admin_password)
        state: dict[str, Any] = {}
        client.on_connect = lambda _c, _u, _f, rc, _p: state.update(connack=rc)
        client.on_subscribe = lambda _c, _u, _m, rcs, _p: state.update(suback=rcs)
        client.on_message = lambda _c, _u, msg: state.update(response=json.loads(msg.payload))
        try:
            client.connect(self.host, self.port, keepalive=10)
            _loop_until(client, lambda: "connack" in state, timeout, "CONNACK")
            if state["connack"].is_failure:
                raise ServiceError(f"admin CONNECT refused: {state['connack']}")
            client.subscribe(self.response_topic, qos=1)
            _loop_until(client, lambda: "suback" in state, timeout, "SUBACK")
            client.publish(self.control_topic, json.dumps({"commands": commands}), qos=1)
            _loop_until(client, lambda: "response" in state, timeout, "dynsec response")
            result: dict[str, Any] = state["response"]
            return result
        finally:
            _disconnect(client)
