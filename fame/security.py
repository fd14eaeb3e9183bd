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
