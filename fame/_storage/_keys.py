"""The master key and the per-file keys derived from it.

The master key is never given to SQLCipher. Each database file gets its own
raw 256-bit key, ``HKDF-SHA256(master, salt=None, info="fame/kv/v1/<file
name>")``, passed as ``PRAGMA key = "x'<hex>'"``. A raw key skips
SQLCipher's PBKDF2 (about 100 ms per open), and a leaked file key exposes
that one file only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import zlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import StorageConfigError

__all__ = ["MIN_MASTER_KEY_BYTES", "MasterKey", "derive_file_key", "parse_master_key"]

MIN_MASTER_KEY_BYTES = 32
KDF_INFO_PREFIX = "fame/kv/v1/"

_HEX = re.compile(r"[0-9a-fA-F]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_EXPECTED = (
    f"expected at least {MIN_MASTER_KEY_BYTES} random bytes written as base64url or hex,"
    ' for example the output of python -c "import secrets; print(secrets.token_urlsafe(32))"'
)


class MasterKey:
    """Key material that never shows itself in a repr, str or traceback."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        self._material = material

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
