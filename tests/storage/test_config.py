"""Storage configuration from ``FAME_STORAGE_*`` settings: one clear error naming the variable.

The settings come from a mapping the caller passes (the programs pass their
merged ``conf/*.env`` and environment); the library never reads
``os.environ`` on its own.
"""

from __future__ import annotations

import base64
import os
import pickle
import secrets
from pathlib import Path

import pytest

from fame._storage import (
    MasterKey,
    StorageConfigError,
    open_storage_from_env,
    parse_master_key,
    storage_config_from_env,
)


def test_default_is_memory() -> None:
    config = storage_config_from_env({})
    assert (config.profile, config.directory, config.master_key) == ("memory", None, None)
    assert config.durability == "full"


async def test_only_the_given_mapping_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAME_STORAGE_PROFILE", "encrypted-sqlite")
    monkeypatch.setenv("FAME_STORAGE_DB_DIRECTORY", str(tmp_path / "from-environ"))
    monkeypatch.setenv("FAME_STORAGE_DURABILITY", "normal")
    config = storage_config_from_env({})
    assert (config.profile, config.directory, config.durability) == ("memory", None, "full")
    assert dict(config.env) == {}
    async with open_storage_from_env({}) as provider:
        store = await provider.get_kv_store(dict, "ns")
        await store.set("k", {"v": 1})
    assert not (tmp_path / "from-environ").exists()
    with pytest.raises(TypeError):
        storage_config_from_env()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "text",
    [
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(48),
        secrets.token_hex(32),
        secrets.token_hex(32).upper(),
        base64.urlsafe_b64encode(os.urandom(32)).decode(),  # with '=' padding
    ],
    ids=[
        "base64url-32",
        "base64url-48",
        "hex",
        "hex-upper",
        "base64url-padded",
    ],  # stable for xdist
)
def test_good_master_keys(text: str) -> None:
    key = parse_master_key(text)
    assert text not in repr(key) and text not in str(key)
    assert key == parse_master_key(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is empty"),
        ("password", "fewer than 32"),
        (secrets.token_urlsafe(16), "fewer than 32"),
        ("correcthorsebatterystaplecorrecthorsebatterystaple", "does not look random"),
        ("0123456789abcdef" * 4, "does not look random"),
        ("a" * 64, "does not look random"),
        ("not a key, it has spaces and commas!", "neither hex nor base64url"),
    ],
    ids=["empty", "password", "short", "words", "pattern", "repeated", "not-encoded"],
)
def test_bad_master_keys(text: str, why: str) -> None:
    with pytest.raises(StorageConfigError, match=why) as info:
        parse_master_key(text)
    message = str(info.value)
    assert message.startswith("FAME_STORAGE_MASTER_KEY: ")
    assert "\n" not in message
    if text:
        assert text not in message


def test_master_key_never_leaks(tmp_path: Path) -> None:
    text = secrets.token_urlsafe(32)
    env = {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_MASTER_KEY": text,
        "FAME_STORAGE_DB_DIRECTORY": str(tmp_path),
    }
    config = storage_config_from_env(env)
    assert text not in repr(config) and text not in str(config)
    assert isinstance(config.master_key, MasterKey)
    with pytest.raises(TypeError):
        pickle.dumps(config.master_key)


@pytest.mark.parametrize(
    ("env", "variable", "expected"),
    [
        (
            {"FAME_STORAGE_PROFILE": "encrypted-sqlite", "FAME_STORAGE_DB_DIRECTORY": "x"},
            "FAME_STORAGE_MASTER_KEY",
            "required by the encrypted-sqlite profile",
        ),
        ({"FAME_STORAGE_PROFILE": "sqlite"}, "FAME_STORAGE_DB_DIRECTORY", "required"),
        ({"FAME_STORAGE_DURABILITY": "sometimes"}, "FAME_STORAGE_DURABILITY", "'full' or 'normal'"),
        ({"FAME_STORAGE_MAX_FILE_BYTES": "lots"}, "FAME_STORAGE_MAX_FILE_BYTES", "whole number"),
        ({"FAME_STORAGE_MASTER_KEY": "hunter2"}, "FAME_STORAGE_MASTER_KEY", "fewer than 32"),
        (
            {"FAME_STORAGE_WAL_CHECKPOINT_BYTES": "4k"},
            "FAME_STORAGE_WAL_CHECKPOINT_BYTES",
            "whole number of bytes, at least 65536",
        ),
        (
            {"FAME_STORAGE_WAL_CHECKPOINT_BYTES": "1000"},
            "FAME_STORAGE_WAL_CHECKPOINT_BYTES",
            "at least 65536",
        ),
    ],
)
def test_config_errors(env: dict[str, str], variable: str, expected: str) -> None:
    with pytest.raises(StorageConfigError, match=expected) as info:
        storage_config_from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(variable + ": ")


async def test_unknown_profile() -> None:
    with pytest.raises(StorageConfigError, match="unknown storage profile 'mysql'") as info:
        async with open_storage_from_env({"FAME_STORAGE_PROFILE": "mysql"}):
            pass
    assert info.value.variable == "FAME_STORAGE_PROFILE"
    assert "fame.storage_providers" in str(info.value)


@pytest.mark.parametrize(
    "profile",
    [
        "no_such_module_x:Provider",
        "fame._storage._config:NoSuchProvider",
        "fame._storage._config:",  # names the module itself, not a factory
        "fame._storage._config:BUILTIN_PROFILES",  # a tuple, not callable
    ],
)
async def test_unloadable_module_class(profile: str) -> None:
    with pytest.raises(StorageConfigError, match="FAME_STORAGE_PROFILE: cannot load"):
        async with open_storage_from_env({"FAME_STORAGE_PROFILE": profile}):
            pass


async def test_directory_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    env = {"FAME_STORAGE_PROFILE": "sqlite", "FAME_STORAGE_DB_DIRECTORY": str(directory)}
    async with open_storage_from_env(env):
        assert directory.is_dir()


async def test_directory_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = {"FAME_STORAGE_PROFILE": "sqlite", "FAME_STORAGE_DB_DIRECTORY": str(tmp_path / "file")}
    with pytest.raises(StorageConfigError, match=r"FAME_STORAGE_DB_DIRECTORY: .* not a directory"):
        async with open_storage_from_env(env):
            pass


async def test_normal_durability_works(tmp_path: Path) -> None:
    env = {
        "FAME_STORAGE_PROFILE": "sqlite",
        "FAME_STORAGE_DB_DIRECTORY": str(tmp_path),
        "FAME_STORAGE_DURABILITY": "normal",
    }
    async with open_storage_from_env(env) as provider:
        store = await provider.get_kv_store(dict, "ns")
        await store.set("k", {"a": 1})
        assert await store.get("k") == {"a": 1}


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        # sysfs refuses new files even to root, so this holds whoever runs the tests.
        ("/sys/kernel", "directory /sys/kernel is not writable"),
        ("/proc/fame-data", "cannot create directory /proc/fame-data"),
    ],
)
async def test_directory_that_cannot_be_written(directory: str, expected: str) -> None:
    env = {"FAME_STORAGE_PROFILE": "sqlite", "FAME_STORAGE_DB_DIRECTORY": directory}
    with pytest.raises(StorageConfigError) as info:
        async with open_storage_from_env(env):
            pass
    message = str(info.value)
    assert message.startswith("FAME_STORAGE_DB_DIRECTORY: ")
    assert expected in message
    assert "\n" not in message


def test_wal_checkpoint_bytes() -> None:
    assert storage_config_from_env({}).wal_checkpoint_bytes == 4 * 1024 * 1024
    env = {"FAME_STORAGE_WAL_CHECKPOINT_BYTES": " 1048576 "}
    assert storage_config_from_env(env).wal_checkpoint_bytes == 1048576
