"""`python -m bench [benchmark] [options]`: one subcommand per benchmark; without one, all run with defaults.

A benchmark is a module with `add_arguments(parser)` and `run(args) -> int` (the exit code), listed in
BENCHMARKS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from bench import (
    answers,
    api,
    daily,
    history,
    lightfm,
    loading,
    ml,
    pipeline,
    producer,
    session,
    shoppers,
    soak,
    startup,
)

BENCHMARKS: dict[str, ModuleType] = {
    "producer": producer,
    "loading": loading,
    "pipeline": pipeline,
    "shoppers": shoppers,
    "history": history,
    "ml": ml,
    "daily": daily,
    "lightfm": lightfm,
    "api": api,
    "answers": answers,
    "session": session,
    "soak": soak,
    "startup": startup,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks print their own figures and a peer's from the same run (see bench/README.md).",
    )
    commands = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, module in BENCHMARKS.items():
        # argparse %-formats help strings: a docstring's "70 %" must not be read as a format.
        summary = (module.__doc__ or name).strip().splitlines()[0].replace("%", "%%")
        sub = commands.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.benchmark is not None:
        return int(BENCHMARKS[args.benchmark].run(args))
    worst = 0
    for name, module in BENCHMARKS.items():
        print(f"==== {name}", flush=True)
        defaults = argparse.ArgumentParser()
        module.add_arguments(defaults)
        worst = max(worst, int(module.run(defaults.parse_args([]))))
    return worst


if __name__ == "__main__":
    sys.exit(main())
