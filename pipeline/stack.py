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

__all__ = ["KafkaNode", "LocalKafka", "LocalRedis", "ServiceStatus", "stack_status"]

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


def _random_cluster_id() -> str:
    # Kafka's own Uuid.randomUuid redraws ids that start with '-'; so do we.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    return cluster_id


class KafkaNode:
    """One combined broker/controller process of the local cluster."""

    def __init__(
        self,
        settings: Settings,
        node_id: int,
        address: str,
        controller_port: int,
        directory: Path,
        voters: str,
        overrides: dict[str, str],
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.host, self.port = _host_port(address)
        self.controller_port = controller_port
        self.voters = voters
        self.overrides = overrides
        self.deploy_dir = settings.home / "deploy" / "kafka"
        self.lib_dir = self.deploy_dir / "lib"
        self.dir = directory
        self.log_dirs = self.dir / "data"
        self.config_file = self.dir / "server.properties"
        self.pid_file = self.dir / "kafka.pid"
        self.log_file = self.dir / "kafka.log"
        # Readiness asks this node alone, not whichever broker of the cluster answers first.
        self._own = settings.model_copy(update={"kafka_bootstrap": self.address})

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def java_opts(self) -> list[str]:
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
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.quorum.voters": self.voters,
            "log.dirs": str(self.log_dirs),
            **self.overrides,
        }
        lines = []
        for line in (self.deploy_dir / "server.properties").read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key in overrides and not line.lstrip().startswith("#"):
                line = f"{key}={overrides.pop(key)}"
            lines.append(line)
        lines.extend(f"{k}={v}" for k, v in overrides.items())
        self.config_file.write_text("\n".join(lines) + "\n")

    def _format_storage(self, cluster_id: str) -> None:
        # Static quorum (controller.quorum.voters): formatted without --standalone.
        cmd = [
            "java",
            *self.java_opts(),
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

    def responds(self) -> bool:
        if not _port_open(self.host, self.port):
            return False
        try:
            kafka.broker_info(self._own)
        except KafkaUnavailable:
            return False
        return True

    def alive(self) -> int | None:
        return _pid_alive(self.pid_file)

    def launch(self, cluster_id: str) -> None:
        """Format once and start the process; readiness is the cluster's to wait for."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._render_config()
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage(cluster_id)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                ["java", *self.java_opts(), "-cp", f"{self.lib_dir}/*", "kafka.Kafka", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; `gruwatch down` stops it
            )
        self.pid_file.write_text(str(proc.pid))

    def stop(self) -> bool:
        pid = _pid_alive(self.pid_file)
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _stop_pid(pid, f"kafka node {self.node_id}")
        self.pid_file.unlink(missing_ok=True)
        return True


class LocalKafka:
    """Apache Kafka in KRaft mode from the jars deploy/kafka/pom.xml resolves, run with the machine's
    java: one combined broker/controller per address in GRUWATCH_KAFKA_BOOTSTRAP (controller port =
    broker port + 1). One address is the everyday stack; three make a cluster with replication
    factor 3 and min.insync.replicas 2."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        servers = settings.kafka_servers
        hosts = [_host_port(s) for s in servers]
        self.is_local = all(host in _LOCAL_HOSTS for host, _ in hosts)
        controller_ports = (
            [settings.kafka_controller_port or hosts[0][1] + 1] if len(hosts) == 1 else [p + 1 for _, p in hosts]
        )
        voters = ",".join(
            f"{i + 1}@{host}:{cp}" for i, ((host, _), cp) in enumerate(zip(hosts, controller_ports, strict=True))
        )
        replicas = min(3, len(hosts))
        overrides = (
            {}
            if len(hosts) == 1
            else {
                "default.replication.factor": str(replicas),
                "min.insync.replicas": str(min(2, replicas)),
                "offsets.topic.replication.factor": str(replicas),
                "transaction.state.log.replication.factor": str(replicas),
                "transaction.state.log.min.isr": str(min(2, replicas)),
                "share.coordinator.state.topic.replication.factor": str(replicas),
                "share.coordinator.state.topic.min.isr": str(min(2, replicas)),
            }
        )
        base = settings.state_dir
        self.nodes = [
            KafkaNode(
                settings,
                i + 1,
                server,
                cp,
                base / ("kafka" if len(hosts) == 1 else f"kafka-{i + 1}"),
                voters,
                overrides,
            )
            for i, (server, cp) in enumerate(zip(servers, controller_ports, strict=True))
        ]
        self.lib_dir = self.nodes[0].lib_dir
        self._cluster_id_file = base / "kafka-cluster.id"

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    def jar_version(self) -> str | None:
        """The broker version resolved by deploy/kafka/pom.xml, read off the core jar's name."""
        for jar in sorted(self.lib_dir.glob("*kafka_2.13-*.jar")):
            return jar.stem.rsplit("-", 1)[1]
        return None

    def _cluster_id(self) -> str:
        if len(self.nodes) == 1:
            return _random_cluster_id()
        # Every node of a cluster is formatted with the same id.
        if not self._cluster_id_file.exists():
            self._cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
            self._cluster_id_file.write_text(_random_cluster_id())
        return self._cluster_id_file.read_text().strip()

    def start(self) -> str:
        """Start every node that is not answering; returns 'running' or 'started'."""
        if all(node.responds() for node in self.nodes):
            return "running"
        if not self.is_local:
            raise StackError(
                f"Kafka at {self.address} is not answering, and it is not local, so gruwatch will not start it"
            )
        if shutil.which("java") is None:
            raise StackError("java is not installed (Java 17+ is needed for the Kafka broker)")
        if self.jar_version() is None:
            raise StackError(f"no Kafka jars in {self.lib_dir}: run `make setup` first")
        launched = []
        for node in self.nodes:
            if node.alive() is None and not node.responds():
                node.launch(self._cluster_id())
                launched.append(node)
        # A quorum needs its voters up together: launch all, then wait for all.
        try:
            ready = _wait_until(
                lambda: all(n.responds() for n in self.nodes),
                lambda: all(n.alive() is not None or n.responds() for n in self.nodes),
                self.settings.kafka_start_timeout_s,
            )
        except BaseException:
            for node in launched:
                node.stop()  # never leave a half-started broker behind (Ctrl-C, bugs)
            raise
        if not ready:
            for node in launched:
                node.stop()
            failed = next((n for n in self.nodes if not n.responds()), self.nodes[0])
            raise StackError(f"Kafka did not become ready on {failed.address}:\n{_tail(failed.log_file)}")
        return "started" if launched else "running"

    def stop(self) -> bool:
        """Stop the nodes gruwatch started; returns False when none was running."""
        return any([node.stop() for node in self.nodes])

    def status(self) -> ServiceStatus:
        pids = [node.alive() for node in self.nodes]
        managed = [p for p in pids if p is not None]
        status = ServiceStatus(
            up=False, address=self.address, managed=bool(managed), pid=managed[0] if managed else None
        )
        try:
            info = kafka.broker_info(self.settings)
        except KafkaUnavailable as exc:
            status.error = str(exc)
            return status
        status.up = True
        # The wire protocol says only major.minor; a broker we started is the jar's exact version.
        status.version = self.jar_version() if managed else info["protocol_version"]
        gruwatch_topics = [
            *self.settings.topics,
            self.settings.alerts_topic,
            self.settings.deadletter_topic,
        ]
        partitions = kafka.topic_partitions(self.settings, gruwatch_topics)
        status.details = {
            "cluster_id": info["cluster_id"],
            "brokers": info["brokers"],
            "pids": managed,
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
