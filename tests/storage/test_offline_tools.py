"""``fame inspect``, ``dump`` and ``check`` never change a byte, and see a kept ``-wal``.

Real ``fame`` processes on a directory left in three states by a real
writer process (``wal_writer``): after a clean stop, after a SIGKILL while
it held the store open (its ``-wal`` holds the last transactions), and
after a full disk stopped it (a 2 MiB tmpfs; the ``-wal`` is kept on
purpose). Every file of the directory is hashed, and the names listed,
before and after each tool. ``check`` must call the data sound, and
``dump`` must show every record the writer saw acknowledged.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import msgspec
import pytest
import trio

from fame._storage._sqlcipher_backend import _SCHEMA, FORMAT
from fame.storage import (
    MasterKey,
    StorageConfig,
    StorageFull,
    check_files,
    open_snapshot,
    open_storage,
    snapshot_directory,
    storage_config_from_env,
)

from .conftest import hashes
from .kill_points import kill_at_random_points
from .wal_writer import value_of

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "notes"
FILE = f"{NAMESPACE}_encrypted_value.db"
WAIT = 60  # seconds any child may take, at most


def environment(directory: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": str(directory),
        **extra,
    }


def start_writer(mode: str, count: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.wal_writer", mode, NAMESPACE, str(count)],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], last: tuple[str, ...]) -> list[str]:
    """The writer's lines up to and including the first that starts with one of ``last``."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(last):
            return lines
    raise AssertionError(f"the writer ended (status {proc.wait(WAIT)}) after {lines[-3:]}")


def acked(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines if line.startswith("ack ")]


def fame(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@contextmanager
def tiny_volume(where: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs mounted at ``where`` for the block."""
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def run_tools(root: Path, directory: Path, env: dict[str, str], keys: list[str]) -> None:
    """Each tool leaves every byte and name as it was; check says sound; dump has every key."""
    outcomes = {}
    for args in (
        ["inspect", str(directory)],
        ["dump", str(directory), NAMESPACE],
        ["check", str(directory)],
    ):
        before = hashes(directory)
        done = fame(root, *args, env=env)
        assert hashes(directory) == before, f"fame {args[0]} changed the directory"
        assert done.returncode == 0, f"fame {args[0]}: {done.stderr}"
        outcomes[args[0]] = done.stdout
    dumped = {
        record["key"]: record["value"] for record in map(json.loads, outcomes["dump"].splitlines())
    }
    assert all(dumped.get(key) == value_of(key) for key in keys), (
        f"{sum(1 for key in keys if key not in dumped)} of {len(keys)} acknowledged records missing"
    )
    assert f"{FILE}: ok" in outcomes["check"]
    assert f"{NAMESPACE:<28}" in outcomes["inspect"]


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    return {"FAME_STORAGE_MASTER_KEY": MasterKey.generate().export()}


def test_after_a_clean_stop(tmp_path: Path, key_env: dict[str, str]) -> None:
    directory = tmp_path / "data"
    env = environment(directory, **key_env)
    writer = start_writer("exit", 200, env)
    lines = read_until(writer, ("done",))
    assert writer.wait(WAIT) == 0
    assert not (directory / f"{FILE}-wal").exists()
    run_tools(tmp_path, directory, env, acked(lines))


def test_after_a_sigkill_and_while_the_writer_runs(tmp_path: Path, key_env: dict[str, str]) -> None:
    directory = tmp_path / "data"
    env = environment(directory, **key_env)
    writer = start_writer("hold", 300, env)
    try:
        lines = read_until(writer, ("done",))
        # A running writer holds the file: every tool refuses, naming its pid, and reads nothing.
        for args in (
            ["inspect", str(directory)],
            ["dump", str(directory), NAMESPACE],
            ["check", str(directory)],
        ):
            before = hashes(directory)
            done = fame(tmp_path, *args, env=env)
            assert hashes(directory) == before
            assert done.returncode == 2, done.stderr
            assert f"pid {writer.pid}" in done.stderr and "Stop the node" in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(WAIT)
    wal = directory / f"{FILE}-wal"
    assert wal.stat().st_size > 0, "the SIGKILL should leave the last transactions in the -wal"
    run_tools(tmp_path, directory, env, acked(lines))
    assert "-wal file was replayed" in fame(tmp_path, "check", str(directory), env=env).stdout


def test_after_a_full_disk_stop(tmp_path: Path, key_env: dict[str, str]) -> None:
    with tiny_volume(tmp_path / "volume") as volume:
        directory = volume / "data"
        env = environment(directory, **key_env, FAME_STORAGE_WAL_CHECKPOINT_BYTES="65536")
        writer = start_writer("fill", 100_000, env)
        lines = read_until(writer, ("full",))
        assert writer.wait(WAIT) == 0
        assert (directory / f"{FILE}-wal").stat().st_size > 0, "the full disk should keep the -wal"
        keys = acked(lines)
        run_tools(tmp_path, directory, env, keys)

        # The node restarts on the full disk: it reads every record and refuses writes.
        server = start_writer("serve", 0, env)
        out, _ = server.communicate("".join(f"ack {key}\n" for key in keys), timeout=WAIT)
        assert server.returncode == 0
        assert out.split()[1:] == ["read", str(len(keys)), "write-full", FILE]


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_checkpoints_keep_the_wal_bounded(tmp_path: Path, durability: str) -> None:
    # With durability normal the commits run on the event loop, the checkpoints on the worker.
    threshold = 65536
    config = StorageConfig(
        profile="encrypted-sqlite",
        directory=tmp_path,
        master_key=MasterKey.generate(),
        wal_checkpoint_bytes=threshold,
        durability=durability,  # type: ignore[arg-type]
    )
    wal = tmp_path / f"{FILE}-wal"
    sizes = []

    async def main() -> None:
        async with open_storage(config) as provider:
            store = await provider.get_kv_store(str, NAMESPACE)
            for i in range(1500):
                await store.set(f"k{i:06d}", secrets.token_hex(200))
                sizes.append(wal.stat().st_size)
            # A batch of 20 writes in one transaction: the bound is the threshold plus one batch.
            await store.set_many({f"b{i:06d}": secrets.token_hex(200) for i in range(20)})
            sizes.append(wal.stat().st_size)

    trio.run(main)
    one_commit = 16 * (4096 + 24)  # one transaction: its pages (b-tree splits too), with headers
    assert max(sizes) <= threshold + one_commit, max(sizes)
    # Without checkpoints the -wal would hold every write, about ten times the threshold.
    assert sizes[-1] <= threshold + one_commit


async def test_a_full_file_that_needs_a_layout_change_opens_for_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file of the previous layout at its size limit: reads work, writes fail until room."""

    directory = tmp_path / "db"
    directory.mkdir(mode=0o700)
    conn = sqlite3.connect(directory / "old_value.db")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO fame_meta VALUES ('format', ?), ('seq', 1000)", (FORMAT,))
    i = 0
    while conn.execute("PRAGMA page_count").fetchone()[0] < 20:
        value = msgspec.msgpack.encode(value_of(f"k{i:06d}"))
        conn.execute("INSERT INTO kv VALUES (?, ?, 1, NULL)", (f"k{i:06d}", value))
        i += 1
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.commit()
    conn.close()
    full = StorageConfig(profile="sqlite", directory=directory, max_file_bytes=pages * 4096)
    async with open_storage(full) as provider:
        store = await provider.get_kv_store(str, "old")
        assert await store.count() == i
        assert await store.get("k000000") == value_of("k000000")
        with pytest.raises(StorageFull) as info:
            await store.set("new", "n")
        assert info.value.path.endswith("old_value.db") and info.value.limit == pages * 4096
    assert "opened for reads only" in caplog.text
    roomy = StorageConfig(profile="sqlite", directory=directory)
    async with open_storage(roomy) as provider:
        store = await provider.get_kv_store(str, "old")
        await store.set("new", "n", request_id="r")
        assert await store.count() == i + 1


def test_check_after_sigkills_at_random_points(tmp_path: Path, key_env: dict[str, str]) -> None:
    """50 writers SIGKILLed mid-work: the check changes nothing, calls it sound, reads every ack.

    The check runs in this process (``check_files``, then the records of a
    snapshot, as ``fame check`` does), which halves the time of each point;
    the tests above run the ``fame`` command itself.
    """
    template = tmp_path / "template"
    (template / "data").mkdir(parents=True, mode=0o700)
    env = environment(Path("data"), **key_env)
    master = storage_config_from_env(key_env).master_key

    def check(copy: Path, killed: bool) -> None:
        directory = copy / "data"
        keys = acked((copy / "acks").read_text().splitlines())
        before = hashes(directory)
        config = StorageConfig(profile="encrypted-sqlite", directory=directory, master_key=master)
        assert [result.problems for result in check_files(config)] == [[]]
        with snapshot_directory([directory / FILE]) as snapshot:
            found = trio.run(read_all, attrs.evolve(config, directory=snapshot), keys)
        assert hashes(directory) == before, "the check changed the directory"
        assert found == {key: value_of(key) for key in keys}, (len(found), len(keys), killed)

    report = kill_at_random_points(
        template=template,
        work=tmp_path / "work",
        argv=lambda copy: [
            sys.executable,
            "-m",
            "tests.storage.wal_writer",
            "exit",
            NAMESPACE,
            "300",
            "acks",
        ],
        ready="writing",
        check=check,
        env=env,
        points=50,
    )
    # The rest found the writer closing or gone: still a state the tools must read.
    assert report.killed_mid_work >= 10, report


async def read_all(config: StorageConfig, keys: list[str]) -> dict[str, str]:
    async with open_storage(config) as provider:
        store = await provider.get_kv_store(str, NAMESPACE)
        return await store.get_many(keys)


def test_a_wrong_key_names_the_directory_not_the_copy(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    directory = tmp_path / "data"
    writer = start_writer("exit", 5, environment(directory, **key_env))
    read_until(writer, ("done",))
    assert writer.wait(WAIT) == 0
    wrong = environment(directory, FAME_STORAGE_MASTER_KEY=MasterKey.generate().export())
    for args in (["inspect", str(directory)], ["dump", str(directory), NAMESPACE]):
        before = hashes(directory)
        done = fame(tmp_path, *args, env=wrong)
        assert hashes(directory) == before
        assert done.returncode != 0
        assert "does not match the databases in data " in done.stderr, done.stderr
        assert "fame-snapshot" not in done.stderr


def test_open_snapshot_copies_the_file_and_its_wal_privately(tmp_path: Path) -> None:
    original = tmp_path / FILE
    original.write_bytes(b"db" * 100)
    (tmp_path / f"{FILE}-wal").write_bytes(b"wal" * 10)
    (tmp_path / f"{FILE}-shm").write_bytes(b"shm")  # never copied: SQLite rebuilds it
    before = hashes(tmp_path)
    with open_snapshot(original) as copy:
        assert copy.name == FILE and copy.parent != tmp_path
        assert copy.parent.stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in copy.parent.iterdir()) == [FILE, f"{FILE}-wal"]
        assert copy.read_bytes() == original.read_bytes()
        copy.write_bytes(b"changed")
    assert not copy.parent.exists()
    assert hashes(tmp_path) == before
    (tmp_path / f"{FILE}-wal").write_bytes(b"")  # an empty -wal is not copied
    with open_snapshot(original) as copy:
        assert [p.name for p in copy.parent.iterdir()] == [FILE]
