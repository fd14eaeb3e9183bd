"""``KeyValueStore[Model]``: the typed face of one namespace.

It validates and encodes in the caller's task (msgpack via msgspec) and
sends bytes to the namespace's storage actor, so the actor does no per-value
work. Models may be ``msgspec.Struct``, attrs classes or dataclasses (or any
type msgspec can decode). A value is checked on ``set`` by a full
encode/decode round trip, and a stored record is checked again on every
read: one that no longer fits the model raises :class:`RecordInvalid`
naming the namespace and key; it is never skipped. A model may carry a
version (``__fame_version__``): older records are upgraded on read, newer
ones refused (see ``_model_version``).

Every write takes an optional ``request_id`` (a str of 1 to 512
characters): the namespace applies a write with a given id once, and a retry
with the same id gets the original answer back and writes nothing (see
``_dedupe`` and docs/storage.md, "Deduplicated writes").
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
import msgspec
import trio

from .._core._actor import ActorRef
from .._core._errors import quoted
from .._core._tracing import span, tracing_on
from ._dedupe import (
    DeleteAnswer,
    DeleteManyAnswer,
    PutAnswer,
    check_request_id,
)
from ._errors import DamagedDatabase, InvalidKey, RecordInvalid
from ._model_version import ModelVersion
from ._ops import Count, Delete, DeleteMany, Get, GetMany, Put, PutMany, Row, Scan, ScanPage

__all__ = ["KeyValueStore", "Versioned"]

M = TypeVar("M")

MAX_KEY_LENGTH = 1024
PAGE_SIZE = 16384
"""The most rows fetched per message by ``keys``, ``scan`` and ``list``.

Large enough that a read to its end pays a message (and two thread hops)
per ten thousand rows or more: 4096 cost a 100k-row scan about 6% more CPU
(A/B in one process, docs/benchmarks.md). A page of the seed's records is
about 2 MB stored, a few MB decoded; only a reader that keeps up gets one
(see :data:`FIRST_PAGE_SIZE`)."""
FIRST_PAGE_SIZE = 16
"""Rows of the first page of a paging read. Each next page is twice as large, up to
:data:`PAGE_SIZE`, while the reader keeps up: a page it took longer than
:data:`SLOW_PAGE` seconds to consume makes the next one :data:`FIRST_PAGE_SIZE` again.
So a read consumed slowly (a stream whose reader grants little credit) never holds
hundreds of records it cannot send yet, and one read to its end quickly pays a few
more messages at its start (16 + 32 + ... + 8192 = 16368 rows in 11 of them)."""
SLOW_PAGE = 0.1
"""Seconds to consume one page past which the reader counts as slow (see above)."""

LOOP_SLICE = 200
"""Keys checked or records encoded or decoded in the caller's task between two checkpoints.

Checking 50k keys or decoding 50k records takes tens of milliseconds; done
in one go it would hold the event loop all that time.
"""


def _stopped_at(damage: DamagedDatabase, last: str | None) -> DamagedDatabase:
    """``damage`` naming ``last``, the last key the scan delivered, as where it stopped."""
    return DamagedDatabase(damage.path, damage.detail, pages=damage.pages, after_key=last)


class _PageSizes:
    """The size of each next page of one paging read (see :data:`FIRST_PAGE_SIZE`)."""

    __slots__ = ("_arrived_at", "size")

    def __init__(self) -> None:
        self.size = min(FIRST_PAGE_SIZE, PAGE_SIZE)
        self._arrived_at: float | None = None

    def next(self) -> int:
        """The size of the page to fetch now; the previous one was consumed."""
        if self._arrived_at is not None:
            if trio.current_time() - self._arrived_at > SLOW_PAGE:
                self.size = min(FIRST_PAGE_SIZE, PAGE_SIZE)
            else:
                self.size = min(self.size * 2, PAGE_SIZE)
        return self.size

    def arrived(self) -> None:
        """The page just fetched arrived: its reader starts consuming it now."""
        self._arrived_at = trio.current_time()


@attrs.frozen
class Versioned(Generic[M]):
    """A value with its version, for ``set(..., if_version=version)``."""

    value: M
    version: int


def check_prefix(prefix: object, what: str = "prefix") -> str:
    """``prefix`` if it is a str encodable as UTF-8, else :class:`InvalidKey`."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"a {what} must be a str, not {type(prefix).__name__}")
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(f"invalid {what} {prefix[:80]!r}: not encodable as UTF-8") from None
    return prefix


def check_key(key: object) -> str:
    if type(key) is str and key.isascii() and 0 < len(key) <= MAX_KEY_LENGTH and "\x00" not in key:
        return key  # the common case, without encoding it: ASCII is always UTF-8
    key = check_prefix(key, "key")
    if not 0 < len(key) <= MAX_KEY_LENGTH or "\x00" in key:
        raise InvalidKey(
            f"invalid key {quoted(key)}: expected 1 to {MAX_KEY_LENGTH} characters, no NUL"
        )
    return key


async def _distinct_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """``keys`` checked, without duplicates, in their first order."""
    distinct: dict[str, None] = {}
    # A copy first: the caller's collection may change while this task waits.
    for n, key in enumerate(list(keys), 1):
        distinct[check_key(key)] = None
        if n % LOOP_SLICE == 0:
            await trio.lowlevel.checkpoint()
    return tuple(distinct)


class KeyValueStore(Generic[M]):
    """A namespace of records of one model. Get one from ``provider.get_kv_store``.

    Every method is one message to the storage actor (``keys``, ``scan`` and
    ``list`` one per page: 16 rows first, doubling up to :data:`PAGE_SIZE`
    while the reader keeps up; a page is fetched only when the previous one
    was consumed), and every write is
    acknowledged only once committed. Paging reads see writes committed
    between pages, like a cursor: they never load a namespace whole.
    """

    def __init__(
        self,
        model: type[M],
        namespace: str,
        ref: ActorRef,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.namespace = namespace
        self._ref = ref
        self._clock = clock
        self._model_name = getattr(model, "__qualname__", repr(model))
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(model)
        self._versions = ModelVersion(model, namespace, self._model_name)
        # Stored values are the model's msgpack as they are, unless they carry a
        # version header (which no msgpack value starts with: see _page_decoder).
        self._plain = self._versions.version in (None, 1)

    def __repr__(self) -> str:
        return f"<KeyValueStore[{self._model_name}] {self.namespace!r}>"

    # -- encoding -------------------------------------------------------

    def _encode(self, key: str, value: M) -> bytes:
        if isinstance(self.model, type) and not isinstance(value, self.model):
            raise RecordInvalid(
                self.namespace,
                key,
                self._model_name,
                f"expected an instance of it, got {type(value).__name__}",
                stored=False,
            )
        try:
            data = self._encoder.encode(value)
            self._decoder.decode(data)
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError) as exc:
            raise RecordInvalid(
                self.namespace, key, self._model_name, str(exc), stored=False
            ) from None
        return self._versions.encode(data)

    def _decode(self, key: str, data: bytes) -> M:
        payload, _upgraded = self._versions.payload(key, data)
        try:
            return self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise RecordInvalid(
                self.namespace, key, self._model_name, str(exc), stored=True
            ) from None

    def _page_decoder(self) -> Callable[[bytes], M] | None:
        """What decodes a stored value where a scan reads it (see ``Scan.decode``), or
        ``None`` if values need :meth:`_decode` (a model with a version beyond 1).

        A value without a header is the model's msgpack as it is (version 1, or
        no version); a header starts with 0xc1, which msgpack never uses, so
        such a value fails to decode there and is decoded here instead.
        """
        return self._decoder.decode if self._plain else None

    def _expires_at(self, ttl: float | None) -> float | None:
        if ttl is None:
            return None
        if not (isinstance(ttl, int | float) and ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        return self._clock() + ttl

    def _upgraded(self, key: str, data: bytes) -> bytes | None:
        """A stored value re-encoded in the model's version, or ``None`` if it is in it.

        The upgraded value is decoded and validated as any read is (for ``fame migrate``).
        """
        payload, upgraded = self._versions.payload(key, data)
        if not upgraded:
            return None
        try:
            value = self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise RecordInvalid(
                self.namespace, key, self._model_name, str(exc), stored=True
            ) from None
        return self._encode(key, value)

    async def _ask(self, message: object) -> Any:
        if not tracing_on():  # no span to name: skip building its name and attributes
            return await self._ref.ask(message, timeout=None)
        # One span per message to the storage actor, in the caller's trace (ambient context).
        with span(
            f"fame.storage {type(message).__name__}", attributes={"fame.namespace": self.namespace}
        ):
            return await self._ref.ask(message, timeout=None)

    # -- the seed's API -------------------------------------------------

    async def _put(
        self,
        key: str,
        value: M,
        ttl: float | None,
        if_version: int | None,
        request_id: str | None,
        *,
        must_exist: bool = False,
    ) -> tuple[int, bytes]:
        """Send one ``Put``; the version and the encoded value as stored (the
        original one if this is a replay of ``request_id``)."""
        check_key(key)
        check_request_id(request_id)
        if if_version is not None and (not isinstance(if_version, int) or if_version < 0):
            raise ValueError(f"if_version must be an int >= 0, got {if_version!r}")
        data = self._encode(key, value)
        put = Put(key, data, self._expires_at(ttl), if_version, must_exist, request_id)
        if request_id is None:
            version: int = await self._ask(put)
            return version, data
        answer: PutAnswer = await self._ask(put)
        return answer.version, answer.value

    async def set(
        self,
        key: str,
        value: M,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        request_id: str | None = None,
    ) -> int:
        """Store ``value`` under ``key``; return its new version.

        ``ttl`` (seconds) makes the key expire; without it the key never
        does. ``if_version`` makes the write conditional: it must equal the
        key's current version (0: the key must not exist), else
        :class:`VersionConflict` is raised and nothing is written.
        ``request_id``: a retry with the same id returns the first write's
        version and writes nothing.
        """
        version, _data = await self._put(key, value, ttl, if_version, request_id)
        return version

    async def set_versioned(
        self,
        key: str,
        value: M,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        request_id: str | None = None,
    ) -> Versioned[M]:
        """Like ``set``, but return the value as stored with its version.

        A retry with the same ``request_id`` returns the value and version
        the first write stored, even if the key changed since.
        """
        version, data = await self._put(key, value, ttl, if_version, request_id)
        return Versioned(self._decode(key, data), version)

    async def get(self, key: str) -> M | None:
        """The value under ``key``, or ``None`` if it is missing or expired."""
        row: Row | None = await self._ask(Get(check_key(key)))
        if row is None:
            return None
        if self._plain:
            try:
                return self._decoder.decode(row[0])
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass  # a header, or a record that does not fit: _decode says which
        return self._decode(key, row[0])

    async def delete(self, key: str, *, request_id: str | None = None) -> bool:
        """Remove ``key``; idempotent. True if a live key was removed.

        A retry with the same ``request_id`` returns the first answer.
        """
        check_key(key)
        if check_request_id(request_id) is None:
            existed: bool = await self._ask(Delete(key))
            return existed
        answer: DeleteAnswer = await self._ask(Delete(key, request_id))
        return answer.existed

    async def list(self) -> dict[str, M]:
        """Every live record, in key order (fetched page by page)."""
        return {key: value async for key, value in self.scan()}

    async def update(
        self, key: str, value: M, *, ttl: float | None = None, request_id: str | None = None
    ) -> int:
        """Like ``set``, but raise :class:`KeyMissing` (a ``KeyError``) if ``key`` is missing.

        A retry with the same ``request_id`` returns the first write's
        version, even if the key was deleted since.
        """
        version, _data = await self._put(key, value, ttl, None, request_id, must_exist=True)
        return version

    # -- beyond the seed ------------------------------------------------

    async def get_versioned(self, key: str) -> Versioned[M] | None:
        row: Row | None = await self._ask(Get(check_key(key)))
        return None if row is None else Versioned(self._decode(key, row[0]), row[1])

    async def set_many(
        self,
        items: Mapping[str, M] | Iterable[tuple[str, M]],
        *,
        ttl: float | None = None,
        request_id: str | None = None,
    ) -> None:
        """Store several records in one transaction: all of them or none.

        A retry with the same ``request_id`` writes nothing.
        """
        check_request_id(request_id)
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        encoded: list[tuple[str, bytes]] = []
        for n, (key, value) in enumerate(pairs, 1):
            encoded.append((check_key(key), self._encode(key, value)))
            if n % LOOP_SLICE == 0:
                await trio.lowlevel.checkpoint()
        if encoded:
            await self._ask(PutMany(tuple(encoded), self._expires_at(ttl), request_id))

    async def get_many(self, keys: Iterable[str]) -> dict[str, M]:
        """The live records among ``keys``; missing ones are left out."""
        wanted = await _distinct_keys(keys)
        rows: dict[str, Row] = await self._ask(GetMany(wanted)) if wanted else {}
        found: dict[str, M] = {}
        for n, (key, row) in enumerate(rows.items(), 1):
            found[key] = self._decode(key, row[0])
            if n % LOOP_SLICE == 0:
                await trio.lowlevel.checkpoint()
        return found

    async def delete_many(self, keys: Iterable[str], *, request_id: str | None = None) -> int:
        """Remove several keys in one transaction; return how many were live.

        A retry with the same ``request_id`` returns the first answer.
        """
        check_request_id(request_id)
        wanted = await _distinct_keys(keys)
        if not wanted:
            return 0
        if request_id is None:
            removed: int = await self._ask(DeleteMany(wanted))
            return removed
        answer: DeleteManyAnswer = await self._ask(DeleteMany(wanted, request_id))
        return answer.removed

    async def count(self) -> int:
        """How many live records the namespace holds."""
        total: int = await self._ask(Count())
        return total

    async def _rows_before(self, damage: DamagedDatabase, scan: Scan) -> Sequence[Any]:
        """The rows ``scan`` read before it met the damage (the backend names the last one)."""
        last = damage.after_key
        if last is None or (scan.after is not None and last <= scan.after):
            return []
        rows: Sequence[Any] = await self._ask(attrs.evolve(scan, upto=last, decode=None))
        return rows

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        """The live keys starting with ``prefix``, in order, page by page.

        Ends at a damaged page as :meth:`scan` does.
        """
        check_prefix(prefix)
        after: str | None = None
        sizes = _PageSizes()
        while True:
            size = sizes.next()
            scan = Scan(prefix, after, size, values=False)
            try:
                rows = await self._ask(scan)
            except DamagedDatabase as exc:
                rows = await self._rows_before(exc, scan)
                for (key,) in rows:
                    yield key
                raise _stopped_at(exc, rows[-1][0] if rows else after) from None
            sizes.arrived()
            for (key,) in rows:
                yield key
            if len(rows) < size:
                return
            after = rows[-1][0]

    async def scan(
        self, prefix: str = "", *, limit: int | None = None, after: str | None = None
    ) -> AsyncIterator[tuple[str, M]]:
        """Live ``(key, value)`` pairs with keys starting with ``prefix`` and greater
        than ``after``, in key order, at most ``limit`` of them, page by page.

        A damaged page of the file ends the scan with :class:`DamagedDatabase`
        after every record before it was delivered; its ``after_key`` is the
        last key delivered (``None``: none). Nothing is skipped.
        """
        check_prefix(prefix)
        if after is not None:
            check_prefix(after, "after")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit!r}")
        left = math.inf if limit is None else limit
        sizes = _PageSizes()
        decode = self._page_decoder()
        while left > 0:
            page = int(min(sizes.next(), left))
            scan = Scan(prefix, after, page, values=True, decode=decode)
            try:
                answer: ScanPage | Sequence[Any] = await self._ask(scan)
            except DamagedDatabase as exc:
                rows = await self._rows_before(exc, scan)
                for key, data, _version in rows:
                    yield key, self._decode(key, data)
                raise _stopped_at(exc, rows[-1][0] if rows else after) from None
            sizes.arrived()
            if isinstance(answer, ScanPage):
                keys, values, decoded = answer.keys, answer.values, answer.decoded
                if decoded == len(keys):
                    for pair in zip(keys, values, strict=True):
                        yield pair
                else:
                    for n, (key, value) in enumerate(zip(keys, values, strict=True)):
                        yield key, value if n < decoded else self._decode(key, value)
            else:
                keys = [row[0] for row in answer]
                for key, data, _version in answer:
                    yield key, self._decode(key, data)
            left -= len(keys)
            if len(keys) < page:
                return
            after = keys[-1]
