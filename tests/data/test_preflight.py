"""The data preflight (data/preflight.py) and the demo's use of it: every file's state, and hints that name
real flags and never overwrite real files."""

import re
from pathlib import Path

import click
import pytest

from clickstream_dagster.cli import main
from clickstream_dagster.data.generator import generate
from clickstream_dagster.data.preflight import check_raw_dir
from clickstream_dagster.data.readers import CATEGORY_TREE_FILE, EVENTS_FILE, ITEM_PROPERTIES_FILES
from clickstream_dagster.stack.demo import preflight
from clickstream_dagster.stack.process import StackError

REFERENCE = (CATEGORY_TREE_FILE, *ITEM_PROPERTIES_FILES)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("generated")
    generate(folder, 20_000, seed=3)
    return folder


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _flags(text: str) -> list[tuple[str, list[str]]]:
    """Every `clickstream <command> ...` quoted in a hint, as (command, its --flags)."""
    return [
        (m.group(1), re.findall(r"--[a-z][a-z-]*", m.group(2)))
        for m in re.finditer(r"`clickstream ([a-z-]+)([^`]*)`", text)
    ]


def _assert_real_flags(text: str) -> None:
    for command, flags in _flags(text):
        cmd = main.commands.get(command)
        assert isinstance(cmd, click.Command), f"hint names `clickstream {command}`, which does not exist"
        known = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        for flag in flags:
            assert flag in known, f"hint names {flag}, which `clickstream {command}` does not take"
    assert "--force" not in text and "--overwrite" not in text  # no hint replaces the user's files


def test_every_file_present_and_well_formed(generated: Path) -> None:
    check = check_raw_dir(generated)
    assert [f.state for f in check.files] == ["ok"] * 4
    assert check.runnable and check.has_reference and not check.empty and not check.malformed
    assert all(f.hint == "" for f in check.files)


def test_events_alone_runs_without_categories(generated: Path, tmp_path: Path) -> None:
    raw = _copy(generated, tmp_path / "raw", (EVENTS_FILE,))
    check = check_raw_dir(raw)
    assert check.runnable and not check.has_reference
    assert [check.file(n).state for n in REFERENCE] == ["missing"] * 3
    for name in REFERENCE:
        assert "optional" in check.file(name).hint and "no categories or properties" in check.file(name).hint
    logged: list[str] = []
    assert preflight(raw, logged.append).has_events
    assert any("events.csv alone: items have no categories or properties" in line for line in logged)


def test_empty_folder_is_generated_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clickstream_dagster.stack.demo as demo

    monkeypatch.setattr(demo, "DEMO_EVENTS", 5_000)
    raw = tmp_path / "raw"
    raw.mkdir()
    assert check_raw_dir(raw).empty
    check = preflight(raw, lambda _line: None)
    assert check.runnable and check.has_reference and (raw / EVENTS_FILE).is_file()


def test_missing_events_beside_real_files_stops_and_never_suggests_overwriting(
    generated: Path, tmp_path: Path
) -> None:
    raw = _copy(generated, tmp_path / "raw", REFERENCE)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    check = check_raw_dir(raw)
    assert not check.runnable and not check.empty and check.file(EVENTS_FILE).state == "missing"
    with pytest.raises(StackError) as err:
        preflight(raw, lambda _line: None)
    message = str(err.value)
    assert "nothing was started" in message and "events.csv" in message
    _assert_real_flags(message)
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before  # nothing written or replaced


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"ts,visitor,kind,item,tx\n1,2,view,3,\n", "header"),
        (b"timestamp,visitorid,event,itemid,transactionid\n", "no rows"),
        (b"timestamp,visitorid,event,itemid,transactionid\n" + b"x,y,click,z,\n" * 50, "rows invalid"),
    ],
)
def test_a_malformed_events_file_is_listed_with_what_to_do(
    generated: Path, tmp_path: Path, content: bytes, why: str
) -> None:
    raw = _copy(generated, tmp_path / "raw", REFERENCE)
    (raw / EVENTS_FILE).write_bytes(content)
    check = check_raw_dir(raw)
    events = check.file(EVENTS_FILE)
    assert events.state == "malformed" and why in events.detail, events.detail
    assert "as published" in events.hint and not check.runnable
    with pytest.raises(StackError, match=re.escape(EVENTS_FILE)):
        preflight(raw, lambda _line: None)


def test_a_malformed_reference_file_stops_too(generated: Path, tmp_path: Path) -> None:
    raw = _copy(generated, tmp_path / "raw", (EVENTS_FILE, *REFERENCE))
    (raw / ITEM_PROPERTIES_FILES[1]).write_bytes(b"itemid;property;value\n1;2;3\n")
    check = check_raw_dir(raw)
    assert check.file(ITEM_PROPERTIES_FILES[1]).state == "malformed" and not check.runnable
    with pytest.raises(StackError, match=re.escape(ITEM_PROPERTIES_FILES[1])):
        preflight(raw, lambda _line: None)


def test_a_few_bad_rows_pass_and_are_reported(generated: Path, tmp_path: Path) -> None:
    raw = _copy(generated, tmp_path / "raw", (EVENTS_FILE,))
    lines = (raw / EVENTS_FILE).read_bytes().splitlines(keepends=True)
    lines.insert(5, b"1433221332117,257597,click,355908,\n")
    (raw / EVENTS_FILE).write_bytes(b"".join(lines))
    events = check_raw_dir(raw).file(EVENTS_FILE)
    assert (
        events.state == "ok"
        and "1 invalid, will be quarantined" in events.detail
        and "line 6" in events.detail
    )


def test_the_generators_refusal_names_real_flags(generated: Path, tmp_path: Path) -> None:
    raw = _copy(generated, tmp_path / "raw", (EVENTS_FILE,))  # no generator marker: a "real" download
    with pytest.raises(FileExistsError) as err:
        generate(raw, 1_000, seed=1)
    message = str(err.value)
    for command, flags in _flags(message):
        cmd = main.commands[command]
        known = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert set(flags) <= known, (flags, known)
    assert "--force" not in message and "deletes those files" in message
