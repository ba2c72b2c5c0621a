"""`python -m bench --help` and each benchmark's help answer (a docstring's "%" once broke the listing)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.__main__ import BENCHMARKS, build_parser

ROOT = Path(__file__).parents[1]


def test_every_benchmark_lists_its_help() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(BENCHMARKS)
    for name, sub in commands.choices.items():
        assert name in listing.stdout
        assert sub.format_help().startswith(f"usage: python -m bench {name}")
