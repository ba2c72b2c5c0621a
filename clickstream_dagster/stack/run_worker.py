"""A Dagster run worker that imports Dagster and the code location *before* its run arrives.

`python -m clickstream_dagster.stack.run_worker MODULE [MODULE ...]` imports the modules (and opens the
Dagster instance named by $CLICKSTREAM_RUN_WORKER_INSTANCE_REF, to import its storage), then waits on stdin
for one line: the serialized `ExecuteRunArgs` of the run it is to execute (what `dagster api execute_run`
takes). It runs that one run through the same code path as `dagster api execute_run` and exits. If the run
never comes (stdin closed: the launcher's process ended), it exits quietly.

If a source file it imported changed while it waited (or the import failed), it re-executes itself as a
plain `dagster api execute_run`: a run never executes code older than the files on disk, and a code location
that does not import fails the run with Dagster's own error.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

INSTANCE_REF_ENV = "CLICKSTREAM_RUN_WORKER_INSTANCE_REF"


def main(argv: list[str]) -> int:
    from dagster._cli.api import execute_run_command
    from dagster._utils.interrupts import setup_interrupt_handlers

    import_started = time.time()
    try:
        for module in argv:
            importlib.import_module(module)
        sources: list[str] | None = _imported_sources(argv)
    except Exception:  # the run itself reports the error, through the cold path below
        sources = None
    _open_instance_once()

    line = sys.stdin.readline().strip()
    if not line:
        return 0
    if sources is None or _changed_since(sources, import_started):
        os.execv(sys.executable, [sys.executable, "-m", "dagster", "api", "execute_run", line])
    # As `dagster api execute_run`: SIGTERM (the launcher's terminate) interrupts the run like Ctrl-C.
    setup_interrupt_handlers()
    execute_run_command.callback(input_json=line, compressed_input_json=None)  # type: ignore[misc]
    return 0


def _open_instance_once() -> None:
    """Open (and close) the instance the launcher named: its storage imports SQLAlchemy, Alembic and the
    Postgres driver, 1.4 s measured, which would otherwise happen after the run arrives."""
    ref = os.environ.pop(INSTANCE_REF_ENV, None)
    if not ref:
        return
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import deserialize_value

    try:
        with DagsterInstance.from_ref(deserialize_value(ref, InstanceRef)):
            pass
    except Exception:  # the run opens it again and reports any error
        return


def _imported_sources(modules: list[str]) -> list[str]:
    """The files imported so far from the preloaded modules' top-level packages."""
    roots = tuple({_package_root(name) for name in modules})
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return [file for file in files if file and file.startswith(roots)]


def _changed_since(paths: Iterable[str], moment: float) -> bool:
    """Whether any of these files was modified (or removed) at or after `moment`: the worker may hold an older
    version of it. A file saved while the worker was importing counts too."""
    for path in paths:
        try:
            if os.stat(path).st_mtime >= moment:
                return True
        except OSError:
            return True
    return False


def _package_root(module: str) -> str:
    top = sys.modules[module.split(".", maxsplit=1)[0]]
    file = getattr(top, "__file__", None)
    if file is None:  # a namespace package: take its first folder
        return str(next(iter(top.__path__)))
    return str(Path(file).parent)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
