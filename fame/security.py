"""Who may attach, who may do what, and who called: fame's security API.

- :func:`current_caller` tells a running operation the verified identity
  of its caller (:class:`CallerIdentity`), for decisions of its own;
  :func:`request_key` gives the call's request id scoped by that identity,
  to deduplicate the operation's writes by (no caller can replay or block
  another's).
- :class:`Policy` (built with :meth:`Policy.from_toml`) is what
  :func:`fame.open_sentinel` enforces: which :class:`Principal` may bind
  which addresses and call which operations, deny by default.
- :class:`ClientCredential` is a named client secret the sentinel accepts
  (several at once during a rotation); nodes are admitted by their
  enrolled public key instead (:meth:`fame.lowlevel.Sentinel.enroll`).
- :func:`format_public_key` / :func:`parse_public_key` are the text form
  of public keys in ``conf/`` files (``ed25519:...``).

``docs/security.md`` is the threat model: what each party may do and which
test shows it.
"""

from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:
    from ._agents._call_context import CallerIdentity, current_caller, request_key
    from ._protocol._authz import Policy, PolicyError, Principal, default_policy_text
    from ._protocol._credentials import ClientCredential, format_public_key, parse_public_key

__all__ = [
    "CallerIdentity",
    "ClientCredential",
    "Policy",
    "PolicyError",
    "Principal",
    "current_caller",
    "default_policy_text",
    "format_public_key",
    "parse_public_key",
    "request_key",
]

_NAMES = {
    "CallerIdentity": "fame._agents._call_context",
    "current_caller": "fame._agents._call_context",
    "request_key": "fame._agents._call_context",
    "Policy": "fame._protocol._authz",
    "PolicyError": "fame._protocol._authz",
    "Principal": "fame._protocol._authz",
    "default_policy_text": "fame._protocol._authz",
    "ClientCredential": "fame._protocol._credentials",
    "format_public_key": "fame._protocol._credentials",
    "parse_public_key": "fame._protocol._credentials",
}
"""Where each name lives: imported on first use (see :mod:`fame._lazy`)."""

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, _NAMES)
