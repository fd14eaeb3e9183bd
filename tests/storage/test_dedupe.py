"""Writes deduplicated by request id: applied once, a retry answers the original.

Real stores on real files (the ``provider``/``opener`` fixtures run each test
on the memory, sqlite and encrypted-sqlite profiles), a clock the test moves
for the time window, and a file capped in size for a commit that fails.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fame._storage import (
    KeyMissing,
    StorageConfig,
    StorageConfigError,
    StorageError,
    StorageProvider,
    StorageWriteFailed,
    VersionConflict,
    Versioned,
    _request_slots,
    open_storage,
    storage_config_from_env,
)
from fame._storage._dedupe import (
    MAX_REQUEST_ID_LENGTH,
    DedupeLimits,
    DeleteAnswer,
    PutAnswer,
    encode_answer,
)
from fame._storage._memory import MemoryBackend
from fame._storage._ops import Put
from fame._storage._sqlcipher_backend import _SCHEMA, FORMAT, open_sqlite

from .conftest import FakeClock, make_config

FILE_PROFILES = ("sqlite", "encrypted-sqlite")


class Doc(msgspec.Struct):
    body: str


Opener = Callable[..., AbstractAsyncContextManager[StorageProvider]]


@pytest.fixture
def open_with(profile: str, tmp_path: Path, clock: FakeClock) -> Opener:
    """Opens a provider of ``profile`` on one directory and key, with the settings given."""
    key = secrets.token_urlsafe(32)

    def open_(**kw: object) -> AbstractAsyncContextManager[StorageProvider]:
        return open_storage(make_config(profile, tmp_path / "db", key, **kw), clock=clock)

    return open_


async def next_version(store) -> int:  # type: ignore[no-untyped-def]
    """The version the next write gets: shows how many writes were applied before."""
    version: int = await store.set("__probe", Doc("p"))
    return version


async def test_set_and_update_replay_the_original_version(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    first = await store.set("k", Doc("a"), request_id="r1")
    assert await store.set("k", Doc("b"), request_id="r1") == first
    assert await store.get("k") == Doc("a")
    assert await next_version(store) == first + 1  # the retry took no version

    # A retry ignores the precondition that held for the original.
    conditional = await store.set("c", Doc("1"), if_version=0, request_id="r2")
    assert await store.set("c", Doc("2"), if_version=0, request_id="r2") == conditional
    assert await store.get_versioned("c") == Versioned(Doc("1"), conditional)

    updated = await store.update("k", Doc("u"), request_id="r3")
    assert await store.delete("k") is True
    assert await store.update("k", Doc("again"), request_id="r3") == updated
    assert await store.get("k") is None  # the retry did not bring the key back


async def test_delete_and_delete_many_replay_the_original_answer(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    await store.set_many({"a": Doc("a"), "b": Doc("b"), "c": Doc("c")})
    assert await store.delete("a", request_id="d1") is True
    await store.set("a", Doc("back"))
    assert await store.delete("a", request_id="d1") is True
    assert await store.get("a") == Doc("back")

    assert await store.delete("missing", request_id="d2") is False
    await store.set("missing", Doc("now here"))
    assert await store.delete("missing", request_id="d2") is False
    assert await store.get("missing") == Doc("now here")

    assert await store.delete_many(["b", "c", "x"], request_id="d3") == 2
    await store.set_many({"b": Doc("b2"), "c": Doc("c2"), "x": Doc("x2")})
    assert await store.delete_many(["b", "c", "x"], request_id="d3") == 2
    assert await store.count() == 5  # a, missing, b, c, x: nothing deleted by the retry


async def test_set_many_is_applied_once(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    await store.set_many({"a": Doc("1"), "b": Doc("1")}, request_id="m1")
    before = await next_version(store)
    await store.set_many({"a": Doc("2"), "z": Doc("2")}, request_id="m1")
    assert await store.get_many(["a", "b", "z"]) == {"a": Doc("1"), "b": Doc("1")}
    assert await next_version(store) == before + 1


async def test_set_versioned_replays_the_original_value(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    first = await store.set_versioned("k", Doc("original"), request_id="v1")
    assert first == Versioned(Doc("original"), first.version)
    overwritten = await store.set("k", Doc("later"))
    replay = await store.set_versioned("k", Doc("retry"), request_id="v1")
    assert replay == first
    assert await store.get_versioned("k") == Versioned(Doc("later"), overwritten)
    # Without a request id it is a plain write that answers what it stored.
    plain = await store.set_versioned("k", Doc("plain"))
    assert plain == Versioned(Doc("plain"), overwritten + 1)


async def test_failed_preconditions_are_not_recorded(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    with pytest.raises(KeyMissing):
        await store.update("k", Doc("u"), request_id="p1")
    await store.set("k", Doc("x"))
    version = await store.update("k", Doc("u"), request_id="p1")  # judged afresh
    assert await store.get_versioned("k") == Versioned(Doc("u"), version)

    with pytest.raises(VersionConflict):
        await store.set("k", Doc("c"), if_version=1234, request_id="p2")
    again = await store.set("k", Doc("c"), if_version=version, request_id="p2")
    assert await store.get_versioned("k") == Versioned(Doc("c"), again)


async def test_an_id_reused_for_another_kind_of_write_is_refused(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    await store.set("k", Doc("a"), request_id="same")
    with pytest.raises(StorageError, match="another kind of write"):
        await store.delete("k", request_id="same")
    with pytest.raises(StorageError, match="another kind of write"):
        await store.delete_many(["k"], request_id="same")
    assert await store.get("k") == Doc("a")
    # set, update and set_versioned are all one kind (a put): each replays the first.
    version = await store.update("k", Doc("b"), request_id="same")
    assert (await store.set_versioned("k", Doc("c"), request_id="same")).version == version
    assert await store.get("k") == Doc("a")


async def test_many_concurrent_retries_apply_once(provider) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    answers: list[int] = []

    async def writer(i: int) -> None:
        answers.append(await store.set("k", Doc(f"w{i}"), request_id="once"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(writer, i)
    assert len(answers) == 100 and len(set(answers)) == 1
    (version,) = set(answers)
    assert await next_version(store) == version + 1  # exactly one write took a version
    value = await store.get("k")
    assert value is not None and value.body.startswith("w")


@pytest.mark.parametrize("backend_kind", ["memory", "encrypted-sqlite"])
def test_the_same_id_twice_in_one_transaction(backend_kind: str, tmp_path: Path) -> None:
    if backend_kind == "memory":
        backend = MemoryBackend("ns")
    else:
        backend = open_sqlite(tmp_path / "ns.db", "ns", secrets.token_bytes(32))
    try:
        results = backend.write(
            [
                Put("k", b"\xa1a", must_exist=True, request_id="r"),  # fails: nothing recorded
                Put("k", b"\xa1b", request_id="r"),  # applied
                Put("k", b"\xa1c", request_id="r"),  # replays the one before
                Put("j", b"\xa1d", request_id="r"),  # replays it too, whatever the key
            ],
            1000.0,
        )
        assert isinstance(results[0], KeyMissing)
        assert results[1] == results[2] == results[3] == PutAnswer(1, b"\xa1b")
        assert backend.write([Put("k", b"\xa1e", request_id="r")], 1001.0) == [
            PutAnswer(1, b"\xa1b")
        ]
    finally:
        backend.close()


@pytest.mark.parametrize("profile", FILE_PROFILES)
async def test_records_survive_a_restart(open_with: Opener) -> None:
    async with open_with() as provider:
        store = await provider.get_kv_store(Doc, "ns")
        first = await store.set_versioned("k", Doc("a"), request_id="keep")
        await store.set("k", Doc("b"))
    async with open_with() as provider:
        store = await provider.get_kv_store(Doc, "ns")
        assert await store.set_versioned("k", Doc("c"), request_id="keep") == first
        assert await store.get("k") == Doc("b")


async def test_a_retry_after_the_time_window_is_applied_again(
    open_with: Opener, clock: FakeClock
) -> None:
    async with open_with(dedupe_window=100.0) as provider:
        store = await provider.get_kv_store(Doc, "ns")
        first = await store.set("k", Doc("a"), request_id="t")
        clock.advance(99.5)
        assert await store.set("k", Doc("b"), request_id="t") == first
        clock.advance(1)
        again = await store.set("k", Doc("c"), request_id="t")
        assert again > first and await store.get("k") == Doc("c")
        assert await store.set("k", Doc("d"), request_id="t") == again  # recorded anew


async def test_a_namespace_remembers_the_newest_ids_only(
    open_with: Opener, profile: str, tmp_path: Path, clock: FakeClock
) -> None:
    async with open_with(dedupe_entries=5) as provider:
        store = await provider.get_kv_store(Doc, "ns")
        versions = {}
        for i in range(12):
            clock.advance(1)
            versions[i] = await store.set(f"k{i}", Doc("first"), request_id=f"id{i}")
        for i in range(7, 12):  # the newest five are replayed
            assert await store.set(f"k{i}", Doc("retry"), request_id=f"id{i}") == versions[i]
        applied = await store.set("k0", Doc("retry"), request_id="id0")  # forgotten
        assert applied > versions[11] and await store.get("k0") == Doc("retry")
    if profile == "sqlite":
        conn = sqlite3.connect(tmp_path / "db" / "ns_value.db")
        try:
            (rows,) = conn.execute("SELECT count(*) FROM fame_requests").fetchone()
        finally:
            conn.close()
        assert rows == 5


async def test_expired_records_are_pruned_by_writes_and_by_purge(
    open_with: Opener, profile: str, tmp_path: Path, clock: FakeClock
) -> None:
    async with open_with(dedupe_window=10.0) as provider:
        store = await provider.get_kv_store(Doc, "ns")
        for i in range(20):
            await store.set(f"k{i}", Doc("x"), request_id=f"old{i}")
        clock.advance(11)
        await store.set("k", Doc("x"), request_id="new")  # prunes the expired ones
        clock.advance(11)
        await provider.purge_expired()  # and so does the periodic purge
    if profile == "sqlite":
        conn = sqlite3.connect(tmp_path / "db" / "ns_value.db")
        try:
            assert conn.execute("SELECT count(*) FROM fame_requests").fetchone() == (0,)
        finally:
            conn.close()


@pytest.mark.parametrize("profile", FILE_PROFILES)
async def test_a_failed_commit_records_nothing(open_with: Opener) -> None:
    async with open_with(max_file_bytes=64 * 1024) as provider:
        store = await provider.get_kv_store(Doc, "full")
        base = await store.set("base", Doc("b"), request_id="base")
        with pytest.raises(StorageWriteFailed):
            await store.set("big", Doc("x" * 100_000), request_id="big")
        assert await store.get("big") is None
        # The retry is judged afresh: it is applied, and recorded this time.
        version = await store.set("big", Doc("small"), request_id="big")
        assert version == base + 1
        assert await store.set("big", Doc("other"), request_id="big") == version
        assert await store.get("big") == Doc("small")


@pytest.mark.parametrize(
    "bad", ["", "x" * (MAX_REQUEST_ID_LENGTH + 1), 7, b"bytes", "\ud800", ["r"]]
)
async def test_bad_request_ids_are_refused(provider, bad: object) -> None:
    store = await provider.get_kv_store(Doc, "ns")
    calls = [
        store.set("k", Doc("a"), request_id=bad),
        store.set_versioned("k", Doc("a"), request_id=bad),
        store.update("k", Doc("a"), request_id=bad),
        store.delete("k", request_id=bad),
        store.set_many({"k": Doc("a")}, request_id=bad),
        store.delete_many(["k"], request_id=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="request id"):
            await call
    assert await store.count() == 0
    longest = "é" * MAX_REQUEST_ID_LENGTH
    version = await store.set("k", Doc("a"), request_id=longest)
    assert await store.set("k", Doc("b"), request_id=longest) == version


async def test_a_file_of_the_previous_version_gets_the_table(
    tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "db"
    directory.mkdir(mode=0o700)
    conn = sqlite3.connect(directory / "old_value.db")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO fame_meta VALUES ('format', ?), ('seq', 1000)", (FORMAT,))
    conn.execute("INSERT INTO kv VALUES ('kept', ?, 7, NULL)", (msgspec.msgpack.encode(Doc("k")),))
    conn.commit()
    conn.close()
    config = make_config("sqlite", directory)
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Doc, "old")
        assert await store.get_versioned("kept") == Versioned(Doc("k"), 7)
        version = await store.set("new", Doc("n"), request_id="r")
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Doc, "old")
        assert await store.set("new", Doc("again"), request_id="r") == version
        assert await store.list() == {"kept": Doc("k"), "new": Doc("n")}


def _request_rows(path: Path) -> list[tuple[int, str]]:
    """The (n, id) of every request record in a plain sqlite file, oldest first."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT n, id FROM fame_requests ORDER BY n").fetchall()
    finally:
        conn.close()


async def test_a_file_with_the_index_on_ids_keeps_its_records(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The table's first layout had an index on id: opening drops it, keeps every record."""
    directory = tmp_path / "db"
    directory.mkdir(mode=0o700)
    path = directory / "old_value.db"
    conn = sqlite3.connect(path)
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "CREATE TABLE fame_requests (n INTEGER PRIMARY KEY, id TEXT NOT NULL,"
        " at REAL NOT NULL, answer BLOB NOT NULL)"
    )
    conn.execute("CREATE UNIQUE INDEX fame_requests_id ON fame_requests (id)")
    conn.execute("INSERT INTO fame_meta VALUES ('format', ?), ('seq', 1000)", (FORMAT,))
    stored = msgspec.msgpack.encode(Doc("v"))
    conn.execute("INSERT INTO kv VALUES ('k', ?, 7, NULL)", (stored,))
    # Ids that sort against the order they were recorded in: the order is n's.
    for n in range(8):
        answer = encode_answer(PutAnswer(n + 1, stored) if n else DeleteAnswer(True))
        conn.execute(
            "INSERT INTO fame_requests VALUES (?, ?, ?, ?)",
            (n + 5, f"r{99 - n}", clock.now - 60 + n, answer),
        )
    conn.commit()
    conn.close()
    config = make_config("sqlite", directory, dedupe_entries=8)
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Doc, "old")
        assert await store.get_versioned("k") == Versioned(Doc("v"), 7)
        assert await store.delete("k", request_id="r99") is True  # replayed
        for n in range(1, 8):
            assert await store.set("k", Doc("x"), request_id=f"r{99 - n}") == n + 1
        assert await store.get("k") == Doc("v")
        await store.set("a", Doc("a"), request_id="new1")  # pushes out the oldest, r99
    conn = sqlite3.connect(path)
    try:
        indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    finally:
        conn.close()
    assert ("fame_requests_id",) not in indexes
    rows = _request_rows(path)
    assert [request_id for _n, request_id in rows] == [f"r{99 - n}" for n in range(1, 8)] + ["new1"]
    assert rows[-1][0] > rows[-2][0]  # appended after the old rows
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Doc, "old")
        assert await store.set("k", Doc("y"), request_id="r98") == 2  # still remembered
        assert await store.delete("k", request_id="r99") is True  # forgotten: applied anew
        assert await store.get("k") is None


@pytest.mark.parametrize("profile", FILE_PROFILES)
async def test_ids_whose_slots_clash_are_kept_apart(
    open_with: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id in one slot (a hash that clashes always): each still finds its own record."""
    monkeypatch.setattr(_request_slots, "slot_hash", lambda request_id: 7)
    async with open_with(dedupe_entries=6) as provider:
        store = await provider.get_kv_store(Doc, "ns")
        first = {
            f"c{i}": await store.set(f"k{i}", Doc(f"{i}"), request_id=f"c{i}") for i in range(4)
        }

        async def put(i: int) -> None:
            await store.set(f"k{i}", Doc(f"{i}"), request_id=f"c{i}")

        # Concurrent writes share a group commit: new ids may clash in one transaction.
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in (4, 5):
                    nursery.start_soon(put, i)
        for i in range(4):
            assert await store.set(f"k{i}", Doc("retry"), request_id=f"c{i}") == first[f"c{i}"]
    async with open_with(dedupe_entries=6) as provider:  # the map read back from the file
        store = await provider.get_kv_store(Doc, "ns")
        for i in range(4):
            assert await store.set(f"k{i}", Doc("retry"), request_id=f"c{i}") == first[f"c{i}"]
        before = await next_version(store)
        for i in (4, 5):
            await store.set(f"k{i}", Doc("retry"), request_id=f"c{i}")
        assert await next_version(store) == before + 1  # both replayed
        await store.set("n", Doc("n"), request_id="c6")  # pushes out the oldest, c0
        assert await store.set("k1", Doc("again"), request_id="c1") == first["c1"]
        assert await store.set("k0", Doc("again"), request_id="c0") > before
        assert await store.get_many(["k0", "k1"]) == {"k0": Doc("again"), "k1": Doc("1")}


async def test_a_damaged_record_fails_its_retry_only(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config("sqlite", tmp_path / "db")
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Doc, "ns")
        await store.set("k", Doc("a"), request_id="bad-answer")
        await store.set("j", Doc("a"), request_id="bad-time")
    conn = sqlite3.connect(tmp_path / "db" / "ns_value.db")
    conn.execute("UPDATE fame_requests SET answer = x'c1' WHERE id = 'bad-answer'")
    conn.execute("UPDATE fame_requests SET at = 'noon', answer = 7 WHERE id = 'bad-time'")
    conn.commit()
    conn.close()
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Doc, "ns")
        for key, request_id in (("k", "bad-answer"), ("j", "bad-time")):
            with pytest.raises(StorageError, match="is damaged; the retry wrote nothing"):
                await store.set(key, Doc("b"), request_id=request_id)
        assert await store.get_many(["k", "j"]) == {"k": Doc("a"), "j": Doc("a")}
        version = await store.set("k", Doc("c"), request_id="fresh")
        assert await store.set("k", Doc("d"), request_id="fresh") == version


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FAME_STORAGE_DEDUPE_WINDOW": "soon"}, "FAME_STORAGE_DEDUPE_WINDOW"),
        ({"FAME_STORAGE_DEDUPE_WINDOW": "0"}, "FAME_STORAGE_DEDUPE_WINDOW"),
        ({"FAME_STORAGE_DEDUPE_WINDOW": "-5"}, "FAME_STORAGE_DEDUPE_WINDOW"),
        ({"FAME_STORAGE_DEDUPE_WINDOW": "inf"}, "FAME_STORAGE_DEDUPE_WINDOW"),
        ({"FAME_STORAGE_DEDUPE_WINDOW": "nan"}, "FAME_STORAGE_DEDUPE_WINDOW"),
        ({"FAME_STORAGE_DEDUPE_ENTRIES": "0"}, "FAME_STORAGE_DEDUPE_ENTRIES"),
        ({"FAME_STORAGE_DEDUPE_ENTRIES": "2.5"}, "FAME_STORAGE_DEDUPE_ENTRIES"),
        ({"FAME_STORAGE_DEDUPE_ENTRIES": "many"}, "FAME_STORAGE_DEDUPE_ENTRIES"),
        ({"FAME_STORAGE_DEDUPE_ENTRIES": "9" * 5000}, "FAME_STORAGE_DEDUPE_ENTRIES"),
    ],
)
def test_bad_dedupe_settings(env: dict[str, str], variable: str) -> None:
    with pytest.raises(StorageConfigError) as info:
        storage_config_from_env(env)
    assert info.value.variable == variable


def test_dedupe_settings() -> None:
    assert storage_config_from_env({}).dedupe == DedupeLimits(86_400.0, 100_000)
    config = storage_config_from_env(
        {"FAME_STORAGE_DEDUPE_WINDOW": " 3600.5 ", "FAME_STORAGE_DEDUPE_ENTRIES": "250"}
    )
    assert (config.dedupe_window, config.dedupe_entries) == (3600.5, 250)
    for kw in ({"dedupe_window": 0.0}, {"dedupe_entries": 0}, {"dedupe_entries": True}):
        with pytest.raises(StorageConfigError):
            StorageConfig(**kw)  # type: ignore[arg-type]


# -- a property: against a simple model, each id applied at most once ----------

KINDS = ("set", "set_versioned", "update", "delete")
ids = st.none() | st.sampled_from(["a", "b", "c", "d"])
steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(["k1", "k2"]), st.integers(0, 9), ids),
    max_size=25,
)


class Model:
    """What the store must do: a dict of values, a version counter, the answers by id."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[int, int]] = {}  # key -> (value, version)
        self.seq = 0
        self.answers: dict[str, tuple[str, object]] = {}  # id -> (kind of write, answer)

    def run(self, kind: str, key: str, value: int, request_id: str | None) -> object:
        family = "delete" if kind == "delete" else "put"
        if request_id is not None and request_id in self.answers:
            recorded_family, answer = self.answers[request_id]
            if recorded_family != family:
                return StorageError
            if kind == "set_versioned":
                return answer
            if kind == "delete":
                return answer
            assert isinstance(answer, tuple)
            return answer[1]  # the version
        if kind == "delete":
            answer: object = self.values.pop(key, None) is not None
        elif kind == "update" and key not in self.values:
            return KeyMissing
        else:
            self.seq += 1
            self.values[key] = (value, self.seq)
            answer = (value, self.seq)
        if request_id is not None:
            self.answers[request_id] = (family, answer)
        if kind in ("set", "update"):
            assert isinstance(answer, tuple)
            return answer[1]
        return answer


async def _run_store(store, kind: str, key: str, value: int, request_id: str | None) -> object:  # type: ignore[no-untyped-def]
    try:
        if kind == "set":
            return await store.set(key, Doc(str(value)), request_id=request_id)
        if kind == "set_versioned":
            got = await store.set_versioned(key, Doc(str(value)), request_id=request_id)
            return (int(got.value.body), got.version)
        if kind == "update":
            return await store.update(key, Doc(str(value)), request_id=request_id)
        return await store.delete(key, request_id=request_id)
    except KeyMissing:
        return KeyMissing
    except StorageError:
        return StorageError


@pytest.mark.parametrize("profile", ["memory", "encrypted-sqlite"])
def test_replays_match_a_model(profile: str, tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps=steps)
    def check(steps: list[tuple[str, str, int, str | None]]) -> None:
        config = make_config(profile, tmp_path / secrets.token_hex(6), key)

        async def main() -> None:
            model = Model()
            with trio.fail_after(60):
                async with open_storage(config) as provider:
                    store = await provider.get_kv_store(Doc, "ns")
                    for kind, k, value, request_id in steps:
                        expected = model.run(kind, k, value, request_id)
                        got = await _run_store(store, kind, k, value, request_id)
                        assert got == expected, (kind, k, value, request_id)
                    stored = await store.list()
            assert stored == {k: Doc(str(v)) for k, (v, _version) in model.values.items()}

        trio.run(main)

    check()
