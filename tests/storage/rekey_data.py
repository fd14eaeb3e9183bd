"""Directories of real encrypted files for the per-file salt and ``fame rekey`` tests.

``fill`` writes records through the public store API; with ``legacy=True``
the files are keyed by the first scheme (v1: no salt, ``fame/kv/v1/``
info), as fame wrote them before per-file salts, so the migration has
real v1 files to work on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import trio

from fame._storage import MasterKey, StorageConfig, open_storage
from fame._storage import _builtin as builtin
from fame._storage._keys import derive_file_key

NAMESPACES = ("orders", "people", "__node_meta", "__keystore")


def config(directory: Path, master: MasterKey) -> StorageConfig:
    return StorageConfig(profile="encrypted-sqlite", directory=directory, master_key=master)


@contextlib.contextmanager
def legacy_keys() -> Iterator[None]:
    """Make the provider key files the v1 way, and migrate nothing."""

    def v1_key(master: MasterKey, path: Path) -> bytes:
        return derive_file_key(master, path.name)

    with (
        mock.patch.object(builtin, "file_key", v1_key),
        mock.patch.object(builtin, "migrate_legacy_files", lambda directory, master: []),
    ):
        yield


def record(namespace: str, i: int) -> dict[str, object]:
    return {"ns": namespace, "i": i, "pad": "x" * 200}


async def write(
    directory: Path, master: MasterKey, records: int, namespaces: tuple[str, ...] = NAMESPACES
) -> None:
    async with open_storage(config(directory, master)) as provider:
        for namespace in namespaces:
            store = await (
                provider.get_internal_kv_store(dict, namespace)
                if namespace.startswith("__")
                else provider.get_kv_store(dict, namespace)
            )
            await store.set_many({f"k{i:06}": record(namespace, i) for i in range(records)})


def fill(
    directory: Path,
    master: MasterKey,
    records: int,
    *,
    legacy: bool = False,
    namespaces: tuple[str, ...] = NAMESPACES,
) -> None:
    """Write ``records`` records into each of ``namespaces`` in ``directory``."""
    with legacy_keys() if legacy else contextlib.nullcontext():
        trio.run(write, directory, master, records, namespaces)


async def read_all(
    directory: Path, master: MasterKey, namespaces: tuple[str, ...] = NAMESPACES
) -> dict[str, dict[str, dict[str, object]]]:
    """Every record of every namespace, read through the provider with ``master``."""
    found = {}
    async with open_storage(config(directory, master)) as provider:
        for namespace in namespaces:
            store = await (
                provider.get_internal_kv_store(dict, namespace)
                if namespace.startswith("__")
                else provider.get_kv_store(dict, namespace)
            )
            found[namespace] = await store.list()
    return found


def expected(records: int, namespaces: tuple[str, ...] = NAMESPACES) -> dict[str, object]:
    return {ns: {f"k{i:06}": record(ns, i) for i in range(records)} for ns in namespaces}
