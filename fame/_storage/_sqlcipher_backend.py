"""SQLite and SQLCipher database files: the only module that imports ``sqlcipher3``.

Both file profiles use the ``sqlcipher3`` binding (SQLCipher 4 statically
linked): ``encrypted-sqlite`` keys the connection, ``sqlite`` does not, which
gives a plain SQLite file. One engine for both keeps their behaviour and
SQLite version identical.

Layout of every file (format ``fame/kv/v1``)::

    kv(key TEXT PRIMARY KEY, value BLOB, version INTEGER, expires_at REAL)
    fame_meta(name TEXT PRIMARY KEY, value)   -- 'format'; 'seq': versions reserved so far
    fame_requests(n INTEGER PRIMARY KEY, id TEXT, at REAL, answer BLOB)  -- deduplicated writes

``fame_requests`` (see ``_dedupe``) came after the first files were made:
opening a file without it adds it in one transaction; fame versions from
before it ignore the table. Its rows are a log in the order they were
recorded (``n``, which is also the order of ``at``, the clock when
recorded), so a record is appended at the right edge of one b-tree (SQLite
fills those pages whole) and pruning the oldest walks ``n``.

It has no index on ``id``: the backend finds a record's ``n`` in memory
(:class:`RequestSlots`, built from the table at open), so a recorded write
adds about one page to its commit, whatever the ids look like. An index on
``id`` (the table's first layout, ``fame_requests_id``, dropped when such a
file is opened) added a page per write, one per id for random ids, and
rebalanced its leaves as it grew; a table keyed by ``id`` (``WITHOUT
ROWID``) does the same. A fame version with the index re-creates it when it
opens the file, so files move both ways.

WAL journal; ``synchronous=FULL`` by default, ``NORMAL`` on request.
SQLite's automatic checkpoints are off: a commit that leaves the ``-wal``
past ``wal_checkpoint_bytes`` checkpoints it on the same thread (the
``-wal`` is then reused from its start), and one that meets a full disk
keeps the ``-wal`` for later. Closing checkpoints with ``TRUNCATE``.
Opening a current file writes nothing, so a node on a full disk starts.
``FAME_STORAGE_MAX_FILE_BYTES`` becomes ``PRAGMA max_page_count``; a
transaction that would grow the file past it, or that meets a full disk,
fails with ``SQLITE_FULL``, which is raised as :class:`StorageFull`.
A backend is used by its storage actor only, from one thread at a time
(hence ``check_same_thread=False``).

A damaged page (see ``_sqlcipher_damage``) fails the read that touched it
with :class:`DamagedDatabase` (naming the file, the damaged pages and the
key, or for a scan the last key read); the backend then opens its
connection again, as SQLCipher fails every later statement of the old one,
so reads of other pages go on. From then on it refuses writes: a damaged
file is never written again (``fame salvage`` copies what it holds).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import sqlcipher3

from ._backup_manifest import FileCopy
from ._dedupe import DedupeLimits
from ._errors import DamagedDatabase, DatabaseInUse, StorageError, StorageFull
from ._ops import (
    READ_CHUNK,
    BulkRead,
    Count,
    Get,
    GetMany,
    ReadSteps,
    Row,
    Scan,
    ScanPage,
    WriteOp,
    apply_writes,
    decode_into,
    prefix_upper_bound,
)
from ._probe import PAGE_SIZE
from ._request_slots import RequestSlots
from ._sqlcipher_damage import damaged_pages, is_damage
from ._sqlcipher_salvage import RawRow, insert_rows

__all__ = ["SqliteBackend", "open_sqlite"]

log = logging.getLogger("fame.storage")

FORMAT = "fame/kv/v1"
LOCK_WAIT = 2.0
"""Seconds to wait for another process's lock on a file before giving up."""
PAGE_CHECK_LIMIT = 64 << 20
"""Files up to this size name their damaged pages in ``DamagedDatabase`` (about 0.2 s)."""
SEQ_BLOCK = 1000
"""Versions reserved per write of the counter (see :meth:`SqliteBackend.write`)."""
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024
"""Default size past which a commit checkpoints the ``-wal`` (``wal_checkpoint_bytes``)."""
CHECKPOINT_RETRY = 1.0
"""Seconds before a checkpoint that met a full disk is tried again."""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_SCHEMA = (
    "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
    " version INTEGER NOT NULL, expires_at REAL) WITHOUT ROWID",
    "CREATE INDEX kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL",
    "CREATE TABLE fame_meta (name TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID",
)
_REQUESTS_SCHEMA = (
    "CREATE TABLE fame_requests (n INTEGER PRIMARY KEY, id TEXT NOT NULL,"
    " at REAL NOT NULL, answer BLOB NOT NULL)"
)
_RECORD_REQUEST = "INSERT INTO fame_requests (n, id, at, answer) VALUES (?, ?, ?, ?)"
_FORGET_REQUEST = "DELETE FROM fame_requests WHERE n = ?"
_OLDEST_REQUEST = "SELECT at FROM fame_requests ORDER BY n LIMIT 1"
# Both walk the oldest rows, at most LIMIT of them, whatever the table holds.
_PRUNE_EXPIRED_REQUESTS = (
    "DELETE FROM fame_requests WHERE n IN (SELECT n FROM (SELECT n, at FROM fame_requests"
    " ORDER BY n LIMIT ?) WHERE at <= ?) RETURNING n, id"
)
_PRUNE_OLDEST_REQUESTS = (
    "DELETE FROM fame_requests WHERE n IN (SELECT n FROM fame_requests ORDER BY n LIMIT ?)"
    " RETURNING n, id"
)
_GET = f"SELECT value, version FROM kv WHERE key = ? AND {_LIVE}"
_VERSION = f"SELECT version FROM kv WHERE key = ? AND {_LIVE}"
_PUT = (
    "INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,"
    " expires_at = excluded.expires_at"
)
_DELETE = "DELETE FROM kv WHERE key = ?"
_REPLACE = "UPDATE kv SET value = ?, version = ? WHERE key = ?"
_PURGE = (
    "DELETE FROM kv WHERE key IN (SELECT key FROM kv WHERE expires_at IS NOT NULL"
    " AND expires_at <= ? LIMIT ?)"
)
_COUNT = f"SELECT count(*) FROM kv WHERE {_LIVE}"
_SQLITE_FULL = 13


def open_sqlite(
    path: Path,
    namespace: str,
    key: bytes | None,
    *,
    durability: str = "full",
    max_file_bytes: int | None = None,
    dedupe: DedupeLimits = DedupeLimits(),  # noqa: B008 - frozen, so sharing it is safe
    wal_checkpoint_bytes: int = WAL_CHECKPOINT_BYTES,
) -> SqliteBackend:
    """Open (creating if needed) the database at ``path``; blocking.

    The caller has already probed the file (see ``_probe``). Reading
    ``sqlite_master`` right after keying makes a bad key or a damaged file
    fail here, before anything is written.

    Opening a current file writes nothing, so a node whose disk is full
    still starts. A file that needs a layout change (the WAL switch, a
    missing table) meets a full disk as ``SQLITE_FULL``: it is then opened
    for reads only, and each write first retries the change and fails with
    :class:`StorageFull` until there is room. A new file that cannot be
    set up raises :class:`StorageFull` (it holds nothing to read).
    """
    conn = _connect(path, key)
    try:
        try:
            tables = _tables(conn)
            # Take the write lock now rather than on the first write.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        except sqlcipher3.DatabaseError as exc:
            if _is_full(exc):
                raise _full(conn, path, namespace, 0, max_file_bytes) from None
            raise _database_error(path, exc, "SQLite cannot read it") from None
        if tables and not {"kv", "fame_meta"} <= tables:
            raise DamagedDatabase(
                str(path), f"not a fame key-value database (tables: {', '.join(sorted(tables))})"
            )
        _settle(conn, durability, max_file_bytes, wal_checkpoint_bytes)
        pending = False
        try:
            _set_up(conn, path, tables)
        except sqlcipher3.DatabaseError as exc:
            if not (_is_full(exc) and tables):
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            pending = True
            log.warning(
                "%s: no room to update its layout (a full disk, or its size limit);"
                " opened for reads only, writes fail until there is room",
                path.name,
            )
        meta = dict(conn.execute("SELECT name, value FROM fame_meta").fetchall())
        if meta.get("format") != FORMAT:
            raise DamagedDatabase(
                str(path), f"unknown format {meta.get('format')!r}, expected {FORMAT!r}"
            )
        slots, oldest = RequestSlots(), None
        if "fame_requests" in _tables(conn):
            # Read once here, then kept by every transaction.
            slots = RequestSlots.read(conn.execute("SELECT n, id FROM fame_requests ORDER BY n"))
            oldest = conn.execute(_OLDEST_REQUEST).fetchone()
        backend = SqliteBackend(
            conn,
            path,
            namespace,
            int(meta["seq"]),
            max_file_bytes,
            dedupe,
            (slots, math.inf if oldest is None else _time(oldest[0], -math.inf)),
            wal_checkpoint_bytes=wal_checkpoint_bytes,
        )
        backend._set_up_pending = pending
        backend.reconnect = lambda: _reconnect(
            path, key, durability, max_file_bytes, wal_checkpoint_bytes
        )
        backend._encrypted = key is not None
        backend._key = key
        backend.commit_waits_for_disk = durability == "full"
        return backend
    except sqlcipher3.DatabaseError as exc:
        # Switching a new file to WAL and creating the schema write pages.
        error = (
            _full(conn, path, namespace, 0, max_file_bytes)
            if _is_full(exc)
            else _database_error(path, exc, "cannot set it up")
        )
        conn.close()
        raise error from None
    except BaseException:
        conn.close()
        raise


def _tables(conn: sqlcipher3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


def _set_up(conn: sqlcipher3.Connection, path: Path, tables: set[str]) -> None:
    """Bring the file to the current layout, writing only what is missing.

    A current file is not written at all: a node on a full disk must be
    able to open it and serve reads.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StorageError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
    if not tables:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO fame_meta VALUES ('format', ?), ('seq', 0)", (FORMAT,))
        conn.execute("COMMIT")
        tables = _tables(conn)
    if "fame_requests" not in tables or "fame_requests_id" in tables:
        # A new file or one made before deduplicated writes gets the
        # table; one with the first layout loses the index on id.
        conn.execute("BEGIN IMMEDIATE")
        if "fame_requests" in tables:
            conn.execute("DROP INDEX fame_requests_id")
        else:
            conn.execute(_REQUESTS_SCHEMA)
        conn.execute("COMMIT")


def _connect(path: Path, key: bytes | None) -> sqlcipher3.Connection:
    """A keyed connection to ``path`` that will hold the file with an exclusive lock."""
    conn = sqlcipher3.connect(
        str(path), timeout=LOCK_WAIT, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        if key is not None:
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        # The connection holds its lock until it closes: no other process can
        # open the file meanwhile, which keeps the version counter cached
        # here true. It also keeps the WAL index in memory (no -shm file).
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    except BaseException:
        conn.close()
        raise
    return conn


def _settle(
    conn: sqlcipher3.Connection,
    durability: str,
    max_file_bytes: int | None,
    wal_checkpoint_bytes: int,
) -> None:
    """The durability, checkpoints and size limit every connection of a backend runs with.

    None of these writes the file (the switch to WAL is ``_set_up``'s).
    Checkpoints are the backend's (see :meth:`SqliteBackend.write`), on the
    worker thread, bounded by ``wal_checkpoint_bytes``. After a checkpoint
    the next commit writes the ``-wal`` from its start again, cut to
    ``journal_size_limit``: rewriting a file in place is a cheaper fsync
    than growing it, and the ``-wal`` grows past the limit only when a
    checkpoint is due.
    """
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA journal_size_limit = {wal_checkpoint_bytes}")
    if max_file_bytes is not None:
        conn.execute(f"PRAGMA max_page_count = {max(1, max_file_bytes // PAGE_SIZE)}")


def _reconnect(
    path: Path,
    key: bytes | None,
    durability: str,
    max_file_bytes: int | None,
    wal_checkpoint_bytes: int,
) -> sqlcipher3.Connection:
    """A new connection to a file a backend had open, set up as ``open_sqlite`` set it up."""
    conn = _connect(path, key)
    try:
        conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock again
        conn.execute("COMMIT")
        _settle(conn, durability, max_file_bytes, wal_checkpoint_bytes)
    except BaseException:
        conn.close()
        raise
    return conn


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _time(value: object, otherwise: float) -> float:
    """``value`` read from a file as a time, or ``otherwise`` if it is not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return otherwise


def _is_full(exc: BaseException) -> bool:
    """True for ``SQLITE_FULL``: the page limit was reached, or the disk is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlcipher3.DatabaseError) and (code or 0) & 0xFF == _SQLITE_FULL


def _full(
    conn: sqlcipher3.Connection, path: Path, namespace: str, writes: int, limit: int | None
) -> StorageFull:
    """Name what ran out: the file's page limit or the disk.

    ``SQLITE_FULL`` does not say which, so blame the disk when it has less
    free space than the limit would still allow the file to grow.
    """
    if limit is None:
        return StorageFull(namespace, str(path), writes, None)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        allowed = conn.execute("PRAGMA max_page_count").fetchone()[0]
        stat = os.statvfs(path.parent)
    except (sqlcipher3.DatabaseError, OSError):
        return StorageFull(namespace, str(path), writes, limit)
    room = max(0, allowed - pages) * PAGE_SIZE
    disk_free = stat.f_bavail * stat.f_frsize
    return StorageFull(namespace, str(path), writes, None if disk_free < room else limit)


def _database_error(path: Path, exc: Exception, what: str) -> StorageError:
    """Name a SQLite error: another process's lock, damage, or something else."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return DatabaseInUse(str(path))
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return DamagedDatabase(str(path), f"{what} ({text})")
    return StorageError(f"{path}: {what} ({type(exc).__name__}: {text})")


class SqliteBackend:
    """An open database file. See :class:`fame._storage._ops.Backend`."""

    def __init__(
        self,
        conn: sqlcipher3.Connection,
        path: Path,
        namespace: str,
        reserved: int,
        max_file_bytes: int | None = None,
        dedupe: DedupeLimits = DedupeLimits(),  # noqa: B008 - frozen, so sharing it is safe
        requests: tuple[RequestSlots, float] | None = None,
        *,
        wal_checkpoint_bytes: int = WAL_CHECKPOINT_BYTES,
    ) -> None:
        self._conn = conn
        self._get_cursor: sqlcipher3.Cursor | None = None  # see get()
        self._wal = str(path.with_name(path.name + "-wal"))  # a str: os.stat is cheaper then
        self.wal_checkpoint_bytes = wal_checkpoint_bytes
        # Monotonic time before which no checkpoint is tried (one met a full disk).
        self._checkpoint_at = -math.inf
        # The file needs a layout change that a full disk refused at open.
        self._set_up_pending = False
        self.dedupe = dedupe
        # Where each request id's record is, and the first record's time
        # (inf: none), so a transaction that has nothing to prune runs no
        # statement to find out.
        self._slots, self._oldest_request = requests or (RequestSlots(), math.inf)
        # What find_requests learnt about the ids of the running transaction.
        self._found: dict[str, tuple[int | None, bool]] = {}
        self.path = path
        self.namespace = namespace
        self.max_file_bytes = max_file_bytes
        # How to open the file again after a damaged page (set by open_sqlite):
        # SQLCipher fails every statement of a connection that met one.
        self.reconnect: Callable[[], sqlcipher3.Connection] | None = None
        self._encrypted = True
        self._key: bytes | None = None  # the key it was opened with (set by open_sqlite)
        # The damaged pages found by the integrity check after the first damage.
        self._pages: tuple[int, ...] | None = None
        # Set once a read or write met a damaged page: from then on writes are
        # refused, so a damaged file is never written again (``fame salvage``
        # copies what it holds) and no acknowledged write lands in a file
        # that must be replaced. Reads of undamaged pages go on.
        self._damage: DamagedDatabase | None = None
        # Set if the connection could not be opened again: every call fails so.
        self._lost: StorageError | None = None
        # Versions up to ``reserved`` may have been handed out before the
        # file was last closed (or crashed): continue above it.
        self._seq = self._reserved = reserved
        # False with durability ``normal``: a commit then only writes the
        # ``-wal`` (no fsync), so the storage actor may run it on the event
        # loop (see ``write(checkpoint=False)``); checkpoints still fsync.
        self.commit_waits_for_disk = True

    def get(self, op: Get, now: float) -> Row | None:
        self._check_open()
        cursor = self._get_cursor
        try:
            if cursor is None or cursor.connection is not self._conn:
                # One cursor for every point read (a new one per read costs
                # about a microsecond); a new one after a reconnect.
                cursor = self._get_cursor = self._conn.cursor()
            row: Row | None = cursor.execute(_GET, (op.key, now)).fetchone()
        except sqlcipher3.DatabaseError as exc:
            raise self._read_error(exc, key=op.key) from None
        return row

    def read_steps(self, op: BulkRead, now: float) -> ReadSteps:
        self._check_open()
        try:
            if isinstance(op, GetMany):
                return (yield from self._get_many(op.keys, now))
            if isinstance(op, Scan):
                return (yield from self._scan(op, now))
            if isinstance(op, Count):
                # One statement however many rows: SQLite counts in C and the
                # binding releases the GIL meanwhile, so the event loop runs.
                return self._conn.execute(_COUNT, (now,)).fetchone()[0]
        except sqlcipher3.DatabaseError as exc:
            raise self._read_error(exc) from None
        raise StorageError(f"not a read operation: {op!r}")

    def _check_open(self) -> None:
        if self._lost is not None:
            raise StorageError(str(self._lost))  # one object per caller

    def _read_error(self, exc: sqlcipher3.DatabaseError, *, key: str | None = None) -> StorageError:
        if is_damage(exc):
            return self._damaged(exc, "read failed", key=key)
        return _database_error(self.path, exc, "read failed")

    def _damaged(
        self,
        exc: sqlcipher3.DatabaseError,
        what: str,
        *,
        key: str | None = None,
        after_key: str | None = None,
    ) -> DamagedDatabase:
        """Name the damage ``exc`` reports, after opening the connection again.

        The new connection has no deferred error, so the next statement
        fails only if it too touches a damaged page. Between closing and
        reopening, the file is briefly not locked.
        """
        if self.reconnect is not None:
            with contextlib.suppress(sqlcipher3.Error):
                self._conn.close()
            try:
                self._conn = self.reconnect()
            except sqlcipher3.DatabaseError as reopen:
                self._lost = StorageError(
                    f"{self.path}: cannot be opened again after a damaged page"
                    f" ({type(reopen).__name__}: {reopen}); restart the node to reopen it"
                )
                log.error("%s", self._lost)
            else:
                if self._pages is None:
                    self._pages = damaged_pages(
                        self._conn,
                        self._encrypted,
                        size=_size(self.path),
                        max_size=PAGE_CHECK_LIMIT,
                    )
        damage = DamagedDatabase(
            str(self.path), f"{what} ({exc})", pages=self._pages or (), key=key, after_key=after_key
        )
        self._damage = self._damage or damage
        return damage

    def _get_many(self, keys: tuple[str, ...], now: float) -> Generator[None, None, dict[str, Row]]:
        """The live rows among ``keys``, in the order of ``keys``; one query per step.

        A chunk that meets a damaged page is read again key by key, so the
        error names the first key that cannot be read.
        """
        found: dict[str, Row] = {}
        for start in range(0, len(keys), READ_CHUNK):
            if start:
                yield
            chunk = keys[start : start + READ_CHUNK]
            sql = (
                f"SELECT key, value, version FROM kv WHERE key IN ({', '.join('?' * len(chunk))})"
                f" AND {_LIVE}"
            )
            try:
                rows = {
                    key: (value, version)
                    for key, value, version in self._conn.execute(sql, (*chunk, now))
                }
            except sqlcipher3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                self._damaged(exc, "read failed")
                rows = {}
                for key in chunk:
                    row = self.get(Get(key), now)
                    if row is not None:
                        rows[key] = row
            for key in chunk:
                row = rows.get(key)
                if row is not None:
                    found[key] = row
        return found

    def _scan(
        self, op: Scan, now: float
    ) -> Generator[None, None, list[tuple[object, ...]] | ScanPage]:
        """Up to ``op.limit`` rows in key order, :data:`READ_CHUNK` rows per step.

        Each step is a statement of its own that starts after the last key of
        the step before, so no cursor stays open between steps.
        """
        if op.values and op.decode is not None:
            return (yield from self._scan_decoded(op, now, op.decode))
        columns = "key, value, version" if op.values else "key"
        upper = prefix_upper_bound(op.prefix)
        below = ""
        if op.after is not None and op.after >= op.prefix:
            low, above = op.after, "key > ?"
        else:
            low, above = op.prefix, "key >= ?"
        bounds: list[object] = []
        if upper is not None:
            below += " AND key < ?"
            bounds.append(upper)
        if op.upto is not None:
            below += " AND key <= ?"
            bounds.append(op.upto)
        rows: list[tuple[object, ...]] = []
        while (limit := min(READ_CHUNK, op.limit - len(rows))) > 0:
            if rows:
                yield
            sql = f"SELECT {columns} FROM kv WHERE {above}{below} AND {_LIVE} ORDER BY key LIMIT ?"
            before = len(rows)
            try:
                # Row by row: if a page is damaged, the rows before it are known.
                for row in self._conn.execute(sql, (low, *bounds, now, limit)):
                    rows.append(row)
            except sqlcipher3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                last = str(rows[-1][0]) if rows else op.after
                raise self._damaged(exc, "scan failed", after_key=last) from None
            if len(rows) - before < limit:
                break
            low, above = str(rows[-1][0]), "key > ?"
        return rows

    def _scan_decoded(
        self, op: Scan, now: float, decode: Callable[[bytes], object]
    ) -> Generator[None, None, ScanPage]:
        """:meth:`_scan` as a :class:`ScanPage`: each step decodes the values it read.

        Keys and values go to two lists as they are read, so no row tuple
        outlives its row (a page of young tuples would cost the garbage
        collector more than the decoding).
        """
        low, above, (below, bounds) = self._scan_bounds(op)
        select = "SELECT key, value FROM kv WHERE {}" + f"{below} AND {_LIVE} ORDER BY key LIMIT ?"
        sql, after_sql = select.format(above), select.format("key > ?")
        keys: list[str] = []
        values: list[object] = []
        decoded: int | None = None  # how many values decoded, once one failed to
        while (limit := min(READ_CHUNK, op.limit - len(keys))) > 0:
            if keys:
                yield
            datas: list[bytes] = []
            try:
                # Row by row: if a page is damaged, the rows before it are known.
                for key, data in self._conn.execute(sql, (low, *bounds, now, limit)):
                    keys.append(key)
                    datas.append(data)
            except sqlcipher3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                last = keys[-1] if keys else op.after
                raise self._damaged(exc, "scan failed", after_key=last) from None
            start = len(values)
            if decoded is None and not decode_into(decode, datas, values):
                decoded = len(values)
            values += datas[len(values) - start :]  # the ones not decoded, as stored
            if len(datas) < limit:
                break
            low, sql = keys[-1], after_sql
        return ScanPage(keys, values, len(values) if decoded is None else decoded)

    @staticmethod
    def _scan_bounds(op: Scan) -> tuple[str, str, tuple[str, list[object]]]:
        """Where ``op`` starts (the bound and its condition) and its upper bounds."""
        if op.after is not None and op.after >= op.prefix:
            low, above = op.after, "key > ?"
        else:
            low, above = op.prefix, "key >= ?"
        below = ""
        bounds: list[object] = []
        upper = prefix_upper_bound(op.prefix)
        if upper is not None:
            below += " AND key < ?"
            bounds.append(upper)
        if op.upto is not None:
            below += " AND key <= ?"
            bounds.append(op.upto)
        return low, above, (below, bounds)

    def write(self, ops: Sequence[WriteOp], now: float, *, checkpoint: bool = True) -> list[object]:
        """Apply ``ops`` in one transaction; then checkpoint if the ``-wal`` grew too large.

        The ``-wal`` is rewritten from its start after a checkpoint and cut
        to ``wal_checkpoint_bytes`` (``journal_size_limit``), so it grows
        past that size only when a checkpoint is due. A transaction that
        meets a full disk is tried once more after a checkpoint that
        succeeds: the ``-wal``'s space can then be reused.

        ``checkpoint=False`` does neither (a caller that must not wait for
        the disk): :class:`StorageFull` is raised at once, and the caller
        runs :meth:`checkpoint` when :meth:`checkpoint_due` says so.
        """
        self._check_open()
        if self._damage is not None:
            raise DamagedDatabase(
                str(self.path),
                f"writes are refused since a damaged page was found ({self._damage.detail});"
                " copy its readable records with fame salvage",
                pages=self._damage.pages,
            )
        if not checkpoint:
            return self._write(ops, now)
        try:
            results = self._write(ops, now)
        except StorageFull:
            if not self._checkpoint():
                raise
            results = self._write(ops, now)
        if self.checkpoint_due():
            self._checkpoint()
        return results

    def checkpoint_due(self) -> bool:
        """True once the ``-wal`` is past ``wal_checkpoint_bytes``."""
        return self._wal_bytes() > self.wal_checkpoint_bytes

    def checkpoint(self) -> None:
        """Fold the ``-wal`` into the file now (see :meth:`write`); failures are logged."""
        self._checkpoint()

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return 0

    def _checkpoint(self) -> bool:
        """Fold the ``-wal`` into the file, to be rewritten from its start; False if not done.

        Runs on the thread of the writes, between two transactions. Every
        transaction in the ``-wal`` is committed whatever happens here: a
        checkpoint that fails (a full disk) keeps the ``-wal`` and is tried
        again after :data:`CHECKPOINT_RETRY` seconds, at a later commit.
        """
        if time.monotonic() < self._checkpoint_at or self._wal_bytes() == 0:
            return False
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        except sqlcipher3.DatabaseError as exc:
            self._checkpoint_at = time.monotonic() + CHECKPOINT_RETRY
            reason = "the disk is full" if _is_full(exc) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s: checkpoint failed (%s); its -wal file is kept and the checkpoint tried"
                " again later",
                self.path.name,
                reason,
            )
            return False
        return not busy

    def _write(self, ops: Sequence[WriteOp], now: float) -> list[object]:
        conn = self._conn
        if self._set_up_pending:
            try:
                _set_up(conn, self.path, _tables(conn))
            except sqlcipher3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if _is_full(exc):
                    full = _full(conn, self.path, self.namespace, len(ops), self.max_file_bytes)
                    raise full from exc
                raise _database_error(self.path, exc, "cannot update its layout") from exc
            self._set_up_pending = False
        oldest = self._oldest_request
        conn.execute("BEGIN IMMEDIATE")
        self._slots.begin()
        try:
            results, seq = apply_writes(self, self.namespace, ops, self._seq, now, self.dedupe)
            reserved = self._reserved
            if seq > reserved:
                # Persisting the counter on every commit would write a second
                # page per transaction; reserving a block keeps versions unique
                # across restarts for one extra write per SEQ_BLOCK versions.
                reserved = seq + SEQ_BLOCK
                conn.execute("UPDATE fame_meta SET value = ? WHERE name = 'seq'", (reserved,))
            conn.execute("COMMIT")
        except BaseException as exc:
            self._slots.roll_back()
            self._oldest_request = oldest
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlcipher3.DatabaseError:
                    # A connection that met a damaged page may refuse even
                    # this; reopening it (below) discards the transaction.
                    if not is_damage(exc):
                        raise
            if _is_full(exc):
                raise _full(conn, self.path, self.namespace, len(ops), self.max_file_bytes) from exc
            if isinstance(exc, sqlcipher3.DatabaseError):
                if is_damage(exc):
                    raise self._damaged(exc, "write failed, rolled back") from None
                raise _database_error(self.path, exc, "write failed") from exc
            raise
        self._slots.commit()
        self._seq, self._reserved = seq, reserved
        return results

    def insert_rows(self, rows: Sequence[RawRow], seq: int) -> None:
        """Add records as they were stored elsewhere (``fame salvage``), in one commit.

        Versions are kept, and the counter moves to ``seq`` (at least the
        highest of them), so later writes get versions never used before.
        """
        insert_rows(self._conn, rows, seq)
        self._seq = self._reserved = max(self._reserved, seq)

    # Transaction protocol, used by apply_writes inside write().

    def live_version(self, key: str, now: float) -> int:
        row = self._conn.execute(_VERSION, (key, now)).fetchone()
        return 0 if row is None else int(row[0])

    def put(self, key: str, value: bytes, version: int, expires_at: float | None) -> None:
        self._conn.execute(_PUT, (key, value, version, expires_at))

    def put_many(self, rows: Sequence[tuple[str, bytes, int, float | None]]) -> None:
        self._conn.executemany(_PUT, rows)

    def remove(self, key: str) -> None:
        self._conn.execute(_DELETE, (key,))

    def replace(self, key: str, value: bytes, version: int) -> None:
        self._conn.execute(_REPLACE, (value, version, key))

    def purge(self, now: float, limit: int) -> int:
        return int(self._conn.execute(_PURGE, (now, limit)).rowcount)

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, tuple[float, bytes]]:
        slots = self._slots
        candidates = {request_id: slots.candidates(request_id) for request_id in request_ids}
        wanted = sorted({n for ns in candidates.values() for n in ns})
        rows: dict[int, tuple[object, object, object]] = {}
        for start in range(0, len(wanted), READ_CHUNK):
            chunk = wanted[start : start + READ_CHUNK]
            sql = (
                "SELECT n, id, at, answer FROM fame_requests"
                f" WHERE n IN ({', '.join('?' * len(chunk))})"
            )
            for n, request_id, at, answer in self._conn.execute(sql, chunk):
                rows[n] = (request_id, at, answer)
        found: dict[str, tuple[float, bytes]] = {}
        self._found = {}
        for request_id, ns in candidates.items():
            mine = [n for n in ns if rows.get(n, (None,))[0] == request_id]
            if mine:
                _id, at, answer = rows[max(mine)]
                # A time that is not a number (a damaged or edited file) counts
                # as recent: the retry is answered with the stored answer, which
                # apply_writes checks, instead of being applied a second time.
                found[request_id] = (_time(at, math.inf), answer)  # type: ignore[assignment]
            # Whether the id's slot holds another id's record (a hash clash).
            slot = slots.slot_of(request_id)
            taken = slot is not None and rows.get(slot, (request_id,))[0] != request_id
            self._found[request_id] = (max(mine) if mine else None, taken)
        return found

    def record_requests(self, records: Sequence[tuple[str, float, bytes]], replaced: int) -> None:
        if self._slots.count == replaced:  # the table was empty: these are the first rows
            self._oldest_request = records[0][1]
        rows = []
        for request_id, at, answer in records:
            previous, taken = self._found.get(request_id, (None, False))
            if previous is not None:
                # An expired record of the same id: the new one goes last.
                self._conn.execute(_FORGET_REQUEST, (previous,))
                self._slots.forget(previous, request_id)
            rows.append((self._slots.add(request_id, taken), request_id, at, answer))
        self._conn.executemany(_RECORD_REQUEST, rows)
        self._found = {}

    def prune_requests(self, expired_at: float, keep: int, limit: int) -> int:
        removed: list[tuple[int, object]] = []
        expired = expired_at >= self._oldest_request
        if expired:
            removed += self._conn.execute(_PRUNE_EXPIRED_REQUESTS, (limit, expired_at)).fetchall()
        over = min(self._slots.count - len(removed) - keep, limit - len(removed))
        if over > 0:
            removed += self._conn.execute(_PRUNE_OLDEST_REQUESTS, (over,)).fetchall()
        for n, request_id in removed:
            self._slots.forget(n, request_id)
        if expired or removed:
            oldest = self._conn.execute(_OLDEST_REQUEST).fetchone()
            self._oldest_request = math.inf if oldest is None else _time(oldest[0], -math.inf)
        return len(removed)

    def backup(self, directory: Path) -> FileCopy:
        """Copy this file as committed now into ``directory`` (see ``_sqlcipher_backup``).

        The copy is encrypted with this file's own key (salt included), so it
        opens with the same master key. The key is the one this backend was
        opened with, never found again from the file: opening the held file
        from this process and closing it would drop the node's POSIX lock on it.
        """
        from ._sqlcipher_backup import copy_live

        return copy_live(self._conn, self.path, directory, self._key)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close, leaving no ``-wal`` behind.

        On a full disk the checkpoint cannot grow the main file: the ``-wal``
        is kept (every committed transaction is in it) and is replayed when
        the file is next opened, so closing still succeeds.
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlcipher3.DatabaseError as exc:
            if not _is_full(exc):
                raise
            log.warning(
                "%s: the disk is full; its -wal file is kept and replayed at the next open",
                self.path.name,
            )
        finally:
            self._conn.close()


def integrity_check(path: Path, key: bytes | None) -> list[str]:
    """Run SQLCipher's and SQLite's integrity checks on ``path``; return the problems.

    ``path`` must be a private copy (see ``_snapshot``): it is opened
    normally, so SQLite replays its ``-wal`` (committed transactions a
    stopped node left there) and may write the copy. Opening the original
    immutable instead would ignore that ``-wal`` and call a sound file
    damaged. ``cipher_integrity_check`` authenticates every page with the
    key; ``integrity_check`` then checks the b-trees. An empty list means
    sound.
    """
    conn = sqlcipher3.connect(str(path), timeout=LOCK_WAIT)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        if key is not None:
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            problems = [str(row[0]) for row in conn.execute("PRAGMA cipher_integrity_check")]
            if problems:
                return problems  # SQLite's own check would only fail on the same pages
        try:
            rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        except sqlcipher3.DatabaseError as exc:
            return [f"SQLite cannot read it: {exc}"]
        # One row may hold several findings under a "*** in database main ***" heading.
        return [
            line
            for row in rows
            for line in row.splitlines()
            if line != "ok" and not line.startswith("*** in database")
        ]
    finally:
        conn.close()
