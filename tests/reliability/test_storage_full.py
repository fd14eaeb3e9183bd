"""A full file or disk: StorageFull for the writer, nothing lost, room returns.

Real SQLCipher files. A writer gets :class:`fame.storage.StorageFull` naming the
namespace, the file and the limit (or the disk); nothing of the failed
transaction is stored; earlier records stay readable; other namespaces and
the node keep working; writes work again once room returns. Both with the
``FAME_STORAGE_MAX_FILE_BYTES`` page limit and with a real full disk (a
512 KiB tmpfs, which needs root to mount: CI runs as root). Over the fabric
the client gets ``OperationFailed`` naming ``StorageFull``, and the agent is
not restarted.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import fame
from agents.storage_agent import StorageAgent
from fame._storage import StorageFull, StorageWriteFailed, open_storage, open_storage_from_env

from .fame_services import STORAGE_AGENT, FameServices
from .storage_docs import LIMIT, Doc, body, config, env_for


async def store_beside_another(provider: Any, namespace: str) -> tuple[Any, Any]:
    """``namespace``'s store, and the ``other`` one holding a record: that one must keep working."""
    store = await provider.get_kv_store(Doc, namespace)
    other = await provider.get_kv_store(Doc, "other")
    await other.set("before", Doc("o"))
    return store, other


async def fill_until_full(store: Any, prefix: str, acked: dict[str, str], bound: int) -> Any:
    """``set`` one record at a time until the store is full; return the StorageFull."""
    for i in range(bound):
        key, value = f"{prefix}{i:05d}", body(i)
        try:
            await store.set(key, Doc(value))
        except StorageFull as exc:
            return exc
        acked[key] = value
    pytest.fail(f"{bound} writes never filled the store")


async def concurrent_writers(store: Any, prefix: str, n: int, acked: dict[str, str]) -> list[str]:
    """``n`` writers at once (drained into shared transactions) on a full store.

    Returns the keys that got StorageFull, which must not exist; the
    acknowledged ones go into ``acked`` as they were stored.
    """
    outcome: dict[str, bool] = {}
    errors: list[BaseException] = []

    async def writer(i: int) -> None:
        try:
            await store.set(f"{prefix}{i:03d}", Doc(body(i)))
            outcome[f"{prefix}{i:03d}"] = True
        except StorageFull:
            outcome[f"{prefix}{i:03d}"] = False
        except BaseException as exc:  # anything else is a finding
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(writer, i)
    assert not errors, errors
    failed = [key for key, ok in outcome.items() if not ok]
    assert failed, "the file was full: concurrent writers must fail"
    assert not await store.get_many(failed)
    acked.update({key: (await store.get(key)).body for key, ok in outcome.items() if ok})
    return failed


async def readable(store: Any, acked: dict[str, str]) -> int:
    got = await store.get_many(list(acked))
    assert {key: doc.body for key, doc in got.items()} == acked
    return len(got)


# -- full: the page limit ---------------------------------------------------


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_file_limit_gives_storage_full_and_room_returns(
    profile: str, tmp_path: Path, reliability_report: Any
) -> None:
    directory = tmp_path / "db"
    env = env_for(profile, directory, LIMIT)
    suffix = "_encrypted_value.db" if profile == "encrypted-sqlite" else "_value.db"
    acked: dict[str, str] = {}
    async with open_storage_from_env(env) as provider:
        full, other = await store_beside_another(provider, "full")
        error = await fill_until_full(full, "k", acked, bound=1000)
        accepted_before_full = len(acked)
        assert isinstance(error, StorageWriteFailed)
        assert (error.namespace, error.limit, error.writes) == ("full", LIMIT, 1)
        message = str(error)
        for part in ("'full'", f"full{suffix}", str(LIMIT), "FAME_STORAGE_MAX_FILE_BYTES"):
            assert part in message, (part, message)
        assert str(directory) not in message  # the file's name only: it may go to a client

        # Writers drained into shared transactions: each of them gets StorageFull,
        # and none of their records exists.
        failed = await concurrent_writers(full, "c", 32, acked)
        with pytest.raises(StorageFull, match="none of the 1 writes"):
            await full.set_many({f"m{i}": Doc(body(i)) for i in range(20)})
        assert not await full.get_many([*failed, "m0", "m19"])

        # Earlier data stays readable; the other namespace keeps working.
        readable_when_full = await readable(full, acked)
        assert await full.count() == len(acked)
        await other.set("during", Doc("o2"))
        assert set(await other.get_many(["before", "during"])) == {"before", "during"}

        # Room returns when records are deleted: their pages are reused.
        gone = sorted(acked)[:10]
        assert await full.delete_many(gone) == 10
        for key in gone:
            del acked[key]
        after_delete: dict[str, str] = {}
        await fill_until_full(full, "d", after_delete, bound=1000)
        assert after_delete, "deleting records must make room"
        acked.update(after_delete)

    # Room returns when the limit is raised: it applies from the next open.
    async with open_storage_from_env(env_for(profile, directory, 2 * LIMIT)) as provider:
        full = await provider.get_kv_store(Doc, "full")
        assert await readable(full, acked) == len(acked)
        after_raise: dict[str, str] = {}
        error = await fill_until_full(full, "r", after_raise, bound=1000)
        assert error.limit == 2 * LIMIT and len(after_raise) >= accepted_before_full // 2
        acked.update(after_raise)
    async with open_storage(config(profile, directory)) as provider:
        readable_after = await readable(await provider.get_kv_store(Doc, "full"), acked)

    reliability_report(
        writes_accepted_before_full=accepted_before_full,
        failed_writes=1 + len(failed) + 20,
        records_readable_when_full=readable_when_full,
        writes_after_deleting_10=len(after_delete),
        writes_after_doubling_limit=len(after_raise),
        records_readable_after_reopen=readable_after,
    )


# -- full: a real disk --------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, unmounted at teardown (mounting needs root; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs this as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs as root: {done.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_gives_storage_full_and_the_wal_survives(
    small_disk: Path, reliability_report: Any
) -> None:
    directory = small_disk / "db"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (320 * 1024))
    # A limit the disk cannot reach: the error must blame the disk, not the limit.
    cfg = config("encrypted-sqlite", directory, max_file_bytes=4 << 20)
    acked: dict[str, str] = {}
    wal = directory / "docs_encrypted_value.db-wal"
    async with open_storage(cfg) as provider:
        docs, other = await store_beside_another(provider, "docs")
        error = await fill_until_full(docs, "k", acked, bound=5000)
        accepted_before_full = len(acked)
        assert error.limit is None and error.namespace == "docs"
        assert "the disk holding its file docs_encrypted_value.db is full" in str(error)
        failed = await concurrent_writers(docs, "c", 16, acked)

        # Reads keep working on every namespace; a new namespace cannot be made.
        readable_when_full = await readable(docs, acked)
        assert (await other.get("before")) == Doc("o")
        with pytest.raises(StorageFull, match=r"'fresh' is full.*could not be created"):
            await provider.get_kv_store(Doc, "fresh")
        # Closing on a full disk cannot checkpoint: the -wal is kept, not lost.
    wal_kept = wal.stat().st_size
    assert wal_kept > 0

    filler.unlink()  # space returns
    async with open_storage(cfg) as provider:
        docs = await provider.get_kv_store(Doc, "docs")
        readable_after_replay = await readable(docs, acked)  # replayed from the -wal
        assert not await docs.get_many(failed)
        # Each commit appends its pages to the -wal until a checkpoint: a few
        # single writes, then one transaction of many.
        after_space = {f"after{i:02d}": body(i) for i in range(23)}
        for key in list(after_space)[:3]:
            await docs.set(key, Doc(after_space[key]))
        await docs.set_many({key: Doc(value) for key, value in list(after_space.items())[3:]})
        acked.update(after_space)
        fresh = await provider.get_kv_store(Doc, "fresh")
        await fresh.set("f", Doc("f"))
    assert not wal.exists()  # a clean close with room checkpoints it away
    async with open_storage(cfg) as provider:
        readable_after = await readable(await provider.get_kv_store(Doc, "docs"), acked)

    reliability_report(
        disk_kib=512,
        writes_accepted_before_full=accepted_before_full,
        failed_writes=1 + len(failed),
        records_readable_when_full=readable_when_full,
        wal_bytes_kept_at_full_close=wal_kept,
        records_readable_after_wal_replay=readable_after_replay,
        writes_after_space_freed=len(after_space),
        records_readable_after=readable_after,
    )


# -- full: over the fabric ----------------------------------------------------


async def test_storage_full_reaches_a_remote_client_as_a_clear_error(
    fame_services: Callable[..., FameServices], reliability_report: Any
) -> None:
    services = fame_services(
        "fabric",
        STORAGE_AGENT,
        sentinel_storage="memory",
        FAME_STORAGE_MAX_FILE_BYTES=str(LIMIT),
    )
    node = services.node
    async with fame.connect(services.url, token=services.token) as client:
        agent: Any = client.proxy("storage@fame.fabric", StorageAgent)
        stored: dict[str, str] = {}
        failure: fame.OperationFailed | None = None
        for i in range(1000):
            value = body(i)
            try:
                await agent.store_value(key=f"k{i:04d}", value=value)
            except fame.OperationFailed as exc:
                failure = exc
                break
            stored[f"k{i:04d}"] = value
        assert failure is not None, "1000 writes never filled the agent's file"
        assert failure.exc_type == "StorageFull"
        text = str(failure)
        assert "storage@fame.fabric" in text and "'storage_agent_namespace' is full" in text
        assert str(LIMIT) in text and "FAME_STORAGE_MAX_FILE_BYTES" in text
        # The same agent keeps serving: reads, the stream, and the same clear error.
        served_after = 0
        for key in list(stored)[:: max(1, len(stored) // 20)]:
            assert (await agent.retrieve_value(key=key)).value == stored[key]
            served_after += 1
        listed = [key async for key, _ in agent.retrieve_all_values()]
        assert listed == sorted(stored)
        with pytest.raises(fame.OperationFailed, match="StorageFull"):
            await agent.store_value(key="again", value="x" * 3000)
    assert "crash" not in "\n".join(node.log_lines()).lower()
    codes = services.down()  # the node, then the sentinel
    assert codes == (0, 0), (node.log_tail(), services.sentinel.log_tail())

    reliability_report(
        writes_accepted_before_full=len(stored),
        failed_writes=2,
        remote_error=failure.exc_type,
        calls_served_after_full=served_after + 1,
        records_listed_after_full=len(listed),
        agent_restarts=0,
    )
