"""Export to JSON lines and import back, exactly (``_export``)."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import msgspec
import pytest

from fame.storage import (
    ExportedRecord,
    StorageConfig,
    WrongMasterKey,
    export_namespace,
    import_namespace,
    open_storage,
    parse_master_key,
)
from tests.storage.conftest import FakeClock


def _config(directory: Path, key: str) -> StorageConfig:
    return StorageConfig(
        profile="encrypted-sqlite", directory=directory, master_key=parse_master_key(key)
    )


async def _fill(config: StorageConfig, clock: FakeClock) -> None:
    async with open_storage(config, clock=clock) as provider:
        store = await provider.get_kv_store(object, "things")
        await store.set_many(
            {f"k{i:05}": {"n": i, "blob": bytes([i % 256]) * 7} for i in range(2500)}
        )
        await store.set("expiring", [1, 2, 3], ttl=3600)
        await store.set("k00007", "overwritten")
        await store.delete("k00008")


def _rows(config: StorageConfig) -> list[ExportedRecord]:
    out = io.BytesIO()
    export_namespace(config, "things", out)
    decoder = msgspec.json.Decoder(ExportedRecord)
    return [decoder.decode(line) for line in out.getvalue().splitlines()]


async def test_round_trip_keeps_bytes_versions_and_expiry(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    source = _config(tmp_path / "a", key)
    clock = FakeClock()
    await _fill(source, clock)
    exported = tmp_path / "things.jsonl"
    seen: list[tuple[int, int]] = []
    with exported.open("wb") as out:
        count = export_namespace(
            source, "things", out, lambda done, total: seen.append((done, total))
        )
    assert count == 2500  # 2500 - 1 deleted + 1 expiring
    assert seen[-1] == (2500, 2500)
    rows = _rows(source)
    # Into a directory under another master key: twice, which changes nothing.
    target = _config(tmp_path / "b", secrets.token_urlsafe(32))
    assert import_namespace(target, "things", exported) == 2500
    assert import_namespace(target, "things", exported) == 2500
    assert _rows(target) == rows
    expiring = next(row for row in rows if row.key == "expiring")
    assert expiring.expires_at == clock.now + 3600
    async with open_storage(target, clock=clock) as provider:
        store = await provider.get_kv_store(object, "things")
        assert await store.get("k00007") == "overwritten"
        assert await store.get("k00008") is None
        before = await store.get_versioned("k00009")
        assert before is not None and before.version == next(
            r.version for r in rows if r.key == "k00009"
        )
        # A new write gets a version above every imported one.
        await store.set("new", 1)
        new = await store.get_versioned("new")
        assert new is not None and new.version > max(row.version for row in rows)


async def test_export_with_the_wrong_key_names_it(tmp_path: Path) -> None:
    await _fill(_config(tmp_path / "a", secrets.token_urlsafe(32)), FakeClock())
    with pytest.raises(WrongMasterKey):
        export_namespace(_config(tmp_path / "a", secrets.token_urlsafe(32)), "things", io.BytesIO())


def test_a_bad_line_names_its_number(tmp_path: Path) -> None:
    lines = tmp_path / "bad.jsonl"
    lines.write_bytes(
        b'{"key": "a", "value": "AAE=", "version": 3, "expires_at": null}\n{"key": 1}\n'
    )
    config = _config(tmp_path / "a", secrets.token_urlsafe(32))
    with pytest.raises(ValueError, match="line 2"):
        import_namespace(config, "things", lines)
