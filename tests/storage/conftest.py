"""Shared fixtures: a provider of each built-in profile on real files in ``tmp_path``."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from fame._storage import StorageConfig, StorageProvider, open_storage, parse_master_key

from .postgres_server import PostgresServer

PROFILES = ("memory", "sqlite", "encrypted-sqlite")


class FakeClock:
    """A wall clock the test moves by hand, for TTLs."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(
    profile: str, directory: Path, key: str | None = None, **kw: object
) -> StorageConfig:
    master = None
    if profile == "encrypted-sqlite":
        master = parse_master_key(key or secrets.token_urlsafe(32))
    return StorageConfig(
        profile=profile,
        directory=None if profile == "memory" else directory,
        master_key=master,
        **kw,  # type: ignore[arg-type]
    )


def hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory``, to prove nothing was touched."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def opener(
    profile: str, tmp_path: Path, clock: FakeClock
) -> Callable[[], AbstractAsyncContextManager[StorageProvider]]:
    """Opens a provider of ``profile`` on the same directory and key each time."""
    config = make_config(profile, tmp_path / "db")

    def open_() -> AbstractAsyncContextManager[StorageProvider]:
        return open_storage(config, clock=clock)

    return open_


@pytest.fixture
async def provider(
    opener: Callable[[], AbstractAsyncContextManager[StorageProvider]],
) -> AsyncIterator[StorageProvider]:
    async with opener() as p:
        yield p


def sizes(directory: Path) -> dict[str, int]:
    """Size of every file in ``directory``, by name."""
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (see ``postgres_server``); fails if missing."""
    try:
        server = PostgresServer()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A DSN of the session's server whose tables live in a new schema of this test's own."""
    return postgres_server.new_dsn()
