"""``fame salvage`` copies every readable record of a damaged file, as a real process.

A real encrypted store of 20,000 records with one damaged page: the
salvage copies all but that page's records into a new file that passes
``fame check`` and opens as an ordinary namespace, reports the keys it
could not read, exits with its own status for that, and leaves the
source's bytes as they were. SIGKILLed at 50 random points, it leaves
either no result or a complete one, and a second run finishes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from agents.storage_agent import NAMESPACE, RecordModel
from fame.storage import check_files, open_storage, salvage_namespace

from .conftest import hashes
from .damaged_store import MASTER_KEY, RECORDS, config, damage, fill, key_of, value_of
from .kill_points import kill_at_random_points

REPO = Path(__file__).resolve().parents[2]
FILE = f"{NAMESPACE}_encrypted_value.db"
INCOMPLETE = 3


def fame_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | {"FAME_STORAGE_MASTER_KEY": MASTER_KEY}


def fame_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fame._cli.fame", *args]


def fame(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fame_argv(*args), cwd=cwd, env=fame_env(), capture_output=True, text=True, timeout=120
    )


async def read_all(directory: Path) -> dict[str, RecordModel]:
    async with open_storage(config(directory)) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        return await store.list()


async def versions(directory: Path, keys: list[str]) -> dict[str, int]:
    async with open_storage(config(directory)) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        found = {key: await store.get_versioned(key) for key in keys}
        return {key: row.version for key, row in found.items() if row is not None}


async def count(directory: Path) -> int:
    async with open_storage(config(directory)) as provider:
        return await (await provider.get_kv_store(RecordModel, NAMESPACE)).count()


async def test_salvage_copies_every_readable_record(
    tmp_path: Path, reliability_report: Any
) -> None:
    source = tmp_path / "db"
    path = await fill(source)
    page = damage(path)
    before = hashes(source)
    out = tmp_path / "salvaged"

    done = await trio.to_thread.run_sync(
        lambda: fame(tmp_path, "salvage", str(source), NAMESPACE, "--to", str(out))
    )
    assert done.returncode == INCOMPLETE, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert hashes(source) == before  # the source was not changed, nothing added beside it
    assert sorted(p.name for p in out.iterdir()) == [FILE]  # no work files left

    copied = await read_all(out)
    assert len(copied) >= 0.99 * RECORDS
    assert f"copied {len(copied)} records" in done.stdout
    assert f"damaged pages of {FILE}: {page}" in done.stdout
    missing = sorted(set(map(key_of, range(RECORDS))) - copied.keys())
    assert missing, "the damaged page held records"
    # Every missing key is inside one reported range; every copied one is intact.
    unreadable = [line for line in done.stdout.splitlines() if line.startswith("unreadable: ")]
    assert len(unreadable) == 1
    assert f"after {key_of(int(missing[0][1:]) - 1)!r}" in unreadable[0]
    assert f"before {key_of(int(missing[-1][1:]) + 1)!r}" in unreadable[0]
    for key, value in copied.items():
        assert value == value_of(int(key[1:]))
    sample = sorted(copied)[::97]
    # Versions as stored: fill wrote the records in key order.
    assert await versions(out, sample) == {key: int(key[1:]) + 1 for key in sample}

    checked = await trio.to_thread.run_sync(lambda: fame(tmp_path, "check", str(out)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(copied)} records readable" in checked.stdout
    reliability_report(
        records=RECORDS,
        salvaged=len(copied),
        unreadable=len(missing),
        salvaged_percent=round(100 * len(copied) / RECORDS, 2),
        exit_status=done.returncode,
    )


async def test_every_key_not_copied_is_in_a_reported_range(tmp_path: Path) -> None:
    """Three damaged leaves, one near the end of the file: each is skipped and reported."""
    source = tmp_path / "db"
    path = await fill(source)
    pages = sorted({damage(path, near) for near in (0.2, 0.6, 0.999)})
    out = tmp_path / "out"
    report = await trio.to_thread.run_sync(
        lambda: salvage_namespace(config(source), NAMESPACE, out)
    )
    assert report.pages == tuple(pages)
    assert len(report.lost) == 3 and not report.complete
    copied = await read_all(out)
    assert report.copied == len(copied) >= 0.99 * RECORDS
    for i in range(RECORDS):
        key = key_of(i)
        inside = any(
            (lost.after is None or lost.after < key) and (lost.before is None or key < lost.before)
            for lost in report.lost
        )
        assert (key in copied) != inside, key  # copied, or reported as not readable


CRASHED_WRITER = """
import os, sys, trio
from pathlib import Path
from agents.storage_agent import NAMESPACE, RecordModel
from fame.storage import StorageConfig, open_storage, parse_master_key

async def main():
    config = StorageConfig(
        profile="encrypted-sqlite", directory=Path(sys.argv[1]),
        master_key=parse_master_key(os.environ["FAME_STORAGE_MASTER_KEY"]),
    )
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        await store.set("zz-only-in-the-wal", RecordModel("acknowledged"))
        os._exit(0)  # as a SIGKILL would: the -wal is not checkpointed

trio.run(main)
"""


async def test_records_only_in_a_kept_wal_are_salvaged(tmp_path: Path) -> None:
    source = tmp_path / "db"
    await fill(source, 2_000)
    writer = await trio.run_process(
        [sys.executable, "-c", CRASHED_WRITER, str(source)], env=fame_env(), check=False
    )
    assert writer.returncode == 0
    assert (source / f"{FILE}-wal").stat().st_size > 0
    before = hashes(source)
    report = await trio.to_thread.run_sync(
        lambda: salvage_namespace(config(source), NAMESPACE, tmp_path / "out")
    )
    assert report.complete and report.copied == 2_001
    assert hashes(source) == before  # the -wal was copied, not replayed into the source
    copied = await read_all(tmp_path / "out")
    assert copied["zz-only-in-the-wal"].value == "acknowledged"


KILL_RECORDS = 10_000


async def test_a_sound_file_is_copied_whole_and_an_existing_result_is_kept(
    tmp_path: Path,
) -> None:
    source = tmp_path / "db"
    await fill(source, 2_000)
    out = tmp_path / "out"
    done = await trio.to_thread.run_sync(
        lambda: fame(tmp_path, "salvage", str(source), NAMESPACE, "--to", str(out))
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copied 2000 records" in done.stdout and "unreadable" not in done.stdout
    assert len(await read_all(out)) == 2_000
    kept = hashes(out)
    again = await trio.to_thread.run_sync(
        lambda: fame(tmp_path, "salvage", str(source), NAMESPACE, "--to", str(out))
    )
    assert again.returncode == 1
    assert again.stderr.startswith("fame salvage: ") and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert hashes(out) == kept
    missing = await trio.to_thread.run_sync(
        lambda: fame(tmp_path, "salvage", str(source), "nothing_here", "--to", str(out))
    )
    assert missing.returncode == 1 and "no file for namespace 'nothing_here'" in missing.stderr


def test_salvage_killed_at_random_points_leaves_no_half_file(
    tmp_path: Path, reliability_report: Any
) -> None:
    template = tmp_path / "template"
    trio.run(fill, template / "db", KILL_RECORDS)
    source_hashes = hashes(template / "db")

    def argv(copy: Path) -> list[str]:
        return fame_argv("salvage", str(copy / "db"), NAMESPACE, "--to", str(copy / "out"))

    def complete(out: Path) -> None:
        assert sorted(p.name for p in out.iterdir()) == [FILE]
        assert all(check.ok for check in check_files(config(out)))
        assert trio.run(count, out) == KILL_RECORDS

    def check(copy: Path, killed: bool) -> None:
        assert hashes(copy / "db") == source_hashes
        out = copy / "out"
        if not (out / FILE).exists():
            again = fame(copy, "salvage", str(copy / "db"), NAMESPACE, "--to", str(out))
            assert again.returncode == 0, again.stdout + again.stderr
        elif killed:
            # Killed after the rename: the file is whole; a rerun refuses to replace it
            # and clears what the killed run left.
            again = fame(copy, "salvage", str(copy / "db"), NAMESPACE, "--to", str(out))
            assert again.returncode == 1 and "already exists" in again.stderr
        complete(out)

    report = kill_at_random_points(
        template=template,
        work=tmp_path / "points",
        argv=argv,
        ready="fame salvage: copying",
        check=check,
        env=fame_env(),
        points=50,
        seed=14,
    )
    assert report.killed_mid_work >= 10, report
    reliability_report(
        points=report.points,
        killed_mid_work=report.killed_mid_work,
        finished_first=report.finished_first,
        work_seconds=round(report.work_seconds, 3),
    )
