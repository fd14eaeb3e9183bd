"""A real encrypted store of many records with one damaged page in the middle of its file.

Shared by the damage and salvage tests. The records go in through the
public storage API; then bytes inside one page (not page 1, which holds
the schema) are flipped, as a bad disk sector would.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agents.storage_agent import NAMESPACE, RecordModel
from fame._storage._keys import file_key
from fame.storage import MasterKey, StorageConfig, open_storage, parse_master_key

__all__ = ["MASTER_KEY", "NAMESPACE", "RECORDS", "config", "damage", "fill", "key_of", "value_of"]

RECORDS = 20_000
PAGE = 4096
_DATA = PAGE - 80  # the reserved tail: 16-byte IV, 64-byte HMAC
MASTER_KEY = MasterKey.generate().export()
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def key_of(i: int) -> str:
    return f"k{i:06d}"


def config(directory: Path) -> StorageConfig:
    return StorageConfig(
        profile="encrypted-sqlite", directory=directory, master_key=parse_master_key(MASTER_KEY)
    )


async def fill(directory: Path, records: int = RECORDS) -> Path:
    """Write ``records`` records to the agent's namespace in ``directory``; its file."""
    async with open_storage(config(directory)) as provider:
        store = await provider.get_kv_store(RecordModel, NAMESPACE)
        for start in range(0, records, 1000):
            end = min(start + 1000, records)
            await store.set_many({key_of(i): value_of(i) for i in range(start, end)})
    return directory / f"{NAMESPACE}_encrypted_value.db"


def value_of(i: int) -> RecordModel:
    return RecordModel(f"value {i} " + "x" * 80, created=CREATED)


def damage(path: Path, near: float = 0.5) -> int:
    """Flip bytes inside a leaf page of records near the middle of ``path``; its number.

    ``near``: where in the file to look for the leaf, 0.5 being the middle.

    A leaf, not an interior page of the b-tree: an interior page is the way
    to many leaves, and a bad one hides all of them (``fame salvage`` finds
    them again). Pages are decrypted here (SQLCipher 4: AES-256-CBC with the
    raw file key, the IV in the 16 bytes after the data) to read the b-tree
    page type: ``0x0a``, a leaf of an index b-tree (``kv`` is a ``WITHOUT
    ROWID`` table).
    """
    data = bytearray(path.read_bytes())
    key = file_key(parse_master_key(MASTER_KEY), path)[:32]  # then the salt, if any
    pages = len(data) // PAGE
    middle = int(pages * near)
    for page in sorted(range(2, pages + 1), key=lambda n: abs(n - middle)):
        raw = bytes(data[(page - 1) * PAGE : page * PAGE])
        iv = raw[_DATA : _DATA + 16]
        plain = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor().update(raw[:16])
        if plain[0] == 0x0A:
            break
    else:  # pragma: no cover - a store of 20,000 records has hundreds of leaves
        raise AssertionError(f"no leaf page in {path}")
    for offset in (1000, 1001, 2000):
        data[(page - 1) * PAGE + offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return page
