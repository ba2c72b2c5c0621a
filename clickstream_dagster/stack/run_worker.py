"""A run server: imports Dagster and the code location once, then forks one process per Dagster run.

`python -m clickstream_dagster.stack.run_worker MODULE [MODULE ...]` imports the modules (and opens the
Dagster instance named by $CLICKSTREAM_RUN_WORKER_INSTANCE_REF, to import its storage), then reads runs from
stdin, one line each: the serialized `ExecuteRunArgs` that `dagster api execute_run` takes. For each it forks
a child that executes the run through the same code as `dagster api execute_run`, and writes the child's pid
to stdout, one line per run, in order, with "fresh" or "stale". End of input (the launcher closed it, or its
process ended) ends the server; the children finish their runs.

A forked child shares the server's imports, so it starts in milliseconds and without the 4-5 s of CPU a
fresh interpreter spends importing (bench/README.md). If a source file the server imported changed after its
import began, or the import failed, the run is executed by a fresh `dagster api execute_run` instead (current
code; Dagster's own error for a code location that does not import), so are all later runs, and the reply
says "stale" for the launcher to retire this server and start a new one.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

from clickstream_dagster.stack.compat import require_dagster

INSTANCE_REF_ENV = "CLICKSTREAM_RUN_WORKER_INSTANCE_REF"
FRESH, STALE = "fresh", "stale"  # after each pid: whether the server's imports are still current


def main(argv: list[str]) -> int:
    require_dagster()
    # Replies go to the launcher on the original stdout; anything else printed here, or by a run, to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import_started = time.time()
    try:
        for module in argv:
            importlib.import_module(module)
        sources: list[str] | None = _imported_sources(argv)
    except Exception:  # the run itself reports the error, through the fresh interpreter below
        traceback.print_exc()
        sources = None
    import dagster._cli.api  # noqa: F401 - what each run executes

    _open_instance_once()
    # Forking is only safe from a single thread; imports that start threads get a fresh interpreter per run.
    forkable = threading.active_count() == 1
    gc.freeze()  # keep the imported objects' pages shared with the children
    # Reap children as they end (their CPU time then counts in this process's, as for any waited child).
    signal.signal(signal.SIGCHLD, _reap_children)

    while line := sys.stdin.readline():
        args = line.strip()
        if not args:
            continue
        if sources is not None and _changed_since(sources, import_started):
            sources = None  # from now on every run gets a fresh interpreter
        if sources is None or not forkable:
            pid = subprocess.Popen(
                [sys.executable, "-m", "dagster", "api", "execute_run", args], stdin=subprocess.DEVNULL
            ).pid
        else:
            pid = os.fork()
            if pid == 0:
                replies.close()
                _run_in_child(args)
        # The launcher retires a stale server (closes its input) and starts a new one; runs it already wrote
        # here are still read and started, so none is lost in between.
        print(pid, STALE if sources is None else FRESH, file=replies, flush=True)
    return 0


def _reap_children(_signum: int, _frame: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:  # none left
        pass


def _run_in_child(args: str) -> None:
    """Execute one run in this forked child and exit; never returns to the server's loop."""
    from dagster._cli.api import execute_run_command
    from dagster._utils.interrupts import setup_interrupt_handlers

    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run may wait for its own subprocesses
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the launcher's pipe belongs to the server
        os.close(devnull)
        # As `dagster api execute_run`: SIGTERM (the launcher's terminate) interrupts the run like Ctrl-C.
        setup_interrupt_handlers()
        execute_run_command.callback(input_json=args, compressed_input_json=None)  # type: ignore[misc]
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _open_instance_once() -> None:
    """Open (and close) the instance the launcher named: its storage imports SQLAlchemy, Alembic and the
    Postgres driver (1.4 s measured), which every run would otherwise import again."""
    ref = os.environ.pop(INSTANCE_REF_ENV, None)
    if not ref:
        return
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import deserialize_value

    from clickstream_dagster.stack.storage import close_connections

    try:
        with DagsterInstance.from_ref(deserialize_value(ref, InstanceRef)) as instance:
            close_connections(instance)  # pooled ones must not be inherited by the runs forked from here
    except Exception:  # each run opens it again and reports any error
        return


def _imported_sources(modules: list[str]) -> list[str]:
    """The files imported so far from the preloaded modules' top-level packages."""
    roots = tuple({_package_root(name) for name in modules})
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return [file for file in files if file and file.startswith(roots)]


def _changed_since(paths: Iterable[str], moment: float) -> bool:
    """Whether any of these files was modified (or removed) at or after `moment`: the server may hold an
    older version of it. A file saved while the server was importing counts too."""
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
