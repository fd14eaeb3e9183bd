"""The errors of the storage layer.

Each failure a user can act on has its own class, so a node can tell a wrong
master key (fix the configuration) from a damaged file (restore a backup)
from a record that no longer fits its model (migrate). Every message names
what failed: the variable, the directory and file, or the namespace and key.
None of them ever contains key material.
"""

from __future__ import annotations

import os

from .._core._errors import FameError, quoted

__all__ = [
    "BackupInvalid",
    "BackupRefused",
    "DamagedDatabase",
    "DatabaseInUse",
    "EncryptionMismatch",
    "InvalidKey",
    "InvalidNamespace",
    "KeyMissing",
    "RecordInvalid",
    "RecordTooNew",
    "StorageConfigError",
    "StorageError",
    "StorageFull",
    "StorageWriteFailed",
    "VersionConflict",
    "WrongMasterKey",
]


class StorageError(FameError):
    """Base class of every storage error."""


class StorageConfigError(StorageError, ValueError):
    """A storage setting is missing or malformed.

    ``variable`` names the environment variable (or setting) at fault; the
    message says what is expected and never repeats a secret value.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class InvalidNamespace(StorageError, ValueError):
    """A namespace that is malformed, reserved, or would leave the directory."""


class InvalidKey(StorageError, ValueError):
    """A record key that is not a non-empty str of at most 1024 characters without NUL."""


class WrongMasterKey(StorageError):
    """The master key does not open the encrypted files in the directory."""

    def __init__(self, directory: str, file: str) -> None:
        super().__init__(
            f"wrong master key for the encrypted storage in {directory}: {file} cannot be"
            " decrypted with it (FAME_STORAGE_MASTER_KEY must be the key these files were"
            " created with); no file was changed"
        )
        self.directory = directory
        self.file = file


class DamagedDatabase(StorageError):
    """A database file that is damaged or not a database at all.

    Raised when the file is opened, and by a read (or a write) that met a
    damaged page of an open file: only that operation fails, the namespace
    stays open and its other records stay readable. ``pages`` are the
    file's pages that fail authentication (SQLCipher's
    ``cipher_integrity_check``; empty when unknown, e.g. the ``sqlite``
    profile). ``key`` is the key a point read asked for; ``after_key`` is,
    for a scan, the last key it delivered (``None``: none), so a caller
    knows where it stopped: every key up to it was read, none was skipped.
    ``fame salvage`` copies the readable records of such a file.
    """

    def __init__(
        self,
        path: str,
        detail: str,
        *,
        pages: tuple[int, ...] = (),
        key: str | None = None,
        after_key: str | None = None,
    ) -> None:
        where = ""
        if pages:
            shown = ", ".join(map(str, pages[:10])) + (" ..." if len(pages) > 10 else "")
            where += f" (damaged page{'s' if len(pages) > 1 else ''}: {shown})"
        if key is not None:
            where += f"; reading key {quoted(key)}"
        if after_key is not None:
            where += f"; the scan read every key up to {quoted(after_key)}"
        super().__init__(
            f"damaged database file {path}: {detail}{where}; the file was left unchanged"
        )
        self.path = path
        self.detail = detail
        self.pages = pages
        self.key = key
        self.after_key = after_key


class DatabaseInUse(StorageError):
    """Another process (another node on the same directory?) holds the file open."""

    def __init__(self, path: str, pid: int | None = None) -> None:
        who = "another process" if pid is None else f"another process (pid {pid})"
        super().__init__(
            f"database file {path} is in use by {who}; each storage directory"
            " belongs to one node at a time"
        )
        self.path = path
        self.pid = pid
        """The holder's process id, when it is known (the offline tools ask the kernel)."""


class EncryptionMismatch(StorageError):
    """An unencrypted file opened as encrypted, or the reverse."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}; the file was left unchanged")
        self.path = path


class RecordInvalid(StorageError, ValueError):
    """A value that does not fit the store's model, on write or on read."""

    def __init__(self, namespace: str, key: str, model: str, detail: str, *, stored: bool) -> None:
        where = "stored record" if stored else "value"
        super().__init__(
            f"{where} for key {key!r} in namespace {namespace!r} does not fit model"
            f" {model}: {detail}"
        )
        self.namespace = namespace
        self.key = key


class KeyMissing(StorageError, KeyError):
    """``update`` of a key that does not exist (or has expired)."""

    def __init__(self, namespace: str, key: str) -> None:
        super().__init__(f"no key {key!r} in namespace {namespace!r}")
        self.namespace = namespace
        self.key = key

    def __str__(self) -> str:
        # KeyError.__str__ would show the repr of the message.
        return str(self.args[0])


class VersionConflict(StorageError):
    """A conditional ``set`` whose ``if_version`` no longer matches.

    ``actual`` is the current version, 0 when the key does not exist.
    """

    def __init__(self, namespace: str, key: str, expected: int, actual: int) -> None:
        super().__init__(
            f"version conflict on key {key!r} in namespace {namespace!r}: expected version"
            f" {expected}, found {actual}"
        )
        self.namespace = namespace
        self.key = key
        self.expected = expected
        self.actual = actual


class StorageWriteFailed(StorageError):
    """A transaction could not be committed; none of its writes took effect."""


class StorageFull(StorageWriteFailed):
    """A transaction needed more room than its file may take; none of it took effect.

    ``limit`` is the ``FAME_STORAGE_MAX_FILE_BYTES`` cap the file reached, or
    ``None`` when the disk itself is full (SQLite reports both as
    ``SQLITE_FULL``; the backend tells them apart by the free space left).
    Reads keep working. Writes work again once room returns: records were
    deleted (their pages are reused), the limit was raised and the namespace
    reopened, or disk space was freed. ``writes`` is how many writes the
    failed transaction held (0 when a new namespace could not be created).
    The message names the file only, not its directory, as it may travel
    to a remote caller.
    """

    def __init__(self, namespace: str, path: str, writes: int, limit: int | None) -> None:
        file = os.path.basename(path)
        if limit is None:
            reason = f"the disk holding its file {file} is full; free disk space"
        else:
            reason = (
                f"its file {file} reached the limit of {limit} bytes"
                " (FAME_STORAGE_MAX_FILE_BYTES); delete records or raise the limit"
            )
        if writes:
            outcome = f"none of the {writes} writes in the transaction took effect"
        else:
            outcome = "the namespace could not be created"
        super().__init__(f"namespace {namespace!r} is full: {reason}; {outcome}")
        self.namespace = namespace
        self.path = path
        self.writes = writes
        self.limit = limit


class RecordTooNew(StorageError):
    """A stored record written by a newer version of its model than this code has.

    It is refused, never decoded: run the newer code, or roll the data back.
    ``version`` is the record's, ``model_version`` the model's
    ``__fame_version__`` (1 when it declares none).
    """

    def __init__(
        self, namespace: str, key: str, model: str, version: int, model_version: int
    ) -> None:
        super().__init__(
            f"stored record for key {key!r} in namespace {namespace!r} was written by version"
            f" {version} of model {model}, newer than this code's version {model_version};"
            " it was not read: run the code that wrote it, or a newer one"
        )
        self.namespace = namespace
        self.key = key
        self.version = version
        self.model_version = model_version


class BackupRefused(StorageError):
    """A backup was not made: its destination is taken. Nothing was written."""


class BackupInvalid(StorageError):
    """A directory is not a complete, unchanged backup; nothing was restored."""

    def __init__(self, directory: str, detail: str) -> None:
        super().__init__(f"{directory} is not a usable backup: {detail}")
        self.directory = directory
        self.detail = detail
