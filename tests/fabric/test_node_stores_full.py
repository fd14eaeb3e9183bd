"""A node's internal stores on a full disk: setting an unchanged value writes nothing.

A restarting node sets its bindings again; on a full disk those writes
would fail with ``StorageFull`` and stop the start (found by testing on a
2 MiB volume: "``__binding_store`` is full"). Real SQLCipher file on a real
2 MiB tmpfs, filled to the last byte.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fame._fabric._identity import BINDING_STORE, NodeStores
from fame.storage import MasterKey, StorageConfig, StorageFull, open_storage


def fill(path: Path) -> None:
    """Take every byte left on ``path``'s volume."""
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs, unmounted afterwards."""
    where = tmp_path / "volume"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


async def test_an_unchanged_value_is_not_written_on_a_full_disk(volume: Path) -> None:
    config = StorageConfig(
        profile="encrypted-sqlite",
        directory=volume / "data",
        master_key=MasterKey.generate(),
        wal_checkpoint_bytes=65536,
    )
    async with open_storage(config) as provider:
        stores = NodeStores(provider)
        n = 0
        with pytest.raises(StorageFull):
            while True:
                await stores.set(BINDING_STORE, f"agent-{n}@node", b"1" * 500)
                n += 1
        fill(volume / "filler")
        # The bindings of the last run, set again at start: nothing to write.
        for i in range(n):
            await stores.set(BINDING_STORE, f"agent-{i}@node", b"1" * 500)
        assert await stores.get(BINDING_STORE, "agent-0@node") == b"1" * 500
        with pytest.raises(StorageFull):
            await stores.set(BINDING_STORE, "agent-0@node", b"pool" * 5000)
        (volume / "filler").unlink()  # room for the close's checkpoint
