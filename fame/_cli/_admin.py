"""``fame identity|enroll|revoke|admin``: the sentinel's register of nodes, offline.

The sentinel admits a node by a public key enrolled in its own stores
(``data/sentinel``, from ``conf/sentinel.env``). These commands open those
stores directly, with the master key from ``conf/secrets.env``, as
``fame inspect`` does; the sentinel holds them exclusively while it runs,
so a command that writes refuses while its pid file names a live sentinel,
and a read then fails with the same advice instead of waiting on the lock.

The project's own agent node is enrolled from its identity in
``data/agent`` (``conf/agent.env``), made here on first use exactly as the
node would make it, so the node attaches with it later. An agent on the
``memory`` profile makes a new identity at every start: it cannot be
enrolled.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from fame.errors import DatabaseInUse, RegistryError
from fame.lowlevel import (
    NodeRegistry,
    NodeStores,
    leaves,
    load_or_create_identity,
    sentinel_public_keys,
)
from fame.security import format_public_key, parse_public_key
from fame.storage import StorageConfig, open_storage, storage_config_from_env

from . import _live_admin
from ._errors import shown_path
from ._processes import SERVICES
from ._settings import AGENT_CONF, SECRETS_FILE, SENTINEL_CONF, load_settings
from ._trust import add_sentinel_keys, sentinel_keys_file

__all__ = ["AdminError", "admin", "enroll", "enroll_agent_on_init", "identity", "revoke"]

T = TypeVar("T")
AGENT_NAME = "agent"
_SENTINEL, _AGENT = SERVICES


class AdminError(Exception):
    """A refusal, phrased for the user: what happened, what was kept, what to do."""


def _config(conf: Path) -> StorageConfig:
    if not conf.exists():
        raise AdminError(
            f"{conf} is missing: {Path.cwd()} is not a fame project (make it one with: fame init,"
            " or pass --project DIR)"
        )
    return storage_config_from_env(load_settings([conf, SECRETS_FILE], optional=True))


def _persistent(config: StorageConfig) -> bool:
    return config.profile != "memory" and config.directory is not None


def _persistent_config(conf: Path, owner: str, why: str) -> StorageConfig:
    """The storage of ``owner`` (the agent or the sentinel), which must keep its files."""
    config = _config(conf)
    if not _persistent(config):
        raise AdminError(
            f"the {owner}'s storage profile is {config.profile!r} ({conf}): {why}; set"
            " FAME_STORAGE_PROFILE=encrypted-sqlite there"
        )
    return config


def _agent_config() -> StorageConfig:
    why = "its identity would change at every start, so it cannot be enrolled"
    return _persistent_config(AGENT_CONF, "agent", why)


def _sentinel_config() -> StorageConfig:
    return _persistent_config(
        SENTINEL_CONF, "sentinel", "it keeps no register on disk to administer"
    )


def _running_advice(pid: int) -> str:
    return (
        f"the sentinel is running (pid {pid}): stop it first with `just stop`, or use the live"
        " admin of the running sentinel"
    )


async def _in_stores(config: StorageConfig, work: Callable[[NodeStores], Awaitable[T]]) -> T:
    async with open_storage(config, purge_interval=3600) as provider:
        return await work(NodeStores(provider))


def _open(config: StorageConfig, work: Callable[[NodeStores], Awaitable[T]], owner: str) -> T:
    try:
        return trio.run(_in_stores, config, work)
    except Exception as exc:
        if not any(isinstance(error, DatabaseInUse) for error in leaves(exc)):
            raise
        pid = _SENTINEL.pid() if owner == "sentinel" else _AGENT.pid()
        running = f" (pid {pid})" if pid is not None else ""
        raise AdminError(
            f"the {owner}'s stores in {shown_path(config.directory or '.')} are in use by a running"
            f" process{running}; nothing was read or changed: stop it first with `just stop`"
        ) from None


def _write_registry(work: Callable[[NodeRegistry], Awaitable[T]]) -> T:
    pid = _SENTINEL.pid()
    if pid is not None:
        raise AdminError(_running_advice(pid) + "; nothing was changed")
    return _open(_sentinel_config(), lambda stores: work(NodeRegistry(stores)), "sentinel")


def _read_registry(work: Callable[[NodeRegistry], Awaitable[T]]) -> T | None:
    """What ``work`` read; None when no sentinel ever stored anything here."""
    config = _sentinel_config()
    assert config.directory is not None
    if not config.directory.exists():
        return None  # nothing was ever enrolled: create nothing
    return _open(config, lambda stores: work(NodeRegistry(stores)), "sentinel")


def _agent_identity() -> tuple[str, bytes]:
    async def load(stores: NodeStores) -> tuple[str, bytes]:
        found = await load_or_create_identity(stores)
        return found.node_id, found.public_key

    return _open(_agent_config(), load, "agent")


def _say(text: str) -> None:
    print(text, flush=True)


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- commands ------------------------------------------------------------------


def identity(args: Any) -> int:
    node_id, key = _agent_identity()
    _say(f"{node_id} {format_public_key(key)}")
    return 0


def enroll(args: Any) -> int:
    if (args.node_id is None) != (args.public_key is None):
        raise AdminError(
            "give both NODE_ID and PUBLIC_KEY (as `fame identity` prints them on that machine),"
            " or neither to enroll this project's agent; nothing was enrolled"
        )
    if args.rotate_grace is not None and not args.rotate_grace >= 0:
        raise AdminError("--rotate-grace is a number of seconds, 0 or more; nothing was enrolled")
    if args.node_id is None:
        node_id, key = _agent_identity()
        default_name = AGENT_NAME
    else:
        node_id, default_name = args.node_id, args.node_id
        try:
            key = parse_public_key(args.public_key)
        except ValueError as exc:
            raise AdminError(
                f"bad public key: {exc}; nothing was enrolled (give the key `fame identity`"
                " prints on that machine)"
            ) from None
    if _SENTINEL.pid() is not None:
        grace = -1 if args.rotate_grace is None else args.rotate_grace
        said = _live(
            "enroll",
            node_id=node_id,
            public_key=format_public_key(key),
            name=args.name or "",
            rotate_grace=grace,
        )
        _say(said)
        return 0
    now = time.time()
    old_until = None if args.rotate_grace is None else now + args.rotate_grace
    _say(_enroll(node_id, args.name, default_name, key, old_until, now))
    return 0


def _enroll(
    node_id: str,
    name: str | None,
    default_name: str,
    key: bytes,
    old_until: float | None,
    now: float,
) -> str:
    """Enroll and say what changed, in one line."""

    async def work(registry: NodeRegistry) -> str:
        before = (await registry.enrollments()).get(node_id)
        chosen = name or (before.name if before else default_name)
        after = await registry.enroll(node_id, chosen, key, old_until=old_until, now=now)
        shown = format_public_key(key)
        if before == after:
            return f"{node_id} is already enrolled as {after.name} with {shown}: nothing changed"
        if before is None:
            return f"enrolled {node_id} as {after.name} with {shown}"
        changes = [] if before.name == after.name else [f"renamed {before.name} to {after.name}"]
        if not before.admits(key, now):
            changes.append(f"added {shown}")
        others = [k for k in before.keys if k.public_key != key and k.valid_at(now)]
        if old_until is not None and others:
            end = "ended now" if old_until <= now else f"end at {_when(old_until)}"
            changes.append(f"its other keys {end}")
        return f"updated {node_id} ({after.name}): {'; '.join(changes) or 'keys renewed'}"

    return _write_registry(work)


def revoke(args: Any) -> int:
    if _SENTINEL.pid() is not None:
        live = _live("revoke", node_id=args.node_id)
        enrollment, pin, addresses = live["enrollment"], live["pin"], live["addresses"]
    else:
        done = _write_registry(lambda registry: registry.revoke(args.node_id))
        enrollment, pin, addresses = done.enrollment, done.pin, list(done.addresses)
    if not (enrollment or pin or addresses):
        raise AdminError(
            f"nothing is stored for {args.node_id} (no enrollment, pin or binding): nothing"
            " changed; `fame admin nodes` lists the enrolled nodes"
        )
    removed = [
        *(["its enrollment"] if enrollment else []),
        *(["its pinned key"] if pin else []),
        *([f"its bindings of {', '.join(addresses)}"] if addresses else []),
    ]
    _say(f"revoked {args.node_id}: removed {', '.join(removed)}")
    return 0


def admin(args: Any) -> int:
    action = args.action
    if _SENTINEL.pid() is not None:
        return _admin_live(args)
    if action == "release":
        record = _write_registry(lambda registry: registry.release(args.address))
        if record is None:
            raise AdminError(
                f"{args.address} has no stored binding: nothing changed; `fame admin bindings`"
                " lists them"
            )
        _say(f"released {args.address} (was bound to {record})")
        return 0
    if action == "nodes":
        nodes = _read_registry(lambda registry: registry.enrollments()) or {}
        now = time.time()
        for node_id, enrollment in sorted(nodes.items()):
            _say(f"{node_id} {enrollment.name} (enrolled {_when(enrollment.enrolled_at)})")
            for k in enrollment.keys:
                end = "no end" if k.not_after is None else _when(k.not_after)
                state = "" if k.valid_at(now) else ", ended"
                _say(f"  {format_public_key(k.public_key)} ({end}{state})")
        if not nodes:
            _say("no enrolled nodes")
        return 0
    if action == "pins":
        pins = _read_registry(lambda registry: registry.pins()) or {}
        _say_pairs({n: format_public_key(k) for n, k in pins.items()}, "no pinned keys")
        return 0
    bindings = _read_registry(lambda registry: registry.bindings()) or {}
    _say_pairs(bindings, "no stored bindings")
    return 0


def _say_pairs(pairs: dict[str, str], none: str) -> None:
    """One ``key value`` line per pair, sorted; ``none`` when there is none."""
    for key, value in sorted(pairs.items()):
        _say(f"{key} {value}")
    if not pairs:
        _say(none)


def _live(operation: str, **args: Any) -> Any:
    try:
        return _live_admin.call(operation, **args)
    except _live_admin.LiveAdminError as exc:
        raise AdminError(str(exc)) from None


def _admin_live(args: Any) -> int:
    """``fame admin ACTION`` answered by the running sentinel."""
    action = args.action
    if action == "release":
        record = _live("release", address=args.address)
        if record is None:
            raise AdminError(f"{args.address} has no binding: nothing changed")
        _say(f"released {args.address} (was bound to {record})")
    elif action == "nodes":
        nodes = _live("nodes")
        for node in nodes:
            attached = ", attached" if node["attached"] else ""
            _say(f"{node['node_id']} {node['name']}{attached}")
            for key, end in node["keys"]:
                _say(f"  {key} ({'no end' if end is None else _when(end)})")
        if not nodes:
            _say("no enrolled nodes")
    elif action == "pins":
        _say_pairs(_live("pins"), "no pinned keys")
    else:
        _say_pairs(_live("bindings"), "no bindings")
    return 0


def enroll_agent_on_init(command: str = "init") -> int:
    """Enroll the project's agent, once; a project that cannot is told how, not failed.

    ``fame up`` runs it too (``command`` "up"), so that a project made before
    enrollment existed, or whose data was wiped, starts as it did; it then
    says nothing when the agent was enrolled already.
    """
    agent = _config(AGENT_CONF)
    if not _persistent(agent):
        _say(
            f"fame {command}: the agent's storage profile is {agent.profile!r}: its identity"
            " does not persist, so it was not enrolled and cannot attach; give it a persistent"
            " profile (FAME_STORAGE_PROFILE=encrypted-sqlite in conf/agent.env), then run"
            " `fame enroll`"
        )
        return 0
    running = [(s.name, pid) for s in SERVICES if (pid := s.pid()) is not None]
    if running:
        name, pid = running[0]
        _say(
            f"fame {command}: the {name} is running (pid {pid}): the agent was not enrolled; run"
            " `fame enroll` once the services are stopped (`just stop`)"
        )
        return 0
    if not _persistent(_config(SENTINEL_CONF)):
        _say(
            f"fame {command}: the sentinel keeps nothing on disk (memory profile): the agent"
            " was not enrolled; run the sentinel with trust on first use"
            " (FAME_TRUST_ON_FIRST_USE=1), and let role:node bind in conf/policy.toml"
        )
        return 0
    node_id, key = _agent_identity()
    said = _enroll(node_id, None, AGENT_NAME, key, None, time.time())
    if command == "init" or not said.endswith("nothing changed"):
        _say(f"fame {command}: {said}")
    return 0


def publish_sentinel_keys(command: str = "init") -> int:
    """Write the sentinel's public keys into the keys file, making its first key if needed.

    So that nodes and clients of a new project trust their sentinel before
    it ever ran. A sentinel that persists nothing (memory profile) or is
    running now adds its keys itself when it starts.
    """
    config = _config(SENTINEL_CONF)
    if not _persistent(config) or _SENTINEL.pid() is not None:
        return 0
    keys_file = sentinel_keys_file(load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True))
    if not keys_file.parent.is_dir():
        return 0

    async def work(stores: NodeStores) -> list[bytes]:
        assert stores.provider is not None
        return await sentinel_public_keys(stores.provider, time.time())

    for key in add_sentinel_keys(keys_file, _open(config, work, "sentinel")):
        _say(f"fame {command}: wrote the sentinel's key {format_public_key(key)} to {keys_file}")
    return 0


def run(command: str, action: Callable[[], int]) -> int:
    """Run one command; a refusal is one line on stderr and exit status 1."""
    try:
        return action()
    except Exception as exc:
        found = leaves(exc)  # a refusal inside the stores' block comes out in a group
        if not all(isinstance(error, AdminError | RegistryError) for error in found):
            raise
        for error in found:
            kept = "; nothing was changed" if isinstance(error, RegistryError) else ""
            print(f"fame {command}: {error}{kept}", file=sys.stderr, flush=True)
        return 1
