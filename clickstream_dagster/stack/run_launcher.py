"""A run launcher whose runs fork from a process that has already imported the code location.

Dagster's `DefaultRunLauncher` asks the code server to start each run, and the code server spawns a fresh
interpreter that imports Dagster, its storage and the whole code location before the first step: 4-5 s of CPU
per run, 7-12 s of wall time on a loaded 2-core machine (bench/README.md). A sensor launching a run every few
seconds pays that on every run, and on 2 cores the imports also slow down the runs already executing.
`ForkingRunLauncher` keeps one run server (`clickstream_dagster.stack.run_worker`) that imports all of it once
and forks a child per run; the child executes the run with the same code as `dagster api execute_run`. Runs
are still one process each, on this machine, like the default launcher's.

Configured in the instance's dagster.yaml (`clickstream up` writes it):

    run_launcher:
      module: clickstream_dagster.stack.run_launcher
      class: ForkingRunLauncher
      config:
        preload_modules: [clickstream_dagster.definitions]

The server is started by the first launch (a process that never launches a run never starts one), replaced
when the code it imported changes, and ends with the process that started it (its stdin closes).
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Self

from clickstream_dagster.stack.compat import require_dagster

require_dagster()

import dagster as dg  # noqa: E402
from dagster._core.instance.ref import InstanceRef  # noqa: E402
from dagster._core.launcher import LaunchRunContext, RunLauncher  # noqa: E402
from dagster._grpc.types import ExecuteRunArgs  # noqa: E402
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value  # noqa: E402

from clickstream_dagster.stack.run_worker import INSTANCE_REF_ENV, STALE  # noqa: E402

PID_TAG = "clickstream/run_worker_pid"
HOST_TAG = "clickstream/run_worker_host"


class ForkingRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, preload_modules: Sequence[str] = (), inst_data: ConfigurableClassData | None = None):
        self._preload = list(preload_modules)
        self._inst_data = inst_data
        self._lock = threading.Lock()
        self._servers: dict[tuple[str, str | None], _RunServer] = {}
        self._others: list[subprocess.Popen[bytes]] = []
        super().__init__()

    # -- ConfigurableClass -------------------------------------------------------------------------------------

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"preload_modules": dg.Field([str], is_required=False, default_value=[])}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    # -- RunLauncher -------------------------------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = context.job_code_origin
        if origin is None:
            raise dg.DagsterInvariantViolationError(f"run {run.run_id} has no code origin to execute")
        executable = origin.repository_origin.executable_path or sys.executable
        cwd = getattr(origin.repository_origin.code_pointer, "working_directory", None)
        execute = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        args = serialize_value(execute)

        if executable != sys.executable:  # another environment's code location: run it as Dagster would
            with self._lock:
                self._others = [p for p in self._others if p.poll() is None]  # reaps the finished ones
                worker = subprocess.Popen(execute.get_command_args(), cwd=cwd)
                self._others.append(worker)
            self._tag(run.run_id, worker.pid)
            return

        with self._lock:
            server = self._servers.get((executable, cwd))
            if server is None or not server.submit(run.run_id, args):  # none yet, or it has exited
                server = _RunServer(
                    executable, cwd, self._preload, self._instance.get_ref(), self._tag, self._lost
                )
                self._servers[(executable, cwd)] = server
                if not server.submit(run.run_id, args):
                    raise dg.DagsterLaunchFailedError(f"the run server for {executable} exited at start")

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = run.tags.get(PID_TAG)
        if pid is None or run.tags.get(HOST_TAG) != socket.gethostname():
            self._instance.report_engine_event(
                "Cannot terminate: the run's process is not (yet) known on this machine.", run, cls=type(self)
            )
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(pid), signal.SIGTERM)  # the run turns it into an interrupt of the running step
        except ProcessLookupError:
            return False
        return True

    def dispose(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()

    def _tag(self, run_id: str, pid: int) -> None:
        self._instance.add_run_tags(run_id, {PID_TAG: str(pid), HOST_TAG: socket.gethostname()})

    def _lost(self, run_id: str) -> None:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self._instance.report_run_failed(run, "The run server exited before starting this run.")


class _RunServer:
    """One `run_worker` process: runs go in on its stdin, their pids come back on its stdout, in order."""

    def __init__(
        self,
        executable: str,
        cwd: str | None,
        preload: list[str],
        instance_ref: InstanceRef,
        on_started: Callable[[str, int], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._process = subprocess.Popen(
            [executable, "-m", "clickstream_dagster.stack.run_worker", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, INSTANCE_REF_ENV: serialize_value(instance_ref)},
        )
        self._pending: collections.deque[str] = collections.deque()
        self._on_started = on_started
        self._on_lost = on_lost
        self._closing = threading.Lock()
        self._replies = threading.Thread(target=self._read_replies, name="run-server-replies", daemon=True)
        self._replies.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def submit(self, run_id: str, args: str) -> bool:
        """Hand a run over; False if the server has exited or was retired, and the run was not taken."""
        stdin: IO[bytes] = self._process.stdin  # type: ignore[assignment]
        # A run is either written whole before a retirement closes the input, or not at all.
        with self._closing:
            if self._process.poll() is not None or stdin.closed:
                return False
            self._pending.append(run_id)
            try:
                stdin.write(args.encode() + b"\n")
                stdin.flush()
            except BrokenPipeError:
                self._pending.remove(run_id)
                return False
        return True

    def close(self) -> None:
        """End of input: the server exits once the runs it was given have started."""
        with self._closing:
            if self._process.stdin is not None and not self._process.stdin.closed:
                self._process.stdin.close()

    def _read_replies(self) -> None:
        stdout: IO[bytes] = self._process.stdout  # type: ignore[assignment]
        for line in stdout:
            run_id = self._pending.popleft()
            pid, state = line.decode().split()
            if state == STALE:
                self.close()  # retired: the launcher starts a new server for the next run
            try:
                self._on_started(run_id, int(pid))
            except Exception:  # a tag is informational; the run itself goes on
                continue
        code = self._process.wait()
        if code != 0:
            print(f"run server {self.pid} exited with {code}", file=sys.stderr)
        while self._pending:  # given to the server, never started: fail them (run retries take over)
            self._on_lost(self._pending.popleft())
