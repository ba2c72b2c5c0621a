"""Binary COPY of rows into PostgreSQL: the one helper every writer uses (typed, so no text parsing).

`copy_frame` writes a frame whose columns are all fixed-width numbers without missing values (the serving
tables: millions of rows) as one buffer built by numpy in PostgreSQL's binary COPY format, with no Python
object per value; any other frame goes row by row through psycopg's typed writer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import psycopg

if TYPE_CHECKING:
    import pandas as pd

# Binary COPY format (PostgreSQL docs, "COPY", "Binary Format"): a header, then per row a 16-bit field count
# and per field a 32-bit length (-1 for NULL) and the value's bytes, all big-endian; a 16-bit -1 ends the data.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"
# Fixed-width types in network byte order, as binary COPY sends them.
_FIXED = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8", "bool": "?"}
_CHUNK_ROWS = 1_000_000  # rows per buffer: ~30 MB for five columns


def copy_rows(
    cur: psycopg.Cursor, statement: str, types: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """`COPY ... FROM STDIN (FORMAT BINARY)` of `rows`, each in the order of `types` (PostgreSQL type names)."""
    with cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def copy_frame(
    cur: psycopg.Cursor,
    statement: str,
    types: Sequence[str],
    frame: pd.DataFrame,
    columns: Sequence[str],
) -> None:
    """`copy_rows` of a DataFrame's `columns` (in that order); missing values (NaN, NA, None) become NULL."""
    data = frame[list(columns)]
    if all(t in _FIXED for t in types) and not data.isna().to_numpy().any():
        copy_arrays(cur, statement, types, [data[c].to_numpy() for c in columns])
        return
    values = [data[c].astype(object).where(data[c].notna(), None).tolist() for c in columns]
    copy_rows(cur, statement, types, zip(*values, strict=True))


def copy_arrays(
    cur: psycopg.Cursor, statement: str, types: Sequence[str], columns: Sequence[np.ndarray]
) -> None:
    """Binary COPY of equal-length numpy `columns` of fixed-width `types` (int2/4/8, float4/8, bool), none
    null, encoded by numpy: a row is its field count, then each field's length and big-endian value."""
    if len(types) != len(columns):
        raise ValueError(f"{len(columns)} columns for {len(types)} types")
    unknown = [t for t in types if t not in _FIXED]
    if unknown:
        raise ValueError(f"copy_arrays takes fixed-width types {sorted(_FIXED)}, not {unknown}")
    n = len(columns[0]) if columns else 0
    if any(len(c) != n for c in columns):
        raise ValueError("columns of different lengths")
    layout = [("fields", ">i2")]
    for i, t in enumerate(types):
        layout += [(f"size{i}", ">i4"), (f"value{i}", _FIXED[t])]
    row = np.dtype(layout)  # packed: no padding between fields, as the format wants
    with cur.copy(statement) as copy:
        copy.write(COPY_HEADER)
        for lo in range(0, n, _CHUNK_ROWS):
            hi = min(lo + _CHUNK_ROWS, n)
            buffer = np.empty(hi - lo, dtype=row)
            buffer["fields"] = len(types)
            for i, (t, values) in enumerate(zip(types, columns, strict=True)):
                buffer[f"size{i}"] = np.dtype(_FIXED[t]).itemsize
                buffer[f"value{i}"] = values[lo:hi]
            copy.write(buffer.tobytes())
        copy.write(COPY_TRAILER)


def read_arrays(
    cur: psycopg.Cursor,
    statement: str,
    types: Sequence[str],
    *,
    chunk_bytes: int = 1 << 24,
    share_gil_s: float | None = None,
) -> list[np.ndarray]:
    """`COPY (...) TO STDOUT (FORMAT BINARY)` of non-null fixed-width columns `types`, decoded by numpy into
    one array per column (native byte order): the reverse of `copy_arrays`, with no Python object per
    value. A NULL, a column count or a field length other than `types` says raises ValueError.

    Decoded as it arrives, about `chunk_bytes` of the stream at a time: the wire format (a length before
    every field) is never held whole, so the peak is the decoded columns twice (the chunks, then their
    concatenation) rather than the stream plus the columns.

    `share_gil_s`: for a reader in a worker thread beside an event loop. PostgreSQL sends a message per
    row, and reading one releases and retakes the GIL at once, so the other thread seldom wins it back (the
    "convoy effect": the API's loop stalled for 100-300 ms per table, bench/README.md). With it, the reader
    sleeps as long as it has read after each `share_gil_s` of reading: at most half of the GIL's time, the
    rest free for the other thread."""
    unknown = [t for t in types if t not in _FIXED]
    if unknown:
        raise ValueError(f"read_arrays takes fixed-width types {sorted(_FIXED)}, not {unknown}")
    layout = [("fields", ">i2")]
    for i, t in enumerate(types):
        layout += [(f"size{i}", ">i4"), (f"value{i}", _FIXED[t])]
    row = np.dtype(layout)
    parts: list[list[np.ndarray]] = [[] for _ in types]

    def decode(data: bytearray, n: int) -> None:
        rows = np.frombuffer(data, dtype=row, count=n)
        if (rows["fields"] != len(types)).any():
            raise ValueError(f"rows with other than {len(types)} columns")
        for i, t in enumerate(types):
            if (rows[f"size{i}"] != np.dtype(_FIXED[t]).itemsize).any():
                raise ValueError(f"column {i} ({t}) holds NULLs or values of another width")
            parts[i].append(rows[f"value{i}"].astype(rows[f"value{i}"].dtype.newbyteorder("=")))
        del rows  # the view, so that `data` can shrink

    pending = bytearray()
    header: int | None = None  # bytes of the header, once known
    shared_at = time.perf_counter()
    with cur.copy(statement) as copy:
        for chunk in copy:
            pending += chunk
            if share_gil_s is not None and (read_s := time.perf_counter() - shared_at) >= share_gil_s:
                time.sleep(read_s)
                shared_at = time.perf_counter()
            if header is None:
                if len(pending) < len(COPY_HEADER):
                    continue
                if pending[: len(COPY_HEADER) - 8] != COPY_HEADER[:-8]:
                    raise ValueError("not PostgreSQL binary COPY data")
                extension = int.from_bytes(pending[len(COPY_HEADER) - 4 : len(COPY_HEADER)], "big")
                header = len(COPY_HEADER) + extension
            if len(pending) - header >= chunk_bytes + len(COPY_TRAILER):
                # Whole rows only, and never the last bytes: they may be the trailer.
                n = (len(pending) - header - len(COPY_TRAILER)) // row.itemsize
                del pending[:header]
                header = 0
                decode(pending, n)
                del pending[: n * row.itemsize]
    if header is None or not pending.endswith(COPY_TRAILER):
        raise ValueError("not PostgreSQL binary COPY data")
    body = len(pending) - header - len(COPY_TRAILER)
    if body % row.itemsize:
        raise ValueError(
            f"COPY data of {body} bytes is not a whole number of {row.itemsize}-byte rows {types}: NULLs, "
            "values of another width or another number of columns"
        )
    del pending[:header]
    decode(pending, body // row.itemsize)
    del pending
    columns = []
    for i in range(len(types)):
        columns.append(np.concatenate(parts[i]) if len(parts[i]) != 1 else parts[i][0])
        parts[i].clear()  # each column's chunks freed as soon as it is joined
    return columns
