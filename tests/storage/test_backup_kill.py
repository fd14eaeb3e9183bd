"""SIGKILL ``fame backup --offline`` at 50 random points of its work.

After each kill the destination either does not exist (the work was in its
``.partial`` sibling) or holds a complete backup that verifies; the source
directory is intact; and a second run makes a complete backup.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest
import trio

from fame.storage import (
    StorageConfig,
    backup_storage,
    open_storage,
    parse_master_key,
    verify_backup,
)
from tests.storage.kill_points import kill_at_random_points

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NAMESPACES = {"alpha": 3000, "beta": 1500, "__node_meta": 10}
VALUE = 600  # bytes per record: about 3 MB in all


def _config(directory: Path, key: str) -> StorageConfig:
    return StorageConfig(
        profile="encrypted-sqlite", directory=directory, master_key=parse_master_key(key)
    )


async def _fill(config: StorageConfig) -> None:
    async with open_storage(config) as provider:
        for namespace, count in NAMESPACES.items():
            if namespace.startswith("__"):
                store = await provider.get_internal_kv_store(bytes, namespace)
            else:
                store = await provider.get_kv_store(bytes, namespace)
            await store.set_many({f"k{i:06}": os.urandom(VALUE) for i in range(count)})


def test_backup_killed_at_random_points(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    template = tmp_path / "template"
    (template / "conf").mkdir(parents=True)
    (template / "conf" / "backup.env").write_text(
        f"FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_MASTER_KEY={key}\n"
    )
    trio.run(_fill, _config(template / "data", key))
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def argv(copy: Path) -> list[str]:
        return [
            sys.executable, "-m", "fame._cli.fame", "backup", "data", "dest", "--offline",
            "--config", "conf/backup.env", "--project", str(copy),
        ]  # fmt: skip

    def check(copy: Path, killed: bool) -> None:
        config = _config(copy / "data", key)
        dest = copy / "dest"
        if not dest.exists():
            assert killed
            # The second run: the source opens, and the backup completes.
            trio.run(backup_storage, config, dest)
        manifest = verify_backup(dest, config.profile, config.master_key)
        counts = {f.namespace: f.records for f in manifest.files}
        assert counts == NAMESPACES
        assert not (copy / ".dest.partial").exists()

    report = kill_at_random_points(
        template=template,
        work=tmp_path / "work",
        argv=argv,
        ready="copying",
        check=check,
        env=env,
        points=50,
        seed=14,
    )
    print(f"backup kill points: {report}")
    assert report.killed_mid_work >= 25, report
