"""Model versions: records written by an older model are upgraded on read.

A model declares its version and how to upgrade an older record::

    class Order(msgspec.Struct):
        __fame_version__ = 3

        @classmethod
        def __fame_upgrade__(cls, version: int, raw: Any) -> Any:
            # raw: the record as written by version ``version`` (plain msgpack
            # data: a dict for a Struct); return it as version ``version + 1``.
            ...

A model without ``__fame_version__`` is version 1, and so is a record
without a header: every record written before versions existed. A record
of version 2 or more starts with a 5-byte header, ``0xC1`` then the version
as a big-endian uint32, before its msgpack value. ``0xC1`` is the one byte
msgpack never uses, so no unmarked record can start with it, and models of
version 1 write exactly what they wrote before: the file format does not
change (no column is added; the header is part of the stored value).

Reading a record older than the model runs ``__fame_upgrade__`` once per
version step (a model without it takes older records as they are, for
changes such as a new field with a default), then decodes the result. A
record newer than the model is refused with :class:`RecordTooNew`, never
decoded: the code is older than the data. Untyped reads (model ``Any``, as
``fame dump`` uses) take any version as it is stored.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import RecordInvalid, RecordTooNew

__all__ = [
    "HEADER_MARK",
    "MAX_VERSION",
    "ModelVersion",
    "model_version",
    "split_header",
    "with_header",
]

HEADER_MARK = 0xC1
"""The first byte of a versioned record: "never used" in msgpack."""
HEADER_SIZE = 5
MAX_VERSION = 2**32 - 1


def model_version(model: object) -> int | None:
    """The version ``model`` declares (1 if none); ``None`` for untyped reads (``Any``)."""
    if model is Any:
        return None
    version = getattr(model, "__fame_version__", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise TypeError(
            f"{getattr(model, '__qualname__', model)}.__fame_version__ must be an int from 1"
            f" to {MAX_VERSION}, got {version!r}"
        )
    return version


def split_header(data: bytes) -> tuple[int, bytes]:
    """The version a stored value was written with, and its msgpack payload."""
    if data[:1] != b"\xc1":
        return 1, data
    return int.from_bytes(data[1:HEADER_SIZE], "big"), data[HEADER_SIZE:]


def with_header(version: int, payload: bytes) -> bytes:
    """``payload`` as stored by a model of ``version`` (no header for version 1)."""
    if version == 1:
        return payload
    return bytes([HEADER_MARK]) + version.to_bytes(4, "big") + payload


class ModelVersion:
    """How one store's model reads and writes versions; see the module docstring."""

    __slots__ = ("_model", "_name", "_namespace", "_upgrade", "version")

    def __init__(self, model: object, namespace: str, name: str) -> None:
        self._model = model
        self._namespace = namespace
        self._name = name
        self.version = model_version(model)
        self._upgrade = getattr(model, "__fame_upgrade__", None)

    def encode(self, payload: bytes) -> bytes:
        return payload if self.version is None else with_header(self.version, payload)

    def payload(self, key: str, data: bytes) -> tuple[bytes, bool]:
        """The msgpack of a stored value in the model's version, and whether it was upgraded."""
        stored, payload = split_header(data)
        if self.version is None or stored == self.version:
            return payload, False
        if stored < 1:
            raise RecordInvalid(
                self._namespace, key, self._name, "its header holds version 0", stored=True
            )
        if stored > self.version:
            raise RecordTooNew(self._namespace, key, self._name, stored, self.version)
        if self._upgrade is None:
            return payload, True
        try:
            raw = msgspec.msgpack.decode(payload)
        except msgspec.DecodeError as exc:
            raise RecordInvalid(self._namespace, key, self._name, str(exc), stored=True) from None
        for version in range(stored, self.version):
            try:
                raw = self._upgrade(version, raw)
            except Exception as exc:
                raise RecordInvalid(
                    self._namespace,
                    key,
                    self._name,
                    f"__fame_upgrade__ from version {version} failed: {type(exc).__name__}: {exc}",
                    stored=True,
                ) from exc
        try:
            return msgspec.msgpack.encode(raw), True
        except (msgspec.EncodeError, TypeError) as exc:
            raise RecordInvalid(
                self._namespace,
                key,
                self._name,
                f"__fame_upgrade__ returned a value msgpack cannot hold: {exc}",
                stored=True,
            ) from None
