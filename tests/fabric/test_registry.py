"""The sentinel's register of enrolled nodes, pins and bindings, on real encrypted stores.

The pure parts (route records losing a node, enrollments gaining a key)
are checked on values; :class:`NodeRegistry` against an ``encrypted-sqlite``
provider in a temporary directory, reopened where persistence matters.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from fame._fabric._identity import KEYSTORE, ROUTE_STORE, NodeStores
from fame._fabric.sentinel._registry import (
    NodeRegistry,
    RegistryError,
    enrolled,
    name_holder,
)
from fame._protocol._credentials import ENROLL_PREFIX, EnrolledKey, Enrollment
from fame._protocol._route_table import POOL_PREFIX, RouteTable, record_owners, record_without
from fame.storage import StorageConfig, open_storage, parse_master_key

NOW = 1_000_000.0
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
KEY_C = bytes(range(2, 34))


# -- pure parts ------------------------------------------------------------------


def test_a_record_loses_its_owner_or_just_one_pool_member() -> None:
    assert record_owners("n1") == ["n1"]
    assert record_owners(POOL_PREFIX + "n1,n2") == ["n1", "n2"]
    assert record_without("n1", "n1") is None
    assert record_without("n1", "n2") == "n1"
    assert record_without(POOL_PREFIX + "n1,n2,n3", "n2") == POOL_PREFIX + "n1,n3"
    assert record_without(POOL_PREFIX + "n1", "n1") is None


def test_a_record_without_a_member_is_what_the_route_table_would_store() -> None:
    table: RouteTable[object] = RouteTable()
    for node in ("n1", "n2", "n3"):
        table.bind("a@x", node, pool=True)
    before = table.record("a@x")
    assert before is not None
    table.unbind("a@x", "n2")
    assert record_without(before, "n2") == table.record("a@x")


def test_a_new_enrollment_has_one_key_without_end() -> None:
    made = enrolled(None, "n1", "web", KEY_A, old_until=None, now=NOW)
    assert made == Enrollment("n1", "web", (EnrolledKey(KEY_A),), enrolled_at=NOW)


def test_enrolling_the_same_key_again_changes_nothing() -> None:
    first = enrolled(None, "n1", "web", KEY_A, old_until=None, now=NOW)
    assert enrolled(first, "n1", "web", KEY_A, old_until=None, now=NOW + 5) is first


def test_a_rotation_ends_the_other_keys_and_never_revives_an_ended_one() -> None:
    first = enrolled(None, "n1", "web", KEY_A, old_until=None, now=NOW)
    second = enrolled(first, "n1", "web", KEY_B, old_until=NOW + 60, now=NOW)
    assert set(second.keys) == {EnrolledKey(KEY_A, NOW + 60), EnrolledKey(KEY_B)}
    third = enrolled(second, "n1", "web", KEY_C, old_until=NOW + 3600, now=NOW + 1)
    assert EnrolledKey(KEY_A, NOW + 60) in third.keys
    assert third.admits(KEY_A, NOW + 30) and not third.admits(KEY_A, NOW + 61)


def test_keys_that_ended_are_dropped_at_the_next_enrollment() -> None:
    first = enrolled(None, "n1", "web", KEY_A, old_until=None, now=NOW)
    second = enrolled(first, "n1", "web", KEY_B, old_until=NOW + 60, now=NOW)
    third = enrolled(second, "n1", "web", KEY_C, old_until=None, now=NOW + 61)
    assert {k.public_key for k in third.keys} == {KEY_B, KEY_C}


def test_a_name_belongs_to_one_node_id() -> None:
    web = enrolled(None, "n1", "web", KEY_A, old_until=None, now=NOW)
    assert name_holder({"n1": web}, "web", "n2") == "n1"
    assert name_holder({"n1": web}, "web", "n1") is None
    assert name_holder({"n1": web}, "db", "n2") is None


# -- against real stores -----------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> StorageConfig:
    return StorageConfig(
        profile="encrypted-sqlite",
        directory=tmp_path / "sentinel",
        master_key=parse_master_key(secrets.token_urlsafe(32)),
    )


@asynccontextmanager
async def opened(config: StorageConfig) -> AsyncIterator[tuple[NodeRegistry, NodeStores]]:
    async with open_storage(config, purge_interval=3600) as provider:
        stores = NodeStores(provider)
        yield NodeRegistry(stores), stores


async def test_an_enrollment_is_stored_and_read_back_after_reopening(
    config: StorageConfig,
) -> None:
    async with opened(config) as (registry, _):
        made = await registry.enroll("n1", "web", KEY_A, now=NOW)
    async with opened(config) as (registry, stores):
        assert await registry.enrollments() == {"n1": made}
        assert await stores.get(KEYSTORE, ENROLL_PREFIX + "n1") is not None


async def test_re_enrolling_writes_nothing_and_a_new_key_is_added(config: StorageConfig) -> None:
    async with opened(config) as (registry, _):
        first = await registry.enroll("n1", "web", KEY_A, now=NOW)
        assert await registry.enroll("n1", "web", KEY_A, now=NOW + 9) == first
        rotated = await registry.enroll("n1", "web", KEY_B, old_until=NOW + 60, now=NOW + 10)
        assert (await registry.enrollments())["n1"] == rotated
        assert rotated.admits(KEY_A, NOW + 59) and not rotated.admits(KEY_A, NOW + 60)
        assert rotated.admits(KEY_B, NOW + 10**6)


@pytest.mark.parametrize(
    ("node_id", "name", "key", "words"),
    [
        ("bad id!", "web", KEY_A, "node id"),
        ("n1", "", KEY_A, "name"),
        ("n1", "web.site", KEY_A, "name"),
        ("n1", "web", b"short", "32 bytes"),
    ],
)
async def test_an_invalid_enrollment_is_refused_and_nothing_is_stored(
    config: StorageConfig, node_id: str, name: str, key: bytes, words: str
) -> None:
    async with opened(config) as (registry, _):
        with pytest.raises(RegistryError, match=words):
            await registry.enroll(node_id, name, key, now=NOW)
        assert await registry.enrollments() == {}


async def test_a_name_taken_by_another_node_is_refused(config: StorageConfig) -> None:
    async with opened(config) as (registry, _):
        await registry.enroll("n1", "web", KEY_A, now=NOW)
        with pytest.raises(RegistryError, match="already enrolled for node n1"):
            await registry.enroll("n2", "web", KEY_B, now=NOW)
        assert set(await registry.enrollments()) == {"n1"}


async def test_revoke_removes_enrollment_pin_and_bindings_but_not_other_pool_members(
    config: StorageConfig,
) -> None:
    async with opened(config) as (registry, stores):
        await registry.enroll("n1", "web", KEY_A, now=NOW)
        await registry.enroll("n2", "db", KEY_B, now=NOW)
        await stores.set(KEYSTORE, "pin:n1", KEY_A)
        await stores.set(KEYSTORE, "pin:n2", KEY_B)
        await stores.set(ROUTE_STORE, "solo@x", b"n1")
        await stores.set(ROUTE_STORE, "pool@x", (POOL_PREFIX + "n1,n2").encode())
        await stores.set(ROUTE_STORE, "alone@x", (POOL_PREFIX + "n1").encode())
        await stores.set(ROUTE_STORE, "other@x", b"n2")
        revoked = await registry.revoke("n1")
    assert (revoked.enrollment, revoked.pin) == (True, True)
    assert revoked.addresses == ("alone@x", "pool@x", "solo@x")
    async with opened(config) as (registry, _):
        assert set(await registry.enrollments()) == {"n2"}
        assert await registry.pins() == {"n2": KEY_B}
        assert await registry.bindings() == {"pool@x": POOL_PREFIX + "n2", "other@x": "n2"}


async def test_revoking_an_unknown_node_removes_nothing(config: StorageConfig) -> None:
    async with opened(config) as (registry, stores):
        await stores.set(ROUTE_STORE, "other@x", b"n2")
        revoked = await registry.revoke("n9")
        assert not revoked.anything
        assert await registry.bindings() == {"other@x": "n2"}


async def test_release_drops_one_binding_and_returns_its_record(config: StorageConfig) -> None:
    async with opened(config) as (registry, stores):
        await stores.set(ROUTE_STORE, "a@x", b"n1")
        await stores.set(ROUTE_STORE, "b@x", b"n2")
        assert await registry.release("a@x") == "n1"
        assert await registry.release("a@x") is None
        assert await registry.bindings() == {"b@x": "n2"}


async def test_pins_ignore_the_sentinel_s_own_key_and_enrollments(config: StorageConfig) -> None:
    async with opened(config) as (registry, stores):
        await stores.set(KEYSTORE, "ed25519", b"private")
        await registry.enroll("n1", "web", KEY_A, now=NOW)
        await stores.set(KEYSTORE, "pin:n1", KEY_A)
        assert await registry.pins() == {"n1": KEY_A}


async def test_a_damaged_enrollment_record_is_named(config: StorageConfig) -> None:
    async with opened(config) as (registry, stores):
        await stores.set(KEYSTORE, ENROLL_PREFIX + "n1", b"\xc1 not msgpack")
        with pytest.raises(RegistryError, match="enrollment of n1 cannot be read"):
            await registry.enrollments()
        assert (await registry.revoke("n1")).enrollment
        assert await registry.enrollments() == {}
