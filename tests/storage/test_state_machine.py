"""A hypothesis state machine drives a store and checks it against a dict model.

The same machine runs against all three profiles, with TTLs on a clock the
test moves, versions and conditional writes, bulk calls, background purge,
and close/reopen of the provider (the memory profile forgets everything on
reopen, the file profiles forget nothing).

Hypothesis rules are synchronous, so the provider lives in a Trio run on a
helper thread and each rule calls into it with ``trio.from_thread.run``.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fame._storage import (
    KeyMissing,
    StorageConfig,
    VersionConflict,
    open_storage,
    parse_master_key,
)
from fame._storage._sqlcipher_backend import SEQ_BLOCK

from .conftest import FakeClock, make_config
from .postgres_server import PostgresServer

T = TypeVar("T")


class Value(msgspec.Struct):
    n: int
    s: str


keys = st.text(alphabet="ab/é\U0001f600", min_size=1, max_size=3)
values = st.builds(Value, st.integers(-5, 5), st.sampled_from(["", "x", "yy"]))
ttls = st.none() | st.integers(1, 30)


class TrioHost:
    """A Trio run on a thread, holding an open provider between rules."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join()


class StoreMachine(RuleBasedStateMachine):
    profile = "memory"
    directory = Path()
    reserves_versions = True
    """The SQLite backends reserve versions in blocks (see ``committed``); postgres does not."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.config = self.new_config()
        self.host = TrioHost()
        # key -> (value, version, expires_at): every row physically present,
        # expired ones included until purged or overwritten.
        self.rows: dict[str, tuple[Value, int, float | None]] = {}
        self.seq = 0
        self.reserved = 0  # the file backends' persisted version reservation
        self._open()

    def new_config(self) -> StorageConfig:
        """The config of a new, empty store for one example."""
        return make_config(self.profile, self.directory / secrets.token_hex(8), KEY)

    # -- provider lifecycle ----------------------------------------------------

    def _open(self) -> None:
        opened = threading.Event()
        self._closed = trio.Event()
        self._done = threading.Event()

        async def hold(task_status: trio.TaskStatus[None]) -> None:
            try:
                async with open_storage(self.config, clock=self.clock) as provider:
                    self.provider = provider
                    self.store = await provider.get_kv_store(Value, "machine")
                    task_status.started()
                    await self._closed.wait()
            finally:
                self._done.set()

        async def start() -> None:
            await self.host.nursery.start(hold)
            opened.set()

        self.host.run(start)
        assert opened.is_set()

    def _close(self) -> None:
        trio.from_thread.run_sync(self._closed.set, trio_token=self.host.token)
        self._done.wait()

    def teardown(self) -> None:
        self._close()
        self.host.close()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        async def go() -> T:
            return await fn(*args, **kw)

        return self.host.run(go)

    # -- the model -------------------------------------------------------------

    def live(self, key: str) -> tuple[Value, int, float | None] | None:
        row = self.rows.get(key)
        if row is None or (row[2] is not None and row[2] <= self.clock.now):
            return None
        return row

    def live_items(self) -> list[tuple[str, Value]]:
        return sorted((k, r[0]) for k in self.rows if (r := self.live(k)) is not None)

    def expires(self, ttl: int | None) -> float | None:
        return None if ttl is None else self.clock.now + ttl

    def put(self, key: str, value: Value, ttl: int | None) -> int:
        self.seq += 1
        self.rows[key] = (value, self.seq, self.expires(ttl))
        return self.seq

    def committed(self) -> None:
        """Mirror SqliteBackend.write: versions are reserved in blocks at commit."""
        if not self.reserves_versions:
            self.reserved = self.seq  # the counter is stored exactly, in every transaction
        elif self.seq > self.reserved:
            self.reserved = self.seq + SEQ_BLOCK

    # -- rules -----------------------------------------------------------------

    @rule(key=keys, value=values, ttl=ttls)
    def set(self, key: str, value: Value, ttl: int | None) -> None:
        assert self.call(self.store.set, key, value, ttl=ttl) == self.put(key, value, ttl)
        self.committed()

    @rule(key=keys, value=values, ttl=ttls, stale=st.booleans())
    def set_if_version(self, key: str, value: Value, ttl: int | None, stale: bool) -> None:
        row = self.live(key)
        current = 0 if row is None else row[1]
        expected = current + 1 if stale else current
        if stale:
            with pytest.raises(VersionConflict):
                self.call(self.store.set, key, value, ttl=ttl, if_version=expected)
        else:
            version = self.call(self.store.set, key, value, ttl=ttl, if_version=expected)
            assert version == self.put(key, value, ttl)
            self.committed()

    @rule(key=keys, value=values, ttl=ttls)
    def update(self, key: str, value: Value, ttl: int | None) -> None:
        if self.live(key) is None:
            with pytest.raises(KeyMissing):
                self.call(self.store.update, key, value, ttl=ttl)
        else:
            assert self.call(self.store.update, key, value, ttl=ttl) == self.put(key, value, ttl)
            self.committed()

    @rule(key=keys)
    def get(self, key: str) -> None:
        row = self.live(key)
        assert self.call(self.store.get, key) == (None if row is None else row[0])
        got = self.call(self.store.get_versioned, key)
        assert (None if got is None else (got.value, got.version)) == (
            None if row is None else row[:2]
        )

    @rule(key=keys)
    def delete(self, key: str) -> None:
        existed = self.live(key) is not None
        self.rows.pop(key, None)
        assert self.call(self.store.delete, key) is existed

    @rule(items=st.dictionaries(keys, values, max_size=5), ttl=ttls)
    def set_many(self, items: dict[str, Value], ttl: int | None) -> None:
        self.call(self.store.set_many, items, ttl=ttl)
        for key, value in items.items():
            self.put(key, value, ttl)
        self.committed()

    @rule(wanted=st.lists(keys, max_size=5))
    def get_many(self, wanted: list[str]) -> None:
        expected = {k: r[0] for k in wanted if (r := self.live(k)) is not None}
        assert self.call(self.store.get_many, wanted) == expected

    @rule(wanted=st.lists(keys, max_size=5))
    def delete_many(self, wanted: list[str]) -> None:
        unique = set(wanted)
        live = sum(1 for k in unique if self.live(k) is not None)
        for key in unique:
            self.rows.pop(key, None)
        assert self.call(self.store.delete_many, wanted) == live

    @rule(
        prefix=st.text(alphabet="ab/é\U0001f600", max_size=2),
        after=st.none() | keys,
        limit=st.none() | st.integers(0, 6),
    )
    def scan(self, prefix: str, after: str | None, limit: int | None) -> None:
        async def collect() -> list[tuple[str, Value]]:
            return [kv async for kv in self.store.scan(prefix, limit=limit, after=after)]

        expected = [
            (k, v)
            for k, v in self.live_items()
            if k.startswith(prefix) and (after is None or k > after)
        ]
        assert self.host.run(collect) == expected[:limit]

    @rule(prefix=st.text(alphabet="ab/é\U0001f600", max_size=2))
    def keys(self, prefix: str) -> None:
        async def collect() -> list[str]:
            return [k async for k in self.store.keys(prefix)]

        assert self.host.run(collect) == [k for k, _ in self.live_items() if k.startswith(prefix)]

    @rule()
    def list_all(self) -> None:
        assert self.call(self.store.list) == dict(self.live_items())

    @rule(seconds=st.integers(0, 20))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def purge(self) -> None:
        expired = [k for k, r in self.rows.items() if r[2] is not None and r[2] <= self.clock.now]
        for key in expired:
            del self.rows[key]
        assert self.call(self.provider.purge_expired) == len(expired)  # type: ignore[attr-defined]

    @rule()
    def reopen(self) -> None:
        self._close()
        if self.profile == "memory":
            self.rows.clear()
            self.seq = 0
        else:
            self.seq = self.reserved  # versions continue above the reservation
        self._open()

    @invariant()
    def count_matches(self) -> None:
        assert self.call(self.store.count) == len(self.live_items())


KEY = secrets.token_urlsafe(32)


@pytest.mark.parametrize("profile", ["memory", "sqlite", "encrypted-sqlite"])
def test_store_machine(profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fame._storage._kv.PAGE_SIZE", 3)  # make scans cross pages

    class Machine(StoreMachine):
        pass

    Machine.profile = profile
    Machine.directory = tmp_path
    Machine.TestCase.settings = settings(
        max_examples=150,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Machine.TestCase().runTest()


def test_store_machine_postgres(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same machine on the postgres profile, each example in a new schema.

    Fewer examples than the file profiles: every step is a round trip to the
    server, and each example opens the provider (tables made) afresh.
    """
    monkeypatch.setattr("fame._storage._kv.PAGE_SIZE", 3)  # make scans cross pages

    class Machine(StoreMachine):
        profile = "postgres"
        reserves_versions = False

        def new_config(self) -> StorageConfig:
            return StorageConfig(
                profile="postgres",
                postgres_dsn=postgres_server.new_dsn(),
                master_key=parse_master_key(KEY),
            )

    Machine.TestCase.settings = settings(
        max_examples=POSTGRES_EXAMPLES,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Machine.TestCase().runTest()


POSTGRES_EXAMPLES = 40
