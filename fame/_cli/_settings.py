"""Settings for the command-line programs: ``conf/*.env`` files and the environment.

A config file holds ``NAME=value`` lines (``#`` comments, blank lines and
optional quotes allowed), the same variables a node reads from its
environment. Several files merge in order, and the process environment
overrides them all, so ``FAME_SENTINEL_PORT=8100 just up`` works without
editing a file. Relative paths are relative to the working directory, which
``just`` sets to the project root.

``just init`` writes the secrets (the storage master key and the admission
token) to ``conf/secrets.env``, mode 0600, ignored by git.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

__all__ = [
    "CONF_DIR",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SECRETS_FILE",
    "ConfigFileError",
    "SettingError",
    "load_settings",
    "positive_setting",
    "read_env_file",
    "sentinel_url",
]

CONF_DIR = Path("conf")
SECRETS_FILE = CONF_DIR / "secrets.env"
SENTINEL_CONF = CONF_DIR / "sentinel.env"
AGENT_CONF = CONF_DIR / "agent.env"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class ConfigFileError(Exception):
    """A config file that is missing or has a line that is not ``NAME=value``."""


class SettingError(ConfigFileError):
    """A setting whose value is not valid; the message names the variable."""


N = TypeVar("N", int, float)


def positive_setting(
    settings: Mapping[str, str], name: str, default: N, convert: Callable[[str], N]
) -> N:
    """The positive number in setting ``name`` (``default`` if unset), else :class:`SettingError`.

    ``convert`` is ``int`` for counts (``FAME_SENTINEL_MAX_CONNECTIONS``)
    and ``float`` for durations in seconds (``FAME_SENTINEL_HANDSHAKE_TIMEOUT``).
    """
    text = settings.get(name, "").strip()
    if not text:
        return default
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not (value > 0 and math.isfinite(value)):
        kind = "whole number" if convert is int else "number"
        raise SettingError(f"{name}: expected a positive {kind}, got {text[:40]!r}")
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """Parse one ``NAME=value`` file; raise :class:`ConfigFileError` naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist (run: just init)") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ConfigFileError(f"{path}:{number}: expected NAME=value, got {raw.strip()[:60]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def load_settings(
    files: Iterable[Path], env: Mapping[str, str] | None = None, *, optional: bool = False
) -> dict[str, str]:
    """Merge ``files`` in order, then the environment on top.

    With ``optional`` a missing file is skipped (the client reads ``conf/``
    only for defaults); otherwise it is an error.
    """
    merged: dict[str, str] = {}
    for path in files:
        if optional and not path.exists():
            continue
        merged.update(read_env_file(path))
    merged.update(os.environ if env is None else env)
    return merged


def sentinel_url(settings: Mapping[str, str]) -> str:
    """The websocket URL of the sentinel: ``FAME_SENTINEL_URL``, or built from host and port."""
    url = settings.get("FAME_SENTINEL_URL", "").strip()
    if url:
        return url
    host = settings.get("FAME_SENTINEL_HOST", "").strip() or DEFAULT_HOST
    port = settings.get("FAME_SENTINEL_PORT", "").strip() or str(DEFAULT_PORT)
    if host in ("0.0.0.0", "::"):
        host = DEFAULT_HOST
    return f"ws://{host}:{port}"
