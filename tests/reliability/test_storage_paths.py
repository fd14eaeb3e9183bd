"""What storage puts on disk: hostile names create nothing, files are private.

Real SQLCipher (and plain SQLite) files. Namespaces that could escape the
directory or take a node store, and bad keys, are refused with a one-line
error and create or write nothing; arbitrary namespaces (hypothesis) are
refused or land inside the directory. Directories the provider creates are
0700 and database files (and their ``-wal``) 0600, whatever the umask.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fame._storage import InvalidKey, InvalidNamespace, open_storage

from .storage_docs import Doc, body, config, digests, tree

# -- hostile namespaces and keys ---------------------------------------------

HOSTILE_NAMESPACES = [
    "",
    ".",
    "..",
    "../escape",
    "../../etc/passwd",
    "a/../../b",
    "/abs",
    "a/b",
    "a\\b",
    "..\\escape",
    "a\x00b",
    "\x00",
    "x" * 129,
    "x" * 100_000,
    ".hidden",
    "-dash",
    "a b",
    "ünïcode",
    "__node_meta",
    "__keystore",
    "__binding_store",
    "__route_store",
    "__anything",
    "__",
    "a\n",
    "a:b",
]


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_hostile_namespaces_and_keys_are_refused_and_create_nothing(
    profile: str, tmp_path: Path, reliability_report: Any
) -> None:
    directory = tmp_path / "data" / "db"
    async with open_storage(config(profile, directory)) as provider:
        before = tree(tmp_path)
        for namespace in HOSTILE_NAMESPACES:
            with pytest.raises(InvalidNamespace) as info:
                await provider.get_kv_store(Doc, namespace)
            text = str(info.value)
            assert "\n" not in text and "namespace" in text and len(text) < 400, text
        for namespace in HOSTILE_NAMESPACES:
            if not re.fullmatch(r"__[A-Za-z0-9][A-Za-z0-9_.-]{0,125}", namespace):
                with pytest.raises(InvalidNamespace):
                    await provider.get_internal_kv_store(Doc, namespace)
        assert tree(tmp_path) == before

        store = await provider.get_kv_store(Doc, "keys")
        await store.set("good", Doc("g"))
        files = digests(directory)
        bad_keys = ["", "a\x00b", "\x00", "k" * (1 << 20), "k" * 1025]
        refused = 0
        for key in bad_keys:
            calls = [
                store.set(key, Doc("v")),
                store.update(key, Doc("v")),
                store.set_many({"fine": Doc("v"), key: Doc("v")}),
                store.get(key),
                store.delete(key),
                store.delete_many(["fine", key]),
            ]
            for call in calls:
                with pytest.raises(InvalidKey) as info:
                    await call
                assert "\n" not in str(info.value) and len(str(info.value)) < 400
                refused += 1
        assert [key async for key in store.keys(prefix="")] == ["good"]
        assert digests(directory) == files  # not a byte written

    reliability_report(
        namespaces_refused=len(HOSTILE_NAMESPACES),
        key_calls_refused=refused,
        files_created=0,
    )


_AGENT_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FRAGMENTS = ["..", ".", "/", "\\", "\x00", "__", "_", "-", "a", "Z", "9", "é", " ", "\n", ":"]
namespace_inputs = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join),
    st.from_regex(_AGENT_NAMESPACE, fullmatch=True),
    st.text(alphabet="._-/\\\x00aZ9", min_size=1, max_size=140),
)


def test_arbitrary_namespaces_are_refused_or_stay_inside_the_directory(
    tmp_path: Path, reliability_report: Any
) -> None:
    counts = {"tried": 0, "refused": 0, "accepted": 0}
    root = tmp_path / "root"
    directory = root / "db"
    cfg = config("encrypted-sqlite", directory)

    async def attempt(namespace: str) -> None:
        async with open_storage(cfg) as provider:
            before = tree(root)
            try:
                store = await provider.get_kv_store(Doc, namespace)
            except InvalidNamespace:
                counts["refused"] += 1
                assert tree(root) == before
                return
            counts["accepted"] += 1
            assert _AGENT_NAMESPACE.fullmatch(namespace)
            await store.set("k", Doc("v"))
            expected = directory / f"{namespace}_encrypted_value.db"
            created = tree(root) - before
            assert created <= {str(expected.relative_to(root)), f"db/{expected.name}-wal"}
            assert expected.is_file() and expected.resolve().parent == directory.resolve()

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(namespace_inputs)
    def run(namespace: str) -> None:
        counts["tried"] += 1
        trio.run(attempt, namespace)

    run()
    assert counts["refused"] > 0 and counts["accepted"] > 0
    assert counts["tried"] == counts["refused"] + counts["accepted"]
    reliability_report(
        namespaces_tried=counts["tried"],
        refused=counts["refused"],
        accepted_inside_directory=counts["accepted"],
    )


# -- file modes ------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


@pytest.mark.parametrize("mask", [0o022, 0o000, 0o277], ids=["umask022", "umask000", "umask277"])
@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_directories_are_0700_and_files_0600_whatever_the_umask(
    profile: str, mask: int, tmp_path: Path, reliability_report: Any
) -> None:
    directory = tmp_path / "made" / "by" / "fame"
    seen: dict[str, int] = {}
    with umask(mask):
        async with open_storage(config(profile, directory)) as provider:
            store = await provider.get_kv_store(Doc, "docs")
            await store.set_many({f"k{i}": Doc(body(i)) for i in range(50)})
            seen = modes(tmp_path)
        after = modes(tmp_path)
    suffix = "_encrypted_value.db" if profile == "encrypted-sqlite" else "_value.db"
    assert any(name.endswith("-wal") for name in seen), seen  # checked while open too
    for listing in (seen, after):
        for name, found in listing.items():
            if (tmp_path / name).is_dir():
                assert found == 0o700, (name, oct(found))
            else:
                assert name.endswith((suffix, f"{suffix}-wal", f"{suffix}-shm")), name
                assert found == 0o600, (name, oct(found))
    reliability_report(umask=oct(mask), paths_checked=len(seen) + len(after), wrong_modes=0)
