"""Custom storage providers, plugged in by ``module:Class`` and by entry point."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


async def test_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = importlib.metadata.EntryPoint(
        name="prefixing", value=f"{__name__}:PrefixingProvider", group=ENTRY_POINT_GROUP
    )
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == ENTRY_POINT_GROUP:
            found = [entry] if params.get("name") in (None, entry.name) else []
            return importlib.metadata.EntryPoints(found)
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
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
