"""A run launcher that keeps the next run's process warm.

Dagster's `DefaultRunLauncher` asks the code server to start each run, and the code server spawns a fresh
interpreter that imports Dagster and the whole code location before the first step: 2.5-3 s of CPU per run,
7-12 s of wall time on a loaded 2-core machine (bench/README.md). A sensor launching a run every few seconds
pays that on every run. `WarmRunLauncher` starts one run worker ahead of time
(`clickstream_dagster.stack.run_worker`), which imports the same modules and then waits for a run; a launch
hands the run to it and starts the next one. Runs are still one process each, executed by the same code as
`dagster api execute_run`, on this machine (like the default launcher).

Configured in the instance's dagster.yaml (`clickstream up` writes it):

    run_launcher:
      module: clickstream_dagster.stack.run_launcher
      class: WarmRunLauncher
      config:
        preload_modules: [clickstream_dagster.definitions]

A worker is only started by a launch (a process that never launches a run never starts one), and it exits
when the process that started it does (its stdin closes).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Self

import dagster as dg
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from clickstream_dagster.stack.run_worker import INSTANCE_REF_ENV

PID_TAG = "clickstream/run_worker_pid"
HOST_TAG = "clickstream/run_worker_host"
WARM_TAG = "clickstream/run_worker_warm"


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, preload_modules: Sequence[str] = (), inst_data: ConfigurableClassData | None = None):
        self._preload = list(preload_modules)
        self._inst_data = inst_data
        self._lock = threading.Lock()
        self._warm: dict[tuple[str, str | None], subprocess.Popen[bytes]] = {}
        self._started: list[subprocess.Popen[bytes]] = []
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
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())

        if executable != sys.executable:  # another environment's code location: run it as Dagster would
            worker = subprocess.Popen(
                [executable, "-m", "dagster", "api", "execute_run", serialize_value(args)], cwd=cwd
            )
            self._started.append(worker)
            self._tag(run, worker, warm=False)
            return

        with self._lock:
            self._started = [p for p in self._started if p.poll() is None]  # reaps the finished ones
            waiting = self._warm.pop((executable, cwd), None)
            warm = waiting is not None and waiting.poll() is None
            worker = waiting if waiting is not None and warm else self._start_worker(executable, cwd)
            assert worker.stdin is not None
            worker.stdin.write(serialize_value(args).encode() + b"\n")
            worker.stdin.close()
            # The next run's worker imports while this run executes.
            self._warm[(executable, cwd)] = self._start_worker(executable, cwd)
        self._tag(run, worker, warm)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = run.tags.get(PID_TAG)
        if pid is None or run.tags.get(HOST_TAG) != socket.gethostname():
            self._instance.report_engine_event(
                "Cannot terminate: the run's worker is not a process on this machine.", run, cls=type(self)
            )
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(pid), signal.SIGTERM)  # the worker turns it into an interrupt of the running step
        except ProcessLookupError:
            return False
        return True

    def dispose(self) -> None:
        with self._lock:
            for worker in self._warm.values():
                if worker.stdin is not None:
                    worker.stdin.close()  # an idle worker exits on end of input
            self._warm.clear()

    # -- workers -----------------------------------------------------------------------------------------------

    def _tag(self, run: dg.DagsterRun, worker: subprocess.Popen[bytes], warm: bool) -> None:
        tags = {PID_TAG: str(worker.pid), HOST_TAG: socket.gethostname(), WARM_TAG: str(warm).lower()}
        self._instance.add_run_tags(run.run_id, tags)

    def _start_worker(self, executable: str, cwd: str | None) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [executable, "-m", "clickstream_dagster.stack.run_worker", *self._preload],
            stdin=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, INSTANCE_REF_ENV: serialize_value(self._instance.get_ref())},
        )
        self._started.append(worker)
        return worker
