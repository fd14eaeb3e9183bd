"""Storage configuration, built from ``FAME_STORAGE_*`` settings.

The library never reads the environment itself: a program passes the
mapping (``os.environ``, or its merged config files) to
:func:`storage_config_from_env`, or builds a :class:`StorageConfig` directly.

=============================  ===========================================
``FAME_STORAGE_PROFILE``       ``memory`` (default), ``sqlite``,
                               ``encrypted-sqlite``, the name of a provider
                               registered in the ``fame.storage_providers``
                               entry point group, or ``module:Class``
``FAME_STORAGE_DB_DIRECTORY``  where the database files live (created if
                               missing); required by the file profiles
``FAME_STORAGE_MASTER_KEY``    ``fame keygen``'s ``fk1_...`` (older keys,
                               >= 32 random bytes in base64url or hex,
                               are read with a warning); required by
                               ``encrypted-sqlite``
``FAME_STORAGE_DURABILITY``    ``full`` (default) or ``normal``
``FAME_STORAGE_MAX_FILE_BYTES``  optional cap on each database file; a
                               write past it fails and changes nothing
``FAME_STORAGE_DEDUPE_WINDOW``   seconds a namespace remembers a write's
                               request id and answer (default 86400)
``FAME_STORAGE_DEDUPE_ENTRIES``  request ids remembered per namespace at
                               most, oldest forgotten first (default 100000)
``FAME_STORAGE_WAL_CHECKPOINT_BYTES``  a commit that leaves a file's
                               ``-wal`` larger than this checkpoints it
                               (default 4194304, at least 65536)
``FAME_STORAGE_POSTGRES_DSN``  the PostgreSQL database of the ``postgres``
                               profile (a libpq connection string or URL);
                               required by it, with the master key
=============================  ===========================================

Every problem is reported as one :class:`StorageConfigError` line naming the
variable and what is expected, so the node runner can print it and exit.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._dedupe import DEFAULT_ENTRIES, DEFAULT_WINDOW, DedupeLimits
from ._errors import StorageConfigError
from ._keys import MasterKey, parse_master_key

__all__ = ["BUILTIN_PROFILES", "Durability", "StorageConfig", "storage_config_from_env"]

BUILTIN_PROFILES = ("memory", "sqlite", "encrypted-sqlite", "postgres")
Durability = str  # "full" | "normal"
_DURABILITIES = ("full", "normal")
MASTER_KEY_VARIABLE = "FAME_STORAGE_MASTER_KEY"
DEDUPE_WINDOW_VARIABLE = "FAME_STORAGE_DEDUPE_WINDOW"
DEDUPE_ENTRIES_VARIABLE = "FAME_STORAGE_DEDUPE_ENTRIES"
WAL_CHECKPOINT_VARIABLE = "FAME_STORAGE_WAL_CHECKPOINT_BYTES"
POSTGRES_DSN_VARIABLE = "FAME_STORAGE_POSTGRES_DSN"
DEFAULT_WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024
MIN_WAL_CHECKPOINT_BYTES = 65536

log = logging.getLogger("fame.storage")


@attrs.frozen
class StorageConfig:
    """Everything a storage provider is opened with.

    ``durability`` is ``"full"`` (SQLite ``synchronous=FULL``: an
    acknowledged write survives power loss) or ``"normal"``
    (``synchronous=NORMAL``: it survives a crash of the process, the last
    transactions may be lost on power loss). ``env`` keeps the variables a
    custom provider may want to read, except the master key's text:
    :func:`storage_config_from_env` leaves it out once parsed, so only
    ``master_key`` holds it, as bytes. The master key hides itself in reprs.

    ``dedupe_window`` (seconds) and ``dedupe_entries`` bound what each
    namespace remembers of writes sent with a request id (see
    ``docs/storage.md``, "Deduplicated writes"): a retry within both limits
    gets the original answer, a later one is applied again.

    ``wal_checkpoint_bytes`` bounds each file's ``-wal``: SQLite's automatic
    checkpoints are off, and a commit that leaves the ``-wal`` larger than
    this checkpoints it into the file; the ``-wal`` is then reused from its
    start (see
    ``docs/storage.md``, "Offline tools and checkpoints").

    ``postgres_dsn`` is the database of the ``postgres`` profile (see
    ``docs/storage.md``, "PostgreSQL profile"); it may hold a password, so
    it shows in no repr, and :func:`storage_config_from_env` leaves it out
    of ``env`` like the master key.
    """

    profile: str = "memory"
    directory: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    master_key: MasterKey | None = None
    durability: Durability = "full"
    max_file_bytes: int | None = None
    dedupe_window: float = DEFAULT_WINDOW
    dedupe_entries: int = DEFAULT_ENTRIES
    wal_checkpoint_bytes: int = DEFAULT_WAL_CHECKPOINT_BYTES
    postgres_dsn: str | None = attrs.field(default=None, repr=False)
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def dedupe(self) -> DedupeLimits:
        """The request-id window every namespace of this config keeps."""
        return DedupeLimits(self.dedupe_window, self.dedupe_entries)

    def __attrs_post_init__(self) -> None:
        window = self.dedupe_window
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not (window > 0 and math.isfinite(window))
        ):
            raise StorageConfigError(
                DEDUPE_WINDOW_VARIABLE, f"expected a positive number of seconds, got {window!r}"
            )
        entries = self.dedupe_entries
        if isinstance(entries, bool) or not isinstance(entries, int) or entries < 1:
            raise StorageConfigError(
                DEDUPE_ENTRIES_VARIABLE, f"expected a whole number >= 1, got {entries!r}"
            )
        wal = self.wal_checkpoint_bytes
        if isinstance(wal, bool) or not isinstance(wal, int) or wal < MIN_WAL_CHECKPOINT_BYTES:
            raise StorageConfigError(
                WAL_CHECKPOINT_VARIABLE,
                f"expected a whole number of bytes, at least {MIN_WAL_CHECKPOINT_BYTES},"
                f" got {wal!r}",
            )
        if self.durability not in _DURABILITIES:
            raise StorageConfigError(
                "FAME_STORAGE_DURABILITY", f"expected 'full' or 'normal', got {self.durability!r}"
            )
        if self.profile in ("sqlite", "encrypted-sqlite") and self.directory is None:
            raise StorageConfigError(
                "FAME_STORAGE_DB_DIRECTORY",
                f"is required by the {self.profile} profile: the directory of the database files",
            )
        if self.profile == "encrypted-sqlite" and self.master_key is None:
            raise StorageConfigError(
                "FAME_STORAGE_MASTER_KEY", "is required by the encrypted-sqlite profile"
            )
        if self.profile == "postgres":
            if not self.postgres_dsn:
                raise StorageConfigError(
                    POSTGRES_DSN_VARIABLE,
                    "is required by the postgres profile: the database's connection string"
                    " (host=... dbname=... user=..., or postgresql://...)",
                )
            if self.master_key is None:
                raise StorageConfigError(
                    MASTER_KEY_VARIABLE,
                    "is required by the postgres profile: records are sealed with it"
                    " before the server sees them",
                )


def storage_config_from_env(env: Mapping[str, str]) -> StorageConfig:
    """Build a :class:`StorageConfig` from the ``FAME_STORAGE_*`` variables in ``env``.

    ``env`` is a mapping the caller chose, such as ``os.environ``. Only
    syntax is checked here; whether the profile names a known provider and
    whether the directory is usable is checked when the provider opens.

    The config keeps no copy of the master key's text (``config.env`` lacks
    it). A key in the older, unchecked form is accepted with a warning
    logged on ``fame.storage``.
    """
    master_key = _master_key(env.get(MASTER_KEY_VARIABLE, ""))
    postgres_dsn = env.get(POSTGRES_DSN_VARIABLE, "").strip() or None
    env = {
        name: value
        for name, value in env.items()
        if name not in (MASTER_KEY_VARIABLE, POSTGRES_DSN_VARIABLE)
    }
    profile = env.get("FAME_STORAGE_PROFILE", "").strip() or "memory"
    directory_text = env.get("FAME_STORAGE_DB_DIRECTORY", "").strip()
    durability = env.get("FAME_STORAGE_DURABILITY", "").strip().lower() or "full"
    max_text = env.get("FAME_STORAGE_MAX_FILE_BYTES", "").strip()
    max_file_bytes = None
    if max_text:
        if not max_text.isdigit() or int(max_text) < 65536:
            raise StorageConfigError(
                "FAME_STORAGE_MAX_FILE_BYTES", "expected a whole number of bytes, at least 65536"
            )
        max_file_bytes = int(max_text)
    return StorageConfig(
        profile=profile,
        directory=Path(directory_text) if directory_text else None,
        master_key=master_key,
        durability=durability,
        max_file_bytes=max_file_bytes,
        dedupe_window=_dedupe_window(env.get(DEDUPE_WINDOW_VARIABLE, "").strip()),
        dedupe_entries=_dedupe_entries(env.get(DEDUPE_ENTRIES_VARIABLE, "").strip()),
        wal_checkpoint_bytes=_wal_checkpoint_bytes(env.get(WAL_CHECKPOINT_VARIABLE, "").strip()),
        postgres_dsn=postgres_dsn,
        env=env,
    )


def _dedupe_window(text: str) -> float:
    if not text:
        return DEFAULT_WINDOW
    try:
        window = float(text)
    except ValueError:
        window = math.nan
    if not (window > 0 and math.isfinite(window)):
        raise StorageConfigError(
            DEDUPE_WINDOW_VARIABLE,
            f"expected a positive number of seconds (default {DEFAULT_WINDOW:g}),"
            f" got {text[:40]!r}",
        )
    return window


def _dedupe_entries(text: str) -> int:
    if not text:
        return DEFAULT_ENTRIES
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) < 1:
        raise StorageConfigError(
            DEDUPE_ENTRIES_VARIABLE,
            f"expected a whole number >= 1 (default {DEFAULT_ENTRIES}), got {text[:40]!r}",
        )
    return int(text)


def _wal_checkpoint_bytes(text: str) -> int:
    if not text:
        return DEFAULT_WAL_CHECKPOINT_BYTES
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or (
        int(text) < MIN_WAL_CHECKPOINT_BYTES
    ):
        raise StorageConfigError(
            WAL_CHECKPOINT_VARIABLE,
            f"expected a whole number of bytes, at least {MIN_WAL_CHECKPOINT_BYTES}"
            f" (default {DEFAULT_WAL_CHECKPOINT_BYTES}), got {text[:40]!r}",
        )
    return int(text)


def _master_key(text: str) -> MasterKey | None:
    if not text.strip():
        return None
    key = parse_master_key(text, MASTER_KEY_VARIABLE)
    if not key.checked:
        log.warning(
            "%s: an older key without version or checksum, accepted; a mistyped one would be"
            " caught only as a wrong key. fame keygen --convert prints this same key checked",
            MASTER_KEY_VARIABLE,
        )
    return key


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each exactly 0700.

    ``mkdir(parents=True)`` would give the parents the umask's mode (often
    0755) and the mode argument is itself masked; a directory made here is
    for the owner only, whatever the umask. Existing ones are left alone.
    """
    missing = []
    for path in (directory, *directory.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to change
        path.chmod(0o700)


def prepare_directory(directory: Path) -> Path:
    """Create ``directory`` if needed and check that files can be created in it."""
    variable = "FAME_STORAGE_DB_DIRECTORY"
    try:
        _make_private_dirs(directory)
    except FileExistsError:
        raise StorageConfigError(variable, f"{directory} exists and is not a directory") from None
    except OSError as exc:
        raise StorageConfigError(
            variable, f"cannot create directory {directory}: {exc.strerror}"
        ) from None
    if not directory.is_dir():
        raise StorageConfigError(variable, f"{directory} exists and is not a directory")
    try:
        # A real write, not os.access: it also catches read-only mounts,
        # where root passes os.access.
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        raise StorageConfigError(
            variable, f"directory {directory} is not writable: {exc.strerror}"
        ) from None
    return directory.resolve()
