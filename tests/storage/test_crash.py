"""A node that dies without closing: acknowledged writes survive, keys are still checked.

The writer runs in a child process that exits with ``os._exit`` right after
its last acknowledged write, so nothing is checkpointed or closed: the
records live only in the ``-wal`` file.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from fame._storage import WrongMasterKey, open_storage

from .conftest import hashes, make_config, sizes

CHILD = """
import json, os, sys, trio
from fame._storage import open_storage, StorageConfig, parse_master_key

async def main(directory, key, profile):
    config = StorageConfig(
        profile=profile,
        directory=directory,
        master_key=parse_master_key(key) if key else None,
    )
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(dict, "crashy")
        for i in range(50):
            await store.set(f"k{i}", {"i": i})
            print(json.dumps(f"k{i}"), flush=True)  # acknowledged
        os._exit(0)  # no close, no checkpoint

trio.run(main, *sys.argv[1:])
"""


def run_child(directory: Path, key: str, profile: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), key, profile],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_acknowledged_writes_survive_a_crash(tmp_path: Path, profile: str) -> None:
    key = secrets.token_urlsafe(32)
    acked = run_child(tmp_path, key if profile == "encrypted-sqlite" else "", profile)
    assert len(acked) == 50
    suffix = "_encrypted_value.db" if profile == "encrypted-sqlite" else "_value.db"
    on_disk = sizes(tmp_path)
    # Never checkpointed: the main file holds only the page written when it
    # switched to WAL; the records are in the -wal file.
    assert on_disk["crashy" + suffix] <= 4096 < on_disk["crashy" + suffix + "-wal"]

    if profile == "encrypted-sqlite":
        before = hashes(tmp_path)
        with pytest.raises(WrongMasterKey):
            async with open_storage(make_config(profile, tmp_path, secrets.token_urlsafe(32))):
                pass
        assert hashes(tmp_path) == before

    async with open_storage(make_config(profile, tmp_path, key)) as provider:
        store = await provider.get_kv_store(dict, "crashy")
        assert set(await store.list()) == set(acked)
    assert not [name for name in sizes(tmp_path) if name.endswith("-wal")]
