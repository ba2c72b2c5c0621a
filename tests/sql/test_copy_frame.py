"""`sql.copy.copy_frame` on a real PostgreSQL: the numpy-encoded binary COPY of fixed-width columns stores
exactly what psycopg's row-by-row writer stores, extreme values included, and frames with NULLs or text
still go row by row."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import psycopg
import pytest

from clickstream_dagster.sql.copy import copy_arrays, copy_frame, copy_rows, read_arrays

TYPES = ("int2", "int4", "int8", "float4", "float8", "bool")
COLUMNS = ("a", "b", "c", "d", "e", "f")
TABLE = "CREATE TABLE {} (a int2, b int4, c int8, d float4, e float8, f bool)"


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "a": rng.integers(-(2**15), 2**15, n).astype(np.int16),
            "b": rng.integers(-(2**31), 2**31, n).astype(np.int32),
            "c": rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
            "d": rng.standard_normal(n).astype(np.float32),
            "e": rng.standard_normal(n) * 1e300,
            "f": rng.random(n) < 0.5,
        }
    )
    # extremes: the bounds of each integer type, infinities, -0.0, subnormals
    frame.loc[0, ["a", "b", "c"]] = [-(2**15), -(2**31), -(2**63)]
    frame.loc[1, ["a", "b", "c"]] = [2**15 - 1, 2**31 - 1, 2**63 - 1]
    frame.loc[2, ["d", "e"]] = [np.inf, -np.inf]
    frame.loc[3, ["d", "e"]] = [-0.0, 5e-324]
    return frame


def _stored(conn: psycopg.Connection, table: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY c, a").fetchall()


def test_numpy_encoding_stores_what_the_row_writer_stores(pg_url: str) -> None:
    frame = _frame(2_500)
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(TABLE.format("by_numpy"))
        cur.execute(TABLE.format("by_rows"))
        copy_frame(cur, "COPY by_numpy FROM STDIN (FORMAT BINARY)", TYPES, frame, COLUMNS)
        copy_rows(
            cur,
            "COPY by_rows FROM STDIN (FORMAT BINARY)",
            TYPES,
            frame[list(COLUMNS)].astype(object).itertuples(index=False, name=None),
        )
        numpy_rows, plain_rows = _stored(conn, "by_numpy"), _stored(conn, "by_rows")
        assert len(numpy_rows) == len(frame)
        assert numpy_rows == plain_rows
        # and against the frame itself, independent of either writer
        got = pd.DataFrame(numpy_rows, columns=list(COLUMNS)).sort_values(["c", "a"]).reset_index(drop=True)
        want = frame.sort_values(["c", "a"]).reset_index(drop=True)
        for c in COLUMNS:
            np.testing.assert_array_equal(
                np.asarray(got[c]).astype(want[c].to_numpy().dtype), want[c].to_numpy()
            )
        assert np.signbit(got.loc[got["c"] == frame.loc[3, "c"], "d"]).all()  # -0.0 kept its sign


def test_frames_with_nulls_or_text_go_row_by_row(pg_url: str) -> None:
    frame = pd.DataFrame({"c": [1, 2, 3], "e": [0.5, np.nan, 2.0], "t": ["x", None, "é"]})
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (c int8, e float8, t text)")
        copy_frame(
            cur, "COPY t FROM STDIN (FORMAT BINARY)", ("int8", "float8", "text"), frame, ("c", "e", "t")
        )
        assert conn.execute("SELECT * FROM t ORDER BY c").fetchall() == [
            (1, 0.5, "x"),
            (2, None, None),
            (3, 2.0, "é"),
        ]


@pytest.mark.parametrize(
    ("types", "columns", "message"),
    [
        (("int8", "text"), [np.zeros(1, np.int64), np.zeros(1, np.int64)], "fixed-width"),
        (("int8",), [np.zeros(1, np.int64), np.zeros(1, np.int64)], "2 columns for 1 types"),
        (("int8", "int8"), [np.zeros(1, np.int64), np.zeros(2, np.int64)], "different lengths"),
    ],
)
def test_copy_arrays_refuses_what_it_cannot_encode(
    database_factory: Callable[..., str], types: tuple[str, ...], columns: list[np.ndarray], message: str
) -> None:
    with (
        psycopg.connect(database_factory()) as conn,
        conn.cursor() as cur,
        pytest.raises(ValueError, match=message),
    ):
        copy_arrays(cur, "COPY nowhere FROM STDIN (FORMAT BINARY)", types, columns)


def test_read_arrays_returns_what_copy_arrays_wrote(pg_url: str) -> None:
    frame = _frame(3_000)
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(TABLE.format("round_trip"))
        copy_frame(cur, "COPY round_trip FROM STDIN (FORMAT BINARY)", TYPES, frame, COLUMNS)
        columns = read_arrays(
            cur,
            f"COPY (SELECT {', '.join(COLUMNS)} FROM round_trip ORDER BY c, a) TO STDOUT (FORMAT BINARY)",
            TYPES,
        )
        want = frame.sort_values(["c", "a"]).reset_index(drop=True)
        for name, values in zip(COLUMNS, columns, strict=True):
            np.testing.assert_array_equal(values, want[name].to_numpy())
            assert values.dtype.isnative
        # decoded as the stream arrives: chunks that split rows, the header and the trailer anywhere
        # (and handing the GIL over as it reads: the same result)
        for chunk_bytes, share_gil_s in ((1, None), (7, 0.0), (1000, None), (65_536, 0.0001)):
            chunked = read_arrays(
                cur,
                f"COPY (SELECT {', '.join(COLUMNS)} FROM round_trip ORDER BY c, a) TO STDOUT (FORMAT BINARY)",
                TYPES,
                chunk_bytes=chunk_bytes,
                share_gil_s=share_gil_s,
            )
            for name, values in zip(COLUMNS, chunked, strict=True):
                np.testing.assert_array_equal(values, want[name].to_numpy())
        with pytest.raises(ValueError, match="NULLs"):  # a NULL after the first chunks
            read_arrays(
                cur,
                "COPY (SELECT CASE WHEN g = 2000 THEN NULL ELSE g END::int8 FROM generate_series(1, 3000) g"
                " ORDER BY g) TO STDOUT (FORMAT BINARY)",
                ("int8",),
                chunk_bytes=100,
            )
        # empty, and a NULL refused
        assert [
            len(c)
            for c in read_arrays(
                cur, "COPY (SELECT 1::int8 WHERE false) TO STDOUT (FORMAT BINARY)", ("int8",)
            )
        ] == [0]
        with pytest.raises(ValueError, match="NULLs"):
            read_arrays(cur, "COPY (SELECT NULL::int8) TO STDOUT (FORMAT BINARY)", ("int8",))
