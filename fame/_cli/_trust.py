"""Who trusts whom, as the programs read it: sentinel keys, client credentials.

- **Sentinel keys.** Nodes and clients attach only to a sentinel that signs
  its challenge with a key they trust: the keys in ``conf/sentinel.keys``
  (``FAME_SENTINEL_KEYS_FILE`` names another file; ``FAME_SENTINEL_KEYS``
  lists keys inline). One ``ed25519:...`` key per line, ``#`` comments.
  ``fame init`` writes the file, and ``fame sentinel`` adds its own keys
  to it when it starts, so on one machine nothing needs copying; a node on
  another machine gets a copy of the file.
- **Client credentials.** The sentinel admits clients that prove
  ``FAME_ADMISSION_TOKEN`` (the credential ``default``), or, during a
  rotation, ``FAME_ADMISSION_TOKEN_PREVIOUS`` until
  ``FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL`` (Unix time or ISO 8601).
  ``FAME_ADMISSION_TOKEN_FILE`` reads the token from a file instead.
  ``FAME_ADMIN_TOKEN`` is the credential named ``admin``: the only one the
  sentinel's live administration answers (``fame admin`` while it runs).
- **Authorization.** The sentinel enforces ``conf/policy.toml``
  (``FAME_POLICY_FILE`` names another file): who may bind which addresses
  and call which operations, deny by default. ``fame init`` writes the
  example's. Without the file the sentinel does not start;
  ``FAME_POLICY_FILE=allow-all`` lets every admitted peer do everything.
- **Trust on first use.** ``FAME_TRUST_ON_FIRST_USE=1`` lets the sentinel
  enroll an unknown node the first time it attaches (with a token): for
  throwaway setups only, and the sentinel says so loudly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from fame.security import (
    ClientCredential,
    Policy,
    PolicyError,
    format_public_key,
    parse_public_key,
)

from ._settings import CONF_DIR, SettingError, flag_setting, read_token_file

__all__ = [
    "POLICY_FILE",
    "SENTINEL_KEYS_FILE",
    "add_sentinel_keys",
    "authorization_policy",
    "client_credentials",
    "client_token",
    "sentinel_keys",
    "sentinel_keys_file",
    "trust_on_first_use",
]

SENTINEL_KEYS_FILE = CONF_DIR / "sentinel.keys"
POLICY_FILE = CONF_DIR / "policy.toml"
ALLOW_ALL = "allow-all"

_HEADER = (
    "# The sentinel public keys that nodes and clients of this project trust, one per line.\n"
    "# Written by `fame init` and `fame sentinel`; copy this file to nodes on other machines.\n"
    "# A node refuses a sentinel that proves none of them (a fake sentinel learns nothing).\n"
)


def sentinel_keys_file(settings: Mapping[str, str]) -> Path:
    """Where the trusted sentinel keys are: ``FAME_SENTINEL_KEYS_FILE``, else conf/sentinel.keys."""
    return Path(settings.get("FAME_SENTINEL_KEYS_FILE", "").strip() or SENTINEL_KEYS_FILE)


def _parse_keys(lines: Iterable[str], where: str) -> list[bytes]:
    keys: list[bytes] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            keys.append(parse_public_key(text))
        except ValueError as exc:
            raise SettingError(f"{where} line {number}: {exc}") from None
    return keys


def sentinel_keys(settings: Mapping[str, str], root: Path | None = None) -> list[bytes]:
    """The sentinel public keys to trust; a :class:`SettingError` says what to do if none.

    A relative keys file is found under ``root`` (the project), else the working directory.
    """
    inline = settings.get("FAME_SENTINEL_KEYS", "").strip()
    if inline:
        keys = _parse_keys(inline.replace(",", "\n").splitlines(), "FAME_SENTINEL_KEYS")
    else:
        path = sentinel_keys_file(settings)
        if root is not None and not path.is_absolute():
            path = root / path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SettingError(
                f"no trusted sentinel keys: {path} does not exist. Run `fame init` (it writes"
                " it), or copy it from the sentinel's project; FAME_SENTINEL_KEYS_FILE names"
                " another file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingError(f"cannot read the sentinel keys file {path}: {exc}") from None
        keys = _parse_keys(text.splitlines(), str(path))
    if not keys:
        raise SettingError(
            "no trusted sentinel keys: the list is empty (the sentinel's project has them in"
            " conf/sentinel.keys)"
        )
    return keys


def add_sentinel_keys(path: Path, keys: Iterable[bytes]) -> list[bytes]:
    """Add the ``keys`` missing from the keys file ``path`` (made if absent); return those added.

    Only adds: the file may list other sentinels' keys, and a key in a grace
    period must stay listed until it ends.
    """
    try:
        known = _parse_keys(path.read_text(encoding="utf-8").splitlines(), str(path))
        text = ""
    except FileNotFoundError:
        known = []
        text = _HEADER
    added = [key for key in dict.fromkeys(keys) if key not in known]
    if added or text:
        text += "".join(format_public_key(key) + "\n" for key in added)
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
    return added


def client_token(settings: Mapping[str, str]) -> str | None:
    """The client credential a node or client proves: ``FAME_ADMISSION_TOKEN(_FILE)``."""
    path = settings.get("FAME_ADMISSION_TOKEN_FILE", "").strip()
    if path:
        return read_token_file(path, source="FAME_ADMISSION_TOKEN_FILE")
    return settings.get("FAME_ADMISSION_TOKEN", "").strip() or None


def _time_setting(settings: Mapping[str, str], name: str) -> float:
    text = settings.get(name, "").strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SettingError(
            f"{name}: expected a Unix time or an ISO 8601 date, got {text[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        raise SettingError(f"{name}: give the time zone, e.g. {text[:25]}+00:00")
    return moment.timestamp()


def client_credentials(settings: Mapping[str, str]) -> tuple[ClientCredential, ...]:
    """The client credentials the sentinel accepts (see the module docstring)."""
    found: list[ClientCredential] = []
    token = client_token(settings)
    if token:
        found.append(ClientCredential("default", token))
    previous = settings.get("FAME_ADMISSION_TOKEN_PREVIOUS", "").strip()
    if previous:
        if not settings.get("FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL", "").strip():
            raise SettingError(
                "FAME_ADMISSION_TOKEN_PREVIOUS needs FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL: the"
                " end of its grace period (`fame rotate token` writes both)"
            )
        until = _time_setting(settings, "FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL")
        found.append(ClientCredential("default", previous, until))
    admin = settings.get("FAME_ADMIN_TOKEN", "").strip()
    if admin:
        if admin == token:
            raise SettingError(
                "FAME_ADMIN_TOKEN is the admission token: the admin credential must be its own"
                " secret (`fame init` writes one)"
            )
        found.append(ClientCredential("admin", admin))
    return tuple(found)


def trust_on_first_use(settings: Mapping[str, str]) -> bool:
    """``FAME_TRUST_ON_FIRST_USE``: enroll unknown nodes at first sight (loudly)."""
    return flag_setting(settings, "FAME_TRUST_ON_FIRST_USE")


def authorization_policy(settings: Mapping[str, str]) -> Policy | None:
    """The sentinel's policy from its file; None for ``allow-all``; SettingError if unusable."""
    name = settings.get("FAME_POLICY_FILE", "").strip() or str(POLICY_FILE)
    if name == ALLOW_ALL:
        return None
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingError(
            f"no authorization policy: {path} does not exist. Run `fame init` (it writes the"
            f" example's), or set FAME_POLICY_FILE to a policy file ({ALLOW_ALL}: allow"
            " everything)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingError(f"cannot read the policy file {path}: {exc}") from None
    try:
        return Policy.from_toml(text, source=str(path))
    except PolicyError as exc:
        raise SettingError(str(exc)) from None
