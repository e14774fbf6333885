"""A throw-away Redis Cluster of three masters on free ports, from the machine's redis-server."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.conftest import free_port


def _node_ports(count: int) -> list[int]:
    """Distinct free ports whose cluster-bus ports (port + 10000) are free and below the ephemeral range."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 < 32768 and port not in ports and _bindable(port + 10000):
            ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


@dataclass
class LocalRedisCluster:
    root: Path
    ports: list[int] = field(default_factory=lambda: _node_ports(3))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _node_dir(self, port: int) -> Path:
        return self.root / str(port)

    def start_node(self, port: int) -> None:
        directory = self._node_dir(port)
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "3000",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--dir",
                str(directory),
                "--pidfile",
                str(directory / "redis.pid"),
                "--logfile",
                str(directory / "log"),
            ],
            check=True,
        )
        self._wait(lambda: self._ping(port), f"node {port} to answer")

    def stop_node(self, port: int) -> None:
        """A clean shutdown (the append-only file is flushed), as an operator's restart does."""
        with contextlib.suppress(redis.ConnectionError):  # the connection drops as the server exits
            redis.Redis(port=port, socket_timeout=5).shutdown(nosave=False)
        self._wait(lambda: not self._ping(port), f"node {port} to stop")

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._wait(self.healthy, "the cluster to cover every slot")

    def healthy(self) -> bool:
        try:
            info = redis.Redis(port=self.ports[0], socket_timeout=2).cluster("info")
        except redis.RedisError:
            return False
        return bool(info.get("cluster_state") == "ok")

    def stop(self) -> None:
        for port in self.ports:
            if self._ping(port):
                self.stop_node(port)

    @staticmethod
    def _ping(port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    @staticmethod
    def _wait(condition: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")
