"""Settings for the command-line programs: ``conf/*.env`` files and the environment.

This module is the one place of fame that reads ``FAME_*`` variables: the
library takes its configuration as arguments, and the programs build those
here. A config file holds ``NAME=value`` lines (``#`` comments, blank lines,
``export`` and quotes allowed; python-dotenv's syntax, without ``${...}``
expansion), the same variables a program reads from its environment.
Several files merge in order, and the process environment overrides them
all, so ``FAME_SENTINEL_PORT=8100 just up`` works without editing a file.
Relative paths are relative to the working directory, which ``just`` sets to
the project root.

``just init`` writes the secrets (the storage master key and the admission
token) to ``conf/secrets.env``, mode 0600, ignored by git.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fame import lowlevel

if TYPE_CHECKING:
    import ssl

    from fame.lowlevel import DeliveryConfig, DoorLimits, LinkLimits, Quotas

__all__ = [
    "CONF_DIR",
    "PENDING_KEY",
    "SECRETS_FILE",
    "ConfigFileError",
    "SettingError",
    "admission",
    "admission_token",
    "agent_entries",
    "byte_setting",
    "client_tls",
    "delivery_config",
    "flag_setting",
    "forget_master_key",
    "load_settings",
    "metrics_endpoint",
    "positive_setting",
    "read_env_file",
    "read_token_file",
    "sentinel_door_limits",
    "sentinel_host",
    "sentinel_limits",
    "sentinel_link_limits",
    "sentinel_port",
    "sentinel_quotas",
    "sentinel_tls",
    "sentinel_url",
    "stream_idle_timeout",
]

CONF_DIR = Path("conf")
SECRETS_FILE = CONF_DIR / "secrets.env"
SENTINEL_CONF = CONF_DIR / "sentinel.env"
AGENT_CONF = CONF_DIR / "agent.env"
PENDING_KEY = "FAME_STORAGE_MASTER_KEY_NEXT"
"""The new master key while a rotation is under way (``conf/secrets.env``, ``fame rekey``)."""

_PROJECT_CONF = ("sentinel.env", "agent.env", "secrets.env")
MASTER_KEY = "FAME_STORAGE_MASTER_KEY"
TOKEN = "FAME_ADMISSION_TOKEN"

_TRUE = ("1", "yes", "true", "on")
_FALSE = ("", "0", "no", "false", "off")


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
    and ``float`` for durations in seconds (``FAME_SENTINEL_HANDSHAKE_TIMEOUT``,
    ``FAME_STREAM_IDLE_TIMEOUT``).
    """
    text = settings.get(name, "").strip()
    if not text:
        return default
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not (value > 0 and math.isfinite(value)):
        kind = "whole number" if convert is int else "number of seconds"
        raise SettingError(f"{name}: expected a positive {kind}, got {text[:40]!r}")
    return value


def flag_setting(settings: Mapping[str, str], name: str) -> bool:
    """Whether setting ``name`` is on (``1``, ``yes``, ``true``, ``on``); unset is off."""
    text = settings.get(name, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingError(f"{name}: expected 1 or 0 (yes/no, true/false), got {text[:40]!r}")


def stream_idle_timeout(settings: Mapping[str, str]) -> float:
    """Seconds a stream producer waits for credit: ``FAME_STREAM_IDLE_TIMEOUT``, else 300."""
    return positive_setting(
        settings, "FAME_STREAM_IDLE_TIMEOUT", lowlevel.DEFAULT_IDLE_TIMEOUT, float
    )


def delivery_config(settings: Mapping[str, str]) -> DeliveryConfig:
    """The limits of ``node.tell``'s outbox and inbox: ``FAME_DELIVERY_*``, else the defaults.

    ``FAME_DELIVERY_MAX_ATTEMPTS`` (attempts before a dead letter),
    ``FAME_DELIVERY_OUTBOX_MAX_MESSAGES``, ``FAME_DELIVERY_OUTBOX_MAX_BYTES``
    and ``FAME_DELIVERY_INBOX_WINDOW`` (seconds).
    """
    default = lowlevel.DeliveryConfig()
    return lowlevel.DeliveryConfig(
        max_attempts=positive_setting(
            settings, "FAME_DELIVERY_MAX_ATTEMPTS", default.max_attempts, int
        ),
        max_messages=positive_setting(
            settings, "FAME_DELIVERY_OUTBOX_MAX_MESSAGES", default.max_messages, int
        ),
        max_bytes=positive_setting(
            settings, "FAME_DELIVERY_OUTBOX_MAX_BYTES", default.max_bytes, int
        ),
        inbox_window=positive_setting(
            settings, "FAME_DELIVERY_INBOX_WINDOW", default.inbox_window, float
        ),
    )


def sentinel_limits(settings: Mapping[str, str]) -> tuple[int, float]:
    """The sentinel's connection limit and handshake timeout."""
    return (
        positive_setting(
            settings, "FAME_SENTINEL_MAX_CONNECTIONS", lowlevel.DEFAULT_MAX_CONNECTIONS, int
        ),
        positive_setting(
            settings, "FAME_SENTINEL_HANDSHAKE_TIMEOUT", lowlevel.HANDSHAKE_TIMEOUT, float
        ),
    )


def sentinel_door_limits(settings: Mapping[str, str]) -> DoorLimits:
    """What the sentinel grants connections before they attach (:class:`DoorLimits`).

    ``FAME_SENTINEL_MAX_UNATTACHED`` (128) connections may wait to attach,
    ``FAME_SENTINEL_MAX_UNATTACHED_PER_ADDRESS`` (32) from one address, for
    ``FAME_SENTINEL_ATTACH_DEADLINE`` (10) seconds; unfinished messages hold
    ``FAME_SENTINEL_PARTIAL_FRAME_ALLOWANCE`` (65536) bytes per connection,
    attached ones more from ``FAME_SENTINEL_PARTIAL_FRAME_BUDGET`` (33554432
    bytes in all), for ``FAME_SENTINEL_PARTIAL_FRAME_DEADLINE`` (10) seconds.
    """
    d = lowlevel.DoorLimits()
    prefix = "FAME_SENTINEL_"
    return lowlevel.DoorLimits(
        max_unattached=positive_setting(settings, prefix + "MAX_UNATTACHED", d.max_unattached, int),
        max_unattached_per_address=positive_setting(
            settings, prefix + "MAX_UNATTACHED_PER_ADDRESS", d.max_unattached_per_address, int
        ),
        attach_deadline=positive_setting(
            settings, prefix + "ATTACH_DEADLINE", d.attach_deadline, float
        ),
        partial_allowance=positive_setting(
            settings, prefix + "PARTIAL_FRAME_ALLOWANCE", d.partial_allowance, int
        ),
        partial_budget=positive_setting(
            settings, prefix + "PARTIAL_FRAME_BUDGET", d.partial_budget, int
        ),
        partial_deadline=positive_setting(
            settings, prefix + "PARTIAL_FRAME_DEADLINE", d.partial_deadline, float
        ),
    )


_BYTES = re.compile(r"(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def byte_setting(settings: Mapping[str, str], name: str, default: int) -> int:
    """The positive size in setting ``name``: bytes, or with a unit (``512KiB``, ``4MiB``, ``1G``).

    Units are binary (K = 1024). Unset: ``default``; anything else is a
    :class:`SettingError` naming the variable.
    """
    text = settings.get(name, "").strip()
    if not text:
        return default
    match = _BYTES.fullmatch(text)
    value = int(match[1]) * _UNITS[match[2][:1].lower()] if match else 0
    if value <= 0:
        raise SettingError(
            f"{name}: expected a positive number of bytes (e.g. 4194304 or 4MiB), got {text[:40]!r}"
        )
    return value


def sentinel_link_limits(settings: Mapping[str, str]) -> LinkLimits:
    """What the sentinel queues per link and how long a link may stay behind.

    ``FAME_SENTINEL_LINK_BUFFER`` (bytes, default 4 MiB) and
    ``FAME_SENTINEL_STALL_GRACE`` (seconds, default 5).
    """
    return lowlevel.LinkLimits(
        buffer=byte_setting(settings, "FAME_SENTINEL_LINK_BUFFER", lowlevel.DEFAULT_LINK_BUFFER),
        stall_grace=positive_setting(
            settings, "FAME_SENTINEL_STALL_GRACE", lowlevel.DEFAULT_STALL_GRACE, float
        ),
    )


def sentinel_quotas(settings: Mapping[str, str]) -> Quotas:
    """The per-principal quotas: ``FAME_QUOTA_REQUESTS_IN_FLIGHT``, ``FAME_QUOTA_STREAMS``,
    ``FAME_QUOTA_BINDINGS``, ``FAME_QUOTA_ENROLLED_NODES`` (counts) and
    ``FAME_QUOTA_BYTES_QUEUED`` (bytes); each unset one keeps its default."""
    defaults = lowlevel.Quotas()
    values: dict[str, int] = {}
    for field, name in lowlevel.QUOTA_SETTINGS.items():
        default = getattr(defaults, field)
        if field == "bytes_queued":
            values[field] = byte_setting(settings, name, default)
        else:
            values[field] = positive_setting(settings, name, default, int)
    return lowlevel.Quotas(**values)


def sentinel_host(settings: Mapping[str, str]) -> str:
    """The interface the sentinel listens on: ``FAME_SENTINEL_HOST``, else 127.0.0.1."""
    return settings.get("FAME_SENTINEL_HOST", "").strip() or lowlevel.DEFAULT_HOST


def sentinel_port(settings: Mapping[str, str]) -> int:
    """The sentinel's TCP port: ``FAME_SENTINEL_PORT``, else 8000 (0 picks a free one)."""
    text = settings.get("FAME_SENTINEL_PORT", "").strip() or str(lowlevel.DEFAULT_PORT)
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SettingError(
            f"FAME_SENTINEL_PORT: expected a port number from 0 to 65535, got {text[:40]!r}"
        )
    return port


METRICS_PORT = {"sentinel": "FAME_SENTINEL_METRICS_PORT", "node": "FAME_NODE_METRICS_PORT"}
"""The variable of each service's metrics port: two, so one environment can set both."""


def metrics_endpoint(settings: Mapping[str, str], service: str) -> tuple[str, int] | None:
    """Where ``service`` (``sentinel`` or ``node``) serves ``/metrics`` and ``/healthz``.

    Off (``None``) unless its port variable (:data:`METRICS_PORT`) is set to
    a port other than 0; on ``FAME_METRICS_HOST``, else 127.0.0.1: the
    figures name agents and operations, so they are not offered to the
    network unless asked for.
    """
    name = METRICS_PORT[service]
    text = settings.get(name, "").strip() or "0"
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SettingError(f"{name}: expected a port number (0: off), got {text[:40]!r}")
    if port == 0:
        return None
    return settings.get("FAME_METRICS_HOST", "").strip() or "127.0.0.1", port


def admission_token(settings: Mapping[str, str]) -> str | None:
    """``FAME_ADMISSION_TOKEN``, the token nodes and clients attach with; ``None`` if unset."""
    return settings.get("FAME_ADMISSION_TOKEN", "").strip() or None


def admission(settings: Mapping[str, str]) -> tuple[str | None, bool]:
    """The sentinel's admission token and whether open admission was asked for.

    One of the two is required: a sentinel without a token is open to anyone
    who can reach it, so that must be said with ``FAME_OPEN_ADMISSION=1``.
    """
    token = admission_token(settings)
    if token is None and settings.get("FAME_ADMISSION_TOKEN_FILE", "").strip():
        path = settings["FAME_ADMISSION_TOKEN_FILE"].strip()
        token = read_token_file(path, source="FAME_ADMISSION_TOKEN_FILE")
    open_admission = flag_setting(settings, "FAME_OPEN_ADMISSION")
    if token is None and not open_admission:
        raise SettingError(
            "FAME_ADMISSION_TOKEN (or FAME_ADMISSION_TOKEN_FILE) is not set (run: fame init,"
            " which writes conf/secrets.env),"
            " and open admission was not asked for (FAME_OPEN_ADMISSION=1)"
        )
    return token, open_admission


def forget_master_key(settings: MutableMapping[str, str]) -> None:
    """Drop the master key's text from ``settings`` and from this process's environment.

    Called once the key is parsed (the storage config holds its bytes), so
    the text is not kept for the life of the process. (The environment block
    the process started with is the kernel's copy; the programs are not
    dumpable, so other processes cannot read it.)
    """
    settings.pop(MASTER_KEY, None)
    os.environ.pop(MASTER_KEY, None)


def read_token_file(
    path: str, stdin: Iterable[str] | None = None, *, source: str = "--token-file"
) -> str:
    """The admission token in the file ``path`` (its first line), or on stdin for ``-``.

    The token is given this way, or by ``FAME_ADMISSION_TOKEN`` (the
    environment or ``conf/secrets.env``), never on the command line, where
    ``ps`` shows it to every user. An empty or unreadable file is a
    :class:`SettingError`; the message never quotes the content.
    """
    if path == "-":
        lines = iter(stdin if stdin is not None else [])
        text = next(lines, "")
        where = "standard input"
    else:
        where = f"token file {path}"
        try:
            with open(path, encoding="utf-8") as f:
                text = f.readline()
        except FileNotFoundError:
            raise SettingError(f"{source}: {where} does not exist") from None
        except OSError as exc:
            raise SettingError(f"{source}: cannot read {where}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SettingError(f"{source}: {where} is not UTF-8 text") from None
    token = text.strip()
    if not token:
        raise SettingError(f"{source}: {where} holds no token (its first line is empty)")
    return token


def agent_entries(settings: Mapping[str, str]) -> list[str]:
    """The ``module:Class@address`` entries of ``FAME_AGENTS`` (spaces or commas between)."""
    return settings.get("FAME_AGENTS", "").replace(",", " ").split()


def _line_of(string: str, first_line: int) -> int:
    """The line where a binding's text starts (the parser counts leading blank lines in)."""
    blank = len(string) - len(string.lstrip())
    return first_line + string[:blank].count("\n")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse one ``NAME=value`` file; raise :class:`ConfigFileError` naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # `fame init` writes the project's own files; any other name is the caller's typo.
        own = path.absolute().parent == CONF_DIR.absolute() and path.name in _PROJECT_CONF
        hint = " (run: fame init, which writes it)" if own else ": check the name"
        raise ConfigFileError(f"config file {path} does not exist{hint}") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"config file {path} is not UTF-8 text") from None
    values: dict[str, str] = {}
    from dotenv.parser import parse_stream  # on first use: it is not needed to start up

    for binding in parse_stream(io.StringIO(text)):
        key, value = binding.key, binding.value
        if key is None and not binding.error:
            continue  # a comment or blank lines
        if binding.error or key is None or value is None or not key.isidentifier():
            raw = binding.original.string.strip()
            line = _line_of(binding.original.string, binding.original.line)
            raise ConfigFileError(f"{path}:{line}: expected NAME=value, got {raw[:60]!r}")
        values[key] = value
    return values


def load_settings(
    files: Iterable[Path], env: Mapping[str, str] | None = None, *, optional: bool = False
) -> dict[str, str]:
    """Merge ``files`` in order, then the environment (``os.environ`` by default) on top.

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
    """The websocket URL of the sentinel: ``FAME_SENTINEL_URL``, or built from host and port.

    The built one is ``wss://`` when TLS is configured (``FAME_SENTINEL_TLS_CERT``,
    as in ``conf/sentinel.env``, or ``FAME_TLS_CA``), else ``ws://``.
    """
    url = settings.get("FAME_SENTINEL_URL", "").strip()
    if url:
        return url
    host = sentinel_host(settings)
    port = sentinel_port(settings)  # a SettingError naming FAME_SENTINEL_PORT if not a port
    if host in ("0.0.0.0", "::"):
        host = lowlevel.DEFAULT_HOST
    tls = any(settings.get(name, "").strip() for name in ("FAME_SENTINEL_TLS_CERT", "FAME_TLS_CA"))
    return f"{'wss' if tls else 'ws'}://{host}:{port}"


def _file_setting(settings: Mapping[str, str], name: str) -> Path | None:
    """The file that setting ``name`` names (``None`` if unset); it must exist."""
    text = settings.get(name, "").strip()
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise SettingError(f"{name}: {text} does not exist or is not a file")
    return path


def sentinel_tls(settings: Mapping[str, str]) -> tuple[Path, Path, Path | None] | None:
    """The sentinel's TLS files: (certificate, key, client CA or ``None``), or ``None`` for none.

    ``FAME_SENTINEL_TLS_CERT`` and ``FAME_SENTINEL_TLS_KEY`` (PEM) make it
    serve ``wss://``; ``FAME_SENTINEL_TLS_CLIENT_CA`` adds mutual TLS: only
    peers presenting a certificate this CA verifies get through the handshake.
    """
    cert = _file_setting(settings, "FAME_SENTINEL_TLS_CERT")
    key = _file_setting(settings, "FAME_SENTINEL_TLS_KEY")
    client_ca = _file_setting(settings, "FAME_SENTINEL_TLS_CLIENT_CA")
    if cert is None and key is None:
        if client_ca is not None:
            raise SettingError(
                "FAME_SENTINEL_TLS_CLIENT_CA: mutual TLS needs FAME_SENTINEL_TLS_CERT and"
                " FAME_SENTINEL_TLS_KEY too"
            )
        return None
    if cert is None or key is None:
        missing = "FAME_SENTINEL_TLS_CERT" if cert is None else "FAME_SENTINEL_TLS_KEY"
        raise SettingError(
            f"{missing} is not set: TLS needs both FAME_SENTINEL_TLS_CERT and FAME_SENTINEL_TLS_KEY"
        )
    return cert, key, client_ca


def client_tls(settings: Mapping[str, str]) -> ssl.SSLContext | None:
    """How a node or client checks the sentinel: an SSL context, or ``None`` for the defaults.

    ``FAME_TLS_CA`` is the CA file (PEM) that verifies the sentinel's
    certificate (else the system's roots); ``FAME_TLS_CERT`` and
    ``FAME_TLS_KEY`` the certificate this side presents to a sentinel that
    asks for one (mutual TLS).
    """
    ca = _file_setting(settings, "FAME_TLS_CA")
    cert = _file_setting(settings, "FAME_TLS_CERT")
    key = _file_setting(settings, "FAME_TLS_KEY")
    if ca is None and cert is None and key is None:
        return None
    if key is not None and cert is None:
        raise SettingError("FAME_TLS_CERT is not set: FAME_TLS_KEY is the key of that certificate")
    import ssl  # here: a start without TLS does without it

    try:
        return lowlevel.client_ssl_context(ca, cert, key)
    except (OSError, ssl.SSLError) as exc:
        names = "FAME_TLS_CA" if cert is None else "FAME_TLS_CA, FAME_TLS_CERT or FAME_TLS_KEY"
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise SettingError(f"{names}: cannot load the TLS files: {reason}") from None
