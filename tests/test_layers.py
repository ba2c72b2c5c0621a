"""The three layers hold at run time: the library starts without Dagster, the CLI's producer without any
engine, and private internals of Dagster and kafka-python stay in the one place each that checks their version.

`lint-imports` (pyproject.toml) checks the import graph statically; these tests check what a process really
loads, which also catches imports made inside functions.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clickstream_dagster"

HEAVY = ("dagster", "pyspark", "pandas", "confluent_kafka", "lightfm", "streamlit")


def _loaded_after(code: str) -> set[str]:
    """Top-level names of every module loaded once `code` ran in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "clickstream_dagster.producer.replay",  # the producer
        "clickstream_dagster.api.app",  # the API app
        "clickstream_dagster.ingestion.run",  # the ingestion library, all of it
        "clickstream_dagster.ingestion.ledger",
        "clickstream_dagster.ingestion.planner",
        "clickstream_dagster.ingestion.quarantine_replay",
        "clickstream_dagster.analytics.windows",  # the windows package, all of it
        "clickstream_dagster.analytics.windows.sets",
        "clickstream_dagster.analytics.windows.stats",
        "clickstream_dagster.dashboard.traffic",
        "clickstream_dagster.dashboard.pipeline_health",
        "clickstream_dagster.dashboard.models",
    ],
)
def test_library_starts_without_dagster(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert module.split(".", maxsplit=1)[0] in loaded  # the probe did import it
    assert not {m for m in loaded if m.startswith("dagster")}, f"{module} loads Dagster"


def test_the_producers_command_loads_no_engine() -> None:
    """`clickstream produce --help` imports only click and the stack's configuration (bench/README.md, "Start-up",
    times it)."""
    code = (
        "from clickstream_dagster.cli import main\n"
        "try:\n"
        "    main(['produce', '--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass"
    )
    loaded = _loaded_after(code)
    assert "click" in loaded
    assert not loaded & set(HEAVY), f"`clickstream produce --help` loads {sorted(loaded & set(HEAVY))}"


def test_the_dagster_wiring_loads_without_the_local_stack() -> None:
    loaded_modules = _full_modules_after("import clickstream_dagster.definitions")
    assert "clickstream_dagster.definitions" in loaded_modules
    assert not {m for m in loaded_modules if m.startswith("clickstream_dagster.stack")}


def _full_modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _modules_importing(predicate: object) -> set[str]:
    assert callable(predicate)
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if any(predicate(name) for name in _imports(path))
    }


def test_dagster_internals_only_in_the_local_stack() -> None:
    def private(name: str) -> bool:
        parts = name.split(".")
        return parts[0].startswith("dagster") and any(p.startswith("_") for p in parts[1:])

    users = _modules_importing(private)
    assert users == {"stack/run_launcher.py", "stack/run_worker.py", "stack/storage.py"}
    for module in users:  # each checks Dagster's version before it touches them
        assert "require_dagster()" in (PACKAGE / module).read_text()


def test_kafka_python_internals_behind_one_door() -> None:
    """kafka-python's public API is its top-level package (KafkaProducer, KafkaConsumer, KafkaAdminClient,
    TopicPartition), `kafka.admin`, `kafka.errors` and the default partitioner; the rest is internal. Only
    `clients/kafka_internals.py` imports it (and checks the version, once); only the two modules it serves
    use what it hands out: the producer's batch appender and the log reader."""
    public = ("kafka", "kafka.admin", "kafka.errors", "kafka.structs", "kafka.partitioner.default")

    def internal(name: str) -> bool:
        return name.split(".", maxsplit=1)[0] == "kafka" and name not in public

    assert _modules_importing(internal) == {"clients/kafka_internals.py"}
    assert _modules_importing(lambda name: name == "clickstream_dagster.clients.kafka_internals") == {
        "producer/batches.py",
        "ingestion/kafka_log.py",
    }
    checks = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if 'version("kafka-python")' in p.read_text()
    ]
    assert checks == ["clients/kafka_internals.py"]


def test_the_event_schema_has_one_home() -> None:
    """The event types and the event-time bounds are defined in events.py alone; the CSV readers, the message
    decoder, the checks, the ML cleaning and the dashboard import them from there."""
    import ast

    names = {"EVENT_TYPES", "MIN_TIMESTAMP_MS", "MAX_TIMESTAMP_MS"}
    homes: dict[str, list[str]] = {n: [] for n in names}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                if isinstance(target, ast.Name) and target.id in names:
                    homes[target.id].append(str(path.relative_to(PACKAGE)))
    assert homes == {n: ["events.py"] for n in names}
