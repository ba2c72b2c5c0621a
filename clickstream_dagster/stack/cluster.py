"""The scale rehearsal on one machine: a 3-broker Apache Kafka KRaft cluster from the stack's jars (replication
factor 3, min.insync.replicas 2) and a Spark standalone cluster (a master and 2 workers, from pyspark's
bundled `spark-class`) with a Spark Connect server attached to the master.

Nothing else knows about it: `env()` gives the endpoints (KAFKA_BOOTSTRAP_SERVERS, SPARK_REMOTE, and the
topic's 6 partitions and replication factor 3), and the ordinary stack, tests and commands run against them as
against any external cluster. Its processes and data live in `<data dir>/cluster/`, apart from the stack's.
`clickstream cluster up | down | status | env`, or `clickstream up --cluster` / `down --cluster`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clickstream_dagster.stack.config import Ports, StackConfig
from clickstream_dagster.stack.kafka import EmbeddedKafka, KafkaNode, KafkaQuorum, new_cluster_id
from clickstream_dagster.stack.process import ManagedProcess, StackError, free_port, port_open, wait_until
from clickstream_dagster.stack.spark import EmbeddedSparkConnect, spark_home

BROKERS = 3
WORKERS = 2
PARTITIONS = 6
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
BROKER_HEAP = "-Xms256m -Xmx512m"  # three on one machine
WORKER_MEMORY = "1g"


@dataclass(frozen=True)
class ClusterPorts:
    kafka: tuple[int, ...]
    controllers: tuple[int, ...]
    spark_master: int
    spark_master_ui: int
    spark_workers_ui: tuple[int, ...]
    spark_connect: int

    @classmethod
    def free(cls) -> ClusterPorts:
        return cls(
            kafka=tuple(free_port() for _ in range(BROKERS)),
            controllers=tuple(free_port() for _ in range(BROKERS)),
            spark_master=free_port(),
            spark_master_ui=free_port(),
            spark_workers_ui=tuple(free_port() for _ in range(WORKERS)),
            spark_connect=free_port(),
        )


class ClusterRehearsal:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.data_dir / "cluster"
        self.ports = self._ports()
        # The rehearsal's own folders and a config whose ports are its own (the Connect server reads them).
        self.ccfg = cfg.with_data_dir(self.dir, replace(Ports(), spark_connect=self.ports.spark_connect))
        nodes = tuple(
            KafkaNode(
                i + 1,
                self.ports.kafka[i],
                self.ports.controllers[i],
                self.dir / f"kafka-{i + 1}",
                f"kafka-{i + 1}",
            )
            for i in range(BROKERS)
        )
        quorum = KafkaQuorum(nodes, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS)
        self.brokers = [EmbeddedKafka(self.ccfg, node, quorum) for node in nodes]
        self.master = ManagedProcess("spark-master", self.ccfg.run_dir, self.ccfg.log_dir)
        self.workers = [
            ManagedProcess(f"spark-worker-{i + 1}", self.ccfg.run_dir, self.ccfg.log_dir)
            for i in range(WORKERS)
        ]
        self.connect = EmbeddedSparkConnect(self.ccfg, master=self.master_url)

    # ---- where it listens (chosen once, kept in cluster/ports.json) -------------------------------------

    def _ports(self) -> ClusterPorts:
        path = self.dir / "ports.json"
        if path.is_file():
            raw: dict[str, Any] = json.loads(path.read_text())
            return ClusterPorts(
                kafka=tuple(raw["kafka"]),
                controllers=tuple(raw["controllers"]),
                spark_master=int(raw["spark_master"]),
                spark_master_ui=int(raw["spark_master_ui"]),
                spark_workers_ui=tuple(raw["spark_workers_ui"]),
                spark_connect=int(raw["spark_connect"]),
            )
        return ClusterPorts.free()

    def _save_ports(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ports.json").write_text(json.dumps(self.ports.__dict__))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    @property
    def master_url(self) -> str:
        return f"spark://{self.cfg.host}:{self.ports.spark_master}"

    def env(self) -> dict[str, str]:
        """What points the stack, the tests and every command at the rehearsal."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "SPARK_REMOTE": self.connect.endpoint,
            "CLICKSTREAM_KAFKA_PARTITIONS": str(PARTITIONS),
            "CLICKSTREAM_KAFKA_REPLICATION_FACTOR": str(REPLICATION_FACTOR),
            "CLICKSTREAM_CLUSTER_DIR": str(self.dir),
        }

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def _spark_env(self) -> dict[str, str]:
        env = self.connect.env()
        env.setdefault("SPARK_WORKER_DIR", str(self.dir / "spark-work"))
        return env

    def _spark_class(self, *args: str) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), *args]

    def start(self, timeout: float = 180.0) -> None:
        self._save_ports()
        cluster_id_file = self.dir / "kafka-cluster-id"
        if not cluster_id_file.is_file():
            cluster_id_file.write_text(new_cluster_id())
        cluster_id = cluster_id_file.read_text().strip()
        for broker in self.brokers:  # all started, then waited for: the quorum needs a majority
            broker.start(timeout, cluster_id=cluster_id, wait=False)
        for broker in self.brokers:
            broker.wait_healthy(timeout)
        host = self.cfg.host
        env = self._spark_env()
        if not self.master.running():
            self.master.start(
                self._spark_class("org.apache.spark.deploy.master.Master", "--host", host, "--port",
                                  str(self.ports.spark_master), "--webui-port", str(self.ports.spark_master_ui)),
                env, cwd=self.dir,
            )  # fmt: skip
        wait_until(lambda: port_open(host, self.ports.spark_master), timeout, "Spark master",
                   self.master.running, self.master.log_tail)  # fmt: skip
        for worker, ui in zip(self.workers, self.ports.spark_workers_ui, strict=True):
            if not worker.running():
                worker.start(
                    self._spark_class("org.apache.spark.deploy.worker.Worker", self.master_url, "--host", host,
                                      "--cores", "1", "--memory", WORKER_MEMORY, "--webui-port", str(ui)),
                    env, cwd=self.dir,
                )  # fmt: skip
        wait_until(self.workers_registered, timeout, "Spark workers registered with the master",
                   self.master.running, self.master.log_tail)  # fmt: skip
        self.connect.start(timeout)

    def workers_registered(self) -> bool:
        text = self.master.log_file.read_text(errors="replace") if self.master.log_file.is_file() else ""
        return text.count("Registering worker") >= WORKERS

    def stop(self) -> list[str]:
        stopped = []
        if self.connect.stop():
            stopped.append("spark-connect (cluster)")
        for proc in [*self.workers, self.master]:
            if proc.stop(timeout=15):
                stopped.append(proc.name)
        # All brokers at once: stopped one by one, the last ones wait for a quorum that is gone.
        with ThreadPoolExecutor(len(self.brokers)) as pool:
            for broker, was_running in zip(
                self.brokers, pool.map(lambda b: b.stop(), self.brokers), strict=True
            ):
                if was_running:
                    stopped.append(broker.proc.name)
        return stopped

    def status(self) -> list[tuple[str, str, str]]:
        """(name, address, state) of every process of the rehearsal."""
        out = []
        for broker in self.brokers:
            state = "healthy" if broker.proc.running() and broker.healthy() else (
                "unhealthy" if broker.proc.running() else "stopped")  # fmt: skip
            out.append((broker.proc.name, broker.bootstrap, state))
        out.append(("spark-master", self.master_url, "running" if self.master.running() else "stopped"))
        for worker in self.workers:
            out.append((worker.name, self.master_url, "running" if worker.running() else "stopped"))
        connect = "healthy" if self.connect.proc.running() and self.connect.healthy() else (
            "unhealthy" if self.connect.proc.running() else "stopped")  # fmt: skip
        out.append(("spark-connect", self.connect.endpoint, connect))
        return out

    def require_running(self) -> None:
        if not (self.dir / "ports.json").is_file():
            raise StackError("no scale rehearsal here: start it with `clickstream cluster up`")


def cluster_dir_from_env() -> Path | None:
    value = os.environ.get("CLICKSTREAM_CLUSTER_DIR")
    return Path(value) if value else None
