"""ForkingRunLauncher on a real Dagster instance and code server: runs fork from the server that imported the
code location, never execute code older than the files on disk, and can be terminated."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test, poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget

from clickstream_dagster.stack.config import sqlalchemy_psycopg2_url
from clickstream_dagster.stack.run_launcher import PID_TAG, ForkingRunLauncher

JOBS_MODULE = """
import json, os, time
from pathlib import Path
import dagster as dg

VERSION = {version!r}
OUT = Path(__file__).parent
with (OUT / f"imported-{{os.getpid()}}").open("a") as imports:  # one line per import of this module
    imports.write(VERSION + "\\n")

@dg.op(config_schema={{"sleep": float}})
def report(context):
    time.sleep(context.op_config["sleep"])
    (OUT / f"ran-{{context.run_id}}.json").write_text(json.dumps({{"pid": os.getpid(), "version": VERSION}}))

@dg.job(executor_def=dg.in_process_executor)
def report_job():
    report()

defs = dg.Definitions(jobs=[report_job])
"""


def _write_jobs(folder: Path, version: str) -> None:
    path = folder / "warm_jobs.py"
    path.write_text(textwrap.dedent(JOBS_MODULE.format(version=version)))


@pytest.fixture
def workspace(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dg.DagsterInstance, object, Path]]:
    """An instance on SQLite storage, or with `indirect` param "postgres" on the stack's pooled PostgreSQL
    storage (as `clickstream up` configures it: the run server opens it before forking)."""
    _write_jobs(tmp_path, "v1")
    (tmp_path / "home").mkdir()
    overrides: dict[str, object] = {
        "run_launcher": {
            "module": "clickstream_dagster.stack.run_launcher",
            "class": "ForkingRunLauncher",
            "config": {"preload_modules": ["warm_jobs"]},
        }
    }
    if getattr(request, "param", "sqlite") == "postgres":
        url = request.getfixturevalue("database_factory")(migrate=False)
        overrides["storage"] = {
            "custom": {
                "module": "clickstream_dagster.stack.storage",
                "class": "PooledPostgresStorage",
                "config": {"postgres_url": sqlalchemy_psycopg2_url(url)},
            }
        }
    target = ModuleTarget(
        module_name="warm_jobs", attribute=None, working_directory=str(tmp_path), location_name="warm"
    )
    with (
        dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance,
        WorkspaceProcessContext(instance, target) as process_context,
    ):
        yield instance, process_context.create_request_context(), tmp_path
        instance.run_launcher.dispose()


def _launch(instance: dg.DagsterInstance, workspace: object, sleep: float = 0.0) -> str:
    location = workspace.get_code_location("warm")  # type: ignore[attr-defined]
    remote_job = location.get_repository("__repository__").get_full_job("report_job")
    run = create_run_for_test(
        instance,
        job_name="report_job",
        run_config={"ops": {"report": {"config": {"sleep": sleep}}}},
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)  # type: ignore[arg-type]
    return run.run_id


def _result(folder: Path, instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    run = poll_for_finished_run(instance, run_id, timeout=90)
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
    return json.loads((folder / f"ran-{run_id}.json").read_text())


@pytest.mark.parametrize("workspace", ["sqlite", "postgres"], indirect=True)
def test_runs_fork_from_the_server_and_always_run_current_code(workspace) -> None:
    instance, context, folder = workspace
    launcher = instance.run_launcher
    assert isinstance(launcher, ForkingRunLauncher)

    first, second = _launch(instance, context), _launch(instance, context)
    results = [_result(folder, instance, first), _result(folder, instance, second)]
    (server,) = launcher._servers.values()
    pids = [int(instance.get_run_by_id(run_id).tags[PID_TAG]) for run_id in (first, second)]
    assert [r["pid"] for r in results] == pids  # the tag names the process that executed the run
    assert len({server.pid, *pids}) == 3  # one process per run, neither of them the server
    assert all(r["version"] == "v1" for r in results)
    # Only the server imported the module: the runs used its import.
    assert (folder / f"imported-{server.pid}").read_text().split() == ["v1"]
    assert not any((folder / f"imported-{pid}").exists() for pid in pids)

    # The code changes after the server imported it: the run must see the new code, and the server retires.
    time.sleep(0.05)  # a later mtime than the server's import, on any clock grain
    _write_jobs(folder, "v2")
    # Two runs right away: the second may reach the old server before the launcher retires it; neither is lost.
    third, fourth = _launch(instance, context), _launch(instance, context)
    assert _result(folder, instance, third)["version"] == "v2"
    assert _result(folder, instance, fourth)["version"] == "v2"
    assert server._process.wait(timeout=30) == 0  # retired by the launcher once it said "stale"
    fifth = _launch(instance, context)
    assert _result(folder, instance, fifth)["version"] == "v2"
    (new_server,) = launcher._servers.values()
    assert new_server.pid != server.pid
    assert not (folder / f"imported-{instance.get_run_by_id(fifth).tags[PID_TAG]}").exists()  # forked again


def test_terminate_cancels_a_running_run_and_dispose_ends_the_idle_worker(workspace) -> None:
    instance, context, folder = workspace
    run_id = _launch(instance, context, sleep=120)
    deadline = time.monotonic() + 60
    while not any(
        e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
        for e in instance.all_logs(run_id)
    ):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)

    assert instance.run_launcher.terminate(run_id)
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert not (folder / f"ran-{run_id}.json").exists()

    (server,) = instance.run_launcher._servers.values()
    instance.run_launcher.dispose()
    assert server._process.wait(timeout=60) == 0
