"""`up` -> `status` -> `down` on a separate data folder and ports: everything healthy, then nothing left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.process import ManagedProcess, StackError, pid_alive
from tests.conftest import make_test_config


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


@pytest.mark.slow
def test_up_status_down_round_trip(tmp_path: Path) -> None:
    external = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SPARK_REMOTE")
    env = {k: v for k, v in os.environ.items() if k not in external}
    cfg = make_test_config(tmp_path / "data", env)
    stack = Stack(cfg)
    try:
        stack.up(log=lambda _m: None)
        status = {s.name: s for s in stack.status()}
        assert {n: s.state for n, s in status.items()} == {
            "postgres": "healthy",
            "kafka": "healthy",
            "spark-connect": "healthy",
            "dagster-webserver": "healthy",
            "dagster-daemon": "healthy",
            "api": "healthy",
            "dashboard": "healthy",
            "exporter": "healthy",
            "prometheus": "healthy",  # installed by scripts/install-system.sh
            "alertmanager": "healthy",  # likewise
        }
        assert "clickstream_dagster" in status["dagster-webserver"].detail
        assert "no promoted model yet" in status["api"].detail
        procs = (
            stack.kafka.proc,
            stack.spark.proc,
            stack.dagster.code_server,
            stack.dagster.webserver,
            stack.dagster.daemon,
            stack.web.api,
            stack.web.dashboard,
            stack.monitoring.exporter,
            stack.monitoring.prometheus,
            stack.monitoring.alertmanager,
        )
        pids = [p for p in (proc.pid() for proc in procs) if p]
        assert len(pids) == 10

        # The CLI sees the same stack.
        cli_env = {**env, **cfg.ports.to_env(), "CLICKSTREAM_DATA_DIR": str(cfg.data_dir)}
        result = subprocess.run(
            [sys.executable, "-m", "clickstream_dagster.cli", "status"],
            env=cli_env,
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("healthy") == 10

        # `up` again is a no-op on a running stack and keeps the same processes.
        stack.up(log=lambda _m: None)
        assert stack.kafka.proc.pid() == pids[0]
    finally:
        stack.down(log=lambda _m: None)

    assert all(not pid_alive(p) for p in pids)
    assert _processes_mentioning(str(cfg.data_dir)) == []
    assert {s.state for s in stack.status()} == {"stopped"}


def test_stale_pid_file_is_ignored_and_removed(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", tmp_path / "run", tmp_path / "logs")
    proc.run_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    proc.pid_file.write_text(f"{dead.pid}\n")
    assert proc.pid() is None
    assert not proc.pid_file.exists()


def test_port_in_use_gives_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = make_test_config(tmp_path / "data", {})
        from dataclasses import replace

        cfg = replace(cfg, ports=replace(cfg.ports, kafka=port))
        with pytest.raises(StackError, match=f"port {port} .* already in use.*CLICKSTREAM_KAFKA_PORT"):
            Stack(cfg).kafka.start()
