"""Binary COPY of rows into PostgreSQL: the one helper every writer uses (typed, so no text parsing)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    import pandas as pd


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
    values = [data[c].astype(object).where(data[c].notna(), None).tolist() for c in columns]
    copy_rows(cur, statement, types, zip(*values, strict=True))
