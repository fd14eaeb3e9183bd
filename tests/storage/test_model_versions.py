"""Model versions: old records upgraded on read, newer ones refused, bulk migration."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from fame._storage._migrate import MigrationProgress, migrate_namespace
from fame._storage._ops import Rewrite
from fame.storage import KeyValueStore, RecordInvalid, RecordTooNew, StorageProvider

from .conftest import FakeClock

NS = "orders"


class OrderV1(msgspec.Struct):
    name: str
    qty: int


class OrderV2(msgspec.Struct):
    """Version 2 renamed ``name`` to ``title``."""

    __fame_version__ = 2

    title: str
    qty: int

    @classmethod
    def __fame_upgrade__(cls, version: int, raw: Any) -> Any:
        assert version == 1
        raw["title"] = raw.pop("name")
        return raw


class OrderV3(msgspec.Struct):
    """Version 3 keeps the quantity as a string with its unit."""

    __fame_version__ = 3

    title: str
    qty: str

    @classmethod
    def __fame_upgrade__(cls, version: int, raw: Any) -> Any:
        if version == 1:
            raw["title"] = raw.pop("name")
        elif version == 2:
            raw["qty"] = f"{raw['qty']} pcs"
        return raw


class WithDefault(msgspec.Struct):
    """Version 2 only added a field with a default: no upgrade function needed."""

    __fame_version__ = 2

    name: str
    qty: int
    note: str = ""


class Broken(msgspec.Struct):
    __fame_version__ = 2

    name: str

    @classmethod
    def __fame_upgrade__(cls, version: int, raw: Any) -> Any:
        raise ValueError("cannot")


async def test_old_records_are_upgraded_on_every_read(provider: StorageProvider) -> None:
    old = await provider.get_kv_store(OrderV1, NS)
    await old.set("a", OrderV1("apple", 3))
    await old.set_many({"b": OrderV1("bread", 1), "c": OrderV1("cheese", 2)})
    new = await provider.get_kv_store(OrderV2, NS)
    assert await new.get("a") == OrderV2("apple", 3)
    assert await new.get_many(["a", "b"]) == {"a": OrderV2("apple", 3), "b": OrderV2("bread", 1)}
    assert [key async for key, _ in new.scan()] == ["a", "b", "c"]
    assert (await new.list())["c"] == OrderV2("cheese", 2)
    newest = await provider.get_kv_store(OrderV3, NS)
    assert await newest.get("a") == OrderV3("apple", "3 pcs")  # two steps
    defaults = await provider.get_kv_store(WithDefault, NS)
    assert await defaults.get("a") == WithDefault("apple", 3, "")


async def test_a_newer_record_is_refused_not_decoded(provider: StorageProvider) -> None:
    new = await provider.get_kv_store(OrderV2, NS)
    await new.set("a", OrderV2("apple", 3))
    versioned = await new.get_versioned("a")
    assert versioned is not None and versioned.value == OrderV2("apple", 3)
    old = await provider.get_kv_store(OrderV1, NS)
    with pytest.raises(RecordTooNew) as info:
        await old.get("a")
    error = info.value
    assert (error.namespace, error.key, error.version, error.model_version) == (NS, "a", 2, 1)
    with pytest.raises(RecordTooNew):
        await old.list()
    untyped = await provider.get_kv_store(Any, NS)  # fame dump's view: the stored value
    assert await untyped.get("a") == {"title": "apple", "qty": 3}


async def test_a_failing_upgrade_names_the_record(provider: StorageProvider) -> None:
    old = await provider.get_kv_store(OrderV1, NS)
    await old.set("a", OrderV1("apple", 3))
    broken = await provider.get_kv_store(Broken, NS)
    with pytest.raises(RecordInvalid) as info:
        await broken.get("a")
    assert (info.value.namespace, info.value.key) == (NS, "a")


async def test_a_bad_version_declaration_is_refused(provider: StorageProvider) -> None:
    class Bad(msgspec.Struct):
        __fame_version__ = 0

    with pytest.raises(TypeError, match="__fame_version__"):
        await provider.get_kv_store(Bad, NS)


async def test_migrate_rewrites_old_records_and_keeps_their_expiry(
    provider: StorageProvider, clock: FakeClock
) -> None:
    old = await provider.get_kv_store(OrderV1, NS)
    await old.set_many({f"k{n:03}": OrderV1(f"item {n}", n) for n in range(120)})
    await old.set("short", OrderV1("expires", 1), ttl=10)
    new = await provider.get_kv_store(OrderV2, NS)
    await new.set("k000", OrderV2("already new", 0))
    seen: list[MigrationProgress] = []
    assert isinstance(new, KeyValueStore)
    result = await migrate_namespace(new, batch=50, progress=seen.append)
    assert (result.total, result.checked, result.upgraded, result.current) == (121, 121, 120, 1)
    assert [p.checked for p in seen] == [0, 50, 100, 121]
    untyped = await provider.get_kv_store(Any, NS)
    assert await untyped.get("k005") == {"title": "item 5", "qty": 5}
    strict_old = await provider.get_kv_store(OrderV1, NS)
    with pytest.raises(RecordTooNew):
        await strict_old.get("k005")  # written back as version 2
    assert await new.get("short") == OrderV2("expires", 1)
    clock.advance(11)
    assert await new.get("short") is None  # the expiry was kept
    again = await migrate_namespace(new, batch=50)
    assert (again.upgraded, again.current) == (0, 120)


async def test_migrate_takes_a_prefix_and_leaves_records_changed_meanwhile(
    provider: StorageProvider,
) -> None:
    old = await provider.get_kv_store(OrderV1, NS)
    await old.set_many({"a1": OrderV1("x", 1), "a2": OrderV1("y", 2), "b1": OrderV1("z", 3)})
    new = await provider.get_kv_store(OrderV2, NS)
    assert isinstance(new, KeyValueStore)
    result = await migrate_namespace(new, prefix="a")
    assert (result.checked, result.upgraded) == (2, 2)
    untyped = await provider.get_kv_store(Any, NS)
    assert await untyped.get("b1") == {"name": "z", "qty": 3}  # outside the prefix: as it was
    # A rewrite whose version is stale (the record changed after it was read) is skipped.
    versioned = await old.get_versioned("b1")
    assert versioned is not None
    await old.set("b1", OrderV1("changed", 4))
    stale = Rewrite((("b1", versioned.version, b"\x80"),))
    assert await new._ask(stale) == 0
    assert await old.get("b1") == OrderV1("changed", 4)
