"""Versioned SQL migrations: `sql/migrations/NNNN_name.sql`, applied in order, each exactly once.

`schema_migrations` records what ran (with a checksum, so an edited migration is caught instead of silently
diverging). An advisory lock makes concurrent callers (`up`, tests, Dagster runs) safe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_LOCK_KEY = 0x636C6B73  # "clks"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    folder = resources.files("clickstream_dagster.sql") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


def apply_migrations(conninfo: str) -> list[Migration]:
    """Apply every migration not applied yet; returns those it applied."""
    applied_now = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for migration in load_migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                row = conn.execute(
                    "SELECT checksum FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if row is not None:
                    if row[0] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied: "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied_now.append(migration)
    return applied_now
