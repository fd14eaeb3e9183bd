"""The ``postgres`` profile's backend: the only module that imports ``psycopg``.

Every namespace of every node using one database lives in four tables
(created by the first provider that opens it, under an advisory lock)::

    fame_meta(name TEXT PRIMARY KEY, value BYTEA)  -- 'format', 'salt', 'check'
    fame_ns(ns BYTEA PRIMARY KEY, seq BIGINT, gen BIGINT, requests BIGINT)
    fame_kv(ns, key_hash, key_sealed, value, version, expires_at)  -- PK (ns, key_hash)
    fame_requests(ns, id_hash, n, at, answer)  -- PK (ns, id_hash); deduplicated writes

Statements send their parameters (``%b``) and read their rows
(``binary=True`` cursors) in PostgreSQL's binary format: hashes and
sealed blobs then travel as they are, where the text format would escape
every byte (about 15 us per element of a ``key_hash = ANY(...)`` array).

``ns`` and ``key_hash`` are keyed hashes, ``key_sealed``, ``value`` and
``answer`` sealed by fame (see ``_sealed_records``): the server sees no
name, key, value nor request id.

Several nodes may serve one namespace at once, so nothing the server holds
is cached without being checked. Each write transaction (one per batch, as
on SQLite) starts by locking its namespace's ``fame_ns`` row (``SELECT ...
FOR UPDATE``): writers of one namespace take turns, across nodes, and each
reads the version counter ``seq``, the records it checks (``if_version``,
``update``) and the dedupe table after the previous writer committed. It
stores the counter back, bumps ``gen`` if it wrote or removed keys (so
``gen`` names the namespace's committed keys; a purge that found nothing
leaves it) and keeps ``requests``, the count of dedupe records, exact.
Versions are therefore unique and increasing per namespace whatever node
wrote them.

Keys are hashed, so the server can neither order them nor match a prefix:
a scan decrypts the namespace's keys and sorts them here. The sorted keys
are kept between scans together with the ``gen`` they were read at, and
reused only while ``gen`` is unchanged (checked in the scan's own
``REPEATABLE READ`` snapshot, which also serves its values): another node's
write makes the next scan read the keys again.

Statements run on the storage actor's worker thread with connections from
a ``psycopg_pool.ConnectionPool`` shared by the provider's namespaces.
Durability is the server's (``synchronous_commit``); a commit is
acknowledged once the server acknowledged it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from ._dedupe import DedupeLimits
from ._errors import DamagedDatabase, StorageError, WrongMasterKey
from ._keys import MasterKey
from ._ops import (
    READ_CHUNK,
    BulkRead,
    Count,
    Get,
    GetMany,
    ReadSteps,
    Row,
    Scan,
    WriteOp,
    apply_writes,
    scan_page,
)
from ._sealed_records import (
    SALT_BYTES,
    NamespaceSeal,
    _Unsealable,
    key_check,
    opens_key_check,
)

__all__ = ["PostgresBackend", "PostgresDatabase"]

log = logging.getLogger("fame.storage")

FORMAT = b"fame/kv-pg/v1"
CONNECT_WAIT = 15.0
"""Seconds the provider waits for its first connection before it gives up."""
POOL_SIZE = 8
"""Connections the provider's pool opens at most (one per namespace busy at once)."""
_SETUP_LOCK = 0x66616D65  # "fame": the advisory lock that serialises creating the tables
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fame_meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fame_ns (ns BYTEA PRIMARY KEY, seq BIGINT NOT NULL DEFAULT 0,"
    " gen BIGINT NOT NULL DEFAULT 0, requests BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS fame_kv (ns BYTEA NOT NULL, key_hash BYTEA NOT NULL,"
    " key_sealed BYTEA NOT NULL, value BYTEA NOT NULL, version BIGINT NOT NULL,"
    " expires_at DOUBLE PRECISION, PRIMARY KEY (ns, key_hash))",
    "CREATE INDEX IF NOT EXISTS fame_kv_expires ON fame_kv (ns, expires_at)"
    " WHERE expires_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS fame_requests (ns BYTEA NOT NULL, id_hash BYTEA NOT NULL,"
    " n BIGSERIAL, at DOUBLE PRECISION NOT NULL, answer BYTEA NOT NULL,"
    " PRIMARY KEY (ns, id_hash))",
    "CREATE INDEX IF NOT EXISTS fame_requests_order ON fame_requests (ns, n)",
)
_LIVE = "(expires_at IS NULL OR expires_at > %b)"
_GET_MANY = (
    f"SELECT key_hash, value, version FROM fame_kv WHERE ns = %b AND key_hash = ANY(%b) AND {_LIVE}"
)
_VERSION = f"SELECT version FROM fame_kv WHERE ns = %b AND key_hash = %b AND {_LIVE}"
_PUT = (
    "INSERT INTO fame_kv (ns, key_hash, key_sealed, value, version, expires_at)"
    " VALUES (%b, %b, %b, %b, %b, %b) ON CONFLICT (ns, key_hash) DO UPDATE"
    " SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at"
)
_DELETE = "DELETE FROM fame_kv WHERE ns = %b AND key_hash = %b"
_REPLACE = "UPDATE fame_kv SET value = %b, version = %b WHERE ns = %b AND key_hash = %b"
_PURGE = (
    "DELETE FROM fame_kv WHERE ns = %b AND key_hash IN (SELECT key_hash FROM fame_kv"
    " WHERE ns = %b AND expires_at IS NOT NULL AND expires_at <= %b LIMIT %b) RETURNING key_hash"
)
_COUNT = f"SELECT count(*) FROM fame_kv WHERE ns = %b AND {_LIVE}"
_LOCK_NS = "SELECT seq, requests, gen FROM fame_ns WHERE ns = %b FOR UPDATE"
_STORE_NS = "UPDATE fame_ns SET seq = %b, requests = %b, gen = gen + %b WHERE ns = %b"
_FIND_REQUESTS = "SELECT id_hash, at, answer FROM fame_requests WHERE ns = %b AND id_hash = ANY(%b)"
_RECORD_REQUEST = (
    "INSERT INTO fame_requests (ns, id_hash, at, answer) VALUES (%b, %b, %b, %b)"
    " ON CONFLICT (ns, id_hash) DO UPDATE SET at = excluded.at, answer = excluded.answer,"
    " n = DEFAULT"
)
_OLDEST_REQUESTS = "SELECT n, at FROM fame_requests WHERE ns = %b ORDER BY n LIMIT %b"
_FORGET_REQUESTS = "DELETE FROM fame_requests WHERE ns = %b AND n = ANY(%b)"


def _where(dsn: str) -> str:
    """The database a DSN names, for messages: host, port and name, never a password."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database of FAME_STORAGE_POSTGRES_DSN"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    port = info.get("port") or "5432"
    name = info.get("dbname") or info.get("user") or "?"
    return f"PostgreSQL database {name!r} on {host}:{port}"


@contextlib.contextmanager
def _server_errors(where: str, doing: str) -> Iterator[None]:
    """psycopg's errors as fame's :class:`StorageError`, naming the database and the step."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        raise StorageError(f"{where}: {doing} failed: {type(exc).__name__}: {exc}") from exc


class PostgresDatabase:
    """One database opened by a provider: its pool, its salt, and the checked master key."""

    def __init__(self, dsn: str, master: MasterKey, dedupe: DedupeLimits) -> None:
        self.where = _where(dsn)
        self.dedupe = dedupe
        self._master = master
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            kwargs={"autocommit": True},
            name="fame-storage",
        )
        self.salt = b""

    def open(self) -> None:
        """Connect, create the tables if needed, and check the master key; blocking.

        Raises :class:`WrongMasterKey` when the database was set up with
        another master key, :class:`StorageError` when the server cannot be
        reached or is not a fame database.
        """
        with _server_errors(self.where, "connecting"):
            try:
                self._pool.open(wait=True, timeout=CONNECT_WAIT)
            except PoolTimeout:
                self._pool.close()
                raise StorageError(
                    f"{self.where}: no connection within {CONNECT_WAIT:g} s; check"
                    " FAME_STORAGE_POSTGRES_DSN and that the server runs"
                ) from None
        try:
            with (
                _server_errors(self.where, "setting up the tables"),
                self._pool.connection() as conn,
            ):
                self._set_up(conn)
        except BaseException:
            self._pool.close()
            raise

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO fame_meta VALUES ('format', %s), ('salt', %s)"
                " ON CONFLICT (name) DO NOTHING",
                (FORMAT, os.urandom(SALT_BYTES)),
            )
            meta = {
                name: bytes(value)
                for name, value in conn.execute("SELECT name, value FROM fame_meta").fetchall()
            }
            if meta.get("format") != FORMAT:
                raise StorageError(
                    f"{self.where}: its fame_meta table names format {meta.get('format')!r},"
                    f" not {FORMAT.decode()!r}: not a fame key-value database; nothing was changed"
                )
            salt = meta["salt"]
            check = meta.get("check")
            if check is None:
                conn.execute(
                    "INSERT INTO fame_meta VALUES ('check', %s)", (key_check(self._master, salt),)
                )
            elif not opens_key_check(self._master, salt, check):
                raise WrongMasterKey(self.where, "its key check (table fame_meta)")
        self.salt = salt

    def backend(self, namespace: str) -> PostgresBackend:
        """The backend of ``namespace``, its ``fame_ns`` row made if missing; blocking."""
        seal = NamespaceSeal(self._master, self.salt, namespace)
        with _server_errors(self.where, "opening a namespace"), self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO fame_ns (ns) VALUES (%s) ON CONFLICT (ns) DO NOTHING", (seal.ns_id,)
            )
        return PostgresBackend(self._pool, seal, namespace, self.where, self.dedupe)

    def close(self) -> None:
        self._pool.close()


@attrs.define
class _KeyIndex:
    """A namespace's keys in order as of state ``gen``: key -> (hash, expires_at)."""

    gen: int
    keys: list[str]
    info: dict[str, tuple[bytes, float | None]]


class PostgresBackend:
    """One namespace in a PostgreSQL database. See :class:`fame._storage._ops.Backend`."""

    commit_waits_for_disk = True  # every commit is a round trip: never on the event loop

    def __init__(
        self,
        pool: ConnectionPool[Any],
        seal: NamespaceSeal,
        namespace: str,
        where: str,
        dedupe: DedupeLimits,
    ) -> None:
        self.namespace = namespace
        self.dedupe = dedupe
        self.where = where
        self._pool = pool
        self._seal = seal
        self._ns = seal.ns_id
        self._index: _KeyIndex | None = None

    def _damaged(
        self, detail: str, key: str | None = None, after_key: str | None = None
    ) -> DamagedDatabase:
        return DamagedDatabase(
            self.where,
            f"namespace {self.namespace!r}: {detail} (changed on the server, or sealed"
            " under another master key)",
            key=key,
            after_key=after_key,
        )

    def _open_value(self, key: str, version: int, sealed: bytes) -> bytes:
        try:
            return self._seal.open_value(key, version, sealed)
        except _Unsealable:
            raise self._damaged("a record does not open", key) from None

    # -- reads --------------------------------------------------------------

    def get(self, op: Get, now: float) -> Row | None:
        found = self.get_rows([op.key], now)[op.key]
        if isinstance(found, StorageError):
            raise found
        return found

    def get_rows(self, keys: Sequence[str], now: float) -> dict[str, Row | StorageError | None]:
        """Point reads of ``keys`` in one statement: each key's row, ``None``, or its error."""
        hashes = {self._seal.hash_key(key): key for key in keys}
        params = (self._ns, list(hashes), now)
        rows = self._query("a read", _GET_MANY, params)
        found: dict[str, Row | StorageError | None] = dict.fromkeys(keys)
        for key_hash, value, version in rows:
            key = hashes[bytes(key_hash)]
            try:
                found[key] = (self._open_value(key, version, bytes(value)), int(version))
            except StorageError as exc:
                found[key] = exc
        return found

    def read_steps(self, op: BulkRead, now: float) -> ReadSteps:
        if isinstance(op, GetMany):
            return self._get_many(op, now)
        if isinstance(op, Scan):
            return self._scan(op, now)
        if isinstance(op, Count):
            return self._count(now)
        raise StorageError(f"not a read operation: {op!r}")

    def _count(self, now: float) -> ReadSteps:
        rows = self._query("count", _COUNT, (self._ns, now))
        yield
        return int(rows[0][0]) if rows else 0

    def _query(self, doing: str, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """The rows of one read statement, tried again on another connection if the
        pooled one was found broken (the server restarted, or dropped it): a read
        can be repeated, and the pool replaces such connections by itself."""
        with _server_errors(self.where, doing):
            for _attempt in range(POOL_SIZE):
                with self._pool.connection() as conn:
                    try:
                        rows: list[tuple[Any, ...]] = conn.execute(
                            sql, params, binary=True
                        ).fetchall()
                        return rows
                    except psycopg.OperationalError:
                        if not conn.broken:
                            raise
            with self._pool.connection() as conn:
                rows = conn.execute(sql, params, binary=True).fetchall()
                return rows

    def _get_many(self, op: GetMany, now: float) -> ReadSteps:
        found: dict[str, Row] = {}
        for start in range(0, len(op.keys), READ_CHUNK):
            if start:
                yield
            for key, row in self.get_rows(op.keys[start : start + READ_CHUNK], now).items():
                if isinstance(row, StorageError):
                    raise row
                if row is not None:
                    found[key] = row
        return found

    def _scan(self, op: Scan, now: float) -> ReadSteps:
        """Rows in key order, from one snapshot; keys sorted here (see the module docstring)."""
        with (
            _server_errors(self.where, "a scan"),
            self._pool.connection() as conn,
            conn.transaction(),
        ):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            state = conn.execute("SELECT gen FROM fame_ns WHERE ns = %b", (self._ns,)).fetchone()
            gen = -1 if state is None else int(state[0])
            index = self._index
            if index is None or index.gen != gen:
                index = yield from self._read_keys(conn, gen)
                self._index = index
            chosen = _select(index, op, now)
            if not op.values:
                return [(key,) for key in chosen]
            rows: list[tuple[object, ...]] = []
            for start in range(0, len(chosen), READ_CHUNK):
                yield
                chunk = chosen[start : start + READ_CHUNK]
                hashes = [index.info[key][0] for key in chunk]
                got = {
                    bytes(key_hash): (bytes(value), int(version))
                    for key_hash, value, version in conn.execute(
                        _GET_MANY, (self._ns, hashes, now), binary=True
                    ).fetchall()
                }
                for key, key_hash in zip(chunk, hashes, strict=True):
                    row = got.get(key_hash)
                    if row is None:
                        continue
                    try:
                        value = self._seal.open_value(key, row[1], row[0])
                    except _Unsealable:
                        # As a damaged page on SQLite: the store delivers the rows before it.
                        last = str(rows[-1][0]) if rows else op.after
                        raise self._damaged("a record does not open", key, last) from None
                    rows.append((key, value, row[1]))
            # Decoded here, on the worker thread, as the SQLite backend does.
            return rows if op.decode is None else scan_page(rows, op.decode)

    def _read_keys(
        self, conn: psycopg.Connection[Any], gen: int
    ) -> Generator[None, None, _KeyIndex]:
        """Every key of the namespace, decrypted and sorted: the scan's index at ``gen``."""
        info: dict[str, tuple[bytes, float | None]] = {}
        cursor = conn.execute(
            "SELECT key_hash, key_sealed, expires_at FROM fame_kv WHERE ns = %b",
            (self._ns,),
            binary=True,
        )
        while batch := cursor.fetchmany(READ_CHUNK * 4):
            for key_hash, sealed, expires_at in batch:
                key_hash = bytes(key_hash)
                try:
                    key = self._seal.open_key(bytes(sealed), key_hash)
                except _Unsealable:
                    raise self._damaged("a record's key does not open") from None
                info[key] = (key_hash, expires_at)
            yield
        return _KeyIndex(gen, sorted(info), info)

    # -- writes -------------------------------------------------------------

    def write(self, ops: Sequence[WriteOp], now: float) -> list[object]:
        """Apply ``ops`` in one transaction holding the namespace's row lock, and commit."""
        with _server_errors(self.where, "a write"), self._pool.connection() as conn:
            with conn.transaction():
                state = conn.execute(_LOCK_NS, (self._ns,)).fetchone()
                if state is None:  # the row was removed on the server: start it again
                    conn.execute("INSERT INTO fame_ns (ns) VALUES (%s)", (self._ns,))
                    state = (0, 0, 0)
                txn = _Transaction(conn, self, int(state[1]))
                results, seq = apply_writes(
                    txn, self.namespace, ops, int(state[0]), now, self.dedupe
                )
                txn.flush()
                # gen moves when keys or expiry times did (what a scan's index
                # holds), so a purge that found nothing leaves other nodes' indexes.
                moved = 1 if txn.changes or txn.purged else 0
                if moved or seq != state[0] or txn.requests != state[1]:
                    conn.execute(_STORE_NS, (seq, txn.requests, moved, self._ns))
            if moved:
                self._follow(int(state[2]), txn)
            return results

    def _follow(self, gen: int, txn: _Transaction) -> None:
        """Bring the scans' key index to this commit, if it was current when it began.

        The commit moved the namespace from ``gen`` to ``gen + 1`` (it wrote
        or removed keys); an index
        read at ``gen`` plus this commit's own changes is the index at
        ``gen + 1``, so a node's own writes do not make its next scan read
        every key again. An index older than ``gen`` is left to be found
        stale (another node wrote since).
        """
        index = self._index
        if index is None or index.gen != gen:
            return
        keys, info = index.keys, index.info
        purged = set(txn.purged)
        if purged:
            for key in [key for key, (key_hash, _) in info.items() if key_hash in purged]:
                del info[key]
                del keys[bisect.bisect_left(keys, key)]
        for key, entry in txn.changes:
            if entry is None:
                if info.pop(key, None) is not None:
                    del keys[bisect.bisect_left(keys, key)]
            else:
                if key not in info:
                    bisect.insort(keys, key)
                info[key] = entry
        index.gen = gen + 1

    def close(self) -> None:
        """Nothing to release: the pool is the provider's."""


def _select(index: _KeyIndex, op: Scan, now: float) -> list[str]:
    """The keys a scan returns, in order, from the sorted index (as ``MemoryBackend``)."""
    keys = index.keys
    if op.after is not None and op.after >= op.prefix:
        at = bisect.bisect_right(keys, op.after)
    else:
        at = bisect.bisect_left(keys, op.prefix)
    chosen: list[str] = []
    while at < len(keys) and len(chosen) < op.limit:
        key = keys[at]
        at += 1
        if not key.startswith(op.prefix) or (op.upto is not None and key > op.upto):
            break
        expires_at = index.info[key][1]
        if expires_at is None or expires_at > now:
            chosen.append(key)
    return chosen


class _Transaction:
    """The :class:`~fame._storage._ops.Transaction` of one write, on one connection.

    Writes are queued and sent together (a pipeline: one round trip) before
    the next read and at the end, so a batch of ``set`` costs a few round
    trips, not one per record.
    """

    def __init__(self, conn: psycopg.Connection[Any], backend: PostgresBackend, requests: int):
        self._conn = conn
        self._seal = backend._seal
        self._ns = backend._ns
        self.requests = requests
        self._pending: list[tuple[str, tuple[object, ...]]] = []
        self.changes: list[tuple[str, tuple[bytes, float | None] | None]] = []
        """Keys written ``(key, (hash, expires_at))`` or removed ``(key, None)``, in order."""
        self.purged: list[bytes] = []
        """Hashes of the keys purged."""

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            self._conn.execute(*pending[0])
        elif pending:
            with self._conn.pipeline():
                for sql, params in pending:
                    self._conn.execute(sql, params)

    def live_version(self, key: str, now: float) -> int:
        self.flush()
        row = self._conn.execute(_VERSION, (self._ns, self._seal.hash_key(key), now)).fetchone()
        return 0 if row is None else int(row[0])

    def put(self, key: str, value: bytes, version: int, expires_at: float | None) -> None:
        seal = self._seal
        key_hash = seal.hash_key(key)
        self._pending.append(
            (
                _PUT,
                (
                    self._ns,
                    key_hash,
                    seal.seal_key(key, key_hash),
                    seal.seal_value(key, version, value),
                    version,
                    expires_at,
                ),
            )
        )
        self.changes.append((key, (key_hash, expires_at)))

    def put_many(self, rows: Sequence[tuple[str, bytes, int, float | None]]) -> None:
        # Queued like single puts: the pipeline already sends them in one round trip.
        for key, value, version, expires_at in rows:
            self.put(key, value, version, expires_at)

    def remove(self, key: str) -> None:
        self._pending.append((_DELETE, (self._ns, self._seal.hash_key(key))))
        self.changes.append((key, None))

    def replace(self, key: str, value: bytes, version: int) -> None:
        sealed = self._seal.seal_value(key, version, value)
        self._pending.append((_REPLACE, (sealed, version, self._ns, self._seal.hash_key(key))))

    def purge(self, now: float, limit: int) -> int:
        self.flush()
        rows = self._conn.execute(_PURGE, (self._ns, self._ns, now, limit), binary=True).fetchall()
        self.purged += [bytes(row[0]) for row in rows]
        return len(rows)

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, tuple[float, bytes]]:
        hashes = {self._seal.hash_request(rid): rid for rid in request_ids}
        found: dict[str, tuple[float, bytes]] = {}
        for id_hash, at, answer in self._conn.execute(
            _FIND_REQUESTS, (self._ns, list(hashes)), binary=True
        ).fetchall():
            request_id = hashes[bytes(id_hash)]
            try:
                opened = self._seal.open_answer(request_id, bytes(answer))
            except _Unsealable:
                opened = b""  # apply_writes reports a damaged answer, and writes nothing
            found[request_id] = (float(at), opened)
        return found

    def record_requests(self, records: Sequence[tuple[str, float, bytes]], replaced: int) -> None:
        seal = self._seal
        for request_id, at, answer in records:
            row = (
                self._ns,
                seal.hash_request(request_id),
                at,
                seal.seal_answer(request_id, answer),
            )
            self._pending.append((_RECORD_REQUEST, row))
        self.requests += len(records) - replaced

    def prune_requests(self, expired_at: float, keep: int, limit: int) -> int:
        self.flush()
        over = self.requests - keep
        doomed: list[int] = []
        for n, at in self._conn.execute(_OLDEST_REQUESTS, (self._ns, limit)).fetchall():
            if at > expired_at and len(doomed) >= over:
                break
            doomed.append(int(n))
        if doomed:
            self._conn.execute(_FORGET_REQUESTS, (self._ns, doomed))
            self.requests -= len(doomed)
        return len(doomed)
