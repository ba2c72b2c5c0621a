"""Embedded Spark Connect server: one long-lived Spark driver that pipeline runs connect to.

A local pyspark session pays JVM start-up and warm-up (about 10 s) in every Dagster run. A Spark Connect
server started by `clickstream up` pays it once; a run's client then connects in well under a second.
The server is pyspark's own bundled Spark (SPARK_HOME = the installed pyspark folder), run in the
foreground through `spark-submit`, so the pid file tracks the driver JVM itself. The PostgreSQL JDBC
driver, which both the server and local sessions need to read clickstream_events, comes from Maven Central
(`fetch_jdbc_jars`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from importlib import resources
from pathlib import Path

from clickstream_dagster.analytics.windows.queries import WARM_UP_SPARK_SQL
from clickstream_dagster.clients.spark import (
    POSTGRES_JDBC_VERSION,
    SparkClient,
    jdbc_from_libpq,
    jdbc_jars_dir,
    read_jdbc,
)
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.maven import copy_dependencies, require_java
from clickstream_dagster.stack.process import (
    ManagedProcess,
    StackError,
    ensure_port_free,
    port_open,
    wait_until,
)

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
DEFAULT_MASTER = "local[2]"
DEFAULT_DRIVER_MEMORY = "1g"

# Variables that switch pyspark (and spark-submit) into client mode; the server must not inherit them.
_CLIENT_MODE_VARS = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE", "SPARK_API_MODE")


def _asset(name: str) -> Path:
    return Path(str(resources.files("clickstream_dagster.stack") / "spark" / name))


def spark_home() -> Path:
    """The installed pyspark folder: it holds Spark's jars, `bin/spark-submit` and the Connect server."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise StackError("pyspark is not installed: run `make setup` (it installs pyspark[connect])")
    return Path(spec.origin).parent


def fetch_jdbc_jars(cfg: StackConfig, quiet: bool = True) -> list[Path]:
    """Fetch the PostgreSQL JDBC driver (and its runtime dependencies) with Maven into the cache, once."""
    libs = copy_dependencies(
        _asset("pom.xml"),
        jdbc_jars_dir(cfg.cache_dir),
        {"postgresql.version": POSTGRES_JDBC_VERSION},
        f"the PostgreSQL JDBC driver {POSTGRES_JDBC_VERSION} for Spark",
        quiet,
    )
    jars = sorted(libs.glob("*.jar"))
    if not any(j.name.startswith("postgresql-") for j in jars):
        raise StackError(
            f"no PostgreSQL JDBC jar in {libs}: delete that folder and run `clickstream up` again"
        )
    return jars


def _require_java() -> str:
    return require_java("Spark 4")


class EmbeddedSparkConnect:
    """A Spark Connect server on `cfg.host:cfg.ports.spark_connect`, with the PostgreSQL JDBC driver loaded."""

    def __init__(
        self,
        cfg: StackConfig,
        master: str = DEFAULT_MASTER,
        driver_memory: str = DEFAULT_DRIVER_MEMORY,
        shuffle_partitions: int = 4,
    ) -> None:
        self.cfg = cfg
        self.master = master
        self.driver_memory = driver_memory
        self.shuffle_partitions = shuffle_partitions
        self.proc = ManagedProcess("spark-connect", cfg.run_dir, cfg.log_dir)

    @property
    def endpoint(self) -> str:
        """What clients use: SPARK_REMOTE / `SparkClient(remote=...)`."""
        return f"sc://{self.cfg.host}:{self.cfg.ports.spark_connect}"

    @property
    def work_dir(self) -> Path:
        """Scratch space (shuffle files, warehouse) and the server's working directory."""
        return self.cfg.data_dir / "spark"

    def command(self, jars: list[Path]) -> list[str]:
        c = self.cfg
        confs = {
            "spark.connect.grpc.binding.address": c.host,
            "spark.connect.grpc.binding.port": str(c.ports.spark_connect),
            # The driver's own RPC and block manager ports stay on loopback too.
            "spark.driver.host": c.host,
            "spark.driver.bindAddress": c.host,
            "spark.ui.enabled": "false",
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.sql.warehouse.dir": str(self.work_dir / "warehouse"),
            # C1 only: every query brings new generated classes, and the JVM's optimizing compiler (C2) spent
            # more CPU compiling them than the pipeline's small per-run queries took (measured per windowed_stats
            # query: 1.1-1.5 CPU-s with C2, 0.4-0.7 with C1, on 2 cores shared with the rest of the stack). A
            # 500k-row aggregation is about 1.3x slower in steady state; a cluster keeps its own settings.
            "spark.driver.extraJavaOptions": (
                f"-Dlog4j2.configurationFile={_asset('log4j2.properties')} -XX:TieredStopAtLevel=1"
            ),
        }
        return [
            str(spark_home() / "bin" / "spark-submit"),
            "--class",
            SERVER_CLASS,
            "--name",
            "clickstream Spark Connect server",
            "--master",
            self.master,
            "--driver-memory",
            self.driver_memory,
            "--jars",
            ",".join(str(j) for j in jars),
            *(arg for key, value in confs.items() for arg in ("--conf", f"{key}={value}")),
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_MODE_VARS}
        env.update(
            SPARK_HOME=str(spark_home()),
            SPARK_LOCAL_IP=self.cfg.host,
            SPARK_LOG_DIR=str(self.cfg.log_dir),
            SPARK_LOCAL_DIRS=str(self.work_dir / "tmp"),
            # Python UDFs, if any, run in the project's interpreter.
            PYSPARK_PYTHON=sys.executable,
        )
        return env

    def healthy(self) -> bool:
        return port_open(self.cfg.host, self.cfg.ports.spark_connect) and self._query_ok()

    def _query_ok(self) -> bool:
        client = SparkClient(remote=self.endpoint)
        try:
            return bool(client.session().sql("SELECT 1 AS ok").collect()[0]["ok"] == 1)
        except Exception:
            return False
        finally:
            client.stop()

    def start(self, timeout: float = 180.0) -> None:
        if self.proc.running():
            wait_until(self.healthy, timeout, "Spark Connect server", self.proc.running, self._failure_detail)
            return
        ensure_port_free(
            self.cfg.host, self.cfg.ports.spark_connect, "Spark Connect", "CLICKSTREAM_SPARK_CONNECT_PORT"
        )
        _require_java()
        jars = fetch_jdbc_jars(self.cfg)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.proc.start(self.command(jars), self.env(), cwd=self.work_dir)
        wait_until(self.healthy, timeout, "Spark Connect server", self.proc.running, self._failure_detail)
        self.warm_up()

    def warm_up(self) -> None:
        """Pay the server's first-query costs (class loading, code generation, the JDBC driver) during `up`
        instead of in the first pipeline run. Best effort: the events database may not be reachable yet."""
        client = SparkClient(remote=self.endpoint)
        try:
            spark = client.session()
            spark.sql(WARM_UP_SPARK_SQL).collect()
            read_jdbc(
                spark, jdbc_from_libpq(self.cfg.database_url), "pg_catalog.pg_namespace", ["TRUE"]
            ).count()
        except Exception:
            pass
        finally:
            client.stop()

    def _failure_detail(self) -> str:
        return f"last lines of {self.proc.log_file}:\n{self.proc.log_tail(40)}"

    def stop(self, timeout: float = 30.0) -> bool:
        stopped = self.proc.stop(timeout=timeout)
        # The JVM's main thread can be gone (pid looks dead) while other threads still close the gRPC socket.
        deadline = time.monotonic() + 15
        while stopped and port_open(self.cfg.host, self.cfg.ports.spark_connect):
            if time.monotonic() > deadline:
                raise StackError(
                    f"Spark Connect still listens on port {self.cfg.ports.spark_connect} after stopping: "
                    f"see `ss -ltnp 'sport = :{self.cfg.ports.spark_connect}'`"
                )
            time.sleep(0.1)
        return stopped
