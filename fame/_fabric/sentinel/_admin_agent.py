"""Live administration of a running sentinel: an agent on the sentinel's own node.

``fame admin`` and ``fame enroll`` / ``fame revoke`` call it while the
sentinel runs (its stores are then locked to other processes), as a client
holding the *admin* credential (``FAME_ADMIN_TOKEN``, the client credential
named ``admin``). Every operation checks the verified caller itself, so a
policy that lets others call the address still lets nobody else in; the
default policy also names only ``client:admin`` for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..._agents._agent import BaseAgent
from ..._agents._call_context import current_caller
from ..._agents._operation import operation
from ..._core._errors import FameError
from ..._protocol._attach import SentinelPolicy
from ..._protocol._credentials import Enrollment, format_public_key, parse_public_key
from ..._protocol._route_table import RouteTable
from ._registry import RegistryError, Revoked
from ._status import SentinelStatus

__all__ = ["ADMIN_ADDRESS", "ADMIN_PRINCIPAL", "AdminRefused", "Administered", "SentinelAdmin"]

ADMIN_ADDRESS = "admin@sentinel.fame"
"""Where a sentinel serves its live administration."""

ADMIN_PRINCIPAL = "client:admin"
"""The only principal it answers: a client proving the admin credential."""


class AdminRefused(FameError):
    """The caller is not the admin, or asked for something invalid; nothing changed."""


def _admin_only() -> None:
    caller = current_caller()
    if caller is None or caller.principal != ADMIN_PRINCIPAL:
        who = caller.principal if caller is not None else "a local caller"
        raise AdminRefused(f"{who} is not {ADMIN_PRINCIPAL}: nothing was read or changed")


_ERRORS = (AdminRefused, RegistryError, ValueError)


class Administered(Protocol):
    """What the agent needs of the sentinel (``fame.lowlevel.Sentinel`` is one)."""

    @property
    def enrolled(self) -> Mapping[str, Enrollment]: ...
    @property
    def pins(self) -> Mapping[str, bytes]: ...
    @property
    def routes(self) -> RouteTable[Any]: ...
    @property
    def policy(self) -> SentinelPolicy: ...

    async def enroll(
        self,
        node_id: str,
        public_key: bytes,
        *,
        name: str | None = None,
        old_until: float | None = None,
    ) -> Enrollment: ...

    async def revoke(self, node_id: str) -> Revoked: ...

    async def release(self, address: str) -> str | None: ...

    async def rotate_signing_key(self, grace: float) -> list[bytes]: ...

    def status(self, window: float) -> SentinelStatus: ...


class SentinelAdmin(BaseAgent):
    """Lists and changes the sentinel's enrolled nodes, pins, bindings and keys, live."""

    def __init__(self, sentinel: Administered, storage: object = None) -> None:
        super().__init__()
        self._sentinel = sentinel
        self._storage = storage

    @operation(errors=_ERRORS)
    async def nodes(self) -> list[dict[str, Any]]:
        """Every enrolled node: id, name, keys with their ends, and whether it is attached."""
        _admin_only()
        sentinel = self._sentinel
        return [
            {
                "node_id": e.node_id,
                "name": e.name,
                "keys": [[format_public_key(k.public_key), k.not_after] for k in e.keys],
                "attached": sentinel.routes.linked(e.node_id),
            }
            for e in sorted(sentinel.enrolled.values(), key=lambda e: e.node_id)
        ]

    @operation(errors=_ERRORS)
    async def pins(self) -> dict[str, str]:
        _admin_only()
        return {n: format_public_key(k) for n, k in sorted(self._sentinel.pins.items())}

    @operation(errors=_ERRORS)
    async def bindings(self) -> dict[str, str]:
        _admin_only()
        return dict(sorted(self._sentinel.routes.bindings().items()))

    @operation(errors=_ERRORS)
    async def status(self, window: float = 1.0) -> SentinelStatus:
        """Links, bindings, bind refusals and per-address traffic, now (``fame status``).

        Latency percentiles cover the answers of the last ``window`` seconds.
        """
        _admin_only()
        if not 0 < window <= 3600:
            raise ValueError(f"the window is a number of seconds in (0, 3600], not {window!r}")
        return self._sentinel.status(window)

    @operation(errors=_ERRORS)
    async def enroll(
        self, node_id: str, public_key: str, name: str = "", rotate_grace: float = -1
    ) -> str:
        """Enroll a node (or add a key); ``rotate_grace`` >= 0 ends its other keys then."""
        _admin_only()
        sentinel = self._sentinel
        before = sentinel.enrolled.get(node_id)
        old_until = sentinel.policy.clock() + rotate_grace if rotate_grace >= 0 else None
        after = await sentinel.enroll(
            node_id, parse_public_key(public_key), name=name or None, old_until=old_until
        )
        if before == after:
            return (
                f"{node_id} is already enrolled as {after.name} with {public_key}: nothing changed"
            )
        return f"enrolled {node_id} as {after.name} with {public_key}"

    @operation(errors=_ERRORS)
    async def revoke(self, node_id: str) -> dict[str, Any]:
        _admin_only()
        revoked = await self._sentinel.revoke(node_id)
        return {
            "node_id": revoked.node_id,
            "enrollment": revoked.enrollment,
            "pin": revoked.pin,
            "addresses": list(revoked.addresses),
        }

    @operation(errors=_ERRORS)
    async def release(self, address: str) -> str | None:
        _admin_only()
        return await self._sentinel.release(address)

    @operation(errors=_ERRORS)
    async def rotate_signing_key(self, grace: float) -> list[str]:
        """A new signing key; the current ones end after ``grace`` s. All valid public keys."""
        _admin_only()
        if not grace >= 0:
            raise ValueError(f"the grace period is a number of seconds >= 0, not {grace!r}")
        return [format_public_key(k) for k in await self._sentinel.rotate_signing_key(grace)]

    @operation(errors=_ERRORS)
    async def backup(self, destination: str) -> dict[str, Any]:
        """Back up the sentinel's storage into the new directory ``destination`` (absolute).

        Its stores hold their files locked while it runs, so it copies them
        itself (see ``fame.storage.backup_storage``); the answer sums up the
        manifest it wrote.
        """
        _admin_only()
        return await backup_summary(self._storage, destination)


async def backup_summary(storage: object, destination: str) -> dict[str, Any]:
    """Back up ``storage`` (a provider that can) into ``destination``; what it wrote."""
    backup = getattr(storage, "backup", None)
    if backup is None:
        raise AdminRefused("this node's storage provider cannot make backups: nothing was written")
    path = Path(destination)
    if not path.is_absolute():
        raise ValueError(f"the backup destination must be an absolute path, not {destination!r}")
    try:
        manifest = await backup(path)
    except FameError as exc:  # a StorageError (a layer above): said as a refusal
        raise AdminRefused(f"{type(exc).__name__}: {exc}") from None
    return {
        "directory": str(path),
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
        "records": sum(f.records for f in manifest.files),
    }
