"""The SQL of ``fame salvage``: reading around damaged pages of a private copy.

:class:`SalvageReader` reads the ``kv`` table of a copy of a damaged file
(the original is never opened by SQLite). Every read is bounded by a key
range, so SQLite descends the b-tree straight to it and touches only the
pages that hold it. A read that meets a damaged page returns the rows it
got before with ``damaged`` set, and the reader opens its connection
again (SQLCipher fails every later statement of a connection that met
one, see ``_sqlcipher_damage``). Keys are compared as SQLite
compares TEXT (``BINARY``: the bytes of the UTF-8 form), so the probes of
a bisection are byte strings, bound as ``CAST(? AS TEXT)``: a probe need
not be valid UTF-8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import sqlcipher3

from ._errors import DamagedDatabase
from ._sqlcipher_damage import damaged_pages, is_damage

__all__ = ["RawRow", "SalvageReader", "insert_rows"]

RawRow = tuple[str, bytes, int, float | None]
"""A stored record as it is: key, encoded value, version, expiry time."""

_COLUMNS = "key, value, version, expires_at"
_SEQ = "SELECT value FROM fame_meta WHERE name = 'seq'"


class SalvageReader:
    """Bounded reads of one file's records that survive its damaged pages."""

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        self._key = key
        self.reopened = 0
        self._conn = self._connect()
        try:
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher3.DatabaseError as exc:
            self._conn.close()
            raise DamagedDatabase(
                str(path), f"its first page, which holds the schema, cannot be read ({exc})"
            ) from None

    def _connect(self) -> sqlcipher3.Connection:
        conn = sqlcipher3.connect(str(self.path), isolation_level=None)
        conn.execute("PRAGMA cipher_log_level = NONE")
        if self._key is not None:
            conn.execute(f"PRAGMA key = \"x'{self._key.hex()}'\"")
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # a private copy: no -shm file
        conn.execute("PRAGMA query_only = 1")
        return conn

    def _reopen(self) -> None:
        with contextlib.suppress(sqlcipher3.Error):
            self._conn.close()
        self._conn = self._connect()
        self.reopened += 1

    def _rows(self, sql: str, args: Sequence[object]) -> tuple[list[RawRow], bool]:
        """The rows ``sql`` gives, and whether it met a damaged page (then they stop there)."""
        rows: list[RawRow] = []
        try:
            for row in self._conn.execute(sql, args):
                rows.append(row)
        except sqlcipher3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            self._reopen()
            return rows, True
        return rows, False

    def forward(
        self, start: str | None, *, inclusive: bool, limit: int
    ) -> tuple[list[RawRow], bool]:
        """Up to ``limit`` records from ``start`` on (all of them if ``None``), in key order,
        and whether a damaged page stopped the read after them."""
        if start is None:
            return self._rows(f"SELECT {_COLUMNS} FROM kv ORDER BY key LIMIT ?", (limit,))
        op = ">=" if inclusive else ">"
        return self._rows(
            f"SELECT {_COLUMNS} FROM kv WHERE key {op} ? ORDER BY key LIMIT ?", (start, limit)
        )

    def first_after(self, probe: bytes) -> tuple[str | None, bool]:
        """The first key greater than the bytes ``probe`` (``None``: none), or
        ``(None, True)`` if finding it met a damaged page."""
        rows, damaged = self._rows(
            f"SELECT {_COLUMNS} FROM kv WHERE key > CAST(? AS TEXT) ORDER BY key LIMIT 1",
            (probe,),
        )
        return (rows[0][0] if rows else None), damaged

    def last_key(self) -> tuple[str | None, bool]:
        """The greatest key, read from the end of the table (``None``: it is empty),
        or ``(None, True)`` if the end of the table is damaged."""
        rows, damaged = self._rows(f"SELECT {_COLUMNS} FROM kv ORDER BY key DESC LIMIT 1", ())
        return (rows[0][0] if rows else None), damaged

    def seq(self) -> int:
        """The versions the file had reserved (0 if its counter cannot be read)."""
        try:
            row = self._conn.execute(_SEQ).fetchone()
        except sqlcipher3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            self._reopen()
            return 0
        value = None if row is None else row[0]
        return value if isinstance(value, int) else 0

    def damaged_pages(self) -> tuple[int, ...]:
        return damaged_pages(self._conn, self._key is not None)

    def close(self) -> None:
        self._conn.close()


def insert_rows(conn: sqlcipher3.Connection, rows: Sequence[RawRow], seq: int) -> None:
    """Insert ``rows`` as they are, and keep the counter at ``seq`` at least, in one commit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(f"INSERT INTO kv ({_COLUMNS}) VALUES (?, ?, ?, ?)", rows)
        conn.execute("UPDATE fame_meta SET value = max(value, ?) WHERE name = 'seq'", (seq,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
