"""The local stack: Apache Kafka (KRaft, jars from Maven Central) and Redis, started on 127.0.0.1.

Both are started idempotently: a service that already answers on its address is left alone.
Data, logs and pid files live under ``settings.state_dir`` (git-ignored).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from pipeline import kafka
from pipeline.errors import KafkaUnavailable, StackError
from pipeline.settings import Settings

__all__ = ["LocalKafka", "LocalRedis", "ServiceStatus", "stack_status"]

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.2


@dataclass
class ServiceStatus:
    """What `gruwatch status` reports for one service."""

    up: bool
    address: str
    version: str | None = None
    managed: bool = False  # started by `gruwatch up` (its pid file names a live process)
    pid: int | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process still runs."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A zombie still accepts signal 0; treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return pid
    return None if state == "Z" else pid


def _stop_pid(pid: int, name: str, timeout: float = _STOP_TIMEOUT_S) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not exited in ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(_POLL_S)
    logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_until(ready: Callable[[], bool], alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if not alive():
            return False
        time.sleep(_POLL_S)
    return ready()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class LocalKafka:
    """A single combined broker/controller, formatted once, run with the machine's java."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        servers = settings.kafka_servers
        if len(servers) != 1:
            raise StackError("the local stack runs one broker; GRUWATCH_KAFKA_BOOTSTRAP names several")
        self.host, self.port = _host_port(servers[0])
        self.controller_port = settings.kafka_controller_port or self.port + 1
        self.deploy_dir = settings.home / "deploy" / "kafka"
        self.lib_dir = self.deploy_dir / "lib"
        self.dir = settings.state_dir / "kafka"
        self.log_dirs = self.dir / "data"
        self.config_file = self.dir / "server.properties"
        self.pid_file = self.dir / "kafka.pid"
        self.log_file = self.dir / "kafka.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in _LOCAL_HOSTS

    def jar_version(self) -> str | None:
        """The broker version resolved by deploy/kafka/pom.xml, read off the core jar's name."""
        for jar in sorted(self.lib_dir.glob("*kafka_2.13-*.jar")):
            return jar.stem.rsplit("-", 1)[1]
        return None

    def _java_opts(self) -> list[str]:
        return [
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.deploy_dir / 'log4j2.properties'}",
        ]

    def _render_config(self) -> None:
        overrides = {
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "log.dirs": str(self.log_dirs),
        }
        lines = []
        for line in (self.deploy_dir / "server.properties").read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key in overrides and not line.lstrip().startswith("#"):
                line = f"{key}={overrides.pop(key)}"
            lines.append(line)
        lines.extend(f"{k}={v}" for k, v in overrides.items())
        self.config_file.write_text("\n".join(lines) + "\n")

    def _format_storage(self) -> None:
        # Kafka's own Uuid.randomUuid redraws ids that start with '-'; so do we.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Static quorum (controller.quorum.voters): formatted without --standalone.
        cmd = [
            "java",
            *self._java_opts(),
            "-cp",
            f"{self.lib_dir}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {result.stderr.strip() or result.stdout.strip()}")

    def _responds(self) -> bool:
        if not _port_open(self.host, self.port):
            return False
        try:
            kafka.broker_info(self.settings)
        except KafkaUnavailable:
            return False
        return True

    def start(self) -> str:
        """Start the broker unless it answers already; returns 'running' or 'started'."""
        if self._responds():
            return "running"
        if not self.is_local:
            raise StackError(
                f"Kafka at {self.address} is not answering, and it is not local, so gruwatch will not start it"
            )
        if shutil.which("java") is None:
            raise StackError("java is not installed (Java 17+ is needed for the Kafka broker)")
        if self.jar_version() is None:
            raise StackError(f"no Kafka jars in {self.lib_dir}: run `make setup` first")
        if (pid := _pid_alive(self.pid_file)) is not None:
            # Ours, but not answering yet (still starting, or wedged): give it the start timeout.
            if _wait_until(
                self._responds,
                lambda: _pid_alive(self.pid_file) is not None,
                self.settings.kafka_start_timeout_s,
            ):
                return "running"
            raise StackError(f"Kafka (pid {pid}) runs but does not answer on {self.address}; see {self.log_file}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._render_config()
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage()
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                [
                    "java",
                    *self._java_opts(),
                    "-cp",
                    f"{self.lib_dir}/*",
                    "kafka.Kafka",
                    str(self.config_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; `gruwatch down` stops it
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            ready = _wait_until(self._responds, lambda: proc.poll() is None, self.settings.kafka_start_timeout_s)
        except BaseException:
            _stop_pid(proc.pid, "kafka")  # never leave a half-started broker behind (Ctrl-C, bugs)
            raise
        if not ready:
            if proc.poll() is None:
                _stop_pid(proc.pid, "kafka")
            raise StackError(f"Kafka did not become ready on {self.address}:\n{_tail(self.log_file)}")
        return "started"

    def stop(self) -> bool:
        """Stop the broker gruwatch started; returns False when none was running."""
        pid = _pid_alive(self.pid_file)
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _stop_pid(pid, "kafka")
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> ServiceStatus:
        pid = _pid_alive(self.pid_file)
        status = ServiceStatus(up=False, address=self.address, managed=pid is not None, pid=pid)
        try:
            info = kafka.broker_info(self.settings)
        except KafkaUnavailable as exc:
            status.error = str(exc)
            return status
        status.up = True
        # The wire protocol says only major.minor; a broker we started is the jar's exact version.
        status.version = self.jar_version() if pid is not None else info["protocol_version"]
        gruwatch_topics = [
            *self.settings.topics,
            self.settings.alerts_topic,
            self.settings.deadletter_topic,
        ]
        partitions = kafka.topic_partitions(self.settings, gruwatch_topics)
        status.details = {
            "cluster_id": info["cluster_id"],
            "brokers": info["brokers"],
            "topics": {t: {"exists": t in partitions, "partitions": partitions.get(t, 0)} for t in gruwatch_topics},
        }
        return status


class LocalRedis:
    """redis-server from the machine's packages, with an append-only file under the state dir."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host, self.port = settings.redis_host_port
        self.dir = settings.state_dir / "redis"
        self.pid_file = self.dir / "redis.pid"
        self.log_file = self.dir / "redis.log"
        self.conf = settings.home / "deploy" / "redis" / "redis.conf"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.settings.redis_url.get_secret_value(), socket_connect_timeout=1, socket_timeout=2
        )

    def _info(self) -> dict[str, Any] | None:
        try:
            with self._client() as client:
                return client.info("server")
        except (redis.RedisError, OSError):
            return None

    def start(self) -> str:
        if self._info() is not None:
            return "running"
        if self.host not in _LOCAL_HOSTS:
            raise StackError(
                f"Redis at {self.address} is not answering, and it is not local, so gruwatch will not start it"
            )
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed: run `make setup` (or `apt-get install redis-server`)")
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary,
            str(self.conf),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--pidfile",
            str(self.pid_file),
            "--logfile",
            str(self.log_file),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # daemonizes
        if result.returncode != 0:
            raise StackError(f"redis-server failed to start: {result.stderr.strip() or result.stdout.strip()}")
        if not _wait_until(lambda: self._info() is not None, lambda: True, 15.0):
            raise StackError(f"Redis did not become ready on {self.address}:\n{_tail(self.log_file)}")
        return "started"

    def stop(self) -> bool:
        pid = _pid_alive(self.pid_file)
        if pid is None:
            return False
        _stop_pid(pid, "redis")
        return True

    def status(self) -> ServiceStatus:
        pid = _pid_alive(self.pid_file)
        status = ServiceStatus(up=False, address=self.address, managed=pid is not None, pid=pid)
        info = self._info()
        if info is None:
            status.error = f"Redis at {self.address} is unreachable"
            return status
        status.up = True
        status.version = str(info.get("redis_version"))
        status.details = {"mode": info.get("redis_mode"), "uptime_s": info.get("uptime_in_seconds")}
        return status


def stack_status(settings: Settings) -> dict[str, ServiceStatus]:
    return {"kafka": LocalKafka(settings).status(), "redis": LocalRedis(settings).status()}
