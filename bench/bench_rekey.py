"""Rekey benchmark: ``fame rekey`` on a project with about 50 MB of encrypted storage.

Builds a stopped project in a temporary directory (``conf/`` as ``fame
init`` writes it, ``data/agent`` with four namespaces of 400-byte records),
then runs ``fame rekey`` as a real process and prints its own figure: the
bytes re-encrypted over the time spent on the files, in MB/s (the copy
under the new key, its fsync and the rename). The same copy machinery
migrates v1 files when a node opens their directory, so the figure is
also that migration's rate.

Run: ``python bench/bench_rekey.py [MB]`` (default 55: about 50 MB of files; about 20 s).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from fame.storage import MasterKey, StorageConfig, open_storage

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ("orders", "people", "events", "__node_meta")
RECORD_BYTES = 512
"""Bytes a record takes in its file, about: 400 of payload (rows over about 1/4 page overflow)."""
BATCH = 500


async def fill(directory: Path, master: MasterKey, megabytes: int) -> None:
    per_namespace = megabytes * 1024 * 1024 // RECORD_BYTES // len(NAMESPACES)
    config = StorageConfig(profile="encrypted-sqlite", directory=directory, master_key=master)
    async with open_storage(config) as provider:
        for namespace in NAMESPACES:
            store = await (
                provider.get_internal_kv_store(dict, namespace)
                if namespace.startswith("__")
                else provider.get_kv_store(dict, namespace)
            )
            for start in range(0, per_namespace, BATCH):
                await store.set_many(
                    {
                        f"k{i:08}": {"i": i, "pad": os.urandom(180).hex()}
                        for i in range(start, min(start + BATCH, per_namespace))
                    }
                )


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 55
    with tempfile.TemporaryDirectory() as root:
        project = Path(root)
        (project / "conf").mkdir()
        (project / "conf" / "agent.env").write_text(
            "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/agent\n"
        )
        master = MasterKey.generate()
        secrets_file = project / "conf" / "secrets.env"
        secrets_file.write_text(f"FAME_STORAGE_MASTER_KEY={master.export()}\n")
        secrets_file.chmod(0o600)
        began = time.monotonic()
        trio.run(fill, project / "data" / "agent", master, megabytes)
        size = sum(p.stat().st_size for p in (project / "data").rglob("*") if p.is_file())
        print(f"filled {size / 1e6:.1f} MB in {time.monotonic() - began:.1f} s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-m", "fame._cli.fame", "rekey"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        print(done.stderr, end="")
        found = re.search(r"\(([0-9.]+) MB/s", done.stderr)
        print(f"rekey: {found.group(1) if found else '?'} MB/s (MB = 2^20 bytes)")


if __name__ == "__main__":
    main()
