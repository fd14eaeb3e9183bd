"""Per-file salted keys (v2) and the migration of v1 files when a directory is opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from fame._storage import MasterKey, WrongMasterKey, open_storage
from fame._storage._keys import derive_file_key, file_key, find_file_key
from fame._storage._probe import KeyCheck, page_one_verifies, probe_encrypted
from fame._storage._rekey import TEMP_SUFFIX
from fame.storage import check_files

from .rekey_data import NAMESPACES, config, expected, fill, legacy_keys, read_all, record


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_new_file_key_carries_the_files_own_salt(tmp_path: Path) -> None:
    master = MasterKey.generate()
    fill(tmp_path, master, 10)
    for path in tmp_path.glob("*.db"):
        found = find_file_key(master, path)
        assert (found.version, found.verified) == (2, True)
        assert len(found.key) == 48
        assert found.key[32:] == path.read_bytes()[:16]  # the salt SQLCipher wrote
        assert not page_one_verifies(path, derive_file_key(master, path.name))


def test_two_nodes_sharing_a_master_key_get_different_file_keys(tmp_path: Path) -> None:
    master = MasterKey.generate()
    sentinel, agent = tmp_path / "sentinel", tmp_path / "agent"
    for directory in (sentinel, agent):
        fill(directory, master, 5, namespaces=("__keystore",))
    name = "__keystore_encrypted_value.db"
    sentinel_key = file_key(master, sentinel / name)
    agent_key = file_key(master, agent / name)
    assert sentinel_key[:32] != agent_key[:32]
    # One node's key does not open the other's file, under either salt.
    assert probe_encrypted(agent / name, sentinel_key) is KeyCheck.NO_PAGE_VERIFIES
    assert probe_encrypted(agent / name, sentinel_key[:32]) is KeyCheck.NO_PAGE_VERIFIES
    assert probe_encrypted(sentinel / name, agent_key) is KeyCheck.NO_PAGE_VERIFIES


def test_a_v1_directory_is_migrated_on_open_with_every_record(tmp_path: Path) -> None:
    master = MasterKey.generate()
    fill(tmp_path, master, 300, legacy=True)
    before = names(tmp_path)
    for path in tmp_path.glob("*.db"):
        assert find_file_key(master, path).version == 1
    (tmp_path / ("orders_encrypted_value.db" + TEMP_SUFFIX)).write_bytes(b"half a copy")
    assert trio.run(read_all, tmp_path, master) == expected(300)
    assert names(tmp_path) == before  # the copy a killed run left is gone, nothing added
    for path in tmp_path.glob("*.db"):
        found = find_file_key(master, path)
        assert (found.version, found.verified) == (2, True)
        assert not page_one_verifies(path, derive_file_key(master, path.name))


def test_a_v1_file_with_a_kept_wal_loses_nothing(tmp_path: Path) -> None:
    """A node killed with its -wal unmerged: the checkpoint comes before the copy."""
    master = MasterKey.generate()
    live, image = tmp_path / "live", tmp_path / "image"

    async def write_and_copy() -> None:
        async with open_storage(config(live, master)) as provider:
            store = await provider.get_kv_store(dict, "orders")
            await store.set_many({f"k{i:06}": record("orders", i) for i in range(200)})
            # What a SIGKILL leaves: the .db and its -wal as they are on disk now.
            await trio.to_thread.run_sync(shutil.copytree, live, image)

    with legacy_keys():
        trio.run(write_and_copy)
    assert (image / "orders_encrypted_value.db-wal").stat().st_size > 0
    assert find_file_key(master, image / "orders_encrypted_value.db").version == 1
    assert trio.run(read_all, image, master, ("orders",)) == expected(200, ("orders",))
    assert find_file_key(master, image / "orders_encrypted_value.db").version == 2


def test_a_wrong_master_key_is_still_named_and_nothing_is_migrated(tmp_path: Path) -> None:
    master = MasterKey.generate()
    fill(tmp_path, master, 10, legacy=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    async def open_with_another_key() -> None:
        async with open_storage(config(tmp_path, MasterKey.generate())):
            pass

    with pytest.raises(WrongMasterKey):
        trio.run(open_with_another_key)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert set(before) >= {n + "_encrypted_value.db" for n in NAMESPACES}


def test_the_offline_check_reads_a_v1_directory_without_migrating_it(tmp_path: Path) -> None:
    master = MasterKey.generate()
    fill(tmp_path, master, 20, legacy=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    checks = check_files(config(tmp_path, master))
    assert [c.ok for c in checks] == [True] * len(NAMESPACES)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
