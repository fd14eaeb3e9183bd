"""Offline integrity checks (``fame check``): real files, real damage, nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fame._storage import open_storage
from fame._storage._integrity import check_files
from fame._storage._probe import PAGE_SIZE

from .conftest import hashes, make_config

FILE_PROFILES = ("sqlite", "encrypted-sqlite")


async def _fill(config: object, namespaces: tuple[str, ...] = ("alpha", "beta")) -> None:
    async with open_storage(config) as provider:  # type: ignore[arg-type]
        for namespace in namespaces:
            store = await provider.get_kv_store(str, namespace)
            # Enough rows for several b-tree pages, so damage can hit a middle page.
            await store.set_many({f"key-{i:05d}": "v" * 200 for i in range(200)})


@pytest.mark.parametrize("profile", FILE_PROFILES)
async def test_sound_files_pass_and_are_left_untouched(profile: str, tmp_path: Path) -> None:
    directory = tmp_path / "db"
    config = make_config(profile, directory)
    await _fill(config)
    before = hashes(directory)

    results = check_files(config)

    assert [(r.namespace, r.ok, r.problems) for r in results] == [
        ("alpha", True, []),
        ("beta", True, []),
    ]
    assert hashes(directory) == before  # no byte changed, no -wal/-shm created


async def test_a_damaged_page_is_named_and_the_other_file_still_passes(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    config = make_config("encrypted-sqlite", directory)
    await _fill(config)
    target = directory / "beta_encrypted_value.db"
    data = bytearray(target.read_bytes())
    assert len(data) >= 4 * PAGE_SIZE
    data[2 * PAGE_SIZE + 100] ^= 0xFF  # inside page 3
    target.write_bytes(bytes(data))
    before = hashes(directory)

    results = {r.namespace: r for r in check_files(config)}

    assert results["alpha"].ok
    assert not results["beta"].ok
    assert any("page 3" in problem for problem in results["beta"].problems)
    assert hashes(directory) == before


async def test_structural_damage_in_a_plain_file_is_found(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    config = make_config("sqlite", directory)
    await _fill(config, ("alpha",))
    target = directory / "alpha_value.db"
    data = bytearray(target.read_bytes())
    # Overwrite the cell pointers of page 7, a leaf of the kv table: the page
    # header stays valid, the tree does not. (Pages 3 to 5 are the roots of the
    # empty TTL index, fame_meta and fame_requests; 6 is the first kv leaf.)
    start = 6 * PAGE_SIZE + 8
    data[start : start + 64] = b"\xa5" * 64
    target.write_bytes(bytes(data))

    (result,) = check_files(config)

    assert not result.ok
    assert any("page 7" in problem for problem in result.problems)


def _fame_check(directory: Path, key: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FAME_STORAGE_MASTER_KEY=key, FAME_STORAGE_PROFILE="encrypted-sqlite")
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", "check", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=directory.parent,
    )


async def test_fame_check_reports_each_file_and_exits_non_zero_on_damage(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "db"
    key = "b" + os.urandom(32).hex()[1:]
    config = make_config("encrypted-sqlite", directory, key)
    await _fill(config)

    sound = _fame_check(directory, key)
    assert sound.returncode == 0, sound.stderr
    assert "alpha_encrypted_value.db: ok: integrity checks passed, 200 records" in sound.stdout
    assert "all 2 files ok" in sound.stdout

    target = directory / "alpha_encrypted_value.db"
    data = bytearray(target.read_bytes())
    data[2 * PAGE_SIZE + 100] ^= 0xFF
    target.write_bytes(bytes(data))
    before = hashes(directory)

    damaged = _fame_check(directory, key)
    assert damaged.returncode == 1
    assert "alpha_encrypted_value.db: DAMAGED:" in damaged.stdout
    assert "page 3" in damaged.stdout
    assert "beta_encrypted_value.db: ok" in damaged.stdout
    assert "Traceback" not in damaged.stderr
    assert hashes(directory) == before


async def test_fame_check_with_the_wrong_key_says_so(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    await _fill(make_config("encrypted-sqlite", directory))
    before = hashes(directory)

    wrong = _fame_check(directory, os.urandom(32).hex())

    assert wrong.returncode != 0
    assert "master key does not match" in wrong.stderr + wrong.stdout
    assert "Traceback" not in wrong.stderr
    assert hashes(directory) == before


async def test_the_plain_profile_does_not_take_encrypted_files_for_its_own(tmp_path: Path) -> None:
    # "_value.db" also ends "_encrypted_value.db": the listing must tell them apart.
    plain_dir = tmp_path / "plain"
    await _fill(make_config("sqlite", plain_dir), ("alpha",))
    encrypted_dir = tmp_path / "encrypted"
    await _fill(make_config("encrypted-sqlite", encrypted_dir), ("beta",))
    stray = encrypted_dir / "beta_encrypted_value.db"
    (plain_dir / stray.name).write_bytes(stray.read_bytes())

    results = check_files(make_config("sqlite", plain_dir))

    assert [(r.namespace, r.file_name, r.ok) for r in results] == [
        ("alpha", "alpha_value.db", True)
    ]
