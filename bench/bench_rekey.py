"""Rekey throughput: ``fame rekey`` against re-encrypting the same files by hand, in one run.

Builds a stopped project once in a temporary directory (``conf/`` as
``fame init`` writes it, ``data/agent`` with four namespaces of 400-byte
records, about 50 MB of files). Each round copies it twice (not timed) and
re-encrypts each copy under a new master key, the two interleaved (which
goes first alternates, so disk and CPU noise hits both alike):

- fame: ``fame rekey`` as a real process, as a user runs it. Timed whole
  (interpreter start, the plan that probes every file with both keys and
  checks no process holds it, the pending key written to
  ``conf/secrets.env``, then per file: checkpoint, ``sqlcipher_export``
  into a temporary file, fsync, rename, fsync of the directory); its own
  figure, the time on the files alone, is read from its last line.
- by hand: what a skilled engineer writes without crash-safety
  bookkeeping, in this process: per file, ``ATTACH DATABASE tmp AS new KEY
  "x'...'"``, ``SELECT sqlcipher_export('new')``, ``DETACH``, fsync,
  rename, fsync of the directory.

Figures are the median of the rounds, in MB/s of the files as they were
(MB = 10^6 bytes), and the ratio fame / by hand (1.00: as fast; higher is
faster). The same copy machinery migrates v1 files when a node opens their
directory, so the figure is also that migration's rate.

Run: ``python bench/bench_rekey.py [MB] [--rounds N]`` (default 55: about
50 MB of files; 3 rounds: about 15 s).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlcipher3
import trio

from fame._storage._keys import file_key
from fame.storage import MasterKey, StorageConfig, open_storage

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ("orders", "people", "events", "__node_meta")
RECORD_BYTES = 512
"""Bytes a record takes in its file, about: 400 of payload (rows over about 1/4 page overflow)."""
BATCH = 500
SUFFIX = "_encrypted_value.db"


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


def new_project(project: Path, megabytes: int) -> MasterKey:
    """A stopped project with about ``megabytes`` of encrypted storage; its master key."""
    (project / "conf").mkdir(parents=True)
    (project / "conf" / "agent.env").write_text(
        "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/agent\n"
    )
    master = MasterKey.generate()
    secrets_file = project / "conf" / "secrets.env"
    secrets_file.write_text(f"FAME_STORAGE_MASTER_KEY={master.export()}\n")
    secrets_file.chmod(0o600)
    trio.run(fill, project / "data" / "agent", master, megabytes)
    return master


def fame_rekey(project: Path, env: dict[str, str]) -> tuple[float, float]:
    """``fame rekey`` in ``project``: the seconds of the whole process, and of its files alone."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", "rekey"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    seconds = time.perf_counter() - began
    found = re.search(r"MB in ([0-9.]+) s \(", done.stderr)
    assert found, done.stderr
    return seconds, float(found.group(1))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rekey_by_hand(directory: Path, old: MasterKey, new: MasterKey) -> float:
    """Re-encrypt every file of ``directory`` under ``new`` with SQLCipher directly; seconds."""
    began = time.perf_counter()
    for path in sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX)):
        tmp = path.with_name(path.name + ".new")
        new_key = file_key(new, tmp)  # no file there yet: a new random salt
        conn = sqlcipher3.connect(str(path), isolation_level=None)
        try:
            conn.execute(f"PRAGMA key = \"x'{file_key(old, path).hex()}'\"")
            conn.execute(f"ATTACH DATABASE ? AS new KEY \"x'{new_key.hex()}'\"", (str(tmp),))
            conn.execute("SELECT sqlcipher_export('new')").fetchone()
            conn.execute("DETACH DATABASE new")
        finally:
            conn.close()
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(directory)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("megabytes", nargs="?", type=int, default=55)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="fame-bench-rekey-") as tmp:
        root = Path(tmp)
        template = root / "template"
        old = new_project(template, args.megabytes)
        files = [p for p in (template / "data" / "agent").iterdir() if p.name.endswith(SUFFIX)]
        size = sum(p.stat().st_size for p in files)
        whole: list[float] = []
        on_files: list[float] = []
        by_hand: list[float] = []
        for round_ in range(args.rounds):
            fame_copy, hand_copy = root / f"fame-{round_}", root / f"hand-{round_}"
            shutil.copytree(template, fame_copy)
            shutil.copytree(template, hand_copy)
            new = MasterKey.generate()
            if round_ % 2:
                by_hand.append(rekey_by_hand(hand_copy / "data" / "agent", old, new))
            seconds, files_only = fame_rekey(fame_copy, env)
            whole.append(seconds)
            on_files.append(files_only)
            if not round_ % 2:
                by_hand.append(rekey_by_hand(hand_copy / "data" / "agent", old, new))
            shutil.rmtree(fame_copy)
            shutil.rmtree(hand_copy)

    mb = size / 1e6
    hand = mb / statistics.median(by_hand)
    load = os.getloadavg()
    print(
        f"fame rekey benchmark: encrypted-sqlite, {mb:.1f} MB in {len(files)} files,"
        f" median of {args.rounds} interleaved rounds, {datetime.date.today()}"
    )
    print(f"{'measure':<48}{'fame MB/s':>10}{'hand MB/s':>10}{'ratio':>8}")
    for label, taken in (
        ("fame rekey, whole process vs by hand", whole),
        ("fame rekey, its files alone vs by hand", on_files),
    ):
        ours = mb / statistics.median(taken)
        print(f"{label:<48}{ours:>10.1f}{hand:>10.1f}{ours / hand:>7.2f}x")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
