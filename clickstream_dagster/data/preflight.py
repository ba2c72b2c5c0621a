"""What a folder of RetailRocket files holds, checked before anything starts (`clickstream demo` runs it on
data/raw/ first).

Each file is looked at cheaply: present, its header the published one, and its first rows valid by the same
rules the pipeline applies (`data.readers`). Rows that fail later are quarantined as usual; this only catches
the wrong file, a truncated download or another format before the stack spends a minute starting.

- events.csv is required. Without it (and without any other RetailRocket file), the demo generates a dataset;
  next to real files it stops, because generated events would not match real items.
- category_tree.csv and item_properties_part1/2.csv are optional: without them the pipeline runs and the
  items have no categories or properties (the recommender then learns from the events alone).
- A malformed file stops the demo, whichever it is.

Every hint names a real command or flag, and none would overwrite the user's files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from clickstream_dagster.data.readers import (
    CATEGORY_TREE_FILE,
    CATEGORY_TREE_HEADER,
    EVENTS_FILE,
    EVENTS_HEADER,
    ITEM_PROPERTIES_FILES,
    ITEM_PROPERTIES_HEADER,
    RowError,
    iter_csv_rows,
    parse_category_row,
    parse_event_row,
    parse_property_row,
)

SAMPLE_ROWS = 1_000  # rows read per file
MAX_BAD_SHARE = 0.5  # more sampled rows than this rejected: the file is not in the published format
DOWNLOAD = "the RetailRocket dataset (Kaggle: retailrocket/ecommerce-dataset)"

State = Literal["ok", "missing", "malformed"]


@dataclass(frozen=True)
class FileCheck:
    name: str
    path: Path
    state: State
    detail: str  # what was found
    hint: str = ""  # what to do about it (empty when ok)


@dataclass(frozen=True)
class Preflight:
    raw_dir: Path
    files: tuple[FileCheck, ...]

    def file(self, name: str) -> FileCheck:
        return next(f for f in self.files if f.name == name)

    @property
    def malformed(self) -> list[FileCheck]:
        return [f for f in self.files if f.state == "malformed"]

    @property
    def has_events(self) -> bool:
        return self.file(EVENTS_FILE).state == "ok"

    @property
    def has_reference(self) -> bool:
        """Every reference file present and well-formed: the reference job can load them."""
        return all(f.state == "ok" for f in self.files if f.name != EVENTS_FILE)

    @property
    def empty(self) -> bool:
        """No RetailRocket file at all: the demo may generate a dataset here."""
        return all(f.state == "missing" for f in self.files)

    @property
    def runnable(self) -> bool:
        return self.has_events and not self.malformed

    def lines(self) -> list[str]:
        out = []
        for f in self.files:
            out.append(f"{f.name}: {f.state}, {f.detail}")
            if f.hint:
                out.append(f"  -> {f.hint}")
        return out


Parser = Callable[[Sequence[str]], Any]


def _check(path: Path, header: Sequence[str], parse: Parser, missing_hint: str) -> FileCheck:
    name = path.name
    if not path.exists():
        return FileCheck(name, path, "missing", f"no {path}", missing_hint)
    if not path.is_file():
        return FileCheck(
            name, path, "malformed", f"{path} is not a file", f"replace it with {name} from {DOWNLOAD}"
        )
    size = path.stat().st_size
    fix = f"replace {path} with {name} as published in {DOWNLOAD} (or move it away)"
    try:
        bad: list[str] = []
        seen = 0
        for line, fields in islice(iter_csv_rows(path, header), SAMPLE_ROWS):
            seen += 1
            try:
                parse(fields)
            except RowError as exc:
                bad.append(f"line {line}: {exc.reason}")
    except (ValueError, OSError) as exc:  # HeaderError (a ValueError), unreadable CSV, I/O
        return FileCheck(name, path, "malformed", str(exc).removeprefix(f"{path}: "), fix)
    if seen == 0:
        return FileCheck(name, path, "malformed", "a header and no rows", fix)
    if len(bad) > MAX_BAD_SHARE * seen:
        return FileCheck(
            name, path, "malformed", f"{len(bad)} of its first {seen} rows invalid (first: {bad[0]})", fix
        )
    detail = f"{size / 2**20:,.1f} MB, header and first {seen:,} rows checked"
    if bad:
        detail += f" ({len(bad)} invalid, will be quarantined; first: {bad[0]})"
    return FileCheck(name, path, "ok", detail)


def check_raw_dir(raw_dir: Path) -> Preflight:
    """Every RetailRocket file of `raw_dir`, checked (events first)."""
    events = _check(
        raw_dir / EVENTS_FILE,
        EVENTS_HEADER,
        parse_event_row,
        f"put events.csv from {DOWNLOAD} in {raw_dir}/; or, for a generated dataset instead, move the other "
        f"RetailRocket files out of {raw_dir}/ (`make demo` generates one into an empty folder)",
    )
    reference_hint = (
        f"optional: put it in {raw_dir}/ from {DOWNLOAD}; without it items have no categories or properties"
    )
    category_tree = _check(
        raw_dir / CATEGORY_TREE_FILE, CATEGORY_TREE_HEADER, parse_category_row, reference_hint
    )
    properties = [
        _check(raw_dir / name, ITEM_PROPERTIES_HEADER, parse_property_row, reference_hint)
        for name in ITEM_PROPERTIES_FILES
    ]
    return Preflight(raw_dir, (events, category_tree, *properties))
