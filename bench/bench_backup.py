"""Backup throughput: ``provider.backup`` of an encrypted directory of about 50 MB.

Run: ``PYTHONPATH=. python bench/bench_backup.py [MB]``. Prints the size,
the time and MB/s of the backup, and of ``verify_backup`` (sha256 and the
integrity checks ``fame restore`` runs first).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import trio

from fame.storage import StorageConfig, open_storage, parse_master_key, verify_backup

VALUE = 300
BATCH = 1000


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


async def main(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = StorageConfig(
            profile="encrypted-sqlite",
            directory=root / "data",
            master_key=parse_master_key(secrets.token_urlsafe(32)),
        )
        async with open_storage(config) as provider:
            stores = [
                await provider.get_kv_store(bytes, name) for name in ("alpha", "beta", "gamma")
            ]
            start = 0
            # Until the files (and their -wal) hold the size asked for.
            while _size(root / "data") < megabytes * 1_000_000:
                for store in stores:
                    await store.set_many(
                        {f"k{i:08}": os.urandom(VALUE) for i in range(start, start + BATCH)}
                    )
                start += BATCH
            began = time.perf_counter()
            manifest = await provider.backup(root / "backup")  # type: ignore[attr-defined]
            seconds = time.perf_counter() - began
        size = manifest.total_bytes / 1e6
        print(f"backup: {size:.1f} MB in {len(manifest.files)} files, {seconds:.2f} s,"
              f" {size / seconds:.1f} MB/s")  # fmt: skip
        began = time.perf_counter()
        verify_backup(root / "backup", config.profile, config.master_key)
        seconds = time.perf_counter() - began
        print(f"verify: {seconds:.2f} s, {size / seconds:.1f} MB/s")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 50)
