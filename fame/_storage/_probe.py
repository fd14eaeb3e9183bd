"""Look at a database file before SQLite does, to name what is wrong with it.

SQLCipher accepts any key and then fails the first read with "file is not a
database", exactly as it does for a damaged file. Opening a file with the
wrong key is also not free of risk: SQLite may replay or checkpoint a WAL
on open and close. So a file is examined here first, read-only and in pure
Python, and SQLite opens it only if it looks right.

An SQLCipher 4 file (default settings, which fame uses) is a sequence of
4096-byte pages. Page 1 starts with a 16-byte random salt. Every page ends
with a 16-byte IV and a 64-byte HMAC-SHA512 over the encrypted bytes, the IV
and the page number (little-endian). With a raw key the HMAC key is
``PBKDF2-HMAC-SHA512(key, salt XOR 0x3a, 2 iterations, 32 bytes)``. A key of
48 bytes is a 32-byte raw key followed by the salt SQLCipher is told to use
(``x'<key><salt>'``, see ``_keys``); the salt is then that one, not the
file's. Checking that HMAC tells:

* page 1 verifies: the key is right;
* no page verifies: the key is wrong (or every page is damaged, which the
  caller tells apart by looking at the other files of the directory);
* some pages verify but not page 1: the file is damaged.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import zlib
from pathlib import Path

from ._errors import DamagedDatabase, EncryptionMismatch

__all__ = [
    "SALT_SIZE",
    "KeyCheck",
    "page_one_verifies",
    "probe_encrypted",
    "probe_plain",
    "read_salt",
]

SQLITE_MAGIC = b"SQLite format 3\x00"
PAGE_SIZE = 4096
SALT_SIZE = 16
_RAW_KEY_SIZE = 32
_HMAC_SIZE = 64
_MAX_PAGES_CHECKED = 4096  # bounds the time spent classifying a large bad file


class KeyCheck(enum.Enum):
    """The outcome of :func:`probe_encrypted` for a file that is not obviously broken."""

    EMPTY = "empty"  # nothing to check yet (a new file)
    VERIFIED = "verified"  # page 1 authenticates with the key
    NO_PAGE_VERIFIES = "no_page_verifies"  # wrong key, or the whole file is garbage


def probe_plain(path: Path) -> None:
    """Raise if ``path`` exists but is not an unencrypted SQLite database."""
    head = _read_head(path)
    if head is None or not head or head.startswith(SQLITE_MAGIC):
        return
    if _looks_encrypted(path, head):
        raise EncryptionMismatch(
            str(path),
            "is not an unencrypted SQLite database: it looks encrypted (was it written by the"
            " encrypted-sqlite profile?)",
        )
    raise DamagedDatabase(str(path), "no SQLite header: not a database file")


def probe_encrypted(path: Path, key: bytes) -> KeyCheck:
    """Classify ``path`` for the raw SQLCipher ``key``; raise on what is certain.

    Raises :class:`EncryptionMismatch` for an unencrypted SQLite file and
    :class:`DamagedDatabase` for a file that cannot be an SQLCipher database
    or that is only partly authentic.
    """
    head = _read_head(path)
    # A file fame creates gets page 1 when it switches to WAL, before its
    # first record; an empty file has never been written.
    if not head:
        return KeyCheck.EMPTY
    if head.startswith(SQLITE_MAGIC):
        raise EncryptionMismatch(
            str(path),
            "is an unencrypted SQLite database, but the encrypted-sqlite profile expects an"
            " encrypted one (was it written by the sqlite profile?)",
        )
    size = path.stat().st_size
    if size % PAGE_SIZE:
        raise DamagedDatabase(
            str(path), f"its size is not a whole number of {PAGE_SIZE}-byte SQLCipher pages"
        )
    hmac_key = _hmac_key(key, head[:SALT_SIZE])
    if _page_verifies(hmac_key, head, 1):
        return KeyCheck.VERIFIED
    # Only a file that fails is read further, to tell a wrong key from damage.
    data = _read_pages(path)
    pages = len(data) // PAGE_SIZE
    for number in range(2, pages + 1):
        offset = (number - 1) * PAGE_SIZE
        if _page_verifies(hmac_key, data[offset : offset + PAGE_SIZE], number):
            raise DamagedDatabase(
                str(path), "page 1 fails authentication while other pages decrypt with this key"
            )
    return KeyCheck.NO_PAGE_VERIFIES


def read_salt(path: Path) -> bytes | None:
    """The 16-byte salt at the start of an encrypted file; None if it has none yet.

    The salt is not secret: SQLCipher keeps it in clear as the file's first
    bytes. A missing file, an empty one (never written) or one shorter than
    a salt has none.
    """
    head = _read_head(path)
    if head is None or len(head) < PAGE_SIZE:
        return None
    return head[:SALT_SIZE]


def page_one_verifies(path: Path, key: bytes) -> bool:
    """Whether page 1 of ``path`` authenticates with ``key``: cheap, one page read.

    Tells which of several candidate keys is the file's, without the wider
    read :func:`probe_encrypted` does to tell a wrong key from damage.
    """
    head = _read_head(path)
    if head is None or len(head) < PAGE_SIZE or head.startswith(SQLITE_MAGIC):
        return False
    return _page_verifies(_hmac_key(key, head[:SALT_SIZE]), head, 1)


def _read_head(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(PAGE_SIZE)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise DamagedDatabase(str(path), "is a directory, not a database file") from None


def _read_pages(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(PAGE_SIZE * _MAX_PAGES_CHECKED)


def _looks_encrypted(path: Path, head: bytes) -> bool:
    size = path.stat().st_size
    return size % PAGE_SIZE == 0 and len(zlib.compress(head)) >= len(head)


def _hmac_key(key: bytes, salt: bytes) -> bytes:
    """The page HMAC key for a raw ``key``; ``salt`` is the file's.

    A 48-byte key carries the salt SQLCipher uses for it: a file written
    with another salt does not authenticate, as it would not open.
    """
    if len(key) == _RAW_KEY_SIZE + SALT_SIZE:
        key, salt = key[:_RAW_KEY_SIZE], key[_RAW_KEY_SIZE:]
    hmac_salt = bytes(b ^ 0x3A for b in salt)
    return hashlib.pbkdf2_hmac("sha512", key, hmac_salt, 2, 32)


def _page_verifies(hmac_key: bytes, page: bytes, number: int) -> bool:
    if len(page) != PAGE_SIZE:
        return False
    start = SALT_SIZE if number == 1 else 0
    mac = hmac.new(
        hmac_key, page[start : PAGE_SIZE - _HMAC_SIZE] + number.to_bytes(4, "little"), "sha512"
    ).digest()
    return hmac.compare_digest(mac, page[PAGE_SIZE - _HMAC_SIZE :])
