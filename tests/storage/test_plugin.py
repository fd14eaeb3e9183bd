"""Custom storage providers, plugged in by ``module:Class`` and by entry point."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fame._storage import (
    ENTRY_POINT_GROUP,
    InvalidNamespace,
    StorageConfig,
    StorageProvider,
    open_storage,
    open_storage_from_env,
)


class Note(msgspec.Struct):
    text: str


class PrefixingProvider:
    """A provider written here: it keeps every namespace of the built-in memory
    provider under a ``custom.`` prefix and counts the stores it handed out."""

    opened: list[PrefixingProvider] = []

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.handed_out = 0
        self._inner: Any = None
        self._cm: Any = None

    async def __aenter__(self) -> PrefixingProvider:
        self._cm = open_storage(StorageConfig(profile="memory"))
        self._inner = await self._cm.__aenter__()
        PrefixingProvider.opened.append(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._cm.__aexit__(*exc_info)

    async def get_kv_store(self, model: type, namespace: str) -> Any:
        if namespace.startswith("__"):
            raise InvalidNamespace(f"namespace {namespace!r} is reserved")
        self.handed_out += 1
        return await self._inner.get_kv_store(model, "custom." + namespace)

    async def get_internal_kv_store(self, model: type, namespace: str) -> Any:
        return await self._inner.get_internal_kv_store(model, namespace)


async def use(provider: StorageProvider) -> None:
    assert isinstance(provider, PrefixingProvider)
    assert isinstance(provider, StorageProvider)  # satisfies the protocol
    store = await provider.get_kv_store(Note, "notes")
    await store.set("a", Note("hello"))
    assert await store.get("a") == Note("hello")
    assert provider.handed_out == 1


async def test_module_class() -> None:
    env = {"FAME_STORAGE_PROFILE": f"{__name__}:PrefixingProvider", "X_SETTING": "y"}
    async with open_storage_from_env(env) as provider:
        await use(provider)
        assert provider.config.env["X_SETTING"] == "y"  # type: ignore[attr-defined]


async def test_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed distribution, as pip would leave it: a .dist-info folder
    # on sys.path whose entry_points.txt registers the provider. importlib.metadata
    # finds it the same way it finds any installed package's entry points.
    dist_info = tmp_path / "fame_test_prefixing-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fame-test-prefixing\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nprefixing = {__name__}:PrefixingProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name="prefixing")
    assert [ep.value for ep in found] == [f"{__name__}:PrefixingProvider"]
    async with open_storage_from_env({"FAME_STORAGE_PROFILE": "prefixing"}) as provider:
        await use(provider)


@asynccontextmanager
async def function_provider(config: StorageConfig) -> AsyncIterator[PrefixingProvider]:
    async with PrefixingProvider(config) as provider:
        yield provider


async def test_factory_function() -> None:
    async with open_storage_from_env(
        {"FAME_STORAGE_PROFILE": f"{__name__}:function_provider"}
    ) as provider:
        await use(provider)
