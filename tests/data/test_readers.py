from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from clickstream_dagster.data.readers import (
    CATEGORY_TREE_FILE,
    EVENTS_HEADER,
    ITEM_PROPERTIES_FILES,
    Event,
    HeaderError,
    RowError,
    category_tree_problems,
    iter_category_tree,
    iter_event_rows,
    iter_events,
    iter_item_properties,
    parse_category_row,
    parse_event_row,
    parse_property_row,
)
from clickstream_dagster.events import EVENT_TYPES

TS = "1433221332117"  # 2015-06-02, as in the published file


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


EVENTS_CSV = f"""timestamp,visitorid,event,itemid,transactionid
{TS},257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,111016,addtocart,28722,
1433193500981,599528,transaction,356475,4000
1433193500981,599528,transaction,15335,14418.0
"""


def test_event_rows_carry_line_numbers_and_parse_the_published_format(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", EVENTS_CSV)
    rows = list(iter_event_rows(path))
    assert [line for line, _ in rows] == [2, 3, 4, 5, 6]  # the header is line 1
    events = [parse_event_row(fields) for _, fields in rows]
    assert events[0] == Event(1433221332117, 257597, "view", 355908, None)
    assert events[2].event == "addtocart" and events[2].transactionid is None
    assert events[3].transactionid == 4000
    assert events[4].transactionid == 14418  # float-like ids from pandas re-saves
    assert {e.event for e in events} == set(EVENT_TYPES)


def test_event_is_a_frozen_slotted_dataclass() -> None:
    event = parse_event_row([TS, "1", "view", "2", ""])
    with pytest.raises(AttributeError):
        event.visitorid = 5  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_crlf_and_bom_are_accepted(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(b"\xef\xbb\xbf" + EVENTS_CSV.replace("\n", newline).encode())
    rows = list(iter_event_rows(path))
    assert len(rows) == 5
    assert rows[0][1] == [TS, "257597", "view", "355908", ""]


def test_blank_and_short_lines_are_rows_not_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", f"{','.join(EVENTS_HEADER)}\n{TS},1,view,2,\n\n{TS},1,view\n")
    outcome = list(iter_events(path))
    assert [line for line, _ in outcome] == [2, 3, 4]
    assert isinstance(outcome[0][1], Event)
    assert isinstance(outcome[1][1], RowError)
    assert (
        outcome[1][1].reason
        == "wrong field count: expected 5 (timestamp,visitorid,event,itemid,transactionid), got 0"
    )
    assert isinstance(outcome[2][1], RowError) and outcome[2][1].kind == "wrong field count"


@pytest.mark.parametrize(
    ("fields", "kind", "detail"),
    [
        ([TS, "1", "view", "2"], "wrong field count", "got 4"),
        ([TS, "1", "view", "2", "", ""], "wrong field count", "got 6"),
        (["", "1", "view", "2", ""], "missing field", "timestamp"),
        ([TS, "", "view", "2", ""], "missing field", "visitorid"),
        ([TS, "1", "", "2", ""], "missing field", "event"),
        ([TS, "1", "view", "", ""], "missing field", "itemid"),
        ([TS, "abc", "view", "2", ""], "not an integer", "visitorid='abc'"),
        ([TS, " 1", "view", "2", ""], "not an integer", "visitorid=' 1'"),
        ([TS, "1", "view", "\u0663", ""], "not an integer", "itemid"),  # an Arabic-Indic digit
        ([TS, "-5", "view", "2", ""], "negative id", "visitorid=-5"),
        ([TS, "1", "view", "-2", ""], "negative id", "itemid=-2"),
        ([TS, "1", "view", "2.5", ""], "not a whole number", "itemid='2.5'"),
        ([TS, "1", "view", "99999999999999999999", ""], "id out of range", "itemid"),
        ([TS, "1", "click", "2", ""], "unknown event type", "'click'"),
        ([TS, "1", "View", "2", ""], "unknown event type", "'View'"),
        (["1433221332", "1", "view", "2", ""], "timestamp out of range", "looks like seconds"),
        (["1433221332117000", "1", "view", "2", ""], "timestamp out of range", "looks like microseconds"),
        (["5", "1", "view", "2", ""], "timestamp out of range", "before 2000-01-01"),
        (["2015-06-02 05:02:12", "1", "view", "2", ""], "bad timestamp", "not epoch milliseconds"),
        (["-1433221332117", "1", "view", "2", ""], "bad timestamp", "not epoch milliseconds"),
        ([TS, "1", "view", "2", "17"], "transactionid on non-transaction", "view row has transactionid='17'"),
        ([TS, "1", "addtocart", "2", "17.0"], "transactionid on non-transaction", "addtocart row"),
        ([TS, "1", "transaction", "2", ""], "missing transactionid", "needs one"),
        ([TS, "1", "transaction", "2", "14418.5"], "not a whole number", "transactionid='14418.5'"),
        ([TS, "1", "transaction", "2", "14418."], "not an integer", "transactionid='14418.'"),
        ([TS, "1", "transaction", "2", "1e4"], "not an integer", "transactionid='1e4'"),
    ],
)
def test_each_bad_event_row_has_its_reason(fields: list[str], kind: str, detail: str) -> None:
    with pytest.raises(RowError) as info:
        parse_event_row(fields)
    assert info.value.kind == kind
    assert str(info.value) == info.value.reason
    assert info.value.reason.startswith(f"{kind}: ")
    assert detail in info.value.reason


def test_integral_floats_are_accepted_everywhere() -> None:
    event = parse_event_row([f"{TS}.0", "257597.0", "transaction", "355908.00", "14418.0"])
    assert event == Event(1433221332117, 257597, "transaction", 355908, 14418)


def test_header_is_checked(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="should be 'timestamp,visitorid,event,itemid,transactionid'"):
        list(iter_event_rows(write(tmp_path / "events.csv", "timestamp,itemid,property,value\n1,2,3,4\n")))
    with pytest.raises(HeaderError, match="empty"):
        list(iter_event_rows(write(tmp_path / "empty.csv", "")))


def test_event_rows_stream_fast(tmp_path: Path) -> None:
    n = 300_000
    line = f"{TS},257597,view,355908,\n"
    path = write(tmp_path / "events.csv", ",".join(EVENTS_HEADER) + "\n" + line * n)
    started = time.process_time()  # CPU time: other processes on a busy machine do not count
    count = sum(1 for _ in iter_event_rows(path))
    rate = count / (time.process_time() - started)
    print(f"iter_event_rows: {rate:,.0f} rows/s")
    assert count == n
    assert rate > 500_000  # about 0.9-1.3M rows/s measured here


# --- category tree ------------------------------------------------------------------------------------------


def test_category_tree_chunks_have_nullable_parents_and_rejects(tmp_path: Path) -> None:
    path = write(
        tmp_path / CATEGORY_TREE_FILE,
        "categoryid,parentid\n1016,213\n809,169\n570,9\n1691,885\n536,1691\n231,\nx,1\n7,7\n8,9.0\n",
    )
    chunks = list(iter_category_tree(path))
    assert len(chunks) == 1
    frame = chunks[0].frame
    assert frame["categoryid"].dtype == "int64" and str(frame["parentid"].dtype) == "Int64"
    assert frame["categoryid"].tolist() == [1016, 809, 570, 1691, 536, 231, 8]
    assert frame["parentid"].isna().tolist() == [False] * 5 + [True, False]
    assert frame["parentid"].iloc[-1] == 9
    rejected = [(r.file, r.line, r.reason, r.raw) for r in chunks[0].rejected]
    assert rejected == [
        (str(path), 8, "not an integer: categoryid='x'", "x,1"),
        (str(path), 9, "self parent: category 7 is its own parent", "7,7"),
    ]
    assert (chunks[0].first_line, chunks[0].last_line, chunks[0].rows_read) == (2, 10, 9)


def test_category_rows_are_pure_functions() -> None:
    assert parse_category_row(["231", ""]) == (231, None)
    assert parse_category_row(["1016", "213"]) == (1016, 213)
    with pytest.raises(RowError, match="wrong field count"):
        parse_category_row(["1"])


def test_category_tree_problems_spot_duplicates_unknown_parents_and_cycles() -> None:
    frame = pd.DataFrame(
        {
            "categoryid": [1, 2, 3, 4, 5, 6, 6],
            "parentid": pd.array([None, 1, 99, 5, 4, None, None], dtype="Int64"),
        }
    )
    problems = category_tree_problems(frame)
    assert "duplicate categoryid 6 (2 rows)" in problems
    assert "category 3 has unknown parent 99" in problems
    assert sum(p.startswith("cycle through categories") for p in problems) == 1
    good = pd.DataFrame({"categoryid": [1, 2], "parentid": pd.array([None, 1], dtype="Int64")})
    assert category_tree_problems(good) == []


# --- item properties ----------------------------------------------------------------------------------------

PART1 = """timestamp,itemid,property,value
1435460400000,460429,categoryid,1338
1441508400000,206783,888,1116713 960601 n277.200
1439089200000,395014,400,n552.000 639502 n720.000 424566
1431226800000,59481,790,n15360.000
1431831600000,156781,917,828513
1436065200000,285026,available,0
"""
PART2 = """timestamp,itemid,property,value
1433646000000,433564,categoryid,1338.0
1434250800000,433564,available,2
1434250800000,433564,categoryid,x
143425080000,433564,available,1
1434250800000,433564,283,
1434250800000,433564,283,a,b
1434250800000,,283,a
1434250800000,433564,,a
1434250800000,7,6,n1.000
"""


def test_item_properties_stream_typed_chunks_with_rejects(tmp_path: Path) -> None:
    part1 = write(tmp_path / ITEM_PROPERTIES_FILES[0], PART1)
    part2 = write(tmp_path / ITEM_PROPERTIES_FILES[1], PART2)
    chunks = list(iter_item_properties([part1, part2], chunk_rows=4))
    assert [(c.file.name, c.first_line, c.last_line) for c in chunks] == [
        (part1.name, 2, 5),
        (part1.name, 6, 7),
        (part2.name, 2, 5),
        (part2.name, 6, 9),
        (part2.name, 10, 10),
    ]
    assert all(c.rows_read <= 4 for c in chunks)
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert frame.dtypes.astype(str).to_dict() == {
        "timestamp": "int64",
        "itemid": "int64",
        "property": "object",
        "value": "object",
    }
    assert len(frame) == 8
    assert frame.iloc[1].tolist() == [1441508400000, 206783, "888", "1116713 960601 n277.200"]
    assert frame.iloc[6].tolist() == [1433646000000, 433564, "categoryid", "1338"]  # normalized from 1338.0
    assert frame.iloc[7].tolist() == [1434250800000, 7, "6", "n1.000"]
    rejected = {r.line: r.reason for c in chunks for r in c.rejected}
    assert all(r.file == str(part2) for c in chunks for r in c.rejected)
    assert rejected == {
        3: "bad available value: '2' (expected 0 or 1)",
        4: "not an integer: categoryid value='x'",
        5: "timestamp out of range: 143425080000 is before 2000-01-01 in epoch milliseconds;"
        " it looks like seconds",
        6: "missing field: value",
        7: "wrong field count: expected 4 (timestamp,itemid,property,value), got 5",
        8: "missing field: itemid",
        9: "missing field: property",
    }


def test_item_properties_from_a_folder_read_both_parts(tmp_path: Path) -> None:
    write(tmp_path / ITEM_PROPERTIES_FILES[0], PART1)
    write(tmp_path / ITEM_PROPERTIES_FILES[1], PART1)
    chunks = iter_item_properties(tmp_path)
    assert iter(chunks) is chunks  # lazy: nothing is read before the first chunk is asked for
    frames = [c.frame for c in chunks]
    assert [len(f) for f in frames] == [6, 6]


def test_property_rows_are_pure_functions() -> None:
    assert parse_property_row(["1435460400000", "460429", "categoryid", "1338"]) == (
        1435460400000,
        460429,
        "categoryid",
        "1338",
    )
    with pytest.raises(RowError, match=r"^bad available value"):
        parse_property_row(["1435460400000", "1", "available", "yes"])


@pytest.mark.parametrize("text", ["0000000000000", "0946684799999"])
def test_zero_padded_timestamps_before_2000_are_rejected(text: str) -> None:
    from clickstream_dagster.data.readers import parse_timestamp

    with pytest.raises(RowError, match="timestamp out of range"):
        parse_timestamp(text)
