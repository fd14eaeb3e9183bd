"""A damaged page fails only the reads that touch it; the rest of the namespace stays readable.

A real encrypted store of 20,000 records, bytes flipped inside one page in
the middle of its file, read through a running provider (each read a
message to the namespace's storage actor) and through an agent's stream.
After the first damaged read SQLCipher fails every statement of the
connection; the backend opens it again, so only reads of the damaged
page's keys fail, with :class:`DamagedDatabase` naming the file, the page
and the key. No actor is restarted, and a scan or stream never skips: it
ends at the damage, naming the last key it delivered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import fame
from agents.storage_agent import NAMESPACE, RecordModel, StorageAgent
from fame.storage import (
    DamagedDatabase,
    StorageActor,
    StorageWriteFailed,
    open_storage,
)

from .damaged_store import RECORDS, config, damage, fill, key_of, value_of

ADDRESS = "storage@local"


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    """Count the calls of the async method ``cls.name`` (an actor's or agent's start)."""
    calls: list[int] = []
    original = getattr(cls, name)

    async def counted(self: Any, *args: Any) -> Any:
        if getattr(self, "namespace", NAMESPACE) == NAMESPACE:  # not the node's own stores
            calls.append(1)
        return await original(self, *args)

    monkeypatch.setattr(cls, name, counted)
    return calls


async def test_only_the_keys_of_the_damaged_page_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability_report: Any
) -> None:
    directory = tmp_path / "db"
    path = await fill(directory)
    page = damage(path)
    opened = count_calls(monkeypatch, StorageActor, "on_start")
    async with open_storage(config(directory)) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        readable, failed = 0, []
        for i in range(RECORDS):
            try:
                assert await store.get(key_of(i)) == value_of(i)
                readable += 1
            except DamagedDatabase as exc:
                failed.append((i, exc))
        assert readable >= 0.99 * RECORDS
        assert failed, "no key lives on the damaged page"
        first = failed[0][0]
        # The keys of one page: consecutive ones.
        assert [i for i, _ in failed] == list(range(first, first + len(failed)))
        for i, exc in failed:
            assert exc.path == str(path) and exc.pages == (page,) and exc.key == key_of(i)
            assert path.name in str(exc) and f"page: {page}" in str(exc)
        # Keys that do not exist: missing, unless they would be on the damaged page.
        assert await store.get("absent") is None
        assert await store.get(key_of(RECORDS)) is None

        # Bulk reads fail naming the first unreadable key, never skipping it.
        with pytest.raises(DamagedDatabase) as many:
            await store.get_many(key_of(i) for i in range(RECORDS))
        assert many.value.key == key_of(first) and many.value.pages == (page,)
        with pytest.raises(DamagedDatabase):
            await store.count()

        # A scan delivers every key up to the damage, in order, then fails there.
        seen: list[str] = []
        with pytest.raises(DamagedDatabase) as scan:
            async for key, value in store.scan():
                assert value == value_of(len(seen))
                seen.append(key)
        assert seen == [key_of(i) for i in range(len(seen))]
        assert first - 1 <= len(seen) <= first  # the page's first key may share the cursor step
        assert scan.value.after_key == seen[-1] and scan.value.pages == (page,)
        assert repr(seen[-1]) in str(scan.value)
        keys: list[str] = []
        with pytest.raises(DamagedDatabase) as key_scan:
            async for key in store.keys():
                keys.append(key)
        assert keys == seen and key_scan.value.after_key == seen[-1]
        # A caller resumes past the damaged page.
        last_bad = key_of(failed[-1][0])
        rest = [key async for key, _ in store.scan(after=last_bad)]
        assert rest == [key_of(i) for i in range(failed[-1][0] + 1, RECORDS)]

        # The file is not written again: writes are refused, naming the damage.
        with pytest.raises(StorageWriteFailed) as write:
            await store.set("new", RecordModel("v"))
        assert isinstance(write.value.__cause__, DamagedDatabase)
        assert path.name in str(write.value)
        assert await store.get(key_of(0)) == value_of(0)
    assert len(opened) == 1, "the storage actor was restarted"
    reliability_report(
        records=RECORDS,
        readable=readable,
        unreadable=len(failed),
        readable_percent=round(100 * readable / RECORDS, 2),
        damaged_page=page,
    )


async def test_a_stream_ends_at_the_damage_and_the_agent_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "db"
    path = await fill(directory)
    page = damage(path)
    started = count_calls(monkeypatch, StorageAgent, "start")
    opened = count_calls(monkeypatch, StorageActor, "on_start")
    async with (
        open_storage(config(directory)) as provider,
        fame.open_node(storage_provider=provider) as node,
    ):
        agent: Any = await node.spawn(StorageAgent, ADDRESS)
        got: list[str] = []
        with trio.fail_after(60), pytest.raises(fame.OperationFailed) as info:
            async with node.open_stream(ADDRESS, "retrieve_all_values", {}) as stream:
                async for key, _record in stream:
                    got.append(key)
        assert got == [key_of(i) for i in range(len(got))]
        assert len(got) >= RECORDS // 4
        assert info.value.exc_type == "DamagedDatabase"
        assert path.name in str(info.value) and repr(got[-1]) in str(info.value)
        assert f"page: {page}" in str(info.value)
        # The agent still serves the other records.
        assert (await agent.retrieve_value(key=key_of(RECORDS - 1))).value == value_of(
            RECORDS - 1
        ).value
    assert len(started) == 1, "the agent was restarted"
    assert len(opened) == 1, "the storage actor was restarted"


async def test_a_write_that_meets_the_damaged_page_is_rolled_back(tmp_path: Path) -> None:
    """The first operation on the file is a write to the damaged page: nothing of it is kept."""
    directory = tmp_path / "db"
    path = await fill(directory, 5_000)
    page = damage(path)
    async with open_storage(config(directory)) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        victims = []
        for i in range(5_000):
            try:
                await store.get(key_of(i))
            except DamagedDatabase:
                victims.append(key_of(i))
    assert victims
    async with open_storage(config(directory)) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        with pytest.raises(StorageWriteFailed) as write:
            await store.set_many({"a-new-key": RecordModel("v"), victims[0]: RecordModel("w")})
        cause = write.value.__cause__
        assert isinstance(cause, DamagedDatabase) and cause.pages == (page,)
        assert await store.get("a-new-key") is None  # rolled back: none of the writes kept
        assert await store.get(key_of(0)) == value_of(0)
        assert await store.get(key_of(4_999)) == value_of(4_999)
