"""``fame backup`` and ``fame restore``: a consistent copy of a storage directory, and back.

A running node holds every file of its directory with an exclusive lock,
so ``backup`` asks the running service to copy its own files (the live
administration, as ``fame admin`` does); a directory nobody holds is
backed up here, by opening it as the node would. Either way each file is
copied with SQLite's online backup API and ``fame-backup.json`` is written
last (see ``docs/storage.md``). ``restore`` verifies a backup (checksums,
then the checks of ``fame check``), refuses while a process holds the
data directory, and keeps the directory it replaces.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from fame.lowlevel import SENTINEL_ADMIN_ADDRESS
from fame.storage import (
    BackupManifest,
    StorageConfig,
    backup_storage,
    files_in_use,
    restore_backup,
    storage_config_from_env,
)

from . import _live_admin
from ._errors import shown_path
from ._settings import AGENT_CONF, SECRETS_FILE, SENTINEL_CONF, load_settings

__all__ = ["BackupError", "backup", "restore"]

LIVE_TIMEOUT = 3600.0
"""Seconds a running service may take to write a backup."""


class BackupError(Exception):
    """A refusal, phrased for the user: what happened, what was kept, what to do."""


def config_for(directory: Path, settings: Mapping[str, str]) -> StorageConfig:
    merged = dict(settings)
    merged["FAME_STORAGE_DB_DIRECTORY"] = str(directory)
    merged.setdefault("FAME_STORAGE_PROFILE", "encrypted-sqlite")
    if not merged["FAME_STORAGE_PROFILE"]:
        merged["FAME_STORAGE_PROFILE"] = "encrypted-sqlite"
    return storage_config_from_env(merged)


def _service_of(directory: Path) -> tuple[str, str] | None:
    """The project's service keeping ``directory`` and its administration's address."""
    for name, conf in (("sentinel", SENTINEL_CONF), ("agent node", AGENT_CONF)):
        settings = load_settings([conf, SECRETS_FILE], optional=True)
        found = settings.get("FAME_STORAGE_DB_DIRECTORY", "").strip()
        if found and Path(found).resolve() == directory.resolve():
            if name == "sentinel":
                return name, SENTINEL_ADMIN_ADDRESS
            return name, _live_admin.node_admin_address(settings)
    return None


def _summary(destination: Path, files: int, size: int, records: int, seconds: float) -> str:
    rate = size / 1e6 / seconds if seconds > 0 else 0.0
    shown = shown_path(destination)
    return (
        f"fame backup: {shown}: {files} files, {size} bytes, {records} records"
        f" in {seconds:.2f} s ({rate:.1f} MB/s); verify it with: fame check {shown}"
    )


def backup(
    directory: Path, destination: Path, settings: Mapping[str, str], *, offline: bool
) -> int:
    """Back up ``directory`` into the new directory ``destination``."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    held = files_in_use(directory)
    started = time.monotonic()
    if held:
        if offline:
            raise BackupError(
                f"{shown_path(held[0])} is in use by a running process: nothing was written;"
                " drop --offline to have the running service write the backup, or stop it"
                " (`just stop`) first"
            )
        service = _service_of(directory)
        if service is None:
            raise BackupError(
                f"{shown_path(held[0])} is in use by a running process that is not one of this"
                " project's services: nothing was written; stop it, then run fame backup again"
            )
        name, address = service
        print(f"fame backup: asking the running {name} ({address}) to copy {shown_path(directory)}")
        try:
            done: dict[str, Any] = _live_admin.call_waiting(
                "backup", LIVE_TIMEOUT, address, destination=str(destination.absolute())
            )
        except _live_admin.LiveAdminError as exc:
            raise BackupError(str(exc)) from None
        print(
            _summary(
                destination,
                done["files"],
                done["bytes"],
                done["records"],
                time.monotonic() - started,
            )
        )
        return 0
    config = config_for(directory, settings)
    print(f"fame backup: copying {shown_path(directory)} (stopped) offline", flush=True)
    manifest: BackupManifest = trio.run(backup_storage, config, destination)
    records = sum(f.records for f in manifest.files)
    seconds = time.monotonic() - started
    print(_summary(destination, len(manifest.files), manifest.total_bytes, records, seconds))
    return 0


def _confirmed(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    print(f"{question} [y/N] ", end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def restore(source: Path, data: Path, settings: Mapping[str, str], *, yes: bool) -> int:
    """Put the backup in ``source`` in place of the storage directory ``data``."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory")
    config = config_for(data, settings)
    held = files_in_use(data)
    if held:
        raise BackupError(
            f"{shown_path(held[0])} is in use by a running process: nothing was restored;"
            " stop the services (`just stop`), then run fame restore again"
        )
    if not yes and not _confirmed(
        f"Replace {shown_path(data)} with the backup in {shown_path(source)}? The current"
        " directory is kept beside it."
    ):
        raise BackupError(
            "not confirmed: nothing was restored; answer y on a terminal, or pass --yes"
        )
    done = restore_backup(source, data, config.profile, config.master_key)
    records = sum(f.records for f in done.manifest.files)
    print(
        f"fame restore: {shown_path(data)} now holds the backup of"
        f" {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(done.manifest.created_at))}"
        f" ({len(done.manifest.files)} files, {records} records)"
    )
    if done.kept is not None:
        print(f"fame restore: the previous directory was kept at {shown_path(done.kept)}")
    return 0
