"""Embedded Apache Kafka 4.x in KRaft mode (one JVM is both broker and controller).

The jars come from Maven Central through Maven (`fetch_jars`), the storage is formatted once, and the broker
runs as `java -cp 'libs/*' kafka.Kafka server.properties`. The same jars provide Kafka's own tools
(`run_tool("kafka-topics", ...)`, `ProducerPerformance`).
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clickstream_dagster.stack.config import KAFKA_VERSION, StackConfig
from clickstream_dagster.stack.maven import copy_dependencies, require_java
from clickstream_dagster.stack.process import (
    ManagedProcess,
    StackError,
    ensure_port_free,
    port_open,
    wait_until,
)

# Kafka's shell scripts are thin wrappers around these main classes.
TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-storage": "kafka.tools.StorageTool",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
}

DEFAULT_HEAP = "-Xms512m -Xmx1g"


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _asset(name: str) -> Path:
    return Path(str(resources.files("clickstream_dagster.stack") / "kafka" / name))


def fetch_jars(cfg: StackConfig, quiet: bool = True) -> Path:
    """Fetch kafka_2.13, kafka-tools and a log4j2 backend with Maven into the cache folder (once)."""
    return copy_dependencies(
        _asset("pom.xml"),
        cfg.kafka_libs,
        {"kafka.version": KAFKA_VERSION},
        f"the Kafka {KAFKA_VERSION} jars",
        quiet,
    )


def java_cmd(cfg: StackConfig, main_class: str, args: Sequence[str], log_config: str) -> list[str]:
    return [
        require_java("Apache Kafka 4.x"),
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_asset(log_config)}",
        "-cp",
        str(cfg.kafka_libs / "*"),
        main_class,
        *args,
    ]


def run_tool(
    cfg: StackConfig, tool: str, args: Sequence[str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's own command-line tools from the fetched jars."""
    main_class = TOOLS.get(tool, tool)
    fetch_jars(cfg)
    cmd = java_cmd(cfg, main_class, args, "tools-log4j2.properties")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False)


@dataclass(frozen=True)
class KafkaNode:
    """One node of a KRaft cluster (broker and controller in one JVM): the stack runs one, the scale
    rehearsal (stack/cluster.py) three."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    name: str = "kafka"
    heap: str = DEFAULT_HEAP  # JVM heap options, unless CLICKSTREAM_KAFKA_HEAP says otherwise


@dataclass(frozen=True)
class KafkaQuorum:
    """The other nodes of a multi-node cluster, and the replication its internal topics and new topics get."""

    voters: tuple[KafkaNode, ...]
    replication_factor: int = 3
    min_insync_replicas: int = 2


class EmbeddedKafka:
    def __init__(
        self, cfg: StackConfig, node: KafkaNode | None = None, quorum: KafkaQuorum | None = None
    ) -> None:
        self.cfg = cfg
        self.node = node or KafkaNode(1, cfg.ports.kafka, cfg.ports.kafka_controller, cfg.kafka_data_dir)
        self.quorum = quorum
        self.proc = ManagedProcess(self.node.name, cfg.run_dir, cfg.log_dir)

    @property
    def bootstrap(self) -> str:
        return f"{self.cfg.host}:{self.node.port}"

    @property
    def properties_file(self) -> Path:
        return self.node.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.node.data_dir / "logs"

    def write_properties(self) -> None:
        c, n, q = self.cfg, self.node, self.quorum
        replication = str(q.replication_factor) if q else "1"
        min_isr = str(q.min_insync_replicas) if q else "1"
        quorum = (
            {
                "controller.quorum.voters": ",".join(
                    f"{v.node_id}@{c.host}:{v.controller_port}" for v in q.voters
                )
            }
            if q
            else {"controller.quorum.bootstrap.servers": f"{c.host}:{n.controller_port}"}
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(n.node_id),
            **quorum,
            "listeners": f"PLAINTEXT://{c.host}:{n.port},CONTROLLER://{c.host}:{n.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{c.host}:{n.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": str(c.kafka_partitions),
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "message.max.bytes": "1048588",
        }
        self.node.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def format_storage(self, cluster_id: str | None = None) -> None:
        """Format the KRaft log directory once; later `up`s reuse the data. The nodes of a multi-node
        cluster share `cluster_id` and its static voters (controller.quorum.voters)."""
        if (self.log_dirs / "meta.properties").is_file():
            return
        cluster_id = cluster_id or new_cluster_id()
        mode = [] if self.quorum else ["--standalone"]
        result = run_tool(
            self.cfg,
            "kafka-storage",
            ["format", *mode, f"--cluster-id={cluster_id}", f"--config={self.properties_file}"],
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")

    def healthy(self) -> bool:
        return port_open(self.cfg.host, self.node.port) and self._metadata_ok()

    def _metadata_ok(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.describe_cluster()
            return True
        except (KafkaError, OSError, ValueError):
            return False
        finally:
            admin.close()

    def start(self, timeout: float = 90.0, cluster_id: str | None = None, wait: bool = True) -> None:
        if self.proc.running():
            if wait:
                wait_until(self.healthy, timeout, "Kafka broker", self.proc.running, self.proc.log_tail)
            return
        ensure_port_free(self.cfg.host, self.node.port, "Kafka", "CLICKSTREAM_KAFKA_PORT")
        ensure_port_free(
            self.cfg.host,
            self.node.controller_port,
            "the Kafka controller",
            "CLICKSTREAM_KAFKA_CONTROLLER_PORT",
        )
        fetch_jars(self.cfg)
        self.write_properties()
        self.format_storage(cluster_id)
        cmd = java_cmd(self.cfg, "kafka.Kafka", [str(self.properties_file)], "log4j2.properties")
        cmd[1:1] = [
            *os.environ.get("CLICKSTREAM_KAFKA_HEAP", self.node.heap).split(),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
        ]
        env = {**os.environ, "LOG_DIR": str(self.cfg.log_dir)}
        self.proc.start(cmd, env)
        if wait:  # a node of a multi-node quorum answers once a majority runs: its caller waits
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        wait_until(
            self.healthy,
            timeout,
            f"Kafka broker {self.node.node_id}",
            self.proc.running,
            self._failure_detail,
        )

    def _failure_detail(self) -> str:
        return f"last lines of {self.proc.log_file}:\n{self.proc.log_tail(40)}"

    def stop(self) -> bool:
        return self.proc.stop(timeout=30)
