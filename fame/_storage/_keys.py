"""The master key and the per-file keys derived from it.

The master key is never given to SQLCipher. Each database file gets its own
raw 256-bit key, ``HKDF-SHA256(master, salt=<the file's salt>,
info="fame/kv/v2/<file name>")``, passed with that salt as ``PRAGMA key =
"x'<64 hex key><32 hex salt>'"``. The salt is the 16 random bytes SQLCipher
keeps in clear at the start of the file: a new file gets a new random salt
here, an existing one is read back from the file's first bytes, so no extra
file holds it. Two directories (two nodes) sharing a master key therefore
get different keys for files of the same name. A raw key skips SQLCipher's
PBKDF2 (about 100 ms per open), and a leaked file key exposes that one file
only.

The first scheme (``v1``: ``salt=None``, ``info="fame/kv/v1/<file name>"``,
the salt left to SQLCipher) gave every node the same key for the same file
name. :func:`find_file_key` still recognises such a file, and the provider
re-encrypts it under the v2 scheme when it opens the directory (``_rekey``).

Written form. ``fame keygen`` writes ``fk1_`` + base64url (no padding) of
the key bytes followed by a 4-byte checksum, the first 4 bytes of
``SHA-256(key bytes)``: the version says how to read the rest, and the
checksum catches a mistyped, truncated or hand-made key at start instead
of as a "wrong master key" at the first database. The older form, plain
base64url or hex of at least 32 bytes, is still read (``checked`` is then
False, and :func:`~fame._storage._config.storage_config_from_env` logs a
warning); ``MasterKey.export()`` writes the same key bytes in the checked
form, so the data it encrypts stays readable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import zlib
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import StorageConfigError
from ._probe import SALT_SIZE, page_one_verifies, read_salt

__all__ = [
    "CHECKSUM_BYTES",
    "KEY_PREFIX",
    "MIN_MASTER_KEY_BYTES",
    "FileKey",
    "MasterKey",
    "derive_file_key",
    "file_key",
    "find_file_key",
    "parse_master_key",
    "salted_file_key",
]

MIN_MASTER_KEY_BYTES = 32
KEY_PREFIX = "fk1_"
"""The version prefix of the checked written form (``fame keygen``)."""
CHECKSUM_BYTES = 4
KDF_INFO_PREFIX = "fame/kv/v1/"
"""The first scheme's HKDF info prefix (no salt): see :func:`derive_file_key`."""
KDF_INFO_PREFIX_V2 = "fame/kv/v2/"

_HEX = re.compile(r"[0-9a-fA-F]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_VERSIONED = re.compile(r"fk([0-9]+)_")
_KEYGEN = "make a new one with: fame keygen"
_EXPECTED = (
    f"expected the output of fame keygen ({KEY_PREFIX}...), or at least"
    f" {MIN_MASTER_KEY_BYTES} random bytes written as base64url or hex"
)


class MasterKey:
    """Key material that never shows itself in a repr, str or traceback."""

    __slots__ = ("_material", "checked")

    def __init__(self, material: bytes, *, checked: bool = True) -> None:
        self._material = material
        self.checked = checked
        """Whether it was read from the checked form (``fk1_``), or made here."""

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key of :data:`MIN_MASTER_KEY_BYTES` bytes."""
        return cls(secrets.token_bytes(MIN_MASTER_KEY_BYTES))

    def export(self) -> str:
        """The key in its checked written form, ``fk1_`` + base64url(key || checksum).

        This is the key itself, in clear: write it only where the key belongs
        (``conf/secrets.env``, mode 0600).
        """
        raw = self._material + _checksum(self._material)
        return KEY_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def __repr__(self) -> str:
        return "<MasterKey hidden>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MasterKey) and hmac.compare_digest(other._material, self._material)

    def __hash__(self) -> int:
        return hash(self._material)

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would write the key somewhere it should not be.
        raise TypeError("a MasterKey cannot be pickled")


def parse_master_key(text: str, variable: str = "FAME_STORAGE_MASTER_KEY") -> MasterKey:
    """Decode ``text`` (hex or base64url) and refuse values that are not random keys.

    A passphrase or a word is refused rather than stretched: the key must
    already have full entropy, which is what ``just init`` generates. The
    test is deliberately cheap and conservative: a random key of 32 bytes
    never compresses and uses many distinct byte values, and its written
    form mixes character classes.
    """
    text = text.strip()
    if not text:
        raise StorageConfigError(variable, f"is empty; {_EXPECTED}")
    if _VERSIONED.match(text):
        return _parse_checked(text, variable)
    if len(text) >= 2 * MIN_MASTER_KEY_BYTES and len(text) % 2 == 0 and _HEX.fullmatch(text):
        material = bytes.fromhex(text)
        classes = _classes(text.lower(), ("0123456789", "abcdef"))
    elif _BASE64URL.fullmatch(text):
        try:
            material = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise StorageConfigError(variable, f"is not valid base64url; {_EXPECTED}") from None
        classes = _classes(
            text.rstrip("="),
            ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789-_"),
        )
    else:
        raise StorageConfigError(variable, f"is neither hex nor base64url; {_EXPECTED}")
    if len(material) < MIN_MASTER_KEY_BYTES:
        raise StorageConfigError(
            variable,
            f"decodes to {len(material)} bytes, fewer than {MIN_MASTER_KEY_BYTES}; {_EXPECTED}",
        )
    if classes < 2 or len(set(material)) < 16 or len(zlib.compress(material, 9)) < len(material):
        raise StorageConfigError(
            variable, f"does not look random (a word or a pattern?); {_EXPECTED}"
        )
    return MasterKey(material, checked=False)


def _checksum(material: bytes) -> bytes:
    return hashlib.sha256(material).digest()[:CHECKSUM_BYTES]


def _parse_checked(text: str, variable: str) -> MasterKey:
    """Read the ``fk<N>_`` form: version 1, valid base64url, a matching checksum."""
    prefix, _, body = text.partition("_")
    if prefix + "_" != KEY_PREFIX:
        raise StorageConfigError(
            variable,
            f"is a {prefix}_ key, which this version of fame cannot read (it reads"
            f" {KEY_PREFIX} keys): upgrade fame, or use the key this one wrote",
        )
    raw = None
    if body and re.fullmatch(r"[A-Za-z0-9_-]+", body) and len(body) % 4 != 1:
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        raise StorageConfigError(
            variable,
            f"is not a valid {KEY_PREFIX} key (base64url expected after {KEY_PREFIX}):"
            f" mistyped or cut off? Copy it again, or {_KEYGEN}",
        )
    material, checksum = raw[:-CHECKSUM_BYTES], raw[-CHECKSUM_BYTES:]
    if len(material) < MIN_MASTER_KEY_BYTES:
        raise StorageConfigError(
            variable,
            f"is too short for a {KEY_PREFIX} key ({len(material)} key bytes, fewer than"
            f" {MIN_MASTER_KEY_BYTES}): cut off? Copy it again, or {_KEYGEN}",
        )
    if not hmac.compare_digest(checksum, _checksum(material)):
        raise StorageConfigError(
            variable,
            "fails its checksum: the key was mistyped or changed. Copy it again from where"
            f" it was written (conf/secrets.env), or {_KEYGEN}",
        )
    if len(set(material)) < 16 or len(zlib.compress(material, 9)) < len(material):
        raise StorageConfigError(variable, f"does not look random (a hand-made key?); {_KEYGEN}")
    return MasterKey(material)


def _classes(text: str, alphabets: tuple[str, ...]) -> int:
    """How many of ``alphabets`` contribute at least one character to ``text``."""
    return sum(1 for alphabet in alphabets if any(c in alphabet for c in text))


def derive_file_key(master: MasterKey, file_name: str) -> bytes:
    """The 32-byte key of ``file_name`` under the first scheme (v1, no salt).

    Kept to recognise (and migrate) files written before per-file salts,
    and for tests that make such files. New code asks :func:`file_key`.
    """
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=(KDF_INFO_PREFIX + file_name).encode("utf-8"),
    )
    return hkdf.derive(master._material)


def salted_file_key(master: MasterKey, file_name: str, salt: bytes) -> bytes:
    """The v2 key bytes of ``file_name`` with ``salt``: 32 key bytes, then the salt."""
    if len(salt) != SALT_SIZE:
        raise ValueError(f"a file salt is {SALT_SIZE} bytes, got {len(salt)}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=salt,
        info=(KDF_INFO_PREFIX_V2 + file_name).encode("utf-8"),
    )
    return hkdf.derive(master._material) + salt


@attrs.frozen
class FileKey:
    """The key of one database file and the scheme it was found under.

    ``version`` is 2 for the salted scheme, 1 for a file written before it
    (to be migrated). ``verified`` is False for a file without a page yet
    (its key is new) and for one no candidate key authenticates: the caller
    probes it and names the problem (wrong master key or damage).
    """

    key: bytes = attrs.field(repr=False)
    version: int
    verified: bool


def find_file_key(master: MasterKey, path: Path) -> FileKey:
    """Find the key of the database file at ``path`` under ``master``.

    An existing file's salt is read from its first 16 bytes and the v2 key
    derived with it; if page 1 does not authenticate with that key but does
    with the v1 key, the file is a v1 file. A missing or empty file gets a
    new random salt. Reading one page and two cheap derivations: fine at
    every open.
    """
    salt = read_salt(path)
    if salt is None:
        return FileKey(salted_file_key(master, path.name, secrets.token_bytes(SALT_SIZE)), 2, False)
    key = salted_file_key(master, path.name, salt)
    if page_one_verifies(path, key):
        return FileKey(key, 2, True)
    legacy = derive_file_key(master, path.name)
    if page_one_verifies(path, legacy):
        return FileKey(legacy, 1, True)
    return FileKey(key, 2, False)


def file_key(master: MasterKey, path: Path) -> bytes:
    """The bytes ``PRAGMA key`` is given (as ``x'<hex>'``) for the database file at ``path``.

    Every opener of an encrypted file asks here, so how a file's key is
    found (derived from the master key, the file's name and its header's
    salt) is decided in one place. It opens a v1 file too (see
    :func:`find_file_key`), so the offline tools read directories not yet
    migrated.
    """
    return find_file_key(master, path).key
