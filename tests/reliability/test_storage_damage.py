"""A damaged namespace file: named, refused, never written, while the rest keeps working.

Real SQLCipher files. Bytes flipped in one namespace's file (its first,
middle or last page) are reported as :class:`fame.storage.DamagedDatabase` naming
the file, by the node and by ``fame check``, while the node and its other
namespaces keep working and the damaged file is never written, renamed or
given a ``-wal``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import pytest

import fame
from fame._storage import DamagedDatabase, StorageWriteFailed, open_storage

from .fame_services import fame_env, run_fame
from .storage_docs import MASTER_KEY, PAGE, Doc, config, digests


class Shelf(fame.BaseAgent):
    """An agent that reaches any namespace it is asked for; storage errors are declared."""

    max_concurrency: ClassVar[int] = 4
    _ERRORS = (DamagedDatabase, StorageWriteFailed)

    async def start(self) -> None:
        self._stores: dict[str, Any] = {}

    async def _store(self, namespace: str) -> Any:
        if namespace not in self._stores:
            self._stores[namespace] = await self.storage_provider.get_kv_store(Doc, namespace)
        return self._stores[namespace]

    @fame.operation(errors=_ERRORS)
    async def put(self, namespace: str, key: str, value: str) -> int:
        version: int = await (await self._store(namespace)).set(key, Doc(value))
        return version

    @fame.operation(errors=_ERRORS)
    async def read_all(self, namespace: str) -> dict[str, str]:
        store = await self._store(namespace)
        return {key: doc.body async for key, doc in store.scan()}


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def fame_check(directory: Path) -> Any:
    """``fame check`` on ``directory``, configured by environment (the suite's master key)."""
    env = fame_env(FAME_STORAGE_MASTER_KEY=MASTER_KEY, FAME_STORAGE_PROFILE="encrypted-sqlite")
    return run_fame(directory.parent, "check", str(directory), env=env)


@pytest.mark.parametrize("where", ["first page", "middle page", "last page"])
async def test_a_damaged_namespace_file_is_named_and_left_alone(
    where: str, tmp_path: Path, reliability_report: Any
) -> None:
    directory = tmp_path / "db"
    cfg = config("encrypted-sqlite", directory)
    records = {f"k{i:04d}": f"{i}" * 150 for i in range(300)}
    async with open_storage(cfg) as provider:
        for namespace in ("alpha", "beta", "gamma"):
            await (await provider.get_kv_store(Doc, namespace)).set_many(
                {key: Doc(value) for key, value in records.items()}
            )
    target = directory / "beta_encrypted_value.db"
    pages = target.stat().st_size // PAGE
    page = {"first page": 1, "middle page": pages // 2, "last page": pages}[where]
    flip(target, (page - 1) * PAGE + 100)
    damaged_digest = hashlib.sha256(target.read_bytes()).hexdigest()
    others_before = {k: v for k, v in digests(directory).items() if not k.startswith("beta")}

    calls = 0
    async with open_storage(cfg) as provider, fame.open_node(storage_provider=provider) as node:
        shelf: Any = await node.spawn(Shelf, "shelf@local")
        with pytest.raises(fame.OperationFailed) as info:
            await shelf.read_all(namespace="beta")
        calls += 1
        assert info.value.exc_type == "DamagedDatabase"
        assert "beta_encrypted_value.db" in str(info.value)
        with pytest.raises(fame.OperationFailed) as info:
            await shelf.put(namespace="beta", key="new", value="v")
        calls += 1
        assert "beta_encrypted_value.db" in str(info.value) and "damaged" in str(info.value)
        if page == 1:  # never opened: no -wal or -shm beside it, even while the node runs
            assert sorted(p.name for p in directory.glob("beta*")) == [target.name]

        # The node and the other namespaces keep working: reads, writes, a new one.
        for namespace in ("alpha", "gamma", "delta"):
            for i in range(20):
                await shelf.put(namespace=namespace, key=f"n{i:02d}", value="w")
                calls += 1
        for namespace in ("alpha", "gamma"):
            got = await shelf.read_all(namespace=namespace)
            calls += 1
            assert got == records | {f"n{i:02d}": "w" for i in range(20)}
        with pytest.raises(fame.OperationFailed, match="DamagedDatabase"):
            await shelf.read_all(namespace="beta")  # still named, still refused
        calls += 1
        assert len(await shelf.read_all(namespace="delta")) == 20
        calls += 1

    # The damaged file: same bytes, same name, nothing beside it.
    assert sorted(p.name for p in directory.glob("beta*")) == [target.name]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == damaged_digest
    assert others_before.keys() <= digests(directory).keys()

    checked = fame_check(directory)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "beta_encrypted_value.db: DAMAGED" in checked.stdout
    for namespace, count in (("alpha", 320), ("gamma", 320), ("delta", 20)):
        assert f"{namespace}_encrypted_value.db: ok: integrity checks passed, {count} records" in (
            checked.stdout
        )
    assert "Traceback" not in checked.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == damaged_digest
    assert sorted(p.name for p in directory.glob("beta*")) == [target.name]

    reliability_report(
        damaged_page=f"{page}/{pages}",
        calls_served=calls,
        other_namespaces_ok=3,
        records_readable_elsewhere=2 * 320 + 20,
        fame_check_exit=checked.returncode,
        damaged_file_changed=0,
    )
