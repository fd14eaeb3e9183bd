"""Records, configs and file listings shared by the storage-fault tests.

The records are ``Doc`` structs whose bodies do not compress (so a page
limit is reached after a predictable number of writes); the configs use the
suite's one master key; :func:`digests` and :func:`tree` prove what was
(not) written or created on disk.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

import msgspec

from fame._storage import StorageConfig, parse_master_key

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
