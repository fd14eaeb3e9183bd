"""Offline inspection of a storage directory: ``fame inspect``, ``dump``, ``check``.

These open the files through the storage provider with the master key from
the environment or ``conf/`` (never through SQLite directly: only the
storage backend module touches the driver), so the same key checks apply.

They never change a byte of the directory: each works on a private copy
of the files and their ``-wal`` (``fame.storage.snapshot_directory``), so
a ``-wal`` a stopped node left behind (after a crash or a full disk) is
replayed into the copy and seen, and the original is left as it was.

``check`` runs SQLCipher's ``cipher_integrity_check`` (every page
authenticated with the file's key) and SQLite's ``integrity_check`` on
every file, then reads and decodes every live record of the sound ones.

A file a running node holds (its SQLite lock, tested without taking it)
is not read: a copy taken while the node checkpoints may be torn, and a
verdict on it could call sound data damaged. The tools then print one
line naming the file and the holder's pid and exit with status 2.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio

from fame.errors import WrongMasterKey
from fame.lowlevel import leaves
from fame.storage import (
    DamagedDatabase,
    DatabaseInUse,
    StorageConfig,
    check_files,
    namespace_files,
    open_storage,
    snapshot_directory,
    storage_config_from_env,
)

__all__ = ["check", "dump", "namespaces"]


def _settings_for(directory: Path, settings: Mapping[str, str]) -> dict[str, str]:
    merged = dict(settings)
    merged["FAME_STORAGE_DB_DIRECTORY"] = str(directory)
    if not merged.get("FAME_STORAGE_PROFILE"):
        merged["FAME_STORAGE_PROFILE"] = "encrypted-sqlite"
    return merged


def _require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")


def namespaces(directory: Path, settings: Mapping[str, str]) -> list[tuple[str, Path]]:
    """The namespaces stored in ``directory`` for the configured profile, with their files."""
    _require_directory(directory)
    encrypted = _settings_for(directory, settings)["FAME_STORAGE_PROFILE"] == "encrypted-sqlite"
    return namespace_files(directory, encrypted=encrypted)


def _config(directory: Path, settings: Mapping[str, str]) -> StorageConfig:
    """The storage config of ``directory``, parsed once per command (one warning, if any)."""
    return storage_config_from_env(_settings_for(directory, settings))


IN_USE = 2
"""Exit status when a running node holds a file: nothing was read."""


def _in_use(command: str, exc: DatabaseInUse) -> int:
    holder = "a running node" if exc.pid is None else f"a running node (pid {exc.pid})"
    print(
        f"fame {command}: {exc.path} is held by {holder}; nothing was read or changed."
        " Stop the node first: the offline tools read stopped directories only",
        file=sys.stderr,
    )
    return IN_USE


def _records(config: StorageConfig, wanted: list[str]) -> dict[str, list[tuple[str, Any]]]:
    """Every live record of the ``wanted`` namespaces, read from a private copy."""
    assert config.directory is not None
    encrypted = config.profile == "encrypted-sqlite"
    files = [
        path
        for name, path in namespace_files(config.directory, encrypted=encrypted)
        if name in wanted
    ]
    with snapshot_directory(files) as copy:
        try:
            return trio.run(_read, attrs.evolve(config, directory=copy), wanted)
        except BaseException as exc:
            # Name the directory the user gave, not the copy (gone when this returns).
            for error in leaves(exc):
                if isinstance(error, WrongMasterKey):
                    raise WrongMasterKey(str(config.directory), error.file) from None
                if isinstance(error, DamagedDatabase):
                    path = config.directory / Path(error.path).name
                    raise DamagedDatabase(
                        str(path),
                        error.detail,
                        pages=error.pages,
                        key=error.key,
                        after_key=error.after_key,
                    ) from None
            raise


async def _read(config: StorageConfig, wanted: list[str]) -> dict[str, list[tuple[str, Any]]]:
    result: dict[str, list[tuple[str, Any]]] = {}
    async with open_storage(config, purge_interval=3600) as provider:
        for namespace in wanted:
            if namespace.startswith("__"):
                store = await provider.get_internal_kv_store(Any, namespace)
            else:
                store = await provider.get_kv_store(Any, namespace)
            result[namespace] = [pair async for pair in store.scan()]
    return result


def _jsonable(value: Any) -> Any:
    return msgspec.to_builtins(value)


def inspect(directory: Path, settings: Mapping[str, str]) -> int:
    """Print each namespace with its record count and file size."""
    found = namespaces(directory, settings)
    if not found:
        print(f"no namespaces in {directory}")
        return 0
    try:
        counts = _records(_config(directory, settings), [name for name, _ in found])
    except DatabaseInUse as exc:
        return _in_use("inspect", exc)
    for name, path in found:
        kind = "node" if name.startswith("__") else "agent"
        size = path.stat().st_size
        print(f"{name:<28} {kind:<5} {len(counts[name]):>8} records {size:>10} bytes  {path.name}")
    return 0


def dump(directory: Path, namespace: str, settings: Mapping[str, str]) -> int:
    """Print every record of ``namespace`` as one JSON object per line."""
    names = {name for name, _ in namespaces(directory, settings)}
    if namespace not in names:
        listed = ", ".join(sorted(names)) or "none"
        print(
            f"fame dump: no namespace {namespace!r} in {directory} (it has: {listed})",
            file=sys.stderr,
        )
        return 1
    try:
        records = _records(_config(directory, settings), [namespace])[namespace]
    except DatabaseInUse as exc:
        return _in_use("dump", exc)
    out = sys.stdout.buffer
    for key, value in records:
        out.write(msgspec.json.encode({"key": key, "value": _jsonable(value)}) + b"\n")
    out.flush()
    return 0


def check(directory: Path, settings: Mapping[str, str]) -> int:
    """Check every file and every record; print one line per file and a verdict.

    Opening the stores first reports a wrong master key before anything
    else and decodes every record against nothing but msgpack; then each
    file gets SQLCipher's page authentication and SQLite's integrity check.
    """
    _require_directory(directory)
    config = _config(directory, settings)
    try:
        results = check_files(config)
        if results and not any(result.ok for result in results):
            # Nothing authenticates: opening names the cause when it is a wrong key.
            with contextlib.suppress(DamagedDatabase):
                _records(config, [result.namespace for result in results])
        sound = [result.namespace for result in results if result.ok]
        records = _records(config, sound)
    except DatabaseInUse as exc:
        return _in_use("check", exc)
    failures = 0
    for result in results:
        note = " (its -wal file was replayed into the copy checked)" if result.has_wal else ""
        if result.ok:
            count = len(records.get(result.namespace, []))
            print(
                f"{result.file_name}: ok: integrity checks passed, {count} records readable{note}"
            )
            continue
        failures += 1
        shown = "; ".join(result.problems[:5])
        more = f" (and {len(result.problems) - 5} more)" if len(result.problems) > 5 else ""
        print(f"{result.file_name}: DAMAGED: {shown}{more}")
    if failures:
        print(
            f"fame check: {failures} of {len(results)} files in {directory} are damaged",
            file=sys.stderr,
        )
        return 1
    print(f"fame check: {directory}: all {len(results)} files ok")
    return 0
