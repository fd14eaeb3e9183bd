"""Where the client finds the project and the running sentinel, and whether a URL can be one.

``fame up`` records the URL the sentinel it started answers at in
``run/sentinel.url`` (removed by ``fame stop``), so a client started from
another shell, without the ``FAME_SENTINEL_PORT`` the services were started
with, still reaches them. The order, first found wins: ``--url``; the
environment's ``FAME_SENTINEL_URL`` / ``FAME_SENTINEL_HOST`` /
``FAME_SENTINEL_PORT`` (a choice made for this command); the record of the
sentinel that runs; ``conf/sentinel.env``.

The project is ``--project DIR`` or ``FAME_PROJECT_DIR``, else the nearest
directory at or above the current one holding ``conf/sentinel.env``, so
``fame-client`` works from a subdirectory of the project too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from ._processes import RUN_DIR, SERVICES
from ._project import PROJECT_ENV, resolve_project
from ._settings import SENTINEL_CONF, SettingError, sentinel_url

__all__ = [
    "URL_FILE",
    "SentinelAddress",
    "check_url",
    "find_project",
    "find_sentinel",
    "forget_url",
    "record_url",
    "running_url",
]

URL_FILE = RUN_DIR / "sentinel.url"
_ENV_NAMES = ("FAME_SENTINEL_URL", "FAME_SENTINEL_HOST", "FAME_SENTINEL_PORT")
_LISTENING = re.compile(r"listening on (\S+)")


@attrs.frozen
class SentinelAddress:
    """The sentinel's URL and where it came from (named in messages)."""

    url: str
    source: str


def find_project(chosen: str | None) -> Path:
    """``chosen`` or ``FAME_PROJECT_DIR``; else the nearest project at or above the cwd."""
    if chosen or os.environ.get(PROJECT_ENV, "").strip():
        return resolve_project(chosen)
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / SENTINEL_CONF).is_file():
            return directory
    return here


def record_url(url: str, root: Path = Path()) -> None:
    """Remember the URL of the sentinel just started (``run/sentinel.url``)."""
    (root / URL_FILE).write_text(url + "\n", encoding="utf-8")


def forget_url(root: Path = Path()) -> None:
    (root / URL_FILE).unlink(missing_ok=True)


def running_url(root: Path = Path()) -> str | None:
    """The URL of the project's running sentinel, or ``None`` if none runs (or it is unknown).

    ``run/sentinel.url``, else the address its ready file names (a sentinel
    started before the record existed); ``None`` unless its pid is alive.
    """
    sentinel = SERVICES[0]
    if sentinel.pid(root) is None:
        return None
    try:
        return (root / URL_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        pass
    try:
        match = _LISTENING.search((root / sentinel.ready_file).read_text(encoding="utf-8"))
    except OSError:
        return None
    if match is None:
        return None
    return match[1].replace("://0.0.0.0:", "://127.0.0.1:").replace("://:::", "://127.0.0.1:")


def check_url(address: SentinelAddress) -> str:
    """``address.url`` if it can be a sentinel's URL, else :class:`SettingError` saying why."""
    url, source = address.url, address.source
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        fixed = ("ws" if scheme == "http" else "wss") + url[len(scheme) :]
        raise SettingError(f"{source} {url}: a sentinel speaks websocket, not HTTP: use {fixed}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme not in ("ws", "wss") or not parts.hostname or port == -1:
        raise SettingError(
            f"{source} {url!r} is not a sentinel URL: expected ws://HOST:PORT (wss:// with TLS),"
            " e.g. ws://127.0.0.1:8000"
        )
    return url


def find_sentinel(
    url: str | None, settings: Mapping[str, str], root: Path, env: Mapping[str, str] | None = None
) -> SentinelAddress:
    """Where to reach the sentinel (see the module docstring), checked by :func:`check_url`."""
    environ = os.environ if env is None else env
    if url:
        address = SentinelAddress(url, "--url")
    elif any(environ.get(name, "").strip() for name in _ENV_NAMES):
        named = next(name for name in _ENV_NAMES if environ.get(name, "").strip())
        address = SentinelAddress(sentinel_url(settings), named)
    else:
        recorded = running_url(root)
        if recorded is not None:
            address = SentinelAddress(recorded, f"the running sentinel's {root / URL_FILE}")
        else:
            address = SentinelAddress(sentinel_url(settings), str(root / SENTINEL_CONF))
    check_url(address)
    return address
