"""Where the local stack lives and which endpoints it serves.

Everything is derived from the environment when `StackConfig.from_env()` is called (never at import time).
An endpoint given in the environment (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `SPARK_REMOTE`) replaces the
embedded component: `up` then does not start that part and everything else points at the external one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

KAFKA_VERSION = "4.1.1"
DEFAULT_TOPIC = "clickstream"
EVENTS_DATABASE = "clickstream"
DAGSTER_DATABASE = "dagster"


def project_root() -> Path:
    """The checkout this package runs from (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file() and (here / "clickstream_dagster").is_dir():
        return here
    return Path.cwd()


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    postgres: int = 5433
    dagster: int = 3000
    spark_connect: int = 15002
    api: int = 8000
    dashboard: int = 8501
    dagster_code_server: int = 4266


@dataclass(frozen=True)
class StackConfig:
    root: Path
    data_dir: Path
    cache_dir: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    external_kafka: str | None = None
    external_database_url: str | None = None
    external_dagster_database_url: str | None = None
    external_spark_remote: str | None = None
    slack_webhook_url: str | None = None
    topic: str = DEFAULT_TOPIC
    kafka_partitions: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env
        root = project_root()
        data_dir = Path(env.get("CLICKSTREAM_DATA_DIR") or root / ".data").resolve()
        cache_dir = Path(env.get("CLICKSTREAM_CACHE_DIR") or root / ".cache").resolve()
        defaults = Ports()
        ports = Ports(
            kafka=int(env.get("CLICKSTREAM_KAFKA_PORT", defaults.kafka)),
            kafka_controller=int(env.get("CLICKSTREAM_KAFKA_CONTROLLER_PORT", defaults.kafka_controller)),
            postgres=int(env.get("CLICKSTREAM_POSTGRES_PORT", defaults.postgres)),
            dagster=int(env.get("CLICKSTREAM_DAGSTER_PORT", defaults.dagster)),
            spark_connect=int(env.get("CLICKSTREAM_SPARK_CONNECT_PORT", defaults.spark_connect)),
            api=int(env.get("CLICKSTREAM_API_PORT", defaults.api)),
            dashboard=int(env.get("CLICKSTREAM_DASHBOARD_PORT", defaults.dashboard)),
            dagster_code_server=int(
                env.get("CLICKSTREAM_DAGSTER_CODE_SERVER_PORT", defaults.dagster_code_server)
            ),
        )
        return cls(
            root=root,
            data_dir=data_dir,
            cache_dir=cache_dir,
            ports=ports,
            external_kafka=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            external_database_url=env.get("DATABASE_URL") or None,
            external_dagster_database_url=env.get("DAGSTER_DATABASE_URL") or None,
            external_spark_remote=env.get("SPARK_REMOTE") or None,
            slack_webhook_url=env.get("SLACK_WEBHOOK_URL") or None,
            topic=env.get("CLICKSTREAM_TOPIC") or DEFAULT_TOPIC,
            kafka_partitions=int(env.get("CLICKSTREAM_KAFKA_PARTITIONS", 3)),
        )

    def with_data_dir(self, data_dir: Path, ports: Ports) -> StackConfig:
        return replace(self, data_dir=data_dir, ports=ports)

    # ---- directories -------------------------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def kafka_data_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def postgres_data_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def kafka_libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    # ---- endpoints ---------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return self.external_kafka or f"{self.host}:{self.ports.kafka}"

    @property
    def database_url(self) -> str:
        """libpq URL of the events database (psycopg 3 and the API use it)."""
        if self.external_database_url:
            return self.external_database_url
        return f"postgresql://postgres@{self.host}:{self.ports.postgres}/{EVENTS_DATABASE}"

    @property
    def dagster_database_url(self) -> str:
        """SQLAlchemy URL of Dagster's own storage; psycopg2 driver is explicit (SQLAlchemy 2.1 trap)."""
        url = self.external_dagster_database_url or with_database(self.database_url, DAGSTER_DATABASE)
        return sqlalchemy_psycopg2_url(url)

    @property
    def spark_remote(self) -> str:
        """Spark Connect URL: the external one, or the embedded server `up` starts."""
        return self.external_spark_remote or f"sc://{self.host}:{self.ports.spark_connect}"

    @property
    def dagster_url(self) -> str:
        return f"http://{self.host}:{self.ports.dagster}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports.api}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.ports.dashboard}"

    def service_env(self) -> dict[str, str]:
        """Environment the stack's processes (and users' shells, via `clickstream env`) run with."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "CLICKSTREAM_TOPIC": self.topic,
            "DATABASE_URL": self.database_url,
            "DAGSTER_HOME": str(self.dagster_home),
            "CLICKSTREAM_DATA_DIR": str(self.data_dir),
            "CLICKSTREAM_DAGSTER_URL": self.dagster_url,
            "SPARK_REMOTE": self.spark_remote,
            "SLACK_WEBHOOK_URL": self.slack_webhook_url or "",
        }
        return env


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def sqlalchemy_psycopg2_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return "postgresql+psycopg2://" + rest
    raise ValueError(f"unsupported database URL scheme {scheme!r}: expected postgresql://")


def libpq_url(url: str) -> str:
    """Strip an SQLAlchemy driver suffix so psycopg can use the URL."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return "postgresql://" + rest
    if scheme == "postgres":
        return "postgresql://" + rest
    return url
