"""The key-value API, the same for every profile."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import attrs
import msgspec
import pytest
import trio

from fame._storage import (
    DatabaseInUse,
    InvalidKey,
    InvalidNamespace,
    KeyMissing,
    RecordInvalid,
    VersionConflict,
    Versioned,
    open_storage,
)

from .conftest import FakeClock, hashes, make_config


class Record(msgspec.Struct):
    value: str
    created: datetime.datetime


@attrs.define
class AttrsRecord:
    name: str
    size: int


@dataclasses.dataclass
class DataRecord:
    name: str
    tags: list[str]


def rec(value: str) -> Record:
    return Record(value, datetime.datetime(2025, 10, 29, 23, 39, 36, tzinfo=datetime.UTC))


async def test_seed_api(provider) -> None:
    store = await provider.get_kv_store(Record, "storage_agent_namespace")
    assert await store.get("missing") is None
    await store.set("k1", rec("Hello, World!"))
    assert await store.get("k1") == rec("Hello, World!")
    await store.set("k1", rec("again"))
    assert await store.list() == {"k1": rec("again")}
    await store.update("k1", rec("updated"))
    assert await store.get("k1") == rec("updated")
    with pytest.raises(KeyError, match="'nope' in namespace 'storage_agent_namespace'"):
        await store.update("nope", rec("x"))
    assert await store.delete("k1") is True
    assert await store.delete("k1") is False  # idempotent
    assert await store.get("k1") is None
    assert await store.list() == {}


@pytest.mark.parametrize(
    ("model", "value"),
    [(AttrsRecord, AttrsRecord("a", 3)), (DataRecord, DataRecord("d", ["x", "y"]))],
)
async def test_attrs_and_dataclass_models(provider, model, value) -> None:
    store = await provider.get_kv_store(model, "models")
    await store.set("k", value)
    assert await store.get("k") == value


async def test_values_are_validated_on_set(provider) -> None:
    store = await provider.get_kv_store(Record, "ns")
    with pytest.raises(RecordInvalid, match=r"key 'k' in namespace 'ns' .* Record"):
        await store.set("k", Record(123, datetime.datetime.now()))  # type: ignore[arg-type]
    with pytest.raises(RecordInvalid, match="expected an instance"):
        await store.set("k", {"value": "x"})  # type: ignore[arg-type]
    assert await store.count() == 0


async def test_record_that_no_longer_fits_the_model(provider, tmp_path: Path) -> None:
    old = await provider.get_kv_store(AttrsRecord, "migrating")
    await old.set("rec-1", AttrsRecord("a", 1))
    before = hashes(tmp_path)
    new = await provider.get_kv_store(DataRecord, "migrating")
    for read in (new.get("rec-1"), new.list(), new.get_many(["rec-1"])):
        with pytest.raises(
            RecordInvalid, match="stored record for key 'rec-1' in namespace 'migrating'"
        ):
            await read
    assert hashes(tmp_path) == before
    assert await old.get("rec-1") == AttrsRecord("a", 1)  # still there, unchanged


async def test_a_scan_delivers_the_records_before_one_that_does_not_fit(provider) -> None:
    # Values are decoded where the rows are read; one that does not decode
    # there is decoded again in the caller's task, which names its key.
    old = await provider.get_kv_store(AttrsRecord, "mixed")
    await old.set_many({f"k{i:03}": AttrsRecord(str(i), i) for i in range(40)})
    await old.set("k020", AttrsRecord("bad", 20))
    other = await provider.get_kv_store(DataRecord, "mixed")
    await other.set("k020", DataRecord("bad", ["x"]))
    seen: list[str] = []
    with pytest.raises(RecordInvalid) as info:
        async for key, value in old.scan():
            assert value == AttrsRecord(str(int(key[1:])), int(key[1:]))
            seen.append(key)
    assert seen == [f"k{i:03}" for i in range(20)]
    assert (info.value.namespace, info.value.key) == ("mixed", "k020")
    assert [key async for key, _ in old.scan(after="k020")] == [f"k{i:03}" for i in range(21, 40)]


async def test_keys_are_checked(provider) -> None:
    store = await provider.get_kv_store(Record, "ns")
    for bad in ("", "a\x00b", "x" * 1025, "\ud800"):
        with pytest.raises(InvalidKey):
            await store.set(bad, rec("v"))
    with pytest.raises(InvalidKey):
        await store.get(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "namespace", ["__node_meta", "__x", "", "-a", ".hidden", "a/b", "../up", "a\\b", "é", "x" * 129]
)
async def test_agent_namespaces_refused(provider, namespace, tmp_path: Path) -> None:
    with pytest.raises(InvalidNamespace):
        await provider.get_kv_store(Record, namespace)
    assert list(hashes(tmp_path)) == []  # no file anywhere below tmp_path


async def test_internal_namespaces(provider, profile, tmp_path: Path) -> None:
    meta = await provider.get_internal_kv_store(Record, "__node_meta")
    await meta.set("id", rec("node"))
    agent = await provider.get_kv_store(Record, "node_meta")
    assert await agent.get("id") is None
    with pytest.raises(InvalidNamespace):
        await provider.get_internal_kv_store(Record, "node_meta")
    with pytest.raises(InvalidNamespace):
        await provider.get_internal_kv_store(Record, "__../x")
    if profile != "memory":
        suffix = "_encrypted_value.db" if profile == "encrypted-sqlite" else "_value.db"
        names = {p.name for p in (tmp_path / "db").iterdir()}
        assert "__node_meta" + suffix in names
        assert "node_meta" + suffix in names


async def test_bulk(provider) -> None:
    store = await provider.get_kv_store(AttrsRecord, "bulk")
    await store.set_many({f"k{i:03}": AttrsRecord(str(i), i) for i in range(50)})
    assert await store.count() == 50
    got = await store.get_many(["k001", "k049", "missing", "k001"])
    assert got == {"k001": AttrsRecord("1", 1), "k049": AttrsRecord("49", 49)}
    assert await store.delete_many(["k001", "k002", "missing"]) == 2
    assert await store.count() == 48
    # One bad value refuses the whole call before anything is sent.
    with pytest.raises(RecordInvalid):
        await store.set_many([("ok", AttrsRecord("a", 1)), ("bad", AttrsRecord("b", "x"))])  # type: ignore[arg-type]
    assert await store.get("ok") is None


async def test_scan_and_keys_page_through(provider, monkeypatch) -> None:
    monkeypatch.setattr("fame._storage._kv.PAGE_SIZE", 7)
    store = await provider.get_kv_store(AttrsRecord, "scan")
    await store.set_many({f"{p}{i:02}": AttrsRecord(p, i) for p in "ab" for i in range(30)})
    await store.set("b", AttrsRecord("exact", 0))
    keys = [k async for k in store.keys()]  # noqa: SIM118 (an async iterator)
    assert keys == sorted(keys) and len(keys) == 61
    assert [k async for k in store.keys(prefix="b")] == ["b"] + [f"b{i:02}" for i in range(30)]
    pairs = [kv async for kv in store.scan(prefix="a", after="a09", limit=10)]
    assert [k for k, _ in pairs] == [f"a{i:02}" for i in range(10, 20)]
    assert pairs[0][1] == AttrsRecord("a", 10)
    assert [k async for k, _ in store.scan(prefix="a", after="a28")] == ["a29"]
    assert [k async for k, _ in store.scan(after="zzz")] == []
    assert [k async for k, _ in store.scan(limit=0)] == []
    assert len(await store.list()) == 61


async def test_versions(provider) -> None:
    store = await provider.get_kv_store(AttrsRecord, "versions")
    assert await store.get_versioned("k") is None
    v1 = await store.set("k", AttrsRecord("a", 1), if_version=0)
    assert await store.get_versioned("k") == Versioned(AttrsRecord("a", 1), v1)
    with pytest.raises(VersionConflict) as info:
        await store.set("k", AttrsRecord("b", 2), if_version=0)
    assert (info.value.expected, info.value.actual) == (0, v1)
    v2 = await store.set("k", AttrsRecord("b", 2), if_version=v1)
    assert v2 > v1
    with pytest.raises(VersionConflict):
        await store.set("k", AttrsRecord("c", 3), if_version=v1)
    assert await store.get("k") == AttrsRecord("b", 2)
    # A version is never reused, not even after a delete and re-create.
    await store.delete("k")
    v3 = await store.set("k", AttrsRecord("d", 4), if_version=0)
    assert v3 > v2
    with pytest.raises(VersionConflict):
        await store.set("k", AttrsRecord("e", 5), if_version=v1)


async def test_ttl(provider, clock: FakeClock) -> None:
    store = await provider.get_kv_store(AttrsRecord, "ttl")
    await store.set("short", AttrsRecord("s", 1), ttl=10)
    await store.set("long", AttrsRecord("l", 2), ttl=100)
    await store.set_many({"bulk": AttrsRecord("b", 3)}, ttl=10)
    await store.set("forever", AttrsRecord("f", 4))
    clock.advance(9.9)
    assert await store.count() == 4
    clock.advance(0.2)
    assert await store.get("short") is None
    assert await store.get_versioned("bulk") is None
    assert await store.get_many(["short", "long"]) == {"long": AttrsRecord("l", 2)}
    assert await store.list() == {"long": AttrsRecord("l", 2), "forever": AttrsRecord("f", 4)}
    assert [k async for k in store.keys()] == ["forever", "long"]  # noqa: SIM118
    assert await store.count() == 2
    with pytest.raises(KeyMissing):
        await store.update("short", AttrsRecord("s", 9))
    assert await store.set("short", AttrsRecord("s2", 5), if_version=0) > 0
    assert await store.delete("bulk") is False
    clock.advance(100)
    assert await provider.purge_expired() == 1  # "long"; "bulk" was deleted, "short" re-set
    assert await store.list() == {"short": AttrsRecord("s2", 5), "forever": AttrsRecord("f", 4)}
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="ttl"):
            await store.set("x", AttrsRecord("x", 0), ttl=bad)


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_data_survives_reopen_and_close_is_clean(opener, tmp_path: Path) -> None:
    async with opener() as provider:
        store = await provider.get_kv_store(Record, "persist")
        await store.set("k", rec("kept"))
        v = (await store.get_versioned("k")).version
    leftovers = [p.name for p in (tmp_path / "db").iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert leftovers == []
    # Readable by the owner only, like the directory the provider created.
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "db").iterdir())
    async with opener() as provider:
        store = await provider.get_kv_store(Record, "persist")
        assert await store.get_versioned("k") == Versioned(rec("kept"), v)
        assert await store.set("k2", rec("next")) > v  # versions are never reused


@pytest.mark.parametrize("profile", ["memory"])
async def test_memory_lives_as_long_as_the_provider(opener) -> None:
    async with opener() as provider:
        store = await provider.get_kv_store(Record, "mem")
        await store.set("k", rec("v"))
    async with opener() as provider:
        store = await provider.get_kv_store(Record, "mem")
        assert await store.count() == 0


async def test_an_error_in_the_block_propagates_and_closes_cleanly(
    opener, profile, tmp_path: Path
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with opener() as provider:
            store = await provider.get_kv_store(Record, "boom")
            await store.set("k", rec("v"))
            1 / 0  # noqa: B018
    if profile != "memory":
        assert not [p for p in (tmp_path / "db").iterdir() if p.name.endswith("-wal")]


async def test_cancelling_the_block_still_closes_cleanly(opener, profile, tmp_path: Path) -> None:
    # The deadline starts after the first commit, so the cancel always lands
    # among writes in flight rather than, on a slow machine, before any.
    with trio.CancelScope() as scope:
        async with opener() as provider:
            store = await provider.get_kv_store(Record, "cancelled")
            await store.set("k", rec("v"))
            scope.deadline = trio.current_time() + 0.05
            while True:
                await store.set("k", rec("v"))
    assert scope.cancelled_caught
    if profile != "memory":
        assert not [p for p in (tmp_path / "db").iterdir() if p.name.endswith("-wal")]
        async with opener() as provider:
            store = await provider.get_kv_store(Record, "cancelled")
            assert await store.get("k") == rec("v")


async def test_expired_rows_are_purged_in_the_background(clock: FakeClock) -> None:
    # The purge loop is the same for every profile; the memory backend lets the
    # test look at the rows it holds (a file is locked by its storage actor).
    config = make_config("memory", Path())
    async with open_storage(config, clock=clock, purge_interval=0.01) as provider:
        store = await provider.get_kv_store(Record, "ttl")
        await store.set("gone", rec("v"), ttl=5)
        await store.set("kept", rec("v"))
        clock.advance(6)
        held = provider._memory["ttl"]._entries  # type: ignore[attr-defined]
        # Polling: the purge loop has no event to wait for, by design.
        for _ in range(3000):
            if set(held) == {"kept"}:
                break
            await trio.sleep(0.01)
        assert set(held) == {"kept"}
        assert await store.list() == {"kept": rec("v")}


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_a_second_provider_on_the_same_directory_is_refused(
    opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fame._storage._sqlcipher_backend.LOCK_WAIT", 0.05)
    async with opener() as provider:
        store = await provider.get_kv_store(Record, "owned")
        await store.set("k", rec("v"))
        before = hashes(tmp_path / "db")
        async with opener() as intruder:
            with pytest.raises(DatabaseInUse, match="owned_"):
                await intruder.get_kv_store(Record, "owned")
        assert hashes(tmp_path / "db") == before
        assert await store.get("k") == rec("v")
