"""``fame dlq list|replay|drop``: a stopped node's dead letters, offline.

A message told with ``node.tell`` that could not be delivered (refused for
good, or out of attempts) is kept in the node's ``__delivery_dlq`` store
with its last error. These commands open that store directly, with the
master key (``conf/agent.env`` and ``conf/secrets.env`` by default, or
``--config`` files; ``--directory`` overrides the storage directory), as
``fame inspect`` does. A running node holds its stores exclusively: the
commands refuse while the project's agent runs, or when another process
holds the files, and change nothing.

``replay`` puts dead letters back in the outbox with their attempts reset
(the node sends them when it starts again); ``drop`` forgets them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from fame.errors import DatabaseInUse
from fame.lowlevel import DeadLetters, OutboxEntry, leaves
from fame.storage import StorageConfig, namespace_files, open_storage, storage_config_from_env

from ._admin import AdminError
from ._errors import shown_path
from ._processes import SERVICES

__all__ = ["dlq"]

T = TypeVar("T")
DLQ_NAMESPACE = "__delivery_dlq"
_AGENT = SERVICES[1]


def _config(settings: Mapping[str, str], directory: Path | None) -> StorageConfig:
    merged = dict(settings)
    if directory is not None:
        merged["FAME_STORAGE_DB_DIRECTORY"] = str(directory)
    if not merged.get("FAME_STORAGE_PROFILE"):
        merged["FAME_STORAGE_PROFILE"] = "encrypted-sqlite"
    config = storage_config_from_env(merged)
    if config.profile == "memory" or config.directory is None:
        raise AdminError(
            f"the storage profile is {config.profile!r}: a node on it keeps no dead letters"
            " on disk; pass --config with the node's settings, or --directory DIR"
        )
    return config


def _refuse_if_running(config: StorageConfig, own_project: bool) -> None:
    pid = _AGENT.pid() if own_project else None
    if pid is not None:
        where = shown_path(config.directory or ".")
        raise AdminError(
            f"the agent node is running (pid {pid}) and holds {where}: stop it first with"
            " `just stop`; nothing was read or changed"
        )


async def _with(config: StorageConfig, work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    async with open_storage(config, purge_interval=3600) as provider:
        return await work(DeadLetters(provider))


def _open(config: StorageConfig, work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    try:
        return trio.run(_with, config, work)
    except Exception as exc:
        if not any(isinstance(error, DatabaseInUse) for error in leaves(exc)):
            raise
        raise AdminError(
            f"the stores in {shown_path(config.directory or '.')} are in use by a running"
            " process (the node?); nothing was read or changed: stop it first"
        ) from None


def _has_dead_letters(config: StorageConfig) -> bool:
    """Whether the directory has a dead-letter store (opening one would create it)."""
    assert config.directory is not None
    if not config.directory.is_dir():
        raise FileNotFoundError(f"{config.directory} is not a directory")
    encrypted = config.profile == "encrypted-sqlite"
    return any(
        name == DLQ_NAMESPACE for name, _ in namespace_files(config.directory, encrypted=encrypted)
    )


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show(entry: OutboxEntry) -> str:
    error = (entry.last_error or "-").replace("\n", " ")
    return (
        f"{entry.id}\t{entry.to}\t{entry.op}\t{entry.attempts}\t{_when(entry.queued_at)}\t{error}"
    )


def dlq(args: Any, settings: Mapping[str, str], own_project: bool) -> int:
    """Run ``fame dlq ACTION``; print what it found or changed."""
    config = _config(settings, args.directory)
    _refuse_if_running(config, own_project)
    action = args.action
    every, named = getattr(args, "all", False), getattr(args, "ids", [])
    if action != "list" and not every and not named:
        raise AdminError(f"name the dead letters to {action} (IDs), or pass --all")
    if action != "list" and every and named:
        raise AdminError("pass IDs or --all, not both")
    if not _has_dead_letters(config):
        if action == "list" or every:
            print(f"no dead letters in {shown_path(config.directory or '.')}")
            return 0
        raise AdminError(
            f"no dead letters in {shown_path(config.directory or '.')}; nothing was changed"
        )
    ids = None if every or action == "list" else list(dict.fromkeys(named))
    if action == "list":
        found = _open(config, lambda letters: letters.entries())
        if not found:
            print(f"no dead letters in {shown_path(config.directory or '.')}")
            return 0
        print("id\tto\top\tattempts\tqueued at\tlast error")
        for entry in found:
            print(_show(entry))
        return 0
    if action == "replay":
        now = time.time()
        moved = _open(config, lambda letters: letters.replay(ids, now))
        for entry in moved:
            print(f"replayed {entry.id} ({entry.op}() to {entry.to}): back in the outbox")
        print(f"{len(moved)} dead letter(s) back in the outbox; the node sends them when it starts")
        return 0
    dropped = _open(config, lambda letters: letters.drop(ids))
    for entry in dropped:
        print(f"dropped {entry.id} ({entry.op}() to {entry.to})")
    print(f"{len(dropped)} dead letter(s) dropped")
    sys.stdout.flush()
    return 0
