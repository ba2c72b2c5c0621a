"""Where the local stack lives: its folders and the endpoints it serves.

`StackConfig` is the library's `Settings` (endpoints from the environment; an endpoint given there, such as
`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` or `SPARK_REMOTE`, replaces the embedded component, so `up` does
not start that part) plus the folders the embedded processes keep their data, logs and caches in.
Everything is derived from the environment when `StackConfig.from_env()` is called (never at import time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from clickstream_dagster.settings import (
    DAGSTER_DATABASE,
    DEFAULT_TOPIC,
    EVENTS_DATABASE,
    Ports,
    Settings,
    cache_dir,
    libpq_url,
    project_root,
    settings_fields,
    sqlalchemy_psycopg2_url,
    with_database,
)

__all__ = [
    "DAGSTER_DATABASE",
    "DEFAULT_TOPIC",
    "EVENTS_DATABASE",
    "KAFKA_VERSION",
    "Ports",
    "StackConfig",
    "libpq_url",
    "project_root",
    "sqlalchemy_psycopg2_url",
    "with_database",
]

KAFKA_VERSION = "4.1.1"


@dataclass(frozen=True, kw_only=True)
class StackConfig(Settings):
    root: Path
    data_dir: Path
    cache_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env
        root = project_root()
        return cls(
            root=root,
            data_dir=Path(env.get("CLICKSTREAM_DATA_DIR") or root / ".data").resolve(),
            cache_dir=cache_dir(env),
            **settings_fields(env),
        )

    def with_data_dir(self, data_dir: Path, ports: Ports) -> StackConfig:
        return replace(self, data_dir=data_dir, ports=ports)

    @property
    def dagster_url(self) -> str:
        """The stack always runs its own Dagster webserver, on its port."""
        return f"http://{self.host}:{self.ports.dagster}"

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
