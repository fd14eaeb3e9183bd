"""Backups made by the running provider, verified and restored (``_backup``)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from fame._storage import StorageConfig, open_storage, parse_master_key
from fame._storage._backup import (
    BackupInvalid,
    BackupRefused,
    restore_backup,
    verify_backup,
)
from fame._storage._backup_manifest import MANIFEST_NAME, read_manifest
from fame._storage._errors import WrongMasterKey


def _config(directory: Path, key: str, profile: str = "encrypted-sqlite") -> StorageConfig:
    master = parse_master_key(key) if profile == "encrypted-sqlite" else None
    return StorageConfig(profile=profile, directory=directory, master_key=master)


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_backup_while_writing_holds_every_acknowledged_record(
    tmp_path: Path, profile: str
) -> None:
    key = secrets.token_urlsafe(32)
    config = _config(tmp_path / "data", key, profile)
    acknowledged: list[int] = []
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(int, "items")
        other = await provider.get_internal_kv_store(bytes, "__node_meta")
        await other.set("identity", b"\x00\xff" * 100)

        async def writer(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            i = 0
            task_status.started()
            while True:
                await store.set(f"k{i:06}", i)
                acknowledged.append(i)
                i += 1
                if i == 200:
                    started.set()

        started = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(writer)
            await started.wait()
            before = len(acknowledged)
            manifest = await provider.backup(tmp_path / "backup")  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()
    names = {f.namespace: f for f in manifest.files}
    assert set(names) == {"items", "__node_meta"}
    assert names["items"].records >= before
    assert read_manifest(tmp_path / "backup") == manifest
    assert verify_backup(tmp_path / "backup", profile, config.master_key) == manifest
    assert not (tmp_path / ".backup.partial").exists()
    # Restore into a new directory and read everything back.
    restored = restore_backup(
        tmp_path / "backup", tmp_path / "restored", profile, config.master_key
    )
    assert restored.kept is None
    async with open_storage(_config(tmp_path / "restored", key, profile)) as provider:
        store = await provider.get_kv_store(int, "items")
        got = dict([pair async for pair in store.scan()])
    assert len(got) == names["items"].records
    assert all(got[f"k{i:06}"] == i for i in acknowledged[:before])


async def test_backup_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "something").write_text("x")
    async with open_storage(_config(tmp_path / "data", secrets.token_urlsafe(32))) as provider:
        store = await provider.get_kv_store(int, "items")
        await store.set("a", 1)
        with pytest.raises(BackupRefused):
            await provider.backup(tmp_path / "backup")  # type: ignore[attr-defined]
    assert [p.name for p in (tmp_path / "backup").iterdir()] == ["something"]


async def _backup(tmp_path: Path, key: str) -> StorageConfig:
    config = _config(tmp_path / "data", key)
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(int, "items")
        await store.set("a", 1)
        await provider.backup(tmp_path / "backup")  # type: ignore[attr-defined]
        await store.set("b", 2)
    return config


async def test_restore_moves_the_old_directory_aside(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    config = await _backup(tmp_path, key)
    restored = restore_backup(
        tmp_path / "backup", tmp_path / "data", config.profile, config.master_key
    )
    assert restored.kept is not None and restored.kept.name.startswith("data.before-restore-")
    assert (restored.kept / "items_encrypted_value.db").exists()
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(int, "items")
        assert dict([pair async for pair in store.scan()]) == {"a": 1}


async def test_verify_refuses_a_changed_or_incomplete_backup(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    config = await _backup(tmp_path, key)
    backup = tmp_path / "backup"
    with pytest.raises(WrongMasterKey):
        verify_backup(backup, config.profile, parse_master_key(secrets.token_urlsafe(32)))
    data = bytearray((backup / "items_encrypted_value.db").read_bytes())
    data[5000] ^= 1
    (backup / "items_encrypted_value.db").write_bytes(bytes(data))
    with pytest.raises(BackupInvalid) as changed:
        verify_backup(backup, config.profile, config.master_key)
    assert "changed" in changed.value.detail
    (backup / MANIFEST_NAME).unlink()
    with pytest.raises(BackupInvalid):
        restore_backup(backup, tmp_path / "data", config.profile, config.master_key)
    assert (tmp_path / "data" / "items_encrypted_value.db").exists()


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


_RESTORE_IN_CHILD = """
import sys
from pathlib import Path
from fame._storage import parse_master_key
from fame._storage._backup import restore_backup
from fame._storage._errors import DatabaseInUse
try:
    restore_backup(Path(sys.argv[1]), Path(sys.argv[2]), "encrypted-sqlite",
                   parse_master_key(sys.argv[3]))
except DatabaseInUse as exc:
    print("in use:", Path(exc.path).name)
"""


async def test_restore_refuses_while_the_directory_is_in_use(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    config = await _backup(tmp_path, key)
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    async with open_storage(config) as provider:
        await provider.get_kv_store(int, "items")
        # F_GETLK does not see this process's own locks: restore from another one.
        argv = [sys.executable, "-c", _RESTORE_IN_CHILD, str(tmp_path / "backup")]
        proc = await trio.run_process(
            [*argv, str(tmp_path / "data"), key], capture_stdout=True, check=True
        )
    assert proc.stdout.decode().strip() == "in use: items_encrypted_value.db"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before
    assert not [name for name in _listing(tmp_path) if "before-restore" in name]


def _holders(directory: Path) -> dict[str, int | None]:
    """Who holds each database file, asked from another process (a process cannot see its own)."""
    code = (
        "import json, sys; from pathlib import Path;"
        " from fame._storage._file_lock import file_holder;"
        " files = sorted(Path(sys.argv[1]).glob('*.db'));"
        " print(json.dumps({p.name: file_holder(p) for p in files}))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code, str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_every_file_stays_locked_through_a_backup(tmp_path: Path, profile: str) -> None:
    """A backup must not open the held files from the node's process: closing such a
    descriptor would drop the node's POSIX lock, and another process could then open
    the file under the running node."""
    config = _config(tmp_path / "data", secrets.token_urlsafe(32), profile)
    async with open_storage(config) as provider:
        for namespace in ("items", "others"):
            store = await provider.get_kv_store(int, namespace)
            await store.set("a", 1)
        before = await trio.to_thread.run_sync(_holders, tmp_path / "data")
        assert set(before.values()) == {os.getpid()}, before
        await provider.backup(tmp_path / "backup")  # type: ignore[attr-defined]
        after = await trio.to_thread.run_sync(_holders, tmp_path / "data")
    assert after == before
