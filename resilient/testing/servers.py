"""Throwaway PostgreSQL and Redis servers on free 127.0.0.1 ports, for fault tests.

Both are plain subprocesses that the test owns, so a test may stop, kill or restart them
without touching any shared server::

    with postgres_server() as pg:          # initdb + pg_ctl start (as ``postgres`` when root)
        url = pg.url                       # postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
        pg.restart()
    with redis_server() as rs:             # foreground redis-server, no persistence
        rs.kill(); rs.start()
    with redis_cluster() as rc:            # 3 masters joined by redis-cli --cluster create
        url = rc.url                       # redis+cluster://127.0.0.1:P1,...
    with redis_sentinel() as rs:           # master + replica + 3 Sentinels
        url = rs.url                       # redis+sentinel://127.0.0.1:S1,.../resilient/0
        rs.failover()                      # kill the master; wait for the promotion

Everything (processes, data directories) is removed when the block ends, and at interpreter
exit for servers that were never stopped.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "PostgresServer",
    "RedisClusterServer",
    "RedisSentinelServer",
    "RedisServer",
    "free_port",
    "postgres_server",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
]

_live: weakref.WeakSet[Any] = weakref.WeakSet()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float, *, up: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.01)
    return False


def _traversable_tmp() -> str:
    """A temp base every user can traverse (the ``postgres`` user must reach the data dir)."""
    base = Path(tempfile.gettempdir()).resolve()
    for p in (base, *base.parents):
        if not os.stat(p).st_mode & 0o001:
            return "/tmp"
    return str(base)


def _pg_bindir() -> str:
    env = os.environ.get("RESILIENT_PG_BIN")
    if env:
        return env
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = out.stdout.strip()
        if candidate and os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2] or 0))
    if dirs:
        return dirs[-1]
    if shutil.which("initdb"):
        return os.path.dirname(shutil.which("initdb") or "")
    raise RuntimeError(
        "PostgreSQL server binaries not found; install postgresql or set RESILIENT_PG_BIN"
    )


class PostgresServer:
    """A private PostgreSQL cluster (``initdb`` in a temp dir, ``pg_ctl`` on a free port).

    As root, ``initdb``/``pg_ctl`` run as the ``postgres`` user (PostgreSQL refuses root).
    """

    def __init__(self, *, port: int | None = None, options: str = "") -> None:
        self.port = port or free_port()
        self.bindir = _pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="resilient-pg-", dir=_traversable_tmp())
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.options = options
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self._initialized = False
        _live.add(self)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (trust authentication)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [os.path.join(self.bindir, args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=check,
            **self._as,
        )

    def start(self) -> None:
        """Create the cluster on first use, then start it and wait until it accepts."""
        if not self._initialized:
            self._run(
                "initdb",
                "-D",
                self.data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            )
            self._initialized = True
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections=200 {self.options}"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30", "-o", opts, "start")
        if not _wait_port(self.port, 10):
            raise RuntimeError(f"PostgreSQL did not listen on {self.port}; see {self.log}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``, ``immediate`` = crash, or ``smart``)."""
        if self._initialized and self.running:
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        """Stop then start again on the same port and data."""
        self.stop(mode)
        self.start()

    async def astop(self, mode: str = "fast") -> None:
        """:meth:`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop, mode)

    async def astart(self) -> None:
        """:meth:`start` without blocking the event loop."""
        await asyncio.to_thread(self.start)

    @property
    def running(self) -> bool:
        """Whether ``pg_ctl status`` reports a running server."""
        if not self._initialized:
            return False
        return self._run("pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def psql(self, sql: str) -> str:
        """Run ``sql`` with psql against the server; returns stdout."""
        out = subprocess.run(
            [
                os.path.join(self.bindir, "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
            **self._as,
        )
        return str(out.stdout)

    def destroy(self) -> None:
        """Stop immediately and remove the data directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)


class RedisServer:
    """A private foreground ``redis-server`` (no persistence) owned by this process."""

    def __init__(
        self, *, port: int | None = None, args: tuple[str, ...] = (), conf: str | None = None
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found; apt-get install redis-server")
        self.exe = exe
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="resilient-redis-")
        self.args = args
        self.conf: str | None = None
        if conf is not None:  # a config file the server may rewrite (Sentinel does)
            self.conf = os.path.join(self.dir, "redis.conf")
            Path(self.conf).write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None
        _live.add(self)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port and wait until it accepts connections."""
        if self.running:
            return
        self.proc = subprocess.Popen(
            [
                self.exe,
                *([self.conf] if self.conf else []),
                *self.args,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(self.dir, "log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not _wait_port(self.port, 10):
            raise RuntimeError(f"redis-server did not listen on {self.port}")

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the process to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server dies without closing connections cleanly."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop then start on the same port."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Kill the process and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)


def _redis_cli(port: int, *args: str, timeout: float = 10.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    return out.stdout


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class RedisClusterServer:
    """A throwaway Redis Cluster: ``size`` masters (no replicas) made one cluster with
    ``redis-cli --cluster create``; every node and its data are removed by :meth:`destroy`."""

    def __init__(self, *, size: int = 3, node_timeout_ms: int = 1000) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli not found; apt-get install redis-tools")
        self.nodes = [
            RedisServer(
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    # the bus port is given explicitly: port + 10000 may be past 65535
                    "--cluster-port",
                    str(free_port()),
                )
            )
            for _ in range(size)
        ]
        _live.add(self)

    @property
    def ports(self) -> list[int]:
        """The nodes' client ports."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...``."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        """Start every node, join them into one cluster and wait until it serves all slots."""
        for node in self.nodes:
            node.start()
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        _redis_cli(
            self.ports[0],
            "--cluster",
            "create",
            *hosts,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
            timeout=30,
        )
        _until(
            lambda: all("cluster_state:ok" in _redis_cli(p, "cluster", "info") for p in self.ports),
            30,
            "the cluster to serve every slot",
        )

    def destroy(self) -> None:
        """Kill every node and remove their directories."""
        for node in self.nodes:
            node.destroy()
        _live.discard(self)


class RedisSentinelServer:
    """A throwaway master + replica watched by three Sentinels (quorum 2) that fail over
    within about a second of the master's death."""

    def __init__(self, *, service: str = "resilient", down_after_ms: int = 400) -> None:
        self.service = service
        self.master = RedisServer()
        self.replica = RedisServer(args=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinels: list[RedisServer] = []
        for _ in range(3):
            conf = (
                f"sentinel monitor {service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} 2000\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
            self.sentinels.append(RedisServer(conf=conf, args=("--sentinel",)))
        _live.add(self)

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:S1,...,127.0.0.1:S3/<service>/0``."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def master_port(self) -> int:
        """The port of the master as the first answering Sentinel names it."""
        for sentinel in self.sentinels:
            if sentinel.running:
                out = _redis_cli(
                    sentinel.port, "sentinel", "get-master-addr-by-name", self.service
                ).split()
                if len(out) == 2:
                    return int(out[1])
        raise RuntimeError("no Sentinel names a master")

    def start(self) -> None:
        """Start master, replica and Sentinels; wait until the replica is in sync and every
        Sentinel knows the replica and the other Sentinels."""
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        _until(
            lambda: "master_link_status:up" in _redis_cli(self.replica.port, "info", "replication"),
            30,
            "the replica to sync",
        )

        def ready() -> bool:
            for sentinel in self.sentinels:
                info = _redis_cli(sentinel.port, "sentinel", "master", self.service).split()
                fields = dict(zip(info[::2], info[1::2], strict=False))
                if fields.get("num-slaves") != "1" or fields.get("num-other-sentinels") != "2":
                    return False
            return True

        _until(ready, 30, "the Sentinels to see the replica and each other")

    def failover(self, *, kill: bool = True, timeout: float = 20.0) -> int:
        """Kill the master (or ask for a failover with ``kill=False``) and wait until the
        Sentinels name the replica; returns the new master's port."""
        old = self.master_port()
        if kill:
            for server in (self.master, self.replica):
                if server.port == old:
                    server.kill()
        else:
            _redis_cli(self.sentinels[0].port, "sentinel", "failover", self.service)

        def moved() -> bool:
            # every Sentinel names the new master and sees it healthy (clients ask any one)
            ports = set()
            for sentinel in self.sentinels:
                info = _redis_cli(sentinel.port, "sentinel", "master", self.service).split()
                fields = dict(zip(info[::2], info[1::2], strict=False))
                if fields.get("flags") != "master":
                    return False
                ports.add(int(fields.get("port", "0")))
            if len(ports) != 1 or old in ports:
                return False
            return "role:master" in _redis_cli(ports.pop(), "info", "replication")

        _until(moved, timeout, "the Sentinels to promote the replica")
        return self.master_port()

    def destroy(self) -> None:
        """Kill every process and remove their directories."""
        for server in (*self.sentinels, self.replica, self.master):
            server.destroy()
        _live.discard(self)


@contextlib.contextmanager
def redis_cluster(*, size: int = 3) -> Iterator[RedisClusterServer]:
    """A started throwaway Redis Cluster of ``size`` masters, destroyed when the block ends."""
    cluster = RedisClusterServer(size=size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def redis_sentinel(*, service: str = "resilient") -> Iterator[RedisSentinelServer]:
    """A started throwaway master + replica + 3 Sentinels, destroyed when the block ends."""
    group = RedisSentinelServer(service=service)
    try:
        group.start()
        yield group
    finally:
        group.destroy()


@contextlib.contextmanager
def postgres_server(*, port: int | None = None, options: str = "") -> Iterator[PostgresServer]:
    """A started throwaway PostgreSQL cluster, destroyed when the block ends."""
    server = PostgresServer(port=port, options=options)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def redis_server(*, port: int | None = None) -> Iterator[RedisServer]:
    """A started throwaway Redis server, destroyed when the block ends."""
    server = RedisServer(port=port)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@atexit.register
def _cleanup() -> None:  # pragma: no cover - only for servers a crashed test left behind
    for server in list(_live):
        server.destroy()
