"""The ``postgres`` profile against a real server: the API, sealing, two providers at once.

The server is the session's (``postgres_server``), each test in a schema of
its own. Every assertion is on fame's own types and fields.
"""

from __future__ import annotations

import secrets

import msgspec
import pytest
import trio

from fame._storage import (
    DamagedDatabase,
    KeyMissing,
    StorageConfig,
    StorageConfigError,
    StorageError,
    VersionConflict,
    WrongMasterKey,
    open_storage,
    parse_master_key,
    storage_config_from_env,
)

from .conftest import FakeClock
from .postgres_server import PostgresServer


class Item(msgspec.Struct):
    text: str
    n: int = 0


def pg_config(dsn: str, key: str | None = None, **kw: object) -> StorageConfig:
    return StorageConfig(
        profile="postgres",
        postgres_dsn=dsn,
        master_key=parse_master_key(key or secrets.token_urlsafe(32)),
        **kw,  # type: ignore[arg-type]
    )


async def test_the_key_value_api(postgres_dsn: str) -> None:
    clock = FakeClock()
    async with open_storage(pg_config(postgres_dsn), clock=clock) as provider:
        store = await provider.get_kv_store(Item, "items")
        v1 = await store.set("a", Item("one"))
        assert await store.get("a") == Item("one")
        v2 = await store.set("a", Item("two"), if_version=v1)
        assert v2 > v1
        with pytest.raises(VersionConflict) as conflict:
            await store.set("a", Item("three"), if_version=v1)
        assert (conflict.value.expected, conflict.value.actual) == (v1, v2)
        with pytest.raises(KeyMissing):
            await store.update("missing", Item("x"))
        assert await store.update("a", Item("four")) > v2
        await store.set_many({"b/1": Item("b1"), "b/2": Item("b2"), "c": Item("c")})
        assert await store.get_many(["a", "b/1", "zz"]) == {"a": Item("four"), "b/1": Item("b1")}
        assert [k async for k in store.keys("b/")] == ["b/1", "b/2"]
        assert [k async for k in store.scan(after="b/1")] == [
            ("b/2", Item("b2")),
            ("c", Item("c")),
        ]
        assert await store.count() == 4
        assert await store.delete("c") is True
        assert await store.delete("c") is False
        assert await store.delete_many(["b/1", "b/2", "nope"]) == 2
        assert await store.list() == {"a": Item("four")}
        got = await store.get_versioned("a")
        assert got is not None and got.value == Item("four")


def test_the_dsn_setting() -> None:
    key = secrets.token_urlsafe(32)
    env = {
        "FAME_STORAGE_PROFILE": "postgres",
        "FAME_STORAGE_POSTGRES_DSN": "host=db password=hunter2",
        "FAME_STORAGE_MASTER_KEY": key,
    }
    config = storage_config_from_env(env)
    assert config.postgres_dsn == "host=db password=hunter2"
    assert "hunter2" not in repr(config) and "FAME_STORAGE_POSTGRES_DSN" not in config.env
    with pytest.raises(StorageConfigError) as missing:
        storage_config_from_env({**env, "FAME_STORAGE_POSTGRES_DSN": " "})
    assert missing.value.variable == "FAME_STORAGE_POSTGRES_DSN"
    with pytest.raises(StorageConfigError) as keyless:
        storage_config_from_env({**env, "FAME_STORAGE_MASTER_KEY": ""})
    assert keyless.value.variable == "FAME_STORAGE_MASTER_KEY"


async def test_an_unreachable_server_is_a_storage_error(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fame._storage._postgres_backend.CONNECT_WAIT", 2.0)
    dsn = (
        f"host=127.0.0.1 port={postgres_server.port} user=nobody_here dbname=none connect_timeout=2"
    )
    with pytest.raises(StorageError) as info:
        async with open_storage(pg_config(dsn)):
            pass
    assert "PostgreSQL database 'none' on 127.0.0.1" in str(info.value)


async def test_a_wrong_master_key_is_refused(postgres_dsn: str) -> None:
    key = secrets.token_urlsafe(32)
    async with open_storage(pg_config(postgres_dsn, key)) as provider:
        await (await provider.get_kv_store(Item, "items")).set("k", Item("v"))
    with pytest.raises(WrongMasterKey) as info:
        async with open_storage(pg_config(postgres_dsn)):
            pass
    assert "fame_meta" in info.value.file and "PostgreSQL database" in info.value.directory
    async with open_storage(pg_config(postgres_dsn, key)) as provider:
        assert await (await provider.get_kv_store(Item, "items")).get("k") == Item("v")


async def test_the_server_never_sees_plaintext(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    marker = "plaintext-" + secrets.token_hex(8)
    key = "key-" + secrets.token_hex(8)
    namespace = "ns" + secrets.token_hex(4)
    async with open_storage(pg_config(postgres_dsn)) as provider:
        store = await provider.get_kv_store(Item, namespace)
        await store.set(key, Item(marker), request_id="req-" + marker)
        await store.set_many({f"{key}-{n}": Item(marker, n) for n in range(50)})
        assert await store.get(key) == Item(marker)
    # Everything the fame tables hold, as the server returns it.
    dump = b"".join(
        bytes(str(row), "utf-8")
        for table in ("fame_meta", "fame_ns", "fame_kv", "fame_requests")
        for row in postgres_server.sql(f"SELECT * FROM {table}", postgres_dsn)
    )
    assert len(postgres_server.sql("SELECT * FROM fame_kv", postgres_dsn)) == 51
    for secret in (marker, key, namespace):
        assert secret.encode() not in dump
        assert secret.encode().hex().encode() not in dump
    # And what it wrote to disk: the data directory, WAL included.
    postgres_server.sql("CHECKPOINT")
    for path in postgres_server.data.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (marker, key, namespace):
                assert secret.encode() not in data, path


async def test_a_record_moved_on_the_server_does_not_open(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    async with open_storage(pg_config(postgres_dsn)) as provider:
        store = await provider.get_kv_store(Item, "items")
        await store.set("a", Item("for a"))
        await store.set("b", Item("for b"))
        # The server swaps the two values: each still is a valid seal, of the other key.
        (h1, v1), (h2, v2) = postgres_server.sql(
            "SELECT key_hash, value FROM fame_kv", postgres_dsn
        )
        update = "UPDATE fame_kv SET value = %s WHERE key_hash = %s"
        postgres_server.sql(update, postgres_dsn, (v2, h1))
        postgres_server.sql(update, postgres_dsn, (v1, h2))
        with pytest.raises(DamagedDatabase) as info:
            await store.get("a")
        assert info.value.key == "a"
        await store.set("0", Item("before both"))
        delivered = []
        with pytest.raises(DamagedDatabase) as info:
            async for key, _value in store.scan():
                delivered.append(key)
        assert delivered == ["0"] and info.value.after_key == "0"


async def test_ttl_and_purge(postgres_dsn: str) -> None:
    clock = FakeClock()
    async with open_storage(pg_config(postgres_dsn), clock=clock) as provider:
        store = await provider.get_kv_store(Item, "items")
        await store.set("short", Item("s"), ttl=5)
        await store.set("long", Item("l"), ttl=50)
        await store.set("forever", Item("f"))
        clock.advance(10)
        assert await store.get("short") is None
        assert [k async for k in store.keys("")] == ["forever", "long"]
        assert await store.count() == 2
        with pytest.raises(KeyMissing):
            await store.update("short", Item("again"))
        assert await provider.purge_expired() == 1  # type: ignore[attr-defined]
        clock.advance(100)
        assert await provider.purge_expired() == 1  # type: ignore[attr-defined]
        assert await store.list() == {"forever": Item("f")}


async def test_paging_through_many_records(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fame._storage._kv.PAGE_SIZE", 7)
    monkeypatch.setattr("fame._storage._kv.FIRST_PAGE_SIZE", 3)
    monkeypatch.setattr("fame._storage._postgres_backend.READ_CHUNK", 4)
    items = {f"k{n:04d}": Item("v", n) for n in range(300)}
    async with open_storage(pg_config(postgres_dsn)) as provider:
        store = await provider.get_kv_store(Item, "items")
        await store.set_many(items)
        assert [kv async for kv in store.scan()] == sorted(items.items())
        assert [k async for k in store.keys("k01")] == [f"k01{n:02d}" for n in range(100)]
        assert [k async for k in store.scan("k02", after="k0250", limit=5)] == [
            (f"k02{n}", items[f"k02{n}"]) for n in range(51, 56)
        ]
        assert await store.get_many(list(items)[::3]) == {k: items[k] for k in list(items)[::3]}


async def test_deduplicated_writes(postgres_dsn: str) -> None:
    async with open_storage(pg_config(postgres_dsn)) as provider:
        store = await provider.get_kv_store(Item, "items")
        first = await store.set("a", Item("one"), request_id="r1")
        assert await store.set("a", Item("other"), request_id="r1") == first
        assert await store.get("a") == Item("one")
        assert await store.delete("a", request_id="r2") is True
        assert await store.delete("a", request_id="r2") is True  # the recorded answer
        assert await store.get("a") is None


async def test_two_providers_share_one_store(postgres_dsn: str) -> None:
    """Two nodes on one database: conditional writes, versions and dedupe stay right."""
    key = secrets.token_urlsafe(32)
    async with (
        open_storage(pg_config(postgres_dsn, key)) as one,
        open_storage(pg_config(postgres_dsn, key)) as two,
    ):
        stores = [await p.get_kv_store(Item, "shared") for p in (one, two)]
        version = await stores[0].set("k", Item("start"))

        # Conditional writes from both at once on one version: exactly one wins.
        for round_ in range(5):
            outcomes: list[object] = []

            async def attempt(
                n: int, base: int = version, r: int = round_, outcomes: list[object] = outcomes
            ) -> None:
                try:
                    won = await stores[n % 2].set("k", Item(f"{r}", n), if_version=base)
                    outcomes.append(won)
                except VersionConflict as exc:
                    outcomes.append(exc)

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(attempt, n)
            winners = [o for o in outcomes if isinstance(o, int)]
            assert len(winners) == 1, outcomes
            assert all(o.actual == winners[0] for o in outcomes if isinstance(o, VersionConflict))
            version = winners[0]
            for store in stores:
                got = await store.get_versioned("k")
                assert got is not None and got.version == version

        # Read-modify-write counters from both nodes: no increment is lost.
        await stores[0].set("counter", Item("c", 0))

        async def increment(n: int, times: int) -> None:
            store = stores[n % 2]
            for _ in range(times):
                while True:
                    got = await store.get_versioned("counter")
                    assert got is not None
                    try:
                        new = Item("c", got.value.n + 1)
                        await store.set("counter", new, if_version=got.version)
                        break
                    except VersionConflict:
                        continue

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(increment, n, 10)
        final = await stores[1].get("counter")
        assert final is not None and final.n == 60

        # Versions from both nodes are unique and increasing per namespace.
        versions: list[int] = []

        async def write_many(n: int) -> None:
            for i in range(10):
                versions.append(await stores[n % 2].set(f"v/{n}/{i}", Item("v")))

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(write_many, n)
        assert len(set(versions)) == 40 and min(versions) > version

        # One request id sent through both nodes at once is applied once.
        answers: list[int] = []

        async def once(n: int) -> None:
            answers.append(await stores[n % 2].set("once", Item("x", n), request_id="req-1"))

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(once, n)
        assert len(set(answers)) == 1
        got_once = await stores[0].get_versioned("once")
        assert got_once is not None and got_once.version == answers[0]

        # A scan on one node sees what the other wrote since its last scan.
        assert [k async for k in stores[0].keys("v/0/")] == [f"v/0/{i}" for i in range(10)]
        await stores[1].set("v/0/x", Item("new"))
        await stores[1].delete("v/0/0")
        assert [k async for k in stores[0].keys("v/0/")] == [
            *(f"v/0/{i}" for i in range(1, 10)),
            "v/0/x",
        ]


async def test_dedupe_limits(postgres_dsn: str) -> None:
    """The oldest request ids beyond the entries limit, and those past the window, are forgotten."""
    clock = FakeClock()
    config = pg_config(postgres_dsn, dedupe_entries=3, dedupe_window=100.0)
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(Item, "items")
        first = [await store.set(f"k{n}", Item("v", n), request_id=f"r{n}") for n in range(5)]
        # r3 and r4 are remembered: their retries write nothing.
        assert await store.set("k3", Item("again"), request_id="r3") == first[3]
        assert await store.get("k3") == Item("v", 3)
        # r0 was forgotten (only 3 kept): its retry is applied again.
        assert await store.set("k0", Item("again"), request_id="r0") > first[4]
        assert await store.get("k0") == Item("again")
        clock.advance(200)  # past the window: every id is forgotten
        assert await store.set("k4", Item("late"), request_id="r4") > first[4]
        assert await store.get("k4") == Item("late")


async def test_a_server_restart_fails_only_the_operations_it_meets(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """Acknowledged writes survive a crash of the server; the provider reconnects by itself.

    A read that meets a connection the restart broke is tried again; a write
    fails (its commit may or may not have happened) and the next one works.
    """
    async with open_storage(pg_config(postgres_dsn)) as provider:
        store = await provider.get_kv_store(Item, "items")
        await store.set_many({f"k{n}": Item("kept", n) for n in range(20)})
        assert await store.get("k1") == Item("kept", 1)
        postgres_server.restart()
        # Reads are tried again on a fresh connection: the first one after the restart works.
        assert await store.get("k3") == Item("kept", 3)
        postgres_server.restart()
        failures = 0
        for n in range(20):  # each pooled connection is found broken once, at most
            try:
                await store.set(f"after{n}", Item("new"))
                break
            except StorageError:
                failures += 1
        else:
            raise AssertionError("no write succeeded after the restart")
        assert failures <= 8
        assert await store.count() == 21
        assert await store.get("k7") == Item("kept", 7)


async def test_without_psycopg_the_profile_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    for name in list(sys.modules):
        if name.split(".")[0] in ("psycopg", "psycopg_pool") or name.startswith(
            "fame._storage._postgres"
        ):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # an import of it fails
    with pytest.raises(StorageConfigError) as info:
        async with open_storage(pg_config("host=127.0.0.1")):
            pass
    assert info.value.variable == "FAME_STORAGE_PROFILE"
    assert "fame-actors[postgres]" in str(info.value)
