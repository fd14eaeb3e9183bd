"""Backup throughput: ``provider.backup`` against what an operator would do by hand, in one run.

An encrypted directory of at least 50 MB (three namespaces of 300-byte random
values) is filled once. Each round then makes three copies of the same
files, interleaved (the order rotates round after round, so disk and CPU
noise hits all alike), each into a new directory on the same disk:

- fame: a provider is opened with the three stores in use, as on a running
  node, and ``provider.backup`` copies every file (SQLite's online backup
  API on each file's storage actor, then fsync, rename, SHA-256, a record
  count and the manifest);
- copy: the directory stopped, each file copied with ``shutil.copyfile``
  (``sendfile``) and fsynced, then the directory fsynced: the disk's raw
  copy rate of the same bytes, what no backup can beat;
- backup API: the directory stopped, each file copied with SQLite's online
  backup API called directly through sqlcipher3 (same key on both sides:
  every page decrypted and encrypted again), fsynced, then the directory
  fsynced: the same kind of copy fame makes, written by hand.

It also checks the backup the way ``fame restore`` does first
(``verify_backup``: sizes and SHA-256 against the manifest, then
``cipher_integrity_check`` and ``integrity_check`` on a private copy of
every file) against the same checks by hand on the backup's files.

Figures are the median of the rounds, in MB/s of the source files (MB =
10^6 bytes), and the ratio fame / baseline (1.00: as fast; higher is
faster). Setup (opening the provider, removing copies) is not timed.

Run: ``python bench/bench_backup.py [MB] [--rounds N]`` (default 50 MB, 3
rounds: about 15 s).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlcipher3
import trio

from fame._storage._keys import file_key
from fame.storage import StorageConfig, open_storage, parse_master_key, verify_backup

VALUE = 300
BATCH = 1000
NAMESPACES = ("alpha", "beta", "gamma")
SUFFIX = "_encrypted_value.db"


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in _database_files(directory))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _database_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


async def fill(config: StorageConfig, megabytes: int) -> None:
    assert config.directory is not None
    async with open_storage(config) as provider:
        stores = [await provider.get_kv_store(bytes, name) for name in NAMESPACES]
        start = 0
        # Until the database files hold the size asked for (what is in a -wal
        # is checkpointed into them when the provider closes).
        while _size(config.directory) < megabytes * 1_000_000:
            for store in stores:
                await store.set_many(
                    {f"k{i:08}": os.urandom(VALUE) for i in range(start, start + BATCH)}
                )
            start += BATCH
    # Closing checkpointed every -wal into its file: the files alone hold the data.


async def fame_backup(config: StorageConfig, destination: Path) -> tuple[float, int]:
    """Seconds ``provider.backup`` takes with the stores in use; the bytes it copied."""
    async with open_storage(config) as provider:
        for name in NAMESPACES:
            await provider.get_kv_store(bytes, name)
        began = time.perf_counter()
        manifest = await provider.backup(destination)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - began
    return seconds, manifest.total_bytes


def copy_files(source: Path, destination: Path, keys: dict[str, bytes]) -> None:
    """By hand, on a stopped directory: copy each file, fsync it, fsync the directory."""
    destination.mkdir()
    for path in _database_files(source):
        target = destination / path.name
        shutil.copyfile(path, target)
        _fsync(target)
    _fsync(destination)


def backup_api(source: Path, destination: Path, keys: dict[str, bytes]) -> None:
    """By hand, on a stopped directory: SQLite's online backup API, file by file, fsynced."""
    destination.mkdir()
    for path in _database_files(source):
        target = destination / path.name
        pragma = f"PRAGMA key = \"x'{keys[path.name].hex()}'\""
        src = sqlcipher3.connect(str(path), isolation_level=None)
        dst = sqlcipher3.connect(str(target), isolation_level=None)
        try:
            src.execute(pragma)
            dst.execute(pragma)
            src.backup(dst, pages=-1)
        finally:
            dst.close()
            src.close()
        _fsync(target)
    _fsync(destination)


def check_by_hand(backup: Path, keys: dict[str, bytes]) -> None:
    """By hand: SHA-256 of each file, then SQLCipher's and SQLite's integrity checks."""
    for path in _database_files(backup):
        with path.open("rb") as file:
            hashlib.file_digest(file, "sha256")
        conn = sqlcipher3.connect(str(path), isolation_level=None)
        try:
            conn.execute(f"PRAGMA key = \"x'{keys[path.name].hex()}'\"")
            assert not conn.execute("PRAGMA cipher_integrity_check").fetchall()
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("megabytes", nargs="?", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fame-bench-backup-") as tmp:
        root = Path(tmp)
        data = root / "data"
        config = StorageConfig(
            profile="encrypted-sqlite",
            directory=data,
            master_key=parse_master_key(secrets.token_urlsafe(32)),
        )
        assert config.master_key is not None
        trio.run(fill, config, args.megabytes)
        files = _database_files(data)
        size = sum(path.stat().st_size for path in files)
        keys = {path.name: file_key(config.master_key, path) for path in files}

        seconds: dict[str, list[float]] = {
            "fame": [],
            "copy": [],
            "api": [],
            "verify": [],
            "check": [],
        }
        copied = set()

        def run_fame(destination: Path) -> float:
            took, total = trio.run(fame_backup, config, destination)
            copied.add(total)
            return took

        sides: list[tuple[str, Callable[[Path], float]]] = [
            ("fame", run_fame),
            ("copy", lambda dest: timed(lambda: copy_files(data, dest, keys))),
            ("api", lambda dest: timed(lambda: backup_api(data, dest, keys))),
        ]

        def check_both(backup: Path, by_hand_first: bool) -> tuple[float, float]:
            def verify() -> float:
                return timed(lambda: verify_backup(backup, config.profile, config.master_key))

            def check() -> float:
                return timed(lambda: check_by_hand(backup, keys))

            if by_hand_first:
                checked = check()
                return verify(), checked
            return verify(), check()

        for round_ in range(args.rounds):
            turn = round_ % len(sides)
            for name, side in sides[turn:] + sides[:turn]:
                destination = root / f"{name}-{round_}"
                seconds[name].append(side(destination))
                if name == "fame":
                    # The two checks of the same backup, in turn.
                    verify, check = check_both(destination, round_ % 2 == 1)
                    seconds["verify"].append(verify)
                    seconds["check"].append(check)
                shutil.rmtree(destination)

    mb = size / 1e6
    rate = {name: mb / statistics.median(taken) for name, taken in seconds.items()}
    load = os.getloadavg()
    print(
        f"fame backup benchmark: encrypted-sqlite, {mb:.1f} MB in {len(files)} files,"
        f" median of {args.rounds} interleaved rounds, {datetime.date.today()}"
    )
    print(f"  fame's manifest total: {', '.join(f'{t / 1e6:.1f}' for t in sorted(copied))} MB")
    print(f"{'measure':<48}{'fame MB/s':>10}{'base MB/s':>10}{'ratio':>8}")
    lines = [
        ("backup vs copyfile + fsync (raw disk copy)", "fame", "copy"),
        ("backup vs online backup API by hand", "fame", "api"),
        ("verify_backup vs sha256 + integrity checks", "verify", "check"),
    ]
    for label, ours, base in lines:
        print(f"{label:<48}{rate[ours]:>10.1f}{rate[base]:>10.1f}{rate[ours] / rate[base]:>7.2f}x")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
