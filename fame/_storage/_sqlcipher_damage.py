"""Telling a damaged page from other SQLite errors, and finding the damaged pages.

SQLite reports a page it cannot use as ``SQLITE_CORRUPT`` ("database disk
image is malformed") or ``SQLITE_NOTADB`` ("file is not a database", which
is also what SQLCipher says when a page fails its HMAC). After such an
error SQLCipher keeps a deferred error on the connection and fails every
later statement on it, so the backend reopens its connection (see
``SqliteBackend``); a fresh connection fails only the statements that touch
a damaged page. Which pages those are is asked of SQLCipher's
``cipher_integrity_check``, which authenticates every page of the file
(about 10 ms for 3 MB).
"""

from __future__ import annotations

import re

import sqlcipher3

__all__ = ["damaged_pages", "is_damage"]

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_PAGE = re.compile(r"\bpage (\d+)")
_MAX_PAGES = 1000
"""Damaged pages listed at most: a file that is garbage throughout needs no full list."""


def is_damage(exc: BaseException) -> bool:
    """True if ``exc`` says a page of the file is damaged (or not a database page)."""
    if not isinstance(exc, sqlcipher3.DatabaseError):
        return False
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text or "corrupt" in text


def damaged_pages(
    conn: sqlcipher3.Connection, encrypted: bool, *, size: int = 0, max_size: int | None = None
) -> tuple[int, ...]:
    """The page numbers that fail authentication, best effort (empty if unknown).

    A file of ``size`` bytes above ``max_size`` is not checked: a node asks
    from its event loop, where checking a gigabyte would stall it for
    seconds (``fame check`` and ``fame salvage`` name the pages of any file).

    Only an encrypted file can say: a page of a plain file has no HMAC, and
    SQLite's own ``integrity_check`` reads the whole file and stops short
    at a damaged page. ``conn`` must be a fresh connection (no deferred
    error); this leaves it so.
    """
    if not encrypted or (max_size is not None and size > max_size):
        return ()
    try:
        rows = conn.execute("PRAGMA cipher_integrity_check").fetchmany(_MAX_PAGES)
    except sqlcipher3.DatabaseError:
        return ()
    pages = {int(m.group(1)) for (text,) in rows if (m := _PAGE.search(str(text)))}
    return tuple(sorted(pages))
