"""Streaming readers for the RetailRocket files exactly as published in `data/raw/`.

Two kinds of consumer:
- The Kafka producer walks events.csv row by row. `iter_event_rows` yields (line number, raw fields),
  and `parse_event_row` validates one row or raises `RowError`. Every row is therefore either sent or
  rejected with a reason.
- Bulk loaders COPY category_tree.csv and item_properties_part*.csv into PostgreSQL. `iter_category_tree`
  and `iter_item_properties` yield `Chunk`s: a typed DataFrame plus the rows rejected from that stretch of
  the file, each with its file, line and reason. Memory stays bounded by `chunk_rows`.

Nothing is skipped silently. A blank line is a row with 0 fields and is rejected like any other bad row.
Line numbers are physical lines, and the header is line 1. The validation rules are the pure `parse_*_row`
functions. A `RowError` reads "<kind>: <detail>", where kind is a short fixed phrase that is safe to use as a
metrics label.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from clickstream_dagster.events import EVENT_TYPES, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

EVENTS_FILE = "events.csv"
CATEGORY_TREE_FILE = "category_tree.csv"
ITEM_PROPERTIES_FILES: tuple[str, ...] = ("item_properties_part1.csv", "item_properties_part2.csv")
EVENTS_HEADER: tuple[str, ...] = ("timestamp", "visitorid", "event", "itemid", "transactionid")
CATEGORY_TREE_HEADER: tuple[str, ...] = ("categoryid", "parentid")
ITEM_PROPERTIES_HEADER: tuple[str, ...] = ("timestamp", "itemid", "property", "value")

MAX_ID = 2**63 - 1  # ids go into BIGINT columns
DEFAULT_CHUNK_ROWS = 500_000

# Maps each raw value to the interned constant, so events that are kept share one str per type.
_EVENT_TYPE_BY_TEXT = {name: name for name in EVENT_TYPES}


class RowError(ValueError):
    """A data row that fails validation. `str(err)` and `err.reason` read "<kind>: <detail>"."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.reason = f"{kind}: {detail}"
        super().__init__(self.reason)


class HeaderError(ValueError):
    """The file does not start with the expected header: a wrong file, or not in the published format."""


@dataclass(frozen=True, slots=True)
class Event:
    timestamp: int  # epoch milliseconds
    visitorid: int
    event: str  # one of EVENT_TYPES
    itemid: int
    transactionid: int | None  # set on transactions only


@dataclass(frozen=True, slots=True)
class RejectedRow:
    file: str
    line: int
    reason: str
    raw: str  # the raw fields joined by commas, for the rejects table


@dataclass(frozen=True)
class Chunk:
    """One stretch of a file: its valid rows as a typed DataFrame plus the rows rejected from it."""

    file: Path
    first_line: int
    last_line: int
    frame: pd.DataFrame
    rejected: list[RejectedRow]

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.rejected)


# --- validation rules (pure) --------------------------------------------------------------------------------


def _is_digits(text: str) -> bool:
    return text.isdigit() and text.isascii()  # isdigit alone accepts e.g. Arabic-Indic digits


def _parse_uint(text: str, name: str) -> int:
    """A non-negative integer field. Also accepts integral floats like "14418.0" (pandas re-saves)."""
    if len(text) < 19 and text.isdigit() and text.isascii():  # fast path: < 19 digits always fits int64
        return int(text)
    if not text:
        raise RowError("missing field", name)
    whole, dot, frac = text.partition(".")
    if _is_digits(whole) and (not dot or _is_digits(frac)):
        if frac.strip("0"):
            raise RowError("not a whole number", f"{name}={text!r}")
        value = int(whole)
        if value > MAX_ID:
            raise RowError("id out of range", f"{name}={text} does not fit a BIGINT")
        return value
    if text[0] == "-" and _is_digits(text[1:].replace(".", "", 1)):
        raise RowError("negative id", f"{name}={text}")
    raise RowError("not an integer", f"{name}={text!r}")


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds within 2000..2100; a value in seconds or microseconds is out of range."""
    if len(text) == 13 and text.isdigit() and text.isascii():  # fast path for the published format
        ts = int(text)
        if MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
            return ts
    try:
        ts = _parse_uint(text, "timestamp")
    except RowError as exc:
        if exc.kind == "missing field":
            raise
        raise RowError("bad timestamp", f"{text!r} is not epoch milliseconds") from None
    if ts < MIN_TIMESTAMP_MS:
        hint = "; it looks like seconds" if ts >= MIN_TIMESTAMP_MS // 1000 else ""
        raise RowError("timestamp out of range", f"{ts} is before 2000-01-01 in epoch milliseconds{hint}")
    if ts >= MAX_TIMESTAMP_MS:
        hint = "; it looks like microseconds" if ts >= MIN_TIMESTAMP_MS * 1000 else ""
        raise RowError("timestamp out of range", f"{ts} is after 2100-01-01 in epoch milliseconds{hint}")
    return ts


# A frozen dataclass's __init__ sets each field through object.__setattr__, which costs about as much as the
# rest of parsing a row; filling the slots through their descriptors builds the identical object 2x faster.
_EVENT_SLOT_SETTERS = tuple(getattr(Event, name).__set__ for name in EVENTS_HEADER)


def _new_event(
    timestamp: int,
    visitorid: int,
    event: str,
    itemid: int,
    transactionid: int | None,
    new: Callable[[type[Event]], Event] = object.__new__,
    setters: tuple[Callable[[Event, object], None], ...] = _EVENT_SLOT_SETTERS,
) -> Event:
    ev = new(Event)
    set_ts, set_visitor, set_event, set_item, set_tid = setters
    set_ts(ev, timestamp)
    set_visitor(ev, visitorid)
    set_event(ev, event)
    set_item(ev, itemid)
    set_tid(ev, transactionid)
    return ev


_MAX_TIMESTAMP_TEXT = str(MAX_TIMESTAMP_MS)  # 13 digits, so text order is numeric order at that length


def parse_event_row(fields: Sequence[str]) -> Event:
    """Validate one events.csv row (raw fields, header excluded). Raises RowError with the reason."""
    # Fast path for the rows of the published format: 13-digit timestamp, ids of 1-18 ASCII digits. It
    # accepts only rows the full rules below accept, with the same result; everything else goes through them.
    if len(fields) == 5:
        ts_text, visitor_text, event_text, item_text, tid_text = fields
        event = _EVENT_TYPE_BY_TEXT.get(event_text)
        digits = ts_text + visitor_text + item_text
        if (
            event is not None
            and len(ts_text) == 13
            and 0 < len(visitor_text) < 19
            and 0 < len(item_text) < 19
            and digits.isdigit()
            and digits.isascii()
            and ts_text < _MAX_TIMESTAMP_TEXT
        ):
            if not tid_text:
                if event != "transaction":
                    return _new_event(int(ts_text), int(visitor_text), event, int(item_text), None)
            elif event == "transaction" and len(tid_text) < 19 and tid_text.isdigit() and tid_text.isascii():
                return _new_event(int(ts_text), int(visitor_text), event, int(item_text), int(tid_text))
    if len(fields) != 5:
        raise RowError("wrong field count", f"expected 5 ({','.join(EVENTS_HEADER)}), got {len(fields)}")
    ts_text, visitor_text, event_text, item_text, tid_text = fields
    timestamp = parse_timestamp(ts_text)
    visitorid = _parse_uint(visitor_text, "visitorid")
    event = _EVENT_TYPE_BY_TEXT.get(event_text)
    if event is None:
        if not event_text:
            raise RowError("missing field", "event")
        raise RowError("unknown event type", f"{event_text!r} (expected view, addtocart or transaction)")
    itemid = _parse_uint(item_text, "itemid")
    transactionid: int | None = None
    if event == "transaction":
        if not tid_text:
            raise RowError("missing transactionid", "a transaction row needs one")
        transactionid = _parse_uint(tid_text, "transactionid")
    elif tid_text:
        raise RowError("transactionid on non-transaction", f"{event} row has transactionid={tid_text!r}")
    return Event(timestamp, visitorid, event, itemid, transactionid)


def parse_category_row(fields: Sequence[str]) -> tuple[int, int | None]:
    """Validate one category_tree.csv row: (categoryid, parentid or None for a root)."""
    if len(fields) != 2:
        raise RowError(
            "wrong field count", f"expected 2 ({','.join(CATEGORY_TREE_HEADER)}), got {len(fields)}"
        )
    categoryid = _parse_uint(fields[0], "categoryid")
    parentid = None if fields[1] == "" else _parse_uint(fields[1], "parentid")
    if parentid == categoryid:
        raise RowError("self parent", f"category {categoryid} is its own parent")
    return categoryid, parentid


def parse_property_row(fields: Sequence[str]) -> tuple[int, int, str, str]:
    """Validate one item_properties row: (timestamp, itemid, property, value).

    The values of `categoryid` (an id) and `available` (0 or 1) are checked because loaders derive the
    current category and availability from them. Other values are hashed text and are only required to exist.
    """
    if len(fields) != 4:
        raise RowError(
            "wrong field count", f"expected 4 ({','.join(ITEM_PROPERTIES_HEADER)}), got {len(fields)}"
        )
    ts_text, item_text, prop, value = fields
    timestamp = parse_timestamp(ts_text)
    itemid = _parse_uint(item_text, "itemid")
    if not prop:
        raise RowError("missing field", "property")
    if prop == "categoryid":
        if not _is_digits(value):
            value = str(_parse_uint(value, "categoryid value"))  # normalizes "1338.0" for the loaders
    elif prop == "available":
        if value not in ("0", "1"):
            raise RowError("bad available value", f"{value!r} (expected 0 or 1)")
    elif not value:
        raise RowError("missing field", "value")
    return timestamp, itemid, prop, value


def category_tree_problems(frame: pd.DataFrame) -> list[str]:
    """Problems of the whole tree that no single row shows: duplicate ids, unknown parents and cycles."""
    problems: list[str] = []
    ids = frame["categoryid"].to_numpy(dtype=np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    problems.extend(
        f"duplicate categoryid {c} ({n} rows)" for c, n in zip(unique, counts, strict=True) if n > 1
    )
    parent_of = {
        int(c): (None if pd.isna(p) else int(p)) for c, p in zip(ids, frame["parentid"], strict=True)
    }
    problems.extend(
        f"category {c} has unknown parent {p}"
        for c, p in parent_of.items()
        if p is not None and p not in parent_of
    )
    in_cycle: set[int] = set()
    for start in parent_of:
        seen: list[int] = []
        node: int | None = start
        while node is not None and node in parent_of and node not in seen and node not in in_cycle:
            seen.append(node)
            node = parent_of[node]
        if node is not None and node in seen:
            cycle = seen[seen.index(node) :]
            in_cycle.update(cycle)
            problems.append(f"cycle through categories {' -> '.join(map(str, [*cycle, node]))}")
    return problems


# --- streaming ----------------------------------------------------------------------------------------------


def iter_csv_rows(path: str | Path, header: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, raw fields) for every data row after checking the header; line 2 is the first row."""
    path = Path(path)
    expected = ",".join(header)
    # utf-8-sig drops a BOM from spreadsheet re-saves. "replace" turns stray bytes into U+FFFD, so the row
    # fails validation with a reason instead of the whole file aborting.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            first = next(reader, None)
            if first is None:
                raise HeaderError(f"{path}: the file is empty; expected the header {expected!r}")
            if [cell.strip() for cell in first] != list(header):
                raise HeaderError(
                    f"{path}: the header is {','.join(first)!r} but should be {expected!r}: "
                    f"is this the RetailRocket {path.name} as published on Kaggle?"
                )
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise ValueError(f"{path}: line {reader.line_num}: unreadable CSV ({exc})") from exc


def iter_event_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, raw fields) for every row of events.csv; validate each with `parse_event_row`."""
    return iter_csv_rows(path, EVENTS_HEADER)


def iter_events(path: str | Path) -> Iterator[tuple[int, Event | RowError]]:
    """(line number, parsed event or the error that rejects the row) for every row of events.csv."""
    for line, fields in iter_event_rows(path):
        try:
            yield line, parse_event_row(fields)
        except RowError as exc:
            yield line, exc


def _rejected(path: Path, line: int, fields: list[str], exc: RowError) -> RejectedRow:
    return RejectedRow(str(path), line, exc.reason, ",".join(fields))


def iter_category_tree(path: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """Chunks of category_tree.csv with columns categoryid (int64) and parentid (nullable Int64)."""
    path = Path(path)
    rows = iter_csv_rows(path, CATEGORY_TREE_HEADER)
    while True:
        categories: list[int] = []
        parents: list[int | None] = []
        rejected: list[RejectedRow] = []
        first_line = last_line = 0
        for line, fields in islice(rows, chunk_rows):
            first_line = first_line or line
            last_line = line
            try:
                categoryid, parentid = parse_category_row(fields)
            except RowError as exc:
                rejected.append(_rejected(path, line, fields, exc))
                continue
            categories.append(categoryid)
            parents.append(parentid)
        if not last_line:
            return
        frame = pd.DataFrame(
            {
                "categoryid": np.array(categories, dtype=np.int64),
                "parentid": pd.array(parents, dtype="Int64"),
            }
        )
        yield Chunk(path, first_line, last_line, frame, rejected)


def _property_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, str | Path):
        one = Path(paths)
        return [one / name for name in ITEM_PROPERTIES_FILES] if one.is_dir() else [one]
    return [Path(p) for p in paths]


def iter_item_properties(
    paths: str | Path | Iterable[str | Path], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[Chunk]:
    """Chunks of item_properties rows: timestamp, itemid (int64), property, value (str).

    `paths` is one file, several files (read in order), or a folder holding both published parts.
    """
    for path in _property_paths(paths):
        rows = iter_csv_rows(path, ITEM_PROPERTIES_HEADER)
        while True:
            # Column lists of ints and strs, not a list of row tuples: the GC does not track them, and a
            # 500k-tuple chunk would trigger repeated full collections (about 3x slower in a measurement).
            timestamps: list[int] = []
            items: list[int] = []
            props: list[str] = []
            values: list[str] = []
            rejected: list[RejectedRow] = []
            first_line = last_line = 0
            for line, fields in islice(rows, chunk_rows):
                first_line = first_line or line
                last_line = line
                try:
                    timestamp, itemid, prop, value = parse_property_row(fields)
                except RowError as exc:
                    rejected.append(_rejected(path, line, fields, exc))
                    continue
                timestamps.append(timestamp)
                items.append(itemid)
                props.append(prop)
                values.append(value)
            if not last_line:
                break
            frame = pd.DataFrame(
                {
                    "timestamp": np.array(timestamps, dtype=np.int64),
                    "itemid": np.array(items, dtype=np.int64),
                    "property": pd.Series(props, dtype=object),
                    "value": pd.Series(values, dtype=object),
                }
            )
            yield Chunk(path, first_line, last_line, frame, rejected)
