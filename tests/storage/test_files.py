"""Wrong keys, damaged files and profile mix-ups: each its own error, no file changed."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from pathlib import Path

import msgspec
import pytest
import trio

from fame._storage import (
    DamagedDatabase,
    EncryptionMismatch,
    StorageError,
    StorageWriteFailed,
    WrongMasterKey,
    open_storage,
)

from .conftest import hashes, make_config


class Doc(msgspec.Struct):
    body: str


KEY = secrets.token_urlsafe(32)


async def fill(directory: Path, profile: str, namespaces: tuple[str, ...] = ("docs",)) -> None:
    async with open_storage(make_config(profile, directory, KEY)) as provider:
        for namespace in namespaces:
            store = await provider.get_kv_store(Doc, namespace)
            await store.set_many({f"k{i:04}": Doc(f"{i}" * 150) for i in range(300)})


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


async def expect_open_error(directory: Path, profile: str, key: str, error: type[Exception]):
    before = hashes(directory)
    with pytest.raises(error) as info:
        async with open_storage(make_config(profile, directory, key)) as provider:
            await (await provider.get_kv_store(Doc, "docs")).get("k0001")
    assert hashes(directory) == before, "a file was changed by a failed open"
    assert KEY not in str(info.value) and key not in str(info.value)
    return info.value


async def test_wrong_master_key(tmp_path: Path) -> None:
    await fill(tmp_path, "encrypted-sqlite", ("docs", "alpha"))
    exc = await expect_open_error(
        tmp_path, "encrypted-sqlite", secrets.token_urlsafe(32), WrongMasterKey
    )
    directory = str(await trio.Path(tmp_path).resolve())
    assert exc.directory == directory
    assert exc.file == "alpha_encrypted_value.db"  # the first file, in name order
    assert "wrong master key" in str(exc) and directory in str(exc)


async def test_damaged_first_page(tmp_path: Path) -> None:
    await fill(tmp_path, "encrypted-sqlite")
    flip(tmp_path / "docs_encrypted_value.db", 100)
    exc = await expect_open_error(tmp_path, "encrypted-sqlite", KEY, DamagedDatabase)
    assert "page 1 fails authentication" in str(exc)
    assert not isinstance(exc, WrongMasterKey)


async def test_damaged_file_next_to_good_ones(tmp_path: Path) -> None:
    await fill(tmp_path, "encrypted-sqlite", ("docs", "good"))
    (tmp_path / "docs_encrypted_value.db").write_bytes(os.urandom(8 * 4096))
    exc = await expect_open_error(tmp_path, "encrypted-sqlite", KEY, DamagedDatabase)
    assert "docs_encrypted_value.db" in str(exc) and "other files" in str(exc)


async def test_truncated_file(tmp_path: Path) -> None:
    await fill(tmp_path, "encrypted-sqlite")
    path = tmp_path / "docs_encrypted_value.db"
    path.write_bytes(path.read_bytes()[:5000])
    exc = await expect_open_error(tmp_path, "encrypted-sqlite", KEY, DamagedDatabase)
    assert "whole number" in str(exc)


async def test_damage_deep_inside_is_reported_on_read(tmp_path: Path) -> None:
    await fill(tmp_path, "encrypted-sqlite")
    path = tmp_path / "docs_encrypted_value.db"
    pages = path.stat().st_size // 4096
    flip(path, (pages - 1) * 4096 + 200)  # the last page holds records, not the schema
    before = hashes(tmp_path)
    async with open_storage(make_config("encrypted-sqlite", tmp_path, KEY)) as provider:
        store = await provider.get_kv_store(Doc, "docs")
        with pytest.raises(DamagedDatabase, match=r"docs_encrypted_value\.db"):
            await store.list()
    # Clean close checkpointed an empty WAL: the main file is byte-for-byte the same.
    assert hashes(tmp_path)["docs_encrypted_value.db"] == before["docs_encrypted_value.db"]


async def test_plain_file_opened_as_encrypted(tmp_path: Path) -> None:
    await fill(tmp_path / "plain", "sqlite")
    target = tmp_path / "enc"
    target.mkdir()
    shutil.copy(tmp_path / "plain" / "docs_value.db", target / "docs_encrypted_value.db")
    exc = await expect_open_error(target, "encrypted-sqlite", KEY, EncryptionMismatch)
    assert "is an unencrypted SQLite database" in str(exc)


async def test_encrypted_file_opened_as_plain(tmp_path: Path) -> None:
    await fill(tmp_path / "enc", "encrypted-sqlite")
    target = tmp_path / "plain"
    target.mkdir()
    shutil.copy(tmp_path / "enc" / "docs_encrypted_value.db", target / "docs_value.db")
    exc = await expect_open_error(target, "sqlite", KEY, EncryptionMismatch)
    assert "looks encrypted" in str(exc)


async def test_plain_profile_refuses_encrypted_directory(tmp_path: Path) -> None:
    # An encrypted file name also ends in _value.db: the sqlite profile notices it.
    await fill(tmp_path, "encrypted-sqlite")
    await expect_open_error(tmp_path, "sqlite", KEY, EncryptionMismatch)


async def test_damaged_plain_files(tmp_path: Path) -> None:
    await fill(tmp_path, "sqlite")
    path = tmp_path / "docs_value.db"
    data = bytearray(path.read_bytes())
    data[16:4096] = os.urandom(4080)  # keep the magic, break the header and schema page
    path.write_bytes(bytes(data))
    await expect_open_error(tmp_path, "sqlite", KEY, DamagedDatabase)
    path.write_text("hello, I am a text file\n")
    exc = await expect_open_error(tmp_path, "sqlite", KEY, DamagedDatabase)
    assert "no SQLite header" in str(exc)


async def test_foreign_sqlite_database(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "docs_value.db")
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    exc = await expect_open_error(tmp_path, "sqlite", KEY, DamagedDatabase)
    assert "not a fame key-value database" in str(exc)


@pytest.mark.parametrize("durability", ["full", "normal"])  # normal: commits on the loop
@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_failed_commit_fails_every_writer_and_changes_nothing(
    tmp_path: Path, profile: str, durability: str
) -> None:
    config = make_config(profile, tmp_path, KEY, max_file_bytes=64 * 1024, durability=durability)
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(Doc, "full")
        base = await store.set("base", Doc("b"))
        with pytest.raises(StorageWriteFailed, match="none of the 1 writes"):
            await store.set_many({f"big{i}": Doc("x" * 3000) for i in range(40)})
        assert await store.count() == 1
        # The version counter did not move: the failed transaction left no trace.
        assert await store.set("base", Doc("b2")) == base + 1

        acked: dict[str, bool] = {}

        async def writer(i: int) -> None:
            try:
                await store.set(f"w{i}", Doc("y" * 2500))
                acked[f"w{i}"] = True
            except StorageWriteFailed:
                acked[f"w{i}"] = False

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(writer, i)
        assert False in acked.values()  # the cap was hit
        stored = await store.get_many(list(acked))
        assert {k for k, ok in acked.items() if ok} == set(stored)
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(Doc, "full")
        assert set(await store.get_many(list(acked))) == {k for k, ok in acked.items() if ok}


async def test_errors_share_a_base(tmp_path: Path) -> None:
    for cls in (WrongMasterKey, DamagedDatabase, EncryptionMismatch, StorageWriteFailed):
        assert issubclass(cls, StorageError)
