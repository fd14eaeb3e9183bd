"""Storage faults: a full file or disk, a damaged namespace file, hostile names, file modes.

Real SQLCipher files throughout. Each scenario proves what a user relies on
when storage goes wrong:

* **full**: a writer gets :class:`fame.StorageFull` naming the namespace,
  the file and the limit (or the disk); nothing of the failed transaction
  is stored; earlier records stay readable; other namespaces and the node
  keep working; writes work again once room returns. Both with the
  ``FAME_STORAGE_MAX_FILE_BYTES`` page limit and with a real full disk (a
  512 KiB tmpfs, which needs root to mount: CI runs as root). Over the
  fabric the client gets ``OperationFailed`` naming ``StorageFull``, and
  the agent is not restarted;
* **damage**: bytes flipped in one namespace's file are reported as
  :class:`fame.DamagedDatabase` naming the file, by the node and by
  ``fame check``, while the node and its other namespaces keep working and
  the damaged file is never written, renamed or given a ``-wal``;
* **hostile names**: namespaces that could escape the directory or take a
  node store, and bad keys, are refused and create nothing;
* **modes**: directories the provider creates are 0700 and database files
  (and their ``-wal``) 0600, whatever the umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fame
from agents.storage_agent import StorageAgent
from fame._storage import (
    DamagedDatabase,
    InvalidKey,
    InvalidNamespace,
    StorageConfig,
    StorageFull,
    StorageWriteFailed,
    open_storage,
    open_storage_from_env,
    parse_master_key,
)

REPO = Path(__file__).resolve().parents[2]
MASTER_KEY = secrets.token_urlsafe(32)
LIMIT = 65536  # the smallest FAME_STORAGE_MAX_FILE_BYTES accepted: 16 pages
PAGE = 4096


class Doc(msgspec.Struct):
    body: str


def body(i: int) -> str:
    # Random hex does not compress, and is the same size for every i.
    return f"{i:06d}" + os.urandom(250).hex()


def config(profile: str, directory: Path, **kw: Any) -> StorageConfig:
    master = parse_master_key(MASTER_KEY) if profile == "encrypted-sqlite" else None
    return StorageConfig(profile=profile, directory=directory, master_key=master, **kw)


def env_for(profile: str, directory: Path, max_file_bytes: int) -> dict[str, str]:
    return {
        "FAME_STORAGE_PROFILE": profile,
        "FAME_STORAGE_DB_DIRECTORY": str(directory),
        "FAME_STORAGE_MASTER_KEY": MASTER_KEY,
        "FAME_STORAGE_MAX_FILE_BYTES": str(max_file_bytes),
    }


def digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def tree(root: Path) -> set[str]:
    """Every file and directory below ``root`` (names only), to prove nothing was created."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def fill_until_full(store: Any, prefix: str, acked: dict[str, str], bound: int) -> Any:
    """``set`` one record at a time until the store is full; return the StorageFull."""
    for i in range(bound):
        key, value = f"{prefix}{i:05d}", body(i)
        try:
            await store.set(key, Doc(value))
        except StorageFull as exc:
            return exc
        acked[key] = value
    pytest.fail(f"{bound} writes never filled the store")


async def concurrent_writers(store: Any, prefix: str, n: int) -> dict[str, bool]:
    """``n`` writers at once (drained into shared transactions); key -> acknowledged."""
    outcome: dict[str, bool] = {}
    errors: list[BaseException] = []

    async def writer(i: int) -> None:
        try:
            await store.set(f"{prefix}{i:03d}", Doc(body(i)))
            outcome[f"{prefix}{i:03d}"] = True
        except StorageFull:
            outcome[f"{prefix}{i:03d}"] = False
        except BaseException as exc:  # anything else is a finding
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(writer, i)
    assert not errors, errors
    return outcome


async def readable(store: Any, acked: dict[str, str]) -> int:
    got = await store.get_many(list(acked))
    assert {key: doc.body for key, doc in got.items()} == acked
    return len(got)


# -- full: the page limit ---------------------------------------------------


@pytest.mark.parametrize("profile", ["sqlite", "encrypted-sqlite"])
async def test_file_limit_gives_storage_full_and_room_returns(
    profile: str, tmp_path: Path, reliability_report: Any
) -> None:
    directory = tmp_path / "db"
    env = env_for(profile, directory, LIMIT)
    suffix = "_encrypted_value.db" if profile == "encrypted-sqlite" else "_value.db"
    acked: dict[str, str] = {}
    async with open_storage_from_env(env) as provider:
        full = await provider.get_kv_store(Doc, "full")
        other = await provider.get_kv_store(Doc, "other")
        await other.set("before", Doc("o"))

        error = await fill_until_full(full, "k", acked, bound=1000)
        accepted_before_full = len(acked)
        assert isinstance(error, StorageWriteFailed)
        assert (error.namespace, error.limit, error.writes) == ("full", LIMIT, 1)
        message = str(error)
        for part in ("'full'", f"full{suffix}", str(LIMIT), "FAME_STORAGE_MAX_FILE_BYTES"):
            assert part in message, (part, message)
        assert str(directory) not in message  # the file's name only: it may go to a client

        # Writers drained into shared transactions: each of them gets StorageFull,
        # and none of their records exists.
        outcome = await concurrent_writers(full, "c", 32)
        with pytest.raises(StorageFull, match="none of the 1 writes"):
            await full.set_many({f"m{i}": Doc(body(i)) for i in range(20)})
        failed = [key for key, ok in outcome.items() if not ok]
        assert failed, "the file was full: concurrent writers must fail"
        assert not await full.get_many([*failed, "m0", "m19"])
        acked.update({key: (await full.get(key)).body for key, ok in outcome.items() if ok})

        # Earlier data stays readable; the other namespace keeps working.
        readable_when_full = await readable(full, acked)
        assert await full.count() == len(acked)
        await other.set("during", Doc("o2"))
        assert set(await other.get_many(["before", "during"])) == {"before", "during"}

        # Room returns when records are deleted: their pages are reused.
        gone = sorted(acked)[:10]
        assert await full.delete_many(gone) == 10
        for key in gone:
            del acked[key]
        after_delete: dict[str, str] = {}
        await fill_until_full(full, "d", after_delete, bound=1000)
        assert after_delete, "deleting records must make room"
        acked.update(after_delete)

    # Room returns when the limit is raised: it applies from the next open.
    async with open_storage_from_env(env_for(profile, directory, 2 * LIMIT)) as provider:
        full = await provider.get_kv_store(Doc, "full")
        assert await readable(full, acked) == len(acked)
        after_raise: dict[str, str] = {}
        error = await fill_until_full(full, "r", after_raise, bound=1000)
        assert error.limit == 2 * LIMIT and len(after_raise) >= accepted_before_full // 2
        acked.update(after_raise)
    async with open_storage(config(profile, directory)) as provider:
        readable_after = await readable(await provider.get_kv_store(Doc, "full"), acked)

    reliability_report(
        writes_accepted_before_full=accepted_before_full,
        failed_writes=1 + len(failed) + 20,
        records_readable_when_full=readable_when_full,
        writes_after_deleting_10=len(after_delete),
        writes_after_doubling_limit=len(after_raise),
        records_readable_after_reopen=readable_after,
    )


# -- full: a real disk --------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, unmounted at teardown (mounting needs root; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs this as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs as root: {done.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_gives_storage_full_and_the_wal_survives(
    small_disk: Path, reliability_report: Any
) -> None:
    directory = small_disk / "db"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (320 * 1024))
    # A limit the disk cannot reach: the error must blame the disk, not the limit.
    cfg = config("encrypted-sqlite", directory, max_file_bytes=4 << 20)
    acked: dict[str, str] = {}
    wal = directory / "docs_encrypted_value.db-wal"
    async with open_storage(cfg) as provider:
        docs = await provider.get_kv_store(Doc, "docs")
        other = await provider.get_kv_store(Doc, "other")
        await other.set("o", Doc("o"))

        error = await fill_until_full(docs, "k", acked, bound=5000)
        accepted_before_full = len(acked)
        assert error.limit is None and error.namespace == "docs"
        assert "the disk holding its file docs_encrypted_value.db is full" in str(error)
        outcome = await concurrent_writers(docs, "c", 16)
        failed = [key for key, ok in outcome.items() if not ok]
        assert failed and not await docs.get_many(failed)
        acked.update({key: (await docs.get(key)).body for key, ok in outcome.items() if ok})

        # Reads keep working on every namespace; a new namespace cannot be made.
        readable_when_full = await readable(docs, acked)
        assert (await other.get("o")) == Doc("o")
        with pytest.raises(StorageFull, match=r"'fresh' is full.*could not be created"):
            await provider.get_kv_store(Doc, "fresh")
        # Closing on a full disk cannot checkpoint: the -wal is kept, not lost.
    wal_kept = wal.stat().st_size
    assert wal_kept > 0

    filler.unlink()  # space returns
    async with open_storage(cfg) as provider:
        docs = await provider.get_kv_store(Doc, "docs")
        readable_after_replay = await readable(docs, acked)  # replayed from the -wal
        assert not await docs.get_many(failed)
        # Each commit appends its pages to the -wal until a checkpoint: a few
        # single writes, then one transaction of many.
        after_space = {f"after{i:02d}": body(i) for i in range(23)}
        for key in list(after_space)[:3]:
            await docs.set(key, Doc(after_space[key]))
        await docs.set_many({key: Doc(value) for key, value in list(after_space.items())[3:]})
        acked.update(after_space)
        fresh = await provider.get_kv_store(Doc, "fresh")
        await fresh.set("f", Doc("f"))
    assert not wal.exists()  # a clean close with room checkpoints it away
    async with open_storage(cfg) as provider:
        readable_after = await readable(await provider.get_kv_store(Doc, "docs"), acked)

    reliability_report(
        disk_kib=512,
        writes_accepted_before_full=accepted_before_full,
        failed_writes=1 + len(failed),
        records_readable_when_full=readable_when_full,
        wal_bytes_kept_at_full_close=wal_kept,
        records_readable_after_wal_replay=readable_after_replay,
        writes_after_space_freed=len(after_space),
        records_readable_after=readable_after,
    )


# -- full: over the fabric ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Service:
    """``fame sentinel`` or ``fame node`` as a child process, stopped at the end."""

    def __init__(self, args: list[str], env: dict[str, str], ready: Path, log: Path) -> None:
        self.ready = ready
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fame._cli.fame", *args, "--ready-file", str(ready)],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self) -> None:
        with trio.fail_after(60):
            while not self.ready.exists():
                assert self.proc.poll() is None, self.log.read_text()
                await trio.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def test_storage_full_reaches_a_remote_client_as_a_clear_error(
    tmp_path: Path, reliability_report: Any
) -> None:
    port = _free_port()
    token = secrets.token_urlsafe(24)
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    base["FAME_ADMISSION_TOKEN"] = token
    sentinel_env = base | {
        "FAME_SENTINEL_HOST": "127.0.0.1",
        "FAME_SENTINEL_PORT": str(port),
        "FAME_STORAGE_PROFILE": "memory",
    }
    node_env = base | env_for("encrypted-sqlite", tmp_path / "agent", LIMIT)
    node_env["FAME_SENTINEL_URL"] = f"ws://127.0.0.1:{port}"
    services: list[_Service] = []
    try:
        sentinel = _Service(
            ["sentinel"], sentinel_env, tmp_path / "sentinel.ready", tmp_path / "sentinel.log"
        )
        services.append(sentinel)
        await sentinel.wait_ready()
        node = _Service(
            ["node", "--agent", "agents.storage_agent:StorageAgent@storage@fame.fabric"],
            node_env,
            tmp_path / "node.ready",
            tmp_path / "node.log",
        )
        services.append(node)
        await node.wait_ready()

        async with fame.connect(f"ws://127.0.0.1:{port}", token=token) as client:
            agent: Any = client.proxy("storage@fame.fabric", StorageAgent)
            stored: dict[str, str] = {}
            failure: fame.OperationFailed | None = None
            for i in range(1000):
                value = body(i)
                try:
                    await agent.store_value(key=f"k{i:04d}", value=value)
                except fame.OperationFailed as exc:
                    failure = exc
                    break
                stored[f"k{i:04d}"] = value
            assert failure is not None, "1000 writes never filled the agent's file"
            assert failure.exc_type == "StorageFull"
            text = str(failure)
            assert "storage@fame.fabric" in text and "'storage_agent_namespace' is full" in text
            assert str(LIMIT) in text and "FAME_STORAGE_MAX_FILE_BYTES" in text
            # The same agent keeps serving: reads, the stream, and the same clear error.
            served_after = 0
            for key in list(stored)[:: max(1, len(stored) // 20)]:
                assert (await agent.retrieve_value(key=key)).value == stored[key]
                served_after += 1
            listed = [key async for key, _ in agent.retrieve_all_values()]
            assert listed == sorted(stored)
            with pytest.raises(fame.OperationFailed, match="StorageFull"):
                await agent.store_value(key="again", value="x" * 3000)
        assert "crash" not in node.log.read_text().lower()
    finally:
        codes = [service.stop() for service in reversed(services)]
    assert codes == [0, 0], [s.log.read_text()[-2000:] for s in services]

    reliability_report(
        writes_accepted_before_full=len(stored),
        failed_writes=2,
        remote_error=failure.exc_type,
        calls_served_after_full=served_after + 1,
        records_listed_after_full=len(listed),
        agent_restarts=0,
    )


# -- a damaged namespace file -------------------------------------------------


class Shelf(fame.BaseAgent):
    """An agent that reaches any namespace it is asked for; storage errors are declared."""

    max_concurrency: ClassVar[int] = 4
    _ERRORS = (DamagedDatabase, StorageWriteFailed)

    async def start(self) -> None:
        self._stores: dict[str, Any] = {}

    async def _store(self, namespace: str) -> Any:
        if namespace not in self._stores:
            self._stores[namespace] = await self.storage_provider.get_kv_store(Doc, namespace)
        return self._stores[namespace]

    @fame.operation(errors=_ERRORS)
    async def put(self, namespace: str, key: str, value: str) -> int:
        version: int = await (await self._store(namespace)).set(key, Doc(value))
        return version

    @fame.operation(errors=_ERRORS)
    async def read_all(self, namespace: str) -> dict[str, str]:
        store = await self._store(namespace)
        return {key: doc.body async for key, doc in store.scan()}


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _fame_check(directory: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env |= {"FAME_STORAGE_MASTER_KEY": MASTER_KEY, "FAME_STORAGE_PROFILE": "encrypted-sqlite"}
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", "check", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=directory.parent,
        check=False,
    )


@pytest.mark.parametrize("where", ["first page", "middle page", "last page"])
async def test_a_damaged_namespace_file_is_named_and_left_alone(
    where: str, tmp_path: Path, reliability_report: Any
) -> None:
    directory = tmp_path / "db"
    cfg = config("encrypted-sqlite", directory)
    records = {f"k{i:04d}": f"{i}" * 150 for i in range(300)}
    async with open_storage(cfg) as provider:
        for namespace in ("alpha", "beta", "gamma"):
            await (await provider.get_kv_store(Doc, namespace)).set_many(
                {key: Doc(value) for key, value in records.items()}
            )
    target = directory / "beta_encrypted_value.db"
    pages = target.stat().st_size // PAGE
    page = {"first page": 1, "middle page": pages // 2, "last page": pages}[where]
    flip(target, (page - 1) * PAGE + 100)
    damaged_digest = hashlib.sha256(target.read_bytes()).hexdigest()
    others_before = {k: v for k, v in digests(directory).items() if not k.startswith("beta")}

    calls = 0
    async with open_storage(cfg) as provider, fame.open_node(storage_provider=provider) as node:
        shelf: Any = await node.spawn(Shelf, "shelf@local")
        with pytest.raises(fame.OperationFailed) as info:
            await shelf.read_all(namespace="beta")
        calls += 1
        assert info.value.exc_type == "DamagedDatabase"
        assert "beta_encrypted_value.db" in str(info.value)
        with pytest.raises(fame.OperationFailed) as info:
            await shelf.put(namespace="beta", key="new", value="v")
        calls += 1
        assert "beta_encrypted_value.db" in str(info.value) and "damaged" in str(info.value)
        if page == 1:  # never opened: no -wal or -shm beside it, even while the node runs
            assert sorted(p.name for p in directory.glob("beta*")) == [target.name]

        # The node and the other namespaces keep working: reads, writes, a new one.
        for namespace in ("alpha", "gamma", "delta"):
            for i in range(20):
                await shelf.put(namespace=namespace, key=f"n{i:02d}", value="w")
                calls += 1
        for namespace in ("alpha", "gamma"):
            got = await shelf.read_all(namespace=namespace)
            calls += 1
            assert got == records | {f"n{i:02d}": "w" for i in range(20)}
        with pytest.raises(fame.OperationFailed, match="DamagedDatabase"):
            await shelf.read_all(namespace="beta")  # still named, still refused
        calls += 1
        assert len(await shelf.read_all(namespace="delta")) == 20
        calls += 1

    # The damaged file: same bytes, same name, nothing beside it.
    assert sorted(p.name for p in directory.glob("beta*")) == [target.name]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == damaged_digest
    assert others_before.keys() <= digests(directory).keys()

    checked = _fame_check(directory)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "beta_encrypted_value.db: DAMAGED" in checked.stdout
    for namespace, count in (("alpha", 320), ("gamma", 320), ("delta", 20)):
        assert f"{namespace}_encrypted_value.db: ok: integrity checks passed, {count} records" in (
            checked.stdout
        )
    assert "Traceback" not in checked.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == damaged_digest
    assert sorted(p.name for p in directory.glob("beta*")) == [target.name]

    reliability_report(
        damaged_page=f"{page}/{pages}",
        calls_served=calls,
        other_namespaces_ok=3,
        records_readable_elsewhere=2 * 320 + 20,
        fame_check_exit=checked.returncode,
        damaged_file_changed=0,
    )


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
