"""``fame migrate`` as a real process: upgrades, resumes, refuses, and survives SIGKILL.

The prepared directory holds one encrypted namespace of version-1 records
(a few already at version 2); the project holds the models. After each of
50 SIGKILLs at random points of the run, every record is still there and
decodes, each either at version 1 or upgraded to version 2 (never half of
one), and running the command again finishes the work.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from fame._storage._model_version import split_header
from fame._storage._ops import Scan
from fame.storage import KeyValueStore, MasterKey, open_storage, storage_config_from_env

from .kill_points import kill_at_random_points

NS = "orders"
RECORDS = 6000
ALREADY_NEW = 50
MODELS = """
from typing import Any
import msgspec


class OrderV1(msgspec.Struct):
    name: str
    qty: int


class OrderV2(msgspec.Struct):
    __fame_version__ = 2
    title: str
    qty: int

    @classmethod
    def __fame_upgrade__(cls, version: int, raw: Any) -> Any:
        raw["title"] = raw.pop("name")
        return raw
"""


def _settings(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def make_project(root: Path, suite_secrets: Any) -> Path:
    """A project with models.py, node.env and data/ of RECORDS version-1 orders; node.env."""
    root.mkdir()
    (root / "models.py").write_text(MODELS)
    env_file = root / "node.env"
    env_file.write_text(
        "FAME_STORAGE_PROFILE=encrypted-sqlite\n"
        f"FAME_STORAGE_MASTER_KEY={MasterKey.generate().export()}\n"
    )
    suite_secrets.add_env_file(env_file)
    sys.path.insert(0, str(root))
    try:
        import models  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("models", None)

    async def fill() -> None:
        config = storage_config_from_env(
            {**_settings(env_file), "FAME_STORAGE_DB_DIRECTORY": str(root / "data")}
        )
        async with open_storage(config) as provider:
            old = await provider.get_kv_store(models.OrderV1, NS)
            await old.set_many({f"k{n:05}": models.OrderV1(f"item {n}", n) for n in range(RECORDS)})
            new = await provider.get_kv_store(models.OrderV2, NS)
            await new.set_many(
                {f"k{n:05}": models.OrderV2(f"item {n}", n) for n in range(ALREADY_NEW)}
            )

    trio.run(fill)
    return env_file


def versions_and_values(root: Path) -> dict[str, tuple[int, Any]]:
    """Every record of the namespace: its stored version and its value read as version 2."""
    sys.path.insert(0, str(root))
    try:
        import models
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("models", None)

    async def read() -> dict[str, tuple[int, Any]]:
        config = storage_config_from_env(
            {**_settings(root / "node.env"), "FAME_STORAGE_DB_DIRECTORY": str(root / "data")}
        )
        async with open_storage(config) as provider:
            store = await provider.get_kv_store(models.OrderV2, NS)
            assert isinstance(store, KeyValueStore)
            rows = await store._ask(Scan("", None, RECORDS + 1, values=True))
            values = dict([pair async for pair in store.scan()])
            return {key: (split_header(data)[0], values[key]) for key, data, _ in rows}

    return trio.run(read)


def migrate_argv(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fame._cli.fame", "--project", str(root), "migrate", "data",
        "--namespace", NS, "--model", "models:OrderV2", "--config", "node.env", *extra,
    ]  # fmt: skip


def run(root: Path, *extra: str, model: str = "models:OrderV2") -> subprocess.CompletedProcess[str]:
    argv = migrate_argv(root, *extra)
    argv[argv.index("models:OrderV2")] = model
    return subprocess.run(
        argv, cwd=root, capture_output=True, text=True, timeout=120, check=False, env=os.environ
    )


def assert_all_there(root: Path, *, all_new: bool) -> dict[str, tuple[int, Any]]:
    found = versions_and_values(root)
    assert len(found) == RECORDS
    for n in range(RECORDS):
        version, value = found[f"k{n:05}"]
        assert (value.title, value.qty) == (f"item {n}", n)
        assert version == 2 if all_new or n < ALREADY_NEW else version in (1, 2)
    return found


def test_migrate_upgrades_then_finds_nothing_to_do(tmp_path: Path, suite_secrets: Any) -> None:
    root = tmp_path / "project"
    make_project(root, suite_secrets)
    done = run(root, "--batch", "1000")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"fame migrate: migrating {NS} ({RECORDS} records) to version 2")
    assert lines[-1] == (
        f"fame migrate: {NS}: done: {RECORDS} records checked,"
        f" {RECORDS - ALREADY_NEW} upgraded to version 2, {ALREADY_NEW} already current"
    )
    assert_all_there(root, all_new=True)
    again = run(root)
    assert again.returncode == 0, again.stderr
    assert f"0 upgraded to version 2, {RECORDS} already current" in again.stdout.splitlines()[-1]


def test_migrate_refuses_what_it_cannot_do_in_one_line(tmp_path: Path, suite_secrets: Any) -> None:
    root = tmp_path / "project"
    make_project(root, suite_secrets)
    for extra, model, words in (
        (("--namespace", "nope"), "models:OrderV2", "no namespace 'nope'"),
        ((), "models:Missing", "cannot load model"),
        (("--batch", "0"), "models:OrderV2", "--batch must be"),
        # Version-1 code meets the version-2 records already there: it stops, names one.
        ((), "models:OrderV1", "written by version 2 of model OrderV1"),
    ):
        argv_extra = extra
        failed = run(root, *argv_extra, model=model)
        assert failed.returncode == 1
        assert len(failed.stderr.splitlines()) == 1 and words in failed.stderr, failed.stderr
    assert_all_there(root, all_new=False)

    async def while_open() -> subprocess.CompletedProcess[str]:
        config = storage_config_from_env(
            {**_settings(root / "node.env"), "FAME_STORAGE_DB_DIRECTORY": str(root / "data")}
        )
        async with open_storage(config) as provider:
            await provider.get_kv_store(dict, NS)  # holds the file, as a running node does
            return await trio.to_thread.run_sync(functools.partial(run, root))

    busy = trio.run(while_open)
    assert busy.returncode == 1 and "in use" in busy.stderr, busy.stderr
    assert len(busy.stderr.splitlines()) == 1


def test_migrate_survives_sigkill_at_50_points(
    tmp_path: Path, suite_secrets: Any, reliability_report: Any
) -> None:
    template = tmp_path / "project"
    make_project(template, suite_secrets)
    reruns = 0

    def check(copy: Path, killed: bool) -> None:
        nonlocal reruns
        assert_all_there(copy, all_new=not killed)
        if killed and reruns < 5:  # a rerun finishes (five of them: each takes a while)
            reruns += 1
            done = run(copy)
            assert done.returncode == 0, done.stderr
            assert_all_there(copy, all_new=True)

    report = kill_at_random_points(
        template=template,
        work=tmp_path / "work",
        argv=lambda copy: migrate_argv(copy, "--batch", "200"),
        ready="fame migrate: migrating",
        check=check,
        points=50,
        seed=14,
    )
    assert report.killed_mid_work >= 25, report
    reliability_report(
        points=report.points,
        killed_mid_work=report.killed_mid_work,
        finished_first=report.finished_first,
        work_seconds=round(report.work_seconds, 3),
        reruns=reruns,
    )
    shutil.rmtree(tmp_path / "work", ignore_errors=True)
