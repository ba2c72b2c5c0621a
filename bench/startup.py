"""Start-up: how long `clickstream produce --help` and the library's entry points take to import.

Each command runs in a fresh interpreter, `--repeat` times, interleaved; the median wall time is reported
beside two peers from the same run: a bare interpreter (`python -c pass`) and `import click` (what a click
command needs at least). `--python` runs the same commands with another checkout's interpreter (its own
`make setup` venv, e.g. an older commit's, for a before/after).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = (
    "from clickstream_dagster.cli import main\n"
    "try:\n    main(['produce', '--help'], standalone_mode=False)\nexcept SystemExit:\n    pass"
)

COMMANDS: dict[str, str] = {
    "peer: python -c pass": "pass",
    "peer: import click": "import click",
    "clickstream produce --help": CLI,
    "import the producer (producer.replay)": "import clickstream_dagster.producer.replay",
    "import the API app (api.app)": "import clickstream_dagster.api.app",
    "import the ingestion library (ingestion.run)": "import clickstream_dagster.ingestion.run",
    "import the windows package (analytics.windows.stats)": "import clickstream_dagster.analytics.windows.stats",
    "import the Dagster definitions": "import clickstream_dagster.definitions",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command (the median is reported)")
    parser.add_argument(
        "--python", type=Path, default=Path(sys.executable), help="the interpreter of the checkout to measure"
    )


def _run(python: Path, code: str) -> tuple[float, str] | None:
    """(seconds, "1" if Dagster got loaded), or None if the code fails (a module that checkout lacks)."""
    probe = f"{code}\nimport sys\nprint(int(any(m.startswith('dagster') for m in sys.modules)))"
    # From an empty folder: `python -c` puts the working directory first on sys.path, and the checkout
    # measured must be the interpreter's own install, not whatever the current directory holds.
    with tempfile.TemporaryDirectory() as empty:
        started = time.perf_counter()
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=False, cwd=empty
        )
        seconds = time.perf_counter() - started
    if out.returncode != 0:
        return None
    return seconds, out.stdout.strip().splitlines()[-1]


def run(args: argparse.Namespace) -> int:
    print(
        f"start-up with {args.python} ({args.repeat} runs each, interleaved; median wall time, fresh interpreters)"
    )
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    dagster: dict[str, str] = {}
    for _ in range(args.repeat):
        for name, code in COMMANDS.items():
            result = _run(args.python, code)
            if result is None:
                dagster[name] = "fails there"
                continue
            times[name].append(result[0])
            dagster[name] = "loads Dagster" if result[1] == "1" else ""
    base = statistics.median(times["peer: python -c pass"])
    for name, samples in times.items():
        if not samples:
            print(f"  {name:<56}      n/a  ({dagster[name]})")
            continue
        median = statistics.median(samples)
        print(
            f"  {name:<56} {median * 1000:7.0f} ms  ({median / base:5.1f}x python -c pass)  {dagster[name]}"
        )
    return 0
