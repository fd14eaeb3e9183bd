"""``fame enroll`` / ``revoke`` / ``admin`` against the running sentinel.

While the sentinel runs its stores are locked to other processes, so these
commands ask the sentinel itself: they attach as a client with the admin
credential (``FAME_ADMIN_TOKEN``, which ``fame init`` writes into
``conf/secrets.env``) and call its administration agent, which answers the
admin credential only. The answers are the same as offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

import fame
from fame.errors import AdmissionRefused, OperationFailed, PermissionDenied
from fame.lowlevel import SENTINEL_ADMIN_ADDRESS

from ._settings import SECRETS_FILE, SENTINEL_CONF, client_tls, load_settings, sentinel_url
from ._trust import sentinel_keys

__all__ = [
    "NODE_ADMIN_ADDRESS",
    "LiveAdminError",
    "call",
    "call_waiting",
    "node_admin_address",
]

TIMEOUT = 30.0
NODE_ADMIN_VARIABLE = "FAME_NODE_ADMIN_ADDRESS"
NODE_ADMIN_ADDRESS = "admin@agent.fame"
"""Where the project's agent node serves its live storage administration, by default.

The default policy (``conf/policy.toml``) lets the node enrolled as ``agent``
bind it and the admin credential call it.
"""


def node_admin_address(settings: Mapping[str, str]) -> str:
    """The address of a node's storage administration: its setting, else the default."""
    return settings.get(NODE_ADMIN_VARIABLE, "").strip() or NODE_ADMIN_ADDRESS


class LiveAdminError(Exception):
    """The running sentinel refused, or could not be asked; the message says what to do."""


async def _call(
    operation: str, args: dict[str, Any], timeout: float = TIMEOUT, address: str | None = None
) -> Any:
    settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
    token = settings.get("FAME_ADMIN_TOKEN", "").strip()
    if not token:
        raise LiveAdminError(
            f"the sentinel is running, and live administration needs FAME_ADMIN_TOKEN in"
            f" {SECRETS_FILE} (run `fame init` to add it, then restart the sentinel), or stop"
            " the sentinel (`just stop`) to administer it offline; nothing was changed"
        )
    url = sentinel_url(settings)
    async with fame.connect(
        url, token=token, ssl_context=client_tls(settings), sentinel_keys=sentinel_keys(settings)
    ) as node:
        proxy = node.proxy(address or SENTINEL_ADMIN_ADDRESS).with_timeout(timeout)
        return await getattr(proxy, operation)(**args)


def call(operation: str, **args: Any) -> Any:
    """Call ``operation`` of the running sentinel's administration; its result."""
    return call_waiting(operation, TIMEOUT, None, **args)


def call_waiting(operation: str, timeout: float, address: str | None, /, **args: Any) -> Any:
    """:func:`call`, waiting up to ``timeout`` seconds for the answer (a long backup),
    of the administration at ``address`` (None: the sentinel's). Positional-only, so
    an operation's own ``address`` argument goes to the operation."""
    target = address or SENTINEL_ADMIN_ADDRESS
    try:
        return trio.run(_call, operation, args, timeout, address)
    except PermissionDenied:
        raise LiveAdminError(
            f"the sentinel's policy does not let client:admin call {target}: add"
            f' [[call]] who = ["client:admin"], addresses = ["{target}"],'
            ' operations = ["*"] to conf/policy.toml, then restart the sentinel; nothing was'
            " changed"
        ) from None
    except fame.NoRoute:
        if address is not None:
            raise LiveAdminError(
                f"nothing serves {address}: the running node serves its storage administration"
                " there once conf/policy.toml lets it bind it ([[bind]] who ="
                f' ["node:agent"], addresses = ["{address}"]) and it is restarted; nothing'
                " was changed"
            ) from None
        raise LiveAdminError(
            "the running sentinel serves no live administration (it was started without"
            " FAME_ADMIN_TOKEN): restart it, or stop it to administer offline; nothing was changed"
        ) from None
    except AdmissionRefused as exc:
        raise LiveAdminError(
            f"the running sentinel refused the admin credential: {exc.reason}; nothing was changed"
        ) from None
    except OperationFailed as exc:
        raise LiveAdminError(f"{exc.message}; nothing was changed") from None
    except fame.SentinelUnreachable as exc:
        raise LiveAdminError(
            f"the sentinel is running, but {exc}; nothing was changed (check"
            " FAME_SENTINEL_PORT in conf/sentinel.env, or stop it to administer offline)"
        ) from None
