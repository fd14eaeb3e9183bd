"""The sentinel's register of admitted nodes, as its stores hold it.

Enrollments (``enroll:<node id>`` in ``__keystore``), the keys pinned at
first attach (``pin:<node id>``, same namespace) and the route bindings
(``__route_store``) are what the operator administers: ``fame enroll``,
``fame revoke`` and ``fame admin`` work on them through :class:`NodeRegistry`,
offline, with the sentinel stopped (its stores are its own while it runs).
The decisions are small pure functions; the class only reads and writes.
"""

from __future__ import annotations

import attrs
import msgspec

from ..._core._address import is_valid_label
from ..._core._errors import FameError
from ..._protocol._credentials import (
    ENROLL_PREFIX,
    Enrollment,
    decode_enrollment,
    encode_enrollment,
)
from ..._protocol._route_table import record_owners, record_without
from .._identity import KEYSTORE, ROUTE_STORE, NodeStores
from ._connection import PIN_PREFIX

__all__ = ["NodeRegistry", "RegistryError", "Revoked", "enrolled", "name_holder"]

_KEY_BYTES = 32


class RegistryError(FameError, ValueError):
    """An enrollment the registry refuses (bad id, name or key), or a damaged record."""


@attrs.frozen
class Revoked:
    """What :meth:`NodeRegistry.revoke` removed for one node id."""

    node_id: str
    enrollment: bool
    pin: bool
    addresses: tuple[str, ...]

    @property
    def anything(self) -> bool:
        return self.enrollment or self.pin or bool(self.addresses)


def name_holder(enrollments: dict[str, Enrollment], name: str, node_id: str) -> str | None:
    """The other node id already enrolled under ``name``, if any (names are unique)."""
    for other, enrollment in enrollments.items():
        if enrollment.name == name and other != node_id:
            return other
    return None


def enrolled(
    existing: Enrollment | None,
    node_id: str,
    name: str,
    public_key: bytes,
    *,
    old_until: float | None,
    now: float,
) -> Enrollment:
    """The enrollment after adding ``public_key``: ``existing`` itself if nothing changes.

    Keys that ended before ``now`` are dropped: they admit nobody any more,
    and the record must not grow with every rotation.
    """
    if existing is None:
        return Enrollment(node_id, name, (), enrolled_at=now).with_key(public_key)
    updated = existing.with_key(public_key, old_until=old_until)
    live = tuple(k for k in updated.keys if k.valid_at(now))
    updated = msgspec.structs.replace(updated, name=name, keys=live)
    if updated.name == existing.name and set(updated.keys) == set(existing.keys):
        return existing
    return updated


def _check(what: str, value: str) -> None:
    if not is_valid_label(value):
        raise RegistryError(
            f"{what} {value!r} is not valid: use 1-63 ASCII letters, digits, '_' or '-',"
            " not starting with '-'"
        )


class NodeRegistry:
    """Enrolled nodes, pinned keys and route bindings in a sentinel's stores."""

    def __init__(self, stores: NodeStores) -> None:
        self._stores = stores

    async def enrollments(self) -> dict[str, Enrollment]:
        """Every enrolled node, by node id."""
        found: dict[str, Enrollment] = {}
        for key, raw in (await self._stores.items(KEYSTORE)).items():
            if not key.startswith(ENROLL_PREFIX):
                continue
            node_id = key[len(ENROLL_PREFIX) :]
            try:
                found[node_id] = decode_enrollment(raw)
            except msgspec.DecodeError:
                raise RegistryError(
                    f"the stored enrollment of {node_id} cannot be read; revoke it and enroll"
                    " the node again"
                ) from None
        return found

    async def enroll(
        self,
        node_id: str,
        name: str,
        public_key: bytes,
        *,
        old_until: float | None = None,
        now: float,
    ) -> Enrollment:
        """Enroll ``node_id`` with ``public_key``, or add the key to its enrollment.

        ``old_until``: the node's other keys end then (a rotation). The
        name may change, but not to one another node id is enrolled under.
        Enrolling what is already there writes nothing and returns it.
        """
        _check("node id", node_id)
        _check("name", name)
        if len(public_key) != _KEY_BYTES:
            raise RegistryError(
                f"an Ed25519 public key is {_KEY_BYTES} bytes, this one is {len(public_key)}"
            )
        current = await self.enrollments()
        holder = name_holder(current, name, node_id)
        if holder is not None:
            raise RegistryError(
                f"the name {name!r} is already enrolled for node {holder}; choose another name,"
                f" or revoke {holder} first"
            )
        existing = current.get(node_id)
        result = enrolled(existing, node_id, name, public_key, old_until=old_until, now=now)
        if result is not existing:
            await self._stores.set(KEYSTORE, ENROLL_PREFIX + node_id, encode_enrollment(result))
        return result

    async def revoke(self, node_id: str) -> Revoked:
        """Remove the enrollment, the pin and every stored binding of ``node_id``."""
        enrollment = await self._stores.get(KEYSTORE, ENROLL_PREFIX + node_id) is not None
        pin = await self._stores.get(KEYSTORE, PIN_PREFIX + node_id) is not None
        addresses = []
        for address, record in (await self.bindings()).items():
            if node_id not in record_owners(record):
                continue
            addresses.append(address)
            remaining = record_without(record, node_id)
            if remaining is None:
                await self._stores.delete(ROUTE_STORE, address)
            else:
                await self._stores.set(ROUTE_STORE, address, remaining.encode())
        # The enrollment last: until it is gone, a revoke cut short can be run again.
        await self._stores.delete(KEYSTORE, PIN_PREFIX + node_id)
        await self._stores.delete(KEYSTORE, ENROLL_PREFIX + node_id)
        return Revoked(node_id, enrollment, pin, tuple(sorted(addresses)))

    async def release(self, address: str) -> str | None:
        """Drop the stored binding of ``address``; the record it had (None: unbound)."""
        raw = await self._stores.get(ROUTE_STORE, address)
        if raw is None:
            return None
        await self._stores.delete(ROUTE_STORE, address)
        return raw.decode()

    async def pins(self) -> dict[str, bytes]:
        """The public key pinned for each node id that attached."""
        return {
            key[len(PIN_PREFIX) :]: value
            for key, value in (await self._stores.items(KEYSTORE)).items()
            if key.startswith(PIN_PREFIX)
        }

    async def bindings(self) -> dict[str, str]:
        """Stored bindings: address -> node id, or ``pool:`` and the member ids."""
        return {
            address: raw.decode()
            for address, raw in (await self._stores.items(ROUTE_STORE)).items()
        }
