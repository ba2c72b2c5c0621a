"""scripts/install-system.sh on a machine where it cannot install: `make setup`'s best effort says how and
carries on (the stack runs without Prometheus and Alertmanager); `make test`'s strict call fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "install-system.sh"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The script with a PATH that has neither the binaries nor apt-get, as a user who is not root."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args],
        env={"PATH": str(bin_dir), "CHROMIUM": str(tmp_path / "no-chromium")},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_best_effort_says_how_and_carries_on(tmp_path: Path) -> None:
    result = _run(tmp_path, "--best-effort", "monitoring")
    assert result.returncode == 0, result.stderr
    assert "apt-get is not available" in result.stderr
    assert "carrying on without prometheus prometheus-alertmanager" in result.stderr
    assert "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager" in result.stderr


def test_the_tests_need_them(tmp_path: Path) -> None:
    result = _run(tmp_path, "browser", "monitoring")
    assert result.returncode == 1
    assert "missing chromium fonts-liberation prometheus prometheus-alertmanager" in result.stderr


def test_an_unknown_group_is_refused(tmp_path: Path) -> None:
    result = _run(tmp_path, "--best-effort", "grafana")
    assert result.returncode == 2 and "unknown group 'grafana'" in result.stderr
