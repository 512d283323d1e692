"""Generated rows as numpy columns, and how each engine receives them.

A batch of rows is a table name and one column per table column. Each column
renders itself two ways: as the fields of PostgreSQL's binary ``COPY`` format
(big-endian integers, microseconds since 2000, raw UTF-8), assembled for the
whole batch without a Python object per row; and as the Python values the
sqlite3 module binds, in the formats SQLAlchemy itself writes to SQLite
(``YYYY-MM-DD HH:MM:SS.ffffff`` for UTC datetimes, JSON text, 0/1 booleans).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

U8 = NDArray[np.uint8]
I32 = NDArray[np.int32]
I64 = NDArray[np.int64]
Bytes = NDArray[np.bytes_]

# PostgreSQL's binary formats count from 2000-01-01 UTC.
_PG_EPOCH_US = 946_684_800 * 1_000_000
_PG_EPOCH_DAYS = 10_957
_CROCKFORD = np.frombuffer(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ", dtype=np.uint8)

PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
PG_COPY_TRAILER = struct.pack("!h", -1)


def ulids(ms: I64, rng: np.random.Generator) -> Bytes:
    """ULIDs whose time part is ``ms`` (milliseconds since 1970) each.

    26 Crockford base32 characters: ten for the 48-bit time, sixteen for 80
    random bits. Here the random bits come from the seeded generator, so
    a data set is the same for the same seed.
    """
    n = len(ms)
    chars = np.empty((n, 26), dtype=np.uint8)
    for i in range(10):
        chars[:, i] = _CROCKFORD[(ms >> (45 - 5 * i)) & 31]
    chars[:, 10:] = _CROCKFORD[rng.integers(0, 32, size=(n, 16), dtype=np.uint8)]
    return chars.view("S26").reshape(n)


def ascii_numbers(prefix: str, numbers: I64, suffix: str = "") -> Bytes:
    """``prefix<number>suffix`` for each number, without zero padding."""
    digits = numbers.astype("U20").astype("S20")
    return np.char.add(np.char.add(prefix.encode(), digits), suffix.encode())


def constant(value: str, n: int) -> Text:
    """The same text in every row."""
    return Text(np.array([value.encode()], dtype=np.bytes_).repeat(n), utf8=True)


def encoded_table(values: tuple[str, ...] | list[str]) -> Bytes:
    """A lookup table of UTF-8 strings; index it with a choice per row."""
    return np.array([v.encode() for v in values], dtype=np.bytes_)


class Column:
    """One column of a batch: PostgreSQL binary fields, or SQLite values."""

    def __len__(self) -> int:
        raise NotImplementedError

    def pg(self) -> tuple[U8, I32]:
        """Field bytes (one row per row, zero-padded) and lengths (-1: NULL)."""
        raise NotImplementedError

    def py(self) -> list[Any]:
        raise NotImplementedError


@dataclass
class Text(Column):
    """Byte strings (ASCII ids and names, or UTF-8 from a lookup table).

    ``utf8`` marks values that may hold non-ASCII text, which the SQLite side
    decodes one by one instead of with numpy's ASCII cast.
    """

    values: Bytes
    null: NDArray[np.bool_] | None = None
    utf8: bool = False

    def __len__(self) -> int:
        return len(self.values)

    def pg(self) -> tuple[U8, I32]:
        n = len(self.values)
        width = self.values.dtype.itemsize
        data = np.ascontiguousarray(self.values).view(np.uint8).reshape(n, width)
        lengths = np.strings.str_len(self.values).astype(np.int32)
        if self.null is not None:
            lengths[self.null] = -1
        return data, lengths

    def py(self) -> list[Any]:
        if self.utf8:
            out: list[Any] = [v.decode() for v in self.values.tolist()]
        else:
            out = self.values.astype(f"U{self.values.dtype.itemsize}").tolist()
        if self.null is not None:
            for i in np.flatnonzero(self.null).tolist():
                out[i] = None
        return out


def choice(table: Bytes, index: NDArray[np.integer[Any]]) -> Text:
    """The ``index``-th string of ``table`` for each row."""
    return Text(table[index], utf8=True)


@dataclass
class Int(Column):
    values: NDArray[np.integer[Any]]
    width: int = 4  # 4 for INTEGER, 8 for BIGINT

    def __len__(self) -> int:
        return len(self.values)

    def pg(self) -> tuple[U8, I32]:
        n = len(self.values)
        data = self.values.astype(f">i{self.width}").view(np.uint8).reshape(n, -1)
        return data, np.full(n, self.width, dtype=np.int32)

    def py(self) -> list[Any]:
        out: list[Any] = self.values.tolist()
        return out


@dataclass
class Bool(Column):
    values: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.values)

    def pg(self) -> tuple[U8, I32]:
        n = len(self.values)
        return self.values.astype(np.uint8).reshape(n, 1), np.ones(n, dtype=np.int32)

    def py(self) -> list[Any]:
        out: list[Any] = self.values.astype(np.int64).tolist()
        return out


@dataclass
class Timestamp(Column):
    """UTC instants, as microseconds since 1970; NULL where ``null``."""

    us: I64
    null: NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return len(self.us)

    def pg(self) -> tuple[U8, I32]:
        n = len(self.us)
        data = (self.us - _PG_EPOCH_US).astype(">i8").view(np.uint8).reshape(n, 8)
        lengths = np.full(n, 8, dtype=np.int32)
        if self.null is not None:
            lengths[self.null] = -1
        return data, lengths

    def py(self) -> list[Any]:
        # numpy writes "YYYY-MM-DDTHH:MM:SS.ffffff"; SQLAlchemy a space.
        text = np.datetime_as_string(self.us.astype("datetime64[us]"), unit="us")
        raw = text.astype("S26")
        raw.view(np.uint8).reshape(-1, 26)[:, 10] = ord(" ")
        return Text(raw, self.null).py()


@dataclass
class Date(Column):
    """Calendar dates, as days since 1970-01-01."""

    days: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.days)

    def pg(self) -> tuple[U8, I32]:
        n = len(self.days)
        data = (self.days - _PG_EPOCH_DAYS).astype(">i4").view(np.uint8).reshape(n, 4)
        return data, np.full(n, 4, dtype=np.int32)

    def py(self) -> list[Any]:
        text = np.datetime_as_string(self.days.astype("datetime64[D]"), unit="D")
        out: list[Any] = text.tolist()
        return out


@dataclass
class Batch:
    """Rows for one table, column by column, in the table's own column names."""

    table: str
    columns: dict[str, Column]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def pg_copy_data(self) -> bytes:
        """The whole batch in PostgreSQL's binary COPY format."""
        n = len(self)
        pieces: list[U8] = [
            np.broadcast_to(
                np.frombuffer(struct.pack("!h", len(self.columns)), dtype=np.uint8),
                (n, 2),
            )
        ]
        masks: list[NDArray[np.bool_] | None] = [None]
        variable = False
        for column in self.columns.values():
            data, lengths = column.pg()
            pieces.append(lengths.astype(">i4").view(np.uint8).reshape(n, 4))
            masks.append(None)
            pieces.append(data)
            width = data.shape[1]
            if bool((lengths == width).all()):
                masks.append(None)
            else:
                variable = True
                masks.append(np.arange(width) < np.maximum(lengths, 0)[:, None])
        rows = np.concatenate(pieces, axis=1)
        if variable:
            keep = np.concatenate(
                [
                    np.ones(p.shape, dtype=np.bool_) if m is None else m
                    for p, m in zip(pieces, masks, strict=True)
                ],
                axis=1,
            )
            rows = rows[keep]
        body: bytes = rows.tobytes()
        return PG_COPY_HEADER + body + PG_COPY_TRAILER

    def sqlite_rows(self) -> list[tuple[Any, ...]]:
        return list(zip(*(c.py() for c in self.columns.values()), strict=True))
