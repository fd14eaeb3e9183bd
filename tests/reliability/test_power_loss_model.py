"""The durability model: what a SIGKILL and a power loss may take from acknowledged writes.

``tests/storage/test_crash.py`` proves it for the store alone (a child that
``os._exit``\\ s after its writes). Here the storage agent runs as the real
``fame node`` process behind a real sentinel, the client's ``store_value``
returns, and then the agent gets SIGKILL: nothing is checkpointed or closed,
the records are only in the ``-wal`` file, and they must all be there when
the directory is opened again. This holds for both durabilities: the WAL
makes a commit safe against a process crash either way. What ``full`` adds
(an fsync of the WAL before each acknowledgement, so an OS crash or power
loss cannot take it back) cannot be shown by pulling a plug here, so the
second test checks that the live connection really runs with the
``synchronous`` setting that gives it.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest
import trio

import fame
from agents.storage_agent import NAMESPACE, STORAGE_AGENT_ADDRESS, RecordModel, StorageAgent
from fame._storage import (
    StorageConfig,
    _builtin,
    open_storage,
    open_storage_from_env,
    parse_master_key,
)

from .conftest import Report
from .crash_loop import checksum_value
from .fame_services import STORAGE_AGENT, FameServices

pytestmark = pytest.mark.slow

# SQLite's PRAGMA synchronous values.
SYNCHRONOUS = {"NORMAL": 1, "FULL": 2}


@pytest.mark.parametrize("durability", [None, "normal"])
async def test_write_acknowledged_before_sigkill_is_on_disk(
    tmp_path: Path, durability: str | None, reliability_report: Report
) -> None:
    settings = {"FAME_STORAGE_DURABILITY": durability} if durability else {}
    services = FameServices(tmp_path, STORAGE_AGENT, **settings)
    acked: dict[str, str] = {}
    try:
        await trio.to_thread.run_sync(services.up)
        async with fame.connect(services.url, token=services.token) as client:
            agent = client.proxy(STORAGE_AGENT_ADDRESS, StorageAgent).with_timeout(10)
            for i in range(40):
                key = f"k{i:03d}"
                value = checksum_value(hashlib.sha256(key.encode()).hexdigest() * (i + 1))
                await agent.store_value(key=key, value=value)
                acked[key] = value  # the call returned: acknowledged
            services.node.kill()  # right after the last acknowledgement
    finally:
        services.abort()
    wal = services.node_data / f"{NAMESPACE}_encrypted_value.db-wal"
    # Never checkpointed: the records are in the WAL only.
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    assert wal_bytes > 0

    config = StorageConfig(
        profile="encrypted-sqlite",
        directory=services.node_data,
        master_key=parse_master_key(services.master_key),
        durability=durability or "full",
    )
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        stored = {key: record.value for key, record in (await store.list()).items()}
    assert stored == acked
    reliability_report(
        durability=durability or "full (default)",
        acknowledged=len(acked),
        after_sigkill=len(stored),
        lost=len(set(acked) - set(stored)),
        wal_bytes=wal_bytes,
    )


@pytest.mark.parametrize(
    ("durability", "expected"),
    [(None, "FULL"), ("full", "FULL"), ("normal", "NORMAL")],
)
async def test_live_connection_runs_the_configured_synchronous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str | None, expected: str
) -> None:
    opened: list[Any] = []
    real_open = _builtin.open_sqlite

    def spy(*args: Any, **kwargs: Any) -> Any:
        backend = real_open(*args, **kwargs)
        opened.append(backend)
        return backend

    monkeypatch.setattr(_builtin, "open_sqlite", spy)
    env = {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": str(tmp_path),
        "FAME_STORAGE_MASTER_KEY": secrets.token_urlsafe(32),
    }
    if durability is not None:
        env["FAME_STORAGE_DURABILITY"] = durability
    async with open_storage_from_env(env) as provider:
        store = await provider.get_kv_store(dict, "ns")
        await store.set("k", {"a": 1})
        [backend] = opened
        # The connection the storage actor commits with, between two of its jobs.
        (value,) = backend._conn.execute("PRAGMA synchronous").fetchone()
        (mode,) = backend._conn.execute("PRAGMA journal_mode").fetchone()
    assert value == SYNCHRONOUS[expected]
    assert mode == "wal"
