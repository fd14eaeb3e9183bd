"""``fame rekey``: a real process re-encrypts a project's storage under a new master key.

The project has the layout ``fame init`` makes: ``conf/agent.env`` and
``conf/sentinel.env`` name ``data/agent`` and ``data/sentinel``, and
``conf/secrets.env`` holds the master key.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets as random_secrets
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from fame._cli import _rekey
from fame._storage import MasterKey, WrongMasterKey, open_storage, parse_master_key
from fame._storage._keys import find_file_key
from fame._storage._rekey import TEMP_SUFFIX

from .kill_points import kill_at_random_points
from .rekey_data import config, expected, fill, read_all

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MASTER = "FAME_STORAGE_MASTER_KEY"
PENDING = "FAME_STORAGE_MASTER_KEY_NEXT"
SENTINEL_NAMESPACES = ("__keystore", "__registry")
TOKEN = random_secrets.token_urlsafe(32)


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))
    return base


def fame(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rekey_here(project: Path) -> int:
    """``fame rekey`` in the project, run in this process; its stderr goes to the log."""
    cwd = Path.cwd()
    os.chdir(project)
    try:
        with contextlib.redirect_stderr(io.StringIO()) as said:
            status = _rekey.rekey([], None)
    finally:
        os.chdir(cwd)
    assert "done:" in said.getvalue(), said.getvalue()
    return status


def make_project(root: Path, records: int, *, legacy: bool = False) -> MasterKey:
    """A stopped project whose agent and sentinel directories hold ``records`` per namespace."""
    master = MasterKey.generate()
    conf = root / "conf"
    conf.mkdir(parents=True)
    for name in ("agent", "sentinel"):
        (conf / f"{name}.env").write_text(
            f"FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/{name}\n"
        )
    secrets = conf / "secrets.env"
    secrets.write_text(f"# kept\n{MASTER}={master.export()}\nFAME_ADMISSION_TOKEN={TOKEN}\n")
    secrets.chmod(0o600)
    fill(root / "data" / "agent", master, records, legacy=legacy)
    fill(root / "data" / "sentinel", master, records, namespaces=SENTINEL_NAMESPACES)
    return master


def secrets_of(project: Path) -> dict[str, str]:
    lines = (project / "conf" / "secrets.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def listing(project: Path) -> list[str]:
    return sorted(str(p.relative_to(project)) for p in (project / "data").rglob("*"))


def assert_all_records(project: Path, master: MasterKey, records: int) -> None:
    assert trio.run(read_all, project / "data" / "agent", master) == expected(records)
    assert trio.run(
        read_all, project / "data" / "sentinel", master, SENTINEL_NAMESPACES
    ) == expected(records, SENTINEL_NAMESPACES)


def test_rekey_moves_every_file_to_the_new_key(tmp_path: Path) -> None:
    old = make_project(tmp_path, 200, legacy=True)
    before = listing(tmp_path)
    new = MasterKey.generate()
    (tmp_path / "new.key").write_text(new.export() + "\n")
    done = fame(tmp_path, "rekey", "--new-key-file", "new.key")
    assert done.returncode == 0, done.stderr
    assert re.search(r"done: 6 files, [0-9.]+ MB in [0-9.]+ s \([0-9.]+ MB/s", done.stderr)
    (tmp_path / "new.key").unlink()
    assert listing(tmp_path) == before  # no file added or left behind
    values = secrets_of(tmp_path)
    assert parse_master_key(values[MASTER]) == new
    assert PENDING not in values
    assert values["FAME_ADMISSION_TOKEN"] == TOKEN
    assert (tmp_path / "conf" / "secrets.env").stat().st_mode & 0o777 == 0o600
    assert_all_records(tmp_path, new, 200)
    for path in (tmp_path / "data").rglob("*.db"):
        assert find_file_key(new, path).verified
        assert not find_file_key(old, path).verified

    async def open_with_the_old_key() -> None:
        async with open_storage(config(tmp_path / "data" / "agent", old)):
            pass

    with pytest.raises(WrongMasterKey):
        trio.run(open_with_the_old_key)


def test_rekey_refuses_while_a_process_holds_a_file(tmp_path: Path) -> None:
    master = make_project(tmp_path, 5)
    secrets_before = (tmp_path / "conf" / "secrets.env").read_bytes()
    data_before = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}

    async def rekey_while_open() -> subprocess.CompletedProcess[str]:
        async with open_storage(config(tmp_path / "data" / "agent", master)) as provider:
            await provider.get_kv_store(dict, "orders")  # opens and locks the file
            return await trio.to_thread.run_sync(fame, tmp_path, "rekey")

    refused = trio.run(rekey_while_open)
    assert refused.returncode == 1
    assert "orders_encrypted_value.db is in use" in refused.stderr
    assert "just stop" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (tmp_path / "conf" / "secrets.env").read_bytes() == secrets_before
    for path, data in data_before.items():
        if not path.name.startswith("orders"):  # the one open above may be checkpointed
            assert path.read_bytes() == data


def test_a_node_refuses_to_start_while_a_rotation_is_pending(tmp_path: Path) -> None:
    make_project(tmp_path, 5)
    secrets = tmp_path / "conf" / "secrets.env"
    secrets.write_text(secrets.read_text() + f"{PENDING}={MasterKey.generate().export()}\n")
    started = fame(tmp_path, "node", "--config", "conf/agent.env", "--config", "conf/secrets.env")
    assert started.returncode == 1
    assert started.stderr.strip().splitlines()[-1].endswith("Finish it with: fame rekey")


def test_rekey_killed_at_50_random_points_loses_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template"
    records = 400
    old = make_project(template, records)

    def check(project: Path, killed: bool) -> None:
        values = secrets_of(project)
        candidates = [parse_master_key(values[MASTER])]
        if values.get(PENDING):
            candidates.append(parse_master_key(values[PENDING]))
        for path in (project / "data").rglob("*.db"):
            # Every file opens with a key the secrets file holds.
            assert any(find_file_key(key, path).verified for key in candidates), path
        if killed:
            # The second run in this process (the command's own code, not a
            # new interpreter): 50 interpreter starts fewer keeps the test short.
            assert rekey_here(project) == 0
        values = secrets_of(project)
        assert PENDING not in values
        final = parse_master_key(values[MASTER])
        assert final != old
        assert not list((project / "data").rglob("*" + TEMP_SUFFIX))
        assert_all_records(project, final, records)

    report = kill_at_random_points(
        template=template,
        work=tmp_path,
        argv=lambda project: [sys.executable, "-m", "fame._cli.fame", "rekey"],
        ready="re-encrypting",
        check=check,
        env=env(),
        points=50,
        seed=14,
    )
    print(report)
    assert report.killed_mid_work >= 25, report


def test_a_second_run_finishes_a_rotation_left_half_done(tmp_path: Path) -> None:
    """Deterministically: one directory under the new key, the other not, key pending."""
    old = make_project(tmp_path, 50)
    new = MasterKey.generate()
    secrets = tmp_path / "conf" / "secrets.env"
    secrets.write_text(secrets.read_text() + f"{PENDING}={new.export()}\n")
    first = fame(tmp_path, "rekey", "data/agent")  # only one directory: the other still old
    assert first.returncode == 0, first.stderr
    # Pretend the run was killed before its swap: put the pending state back.
    secrets.write_text(f"{MASTER}={old.export()}\n{PENDING}={new.export()}\n")
    second = fame(tmp_path, "rekey")
    assert second.returncode == 0, second.stderr
    assert "resuming the pending rotation" in second.stderr
    assert "re-encrypting 2 files" in second.stderr and "4 already done" in second.stderr
    assert parse_master_key(secrets_of(tmp_path)[MASTER]) == new
    assert_all_records(tmp_path, new, 50)
