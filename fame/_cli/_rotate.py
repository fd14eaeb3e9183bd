"""``fame rotate``: new credentials and keys, the old ones accepted for a grace period.

- ``fame rotate token``: a new admission token in ``conf/secrets.env``; the
  old one stays valid until the grace period ends
  (``FAME_ADMISSION_TOKEN_PREVIOUS`` / ``_UNTIL``). A running sentinel is
  told with SIGHUP and takes both at once; clients of this project read the
  new one from the file; give it to clients elsewhere before the end.
- ``fame rotate sentinel-key``: a new signing key; the sentinel signs with
  old and new until the end, and ``conf/sentinel.keys`` lists both: copy it
  to nodes elsewhere before the end.
- ``fame rotate node-key``: a new key for this project's agent node
  (stopped), enrolled at the sentinel first; the old key is accepted until
  the end.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from typing import Any

from fame.lowlevel import NodeStores, rotate_node_key, rotate_sentinel_key
from fame.security import format_public_key, parse_public_key

from . import _admin
from ._processes import SERVICES
from ._settings import SECRETS_FILE, SENTINEL_CONF, load_settings, read_env_file
from ._trust import add_sentinel_keys, sentinel_keys_file

__all__ = ["rotate"]

DEFAULT_GRACE = 24 * 3600.0
_SENTINEL, _AGENT = SERVICES
_ROTATED = (
    "FAME_ADMISSION_TOKEN",
    "FAME_ADMISSION_TOKEN_PREVIOUS",
    "FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL",
)


def rotate(args: Any) -> int:
    grace = DEFAULT_GRACE if args.grace is None else args.grace
    if not grace >= 0:
        raise _admin.AdminError("--grace is a number of seconds, 0 or more; nothing was changed")
    return {"token": _token, "sentinel-key": _sentinel_key, "node-key": _node_key}[args.what](grace)


def _token(grace: float) -> int:
    values = read_env_file(SECRETS_FILE)
    old = values.get("FAME_ADMISSION_TOKEN", "")
    if not old:
        raise _admin.AdminError(
            f"{SECRETS_FILE} has no FAME_ADMISSION_TOKEN to rotate (run `fame init`)"
        )
    until = time.time() + grace
    kept = [
        line
        for line in SECRETS_FILE.read_text(encoding="utf-8").splitlines()
        if line.split("=", 1)[0].strip().removeprefix("export ").strip() not in _ROTATED
    ]
    text = "\n".join(
        [
            *kept,
            f"FAME_ADMISSION_TOKEN={secrets.token_urlsafe(32)}",
            f"FAME_ADMISSION_TOKEN_PREVIOUS={old}",
            f"FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL={_admin._when(until)}",
        ]
    )
    # A new file renamed over the old: never a half-written secrets file.
    temporary = SECRETS_FILE.with_name(SECRETS_FILE.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(temporary, SECRETS_FILE)
    print(f"fame rotate token: a new admission token in {SECRETS_FILE}; the old one is accepted"
          f" until {_admin._when(until)}")  # fmt: skip
    pid = _SENTINEL.pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        print(f"fame rotate token: told the running sentinel (pid {pid}) to take both now")
    return 0


def _sentinel_key(grace: float) -> int:
    settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
    keys_file = sentinel_keys_file(settings)
    if _SENTINEL.pid() is not None:
        keys = [parse_public_key(k) for k in _admin._live("rotate_signing_key", grace=grace)]
    else:

        async def rotate(stores: NodeStores) -> list[bytes]:
            assert stores.provider is not None
            return await rotate_sentinel_key(stores.provider, grace=grace, now=time.time())

        keys = _admin._open(_admin._sentinel_config(), rotate, "sentinel")
    for key in add_sentinel_keys(keys_file, keys):
        print(
            f"fame rotate sentinel-key: added the new key {format_public_key(key)} to {keys_file}"
        )
    until = _admin._when(time.time() + grace)
    print(f"fame rotate sentinel-key: the old key signs until {until}; copy {keys_file} to"
          " nodes and clients on other machines before then")  # fmt: skip
    return 0


def _node_key(grace: float) -> int:
    pid = _AGENT.pid()
    if pid is not None:
        raise _admin.AdminError(
            f"the agent node is running (pid {pid}): stop it first (`just stop`), its key is in"
            " its own stores; nothing was changed"
        )

    async def rotate(stores: NodeStores) -> tuple[str, bytes]:
        fresh = await rotate_node_key(stores)
        return fresh.node_id, fresh.public_key

    # Written first, then enrolled: a failed enroll leaves a key that is kept
    # and can be enrolled by hand (the message says how), never a lost one.
    node_id, key = _admin._open(_admin._agent_config(), rotate, "agent")
    try:
        if _SENTINEL.pid() is not None:
            said = _admin._live(
                "enroll", node_id=node_id, public_key=format_public_key(key), rotate_grace=grace
            )
        else:
            now = time.time()
            said = _admin._enroll(node_id, None, _admin.AGENT_NAME, key, now + grace, now)
    except _admin.AdminError as exc:
        raise _admin.AdminError(
            f"the agent has a new key {format_public_key(key)}, but enrolling it failed: {exc};"
            f" enroll it with `fame enroll {node_id} {format_public_key(key)}`"
        ) from None
    print(f"fame rotate node-key: {said}")
    return 0
