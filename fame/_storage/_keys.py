"""The master key and the per-file keys derived from it.

The master key is never given to SQLCipher. Each database file gets its own
raw 256-bit key, ``HKDF-SHA256(master, salt=None, info="fame/kv/v1/<file
name>")``, passed as ``PRAGMA key = "x'<hex>'"``. A raw key skips
SQLCipher's PBKDF2 (about 100 ms per open), and a leaked file key exposes
that one file only.

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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import StorageConfigError

__all__ = [
    "CHECKSUM_BYTES",
    "KEY_PREFIX",
    "MIN_MASTER_KEY_BYTES",
    "MasterKey",
    "derive_file_key",
    "file_key",
    "parse_master_key",
]

MIN_MASTER_KEY_BYTES = 32
KEY_PREFIX = "fk1_"
"""The version prefix of the checked written form (``fame keygen``)."""
CHECKSUM_BYTES = 4
KDF_INFO_PREFIX = "fame/kv/v1/"

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
    """The 32-byte raw SQLCipher key of the file called ``file_name``."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=(KDF_INFO_PREFIX + file_name).encode("utf-8"),
    )
    return hkdf.derive(master._material)


def file_key(master: MasterKey, path: Path) -> bytes:
    """The bytes ``PRAGMA key`` is given (as ``x'<hex>'``) for the database file at ``path``.

    Every opener of an encrypted file asks here, so how a file's key is
    found (derived from the master key and the file's name, its header's
    salt) is decided in one place.
    """
    return derive_file_key(master, path.name)
