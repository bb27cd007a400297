"""Real servers for tests: private redis-server and memcached, and a gunicorn running a test app."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start: {last!r}")


@contextlib.contextmanager
def running_fake_command(*options: str) -> Iterator[tuple[str, str]]:
    """`flask toucan fake --port P *options` in a real subprocess, as a user runs it: its
    URL, and what it printed up to "Ctrl-C to stop" (it is listening by then)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "toucan", "fake", "--port", str(port), *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while not any("Ctrl-C" in line for line in lines):
            started = process.poll() is None and time.monotonic() < deadline
            assert started, "flask toucan fake did not start: " + "".join(lines)
            lines.append(process.stdout.readline())
        yield f"http://127.0.0.1:{port}", "".join(lines)
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


def need(program: str, package: str) -> str:
    binary = shutil.which(program)
    if binary is None:
        pytest.fail(
            f"{program} is needed for the Redis tests: install Debian's {package} "
            "package (scripts/test.sh does it when it can)",
            pytrace=False,
        )
    return binary


class RedisServer:
    """A redis-server of our own on a free loopback port (the system one is left alone)."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.binary = need("redis-server", "redis-server")
        self.port = port or free_port()
        self.extra = extra
        self.dir = tempfile.mkdtemp(prefix="toucan-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
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
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: self.client().ping(), 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=1)


class RedisSentinelSet:
    """One master and one redis-sentinel watching it, on free loopback ports."""

    master_name = "toucan-master"

    def __init__(self) -> None:
        self.sentinel_binary = need("redis-sentinel", "redis-sentinel")
        self.master = RedisServer()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisSentinelSet:
        self.master.start()
        conf = Path(self.master.dir) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.master.dir}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
        )
        self.process = subprocess.Popen(
            [self.sentinel_binary, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sentinel = redis.Redis(port=self.port, socket_timeout=1)
        _wait(
            lambda: (
                sentinel.sentinel_get_master_addr_by_name(self.master_name)[1] == self.master.port
            ),
            10,
            "redis-sentinel",
        )
        return self

    @property
    def cache_config(self) -> dict[str, Any]:
        return {
            "CACHE_TYPE": "RedisSentinelCache",
            "CACHE_REDIS_SENTINELS": [("127.0.0.1", self.port)],
            "CACHE_REDIS_SENTINEL_MASTER": self.master_name,
        }

    def client(self) -> redis.Redis:
        return self.master.client()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
        self.master.stop()


class RedisClusterSet:
    """Three redis-server cluster nodes joined by ``redis-cli --cluster create``."""

    def __init__(self, size: int = 3) -> None:
        self.cli = need("redis-cli", "redis-tools")
        self.nodes = [RedisServer(None, *self._cluster_options(i)) for i in range(size)]

    @staticmethod
    def _cluster_options(i: int) -> list[str]:
        options = {"cluster-enabled": "yes", "cluster-config-file": f"nodes-{i}.conf"}
        options["cluster-node-timeout"] = "1000"
        # The bus port defaults to port + 10000, which may be taken or past 65535.
        options["cluster-port"] = str(free_port())
        return [part for name, value in options.items() for part in (f"--{name}", value)]

    def start(self) -> RedisClusterSet:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        _wait(self._ready, 20, "redis cluster")
        return self

    def _ready(self) -> bool:
        client = self.client()
        try:
            return bool(client.cluster_info()["cluster_state"] == "ok" and client.ping())
        finally:
            client.close()

    @property
    def cache_config(self) -> dict[str, Any]:
        return {
            "CACHE_TYPE": "RedisClusterCache",
            "CACHE_REDIS_CLUSTER": ",".join(f"127.0.0.1:{n.port}" for n in self.nodes),
        }

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class MemcachedServer:
    """A memcached of our own on a free loopback port."""

    def __init__(self) -> None:
        self.binary = need("memcached", "memcached")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cache_config(self) -> dict[str, Any]:
        return {"CACHE_TYPE": "MemcachedCache", "CACHE_MEMCACHED_SERVERS": [self.address]}

    def start(self) -> MemcachedServer:
        as_root = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses root otherwise
        self.process = subprocess.Popen(
            [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", *as_root],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"version\r\n")
                return s.recv(64).startswith(b"VERSION")

        _wait(up, 10, "memcached")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def raw(self, command: bytes) -> bytes:
        """One memcached text-protocol command and its whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(command)
            answer = b""
            while not answer.endswith((b"END\r\n", b"STORED\r\n", b"NOT_STORED\r\n")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer


class Gunicorn:
    """gunicorn serving a test or example app with real worker processes."""

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 4,
        threads: int = 8,
        app: str = "tests.gunicorn_app:create_app()",
        health: str = "/health",
        config: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="gunicorn-", suffix=".log", delete=False
        )
        command = [sys.executable, "-m", "gunicorn"]
        if config:
            command += ["--config", config]
        command += [
            "--workers", str(workers), "--threads", str(threads),
            "--bind", f"127.0.0.1:{self.port}", "--backlog", "512",
            "--graceful-timeout", "2", app,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import requests

        _wait(lambda: requests.get(self.url + health, timeout=1).ok, 30, "gunicorn")

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()
        return Path(self.log.name).read_text(errors="replace")
