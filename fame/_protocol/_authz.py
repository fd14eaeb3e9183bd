"""Who may bind which addresses and call which operations: the sentinel's authorization policy.

Admission (``_attach``, ``_credentials``) says who a peer is; this module
says what it may do once admitted. The sentinel asks :meth:`Policy.may_bind`
before it routes an address to a node, and :meth:`Policy.may_call` before
it forwards a call, for the :class:`Principal` the link was admitted as.

Deny by default: a principal may do only what a rule allows. The operator
writes the rules in TOML (``conf/policy.toml``)::

    # Who may bind which addresses and call which operations. Nothing else is allowed.
    [[bind]]
    who = ["node:agent"]                  # node:<name>, client:<name>, role:node, role:client, "*"
    addresses = ["storage@fame.fabric"]   # globs (fnmatch), e.g. "*@fame.fabric"

    [[call]]
    who = ["role:client"]
    addresses = ["storage@fame.fabric"]
    operations = ["*"]                    # operation names or globs

A rule's ``who`` names principals exactly: ``node:<name>`` is the node
enrolled under that name, ``client:<name>`` every holder of the client
credential of that name, ``role:node`` / ``role:client`` every node / every
client, ``"*"`` every admitted principal. ``addresses`` and ``operations``
are globs with :func:`fnmatch.fnmatchcase` rules (``*``, ``?``, ``[...]``,
case-sensitive). The sentinel itself is always allowed everything.

A library user who passes no policy gets :meth:`Policy.allow_all`: every
admitted principal may do everything, as before policies existed.

Pure values and functions, no IO beyond parsing text: the sentinel
(``fame._fabric.sentinel``) reads the file and enforces the answers.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable
from typing import Any, Final

import attrs

from .._core._address import Address, AddressError, is_valid_label
from .._core._errors import FameError, quoted

__all__ = [
    "MAX_POLICY_BYTES",
    "MAX_POLICY_RULES",
    "PRINCIPAL_KINDS",
    "Policy",
    "PolicyError",
    "Principal",
    "Rule",
    "default_policy_text",
]

MAX_POLICY_BYTES: Final = 1024 * 1024
"""The largest policy text accepted, in UTF-8 bytes: a policy is a config file, not data."""

MAX_POLICY_RULES: Final = 10_000
"""The most rules (``[[bind]]`` and ``[[call]]`` together) a policy may hold."""

MAX_REMEMBERED_CALLS: Final = 4096
"""The most answers of :meth:`Policy.may_call` a policy remembers (then it starts over)."""

PRINCIPAL_KINDS: Final = ("node", "client", "sentinel")
"""What a principal can be: an enrolled node, a client credential's holder, the sentinel."""

# Kinds a policy may name; the sentinel is never named since it may do everything.
_NAMED_KINDS: Final = ("node", "client")
_BIND_KEYS: Final = ("who", "addresses")
_CALL_KEYS: Final = ("who", "addresses", "operations")
_TABLES: Final = {"bind": _BIND_KEYS, "call": _CALL_KEYS}
_GLOB_CHARS: Final = frozenset("*?[")
_DESCRIBE_RULES: Final = 20


class PolicyError(FameError, ValueError):
    """An authorization policy that cannot be used; the message says where and how to fix it."""


@attrs.frozen
class Principal:
    """Who a link was admitted as, in the terms a policy names.

    ``kind`` is ``"node"``, ``"client"`` or ``"sentinel"``; ``name`` the
    node's enrolled name (``agent``) or the client credential's name
    (``default``); ``node_id`` the link's node id, for logs (policies do
    not name ids: they change when a node is re-enrolled).
    """

    kind: str = attrs.field()
    name: str
    node_id: str
    # Made once: the sentinel asks for them on every request it routes.
    _names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    @kind.validator
    def _check_kind(self, _attribute: object, value: str) -> None:
        if value not in PRINCIPAL_KINDS:
            raise ValueError(
                f"a principal's kind is one of {', '.join(PRINCIPAL_KINDS)}, not {quoted(value)}"
            )

    def __attrs_post_init__(self) -> None:
        names = (f"{self.kind}:{self.name}", f"role:{self.kind}", "*")
        object.__setattr__(self, "_names", names)

    def names(self) -> tuple[str, ...]:
        """What a rule's ``who`` may say to match this principal, most specific first."""
        return self._names

    def __str__(self) -> str:
        return self._names[0]


class _Globs:
    """A set of fnmatch globs, matched as :func:`fnmatch.fnmatchcase` would.

    Compiled once at parse time: ``fnmatchcase`` caches compiled patterns in
    a bounded cache, which a policy of thousands of globs would thrash on
    every call the sentinel checks. Globs without wildcards are the common
    case and become a set lookup.
    """

    __slots__ = ("_exact", "_patterns")

    def __init__(self, globs: Iterable[str]) -> None:
        exact: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for glob in globs:
            if _GLOB_CHARS.isdisjoint(glob):
                exact.add(glob)
            else:
                patterns.append(re.compile(fnmatch.translate(glob)))
        self._exact = frozenset(exact)
        self._patterns = tuple(patterns)

    def match(self, text: str) -> bool:
        return text in self._exact or any(p.match(text) for p in self._patterns)


@attrs.frozen
class Rule:
    """One ``[[bind]]`` or ``[[call]]`` rule: ``who`` may act on ``addresses`` (and ``operations``).

    ``operations`` is empty for a bind rule. ``number`` is the rule's
    place (from 1) among the rules of its table, to name it in logs.
    """

    action: str
    number: int
    who: tuple[str, ...]
    addresses: tuple[str, ...]
    operations: tuple[str, ...] = ()
    _address_globs: _Globs = attrs.field(init=False, eq=False, repr=False)
    _operation_globs: _Globs = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_address_globs", _Globs(self.addresses))
        object.__setattr__(self, "_operation_globs", _Globs(self.operations))

    def allows(self, address: str, operation: str | None = None) -> bool:
        """Whether this rule covers ``address`` (and ``operation``, for a call rule)."""
        if not self._address_globs.match(address):
            return False
        return operation is None or self._operation_globs.match(operation)

    def __str__(self) -> str:
        text = f"{self.action} {', '.join(self.who)} -> {', '.join(self.addresses)}"
        if self.action == "call":
            text += f" operations {', '.join(self.operations)}"
        return text


def _index(rules: tuple[Rule, ...]) -> dict[str, tuple[Rule, ...]]:
    # Principals match `who` exactly, so each check looks at the rules naming
    # one of its three names only, not at every rule of a large policy.
    index: dict[str, list[Rule]] = {}
    for rule in rules:
        for who in dict.fromkeys(rule.who):
            index.setdefault(who, []).append(rule)
    return {who: tuple(found) for who, found in index.items()}


@attrs.frozen
class Policy:
    """What each admitted principal may bind and call; everything not allowed is denied.

    Build one with :meth:`from_toml` (the operator's ``conf/policy.toml``)
    or :meth:`allow_all` (no policy given). ``source`` names where the
    rules came from, in messages and :meth:`describe`.
    """

    bind_rules: tuple[Rule, ...] = ()
    call_rules: tuple[Rule, ...] = ()
    source: str = "policy"
    allows_everything: bool = False
    _bind_index: dict[str, tuple[Rule, ...]] = attrs.field(init=False, eq=False, repr=False)
    _call_index: dict[str, tuple[Rule, ...]] = attrs.field(init=False, eq=False, repr=False)
    # may_call's answers (the policy never changes): the same few calls repeat.
    _calls: dict[tuple[str, str, str], bool] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_bind_index", _index(self.bind_rules))
        object.__setattr__(self, "_call_index", _index(self.call_rules))
        object.__setattr__(self, "_calls", {})

    @classmethod
    def allow_all(cls) -> Policy:
        """Every admitted principal may bind any address and call any operation.

        For a library user who passes no policy: admission alone decides,
        as it did before policies existed.
        """
        return cls(source="allow-all", allows_everything=True)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "policy") -> Policy:
        """The policy written in ``text``; :class:`PolicyError` saying what and where if invalid.

        ``source`` (usually the file's name) starts every error message.
        """
        return _parse(text, source)

    def may_bind(self, principal: Principal, address: str) -> bool:
        """Whether ``principal`` may bind ``address`` (have it routed to its node)."""
        if self.allows_everything or principal.kind == "sentinel":
            return True
        return any(
            rule.allows(address)
            for who in principal.names()
            for rule in self._bind_index.get(who, ())
        )

    def may_call(self, principal: Principal, address: str, operation: str) -> bool:
        """Whether ``principal`` may call ``operation`` of the actor at ``address``."""
        if self.allows_everything or principal.kind == "sentinel":
            return True
        key = (principal._names[0], address, operation)
        allowed = self._calls.get(key)
        if allowed is None:
            allowed = any(
                rule.allows(address, operation)
                for who in principal.names()
                for rule in self._call_index.get(who, ())
            )
            calls = self._calls
            if len(calls) >= MAX_REMEMBERED_CALLS:
                calls.clear()  # bounded, whatever names peers try
            calls[key] = allowed
        return allowed

    def describe(self) -> str:
        """A few lines summing up the rules, for the sentinel's start log."""
        if self.allows_everything:
            return (
                "authorization: allow-all (no policy given): every admitted principal"
                " may bind any address and call any operation"
            )
        rules = (*self.bind_rules, *self.call_rules)
        lines = [
            f"authorization: {self.source}: {len(self.bind_rules)} bind rule(s),"
            f" {len(self.call_rules)} call rule(s); anything else is denied"
        ]
        lines += [f"  {rule}" for rule in rules[:_DESCRIBE_RULES]]
        if len(rules) > _DESCRIBE_RULES:
            lines.append(f"  ... and {len(rules) - _DESCRIBE_RULES} more")
        return "\n".join(lines)


def _parse(text: str, source: str) -> Policy:
    # Measured before parsing: tomllib holds the whole document in memory.
    if len(text) > MAX_POLICY_BYTES or len(text.encode("utf-8", "replace")) > MAX_POLICY_BYTES:
        raise PolicyError(
            f"{source}: the policy is larger than {MAX_POLICY_BYTES} bytes;"
            " use globs and roles to say the same in fewer rules"
        )
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}; fix the file's syntax") from None
    except RecursionError:
        raise PolicyError(
            f"{source}: not valid TOML: arrays or tables nested too deeply;"
            " a policy needs only [[bind]] and [[call]] tables of string lists"
        ) from None
    for table in document:
        if table not in _TABLES:
            raise PolicyError(
                f"{source}: unknown table or key {quoted(table)} at the top level;"
                " a policy holds only [[bind]] and [[call]] rules"
            )
    rules: dict[str, tuple[Rule, ...]] = {}
    count = 0
    for action, keys in _TABLES.items():
        entries = document.get(action, [])
        if not isinstance(entries, list):
            raise PolicyError(
                f"{source}: '{action}' must be a list of rules, each written [[{action}]]"
                f" (two brackets), with keys {', '.join(keys)}"
            )
        count += len(entries)
        if count > MAX_POLICY_RULES:
            raise PolicyError(
                f"{source}: more than {MAX_POLICY_RULES} rules;"
                " use globs and roles to say the same in fewer rules"
            )
        rules[action] = tuple(
            _rule(entry, action, number, keys, source) for number, entry in enumerate(entries, 1)
        )
    return Policy(rules["bind"], rules["call"], source=source)


def _rule(entry: Any, action: str, number: int, keys: tuple[str, ...], source: str) -> Rule:
    where = f"{source}: [[{action}]] rule {number}"
    expected = f"(keys: {', '.join(keys)})"
    if not isinstance(entry, dict):
        raise PolicyError(
            f"{where}: a rule must be a table {expected}; write it as a [[{action}]] section"
        )
    for key in entry:
        if key not in keys:
            raise PolicyError(
                f"{where}: unknown key {quoted(key)} {expected}; fix its spelling or remove it"
            )
    for key in keys:
        if key not in entry:
            raise PolicyError(f"{where}: missing key {quoted(key)} {expected}; add it")
    values = {key: _strings(entry[key], key, where) for key in keys}
    for who in values["who"]:
        _check_who(who, where)
    return Rule(
        action,
        number,
        values["who"],
        values["addresses"],
        values.get("operations", ()),
    )


def _strings(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(
            f"{where}: {quoted(key)} must be a list of non-empty strings,"
            f' e.g. {key} = ["{_EXAMPLES[key]}"]'
        )
    if not value:
        raise PolicyError(
            f"{where}: {quoted(key)} is empty, so the rule allows nothing;"
            " list at least one entry or remove the rule"
        )
    return tuple(value)


_EXAMPLES: Final = {"who": "node:agent", "addresses": "storage@fame.fabric", "operations": "*"}


def _check_who(who: str, where: str) -> None:
    if who == "*" or who in {f"role:{kind}" for kind in _NAMED_KINDS}:
        return
    kind, colon, name = who.partition(":")
    if colon and kind in _NAMED_KINDS and is_valid_label(name):
        return
    raise PolicyError(
        f"{where}: 'who' entry {quoted(who)} names no principal;"
        " use node:<name>, client:<name> (a name is 1-63 letters, digits, '_' or '-'),"
        ' role:node, role:client or "*"'
    )


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def node_admin_address(node_name: str) -> str:
    """Where the node enrolled as ``node_name`` serves its live storage administration."""
    return f"admin@{node_name}.fame"


def default_policy_text(
    agent_address: str = "storage@fame.fabric", node_name: str = "agent"
) -> str:
    """The commented ``conf/policy.toml`` a new project starts with.

    The node enrolled as ``node_name`` may bind ``agent_address``, and every
    client may call all its operations; nothing else is allowed.
    :class:`PolicyError` if ``agent_address`` is not an address or
    ``node_name`` not a name a policy can use.
    """
    try:
        Address.parse(agent_address)
    except AddressError as exc:
        raise PolicyError(f"default policy: {exc}") from None
    if not is_valid_label(node_name):
        raise PolicyError(
            f"default policy: node name {quoted(node_name)} must be 1-63 letters, digits,"
            " '_' or '-' (the name it was enrolled under)"
        )
    address = _toml_string(agent_address)
    node = _toml_string(f"node:{node_name}")
    node_admin = _toml_string(node_admin_address(node_name))
    return f"""\
# Authorization policy: who may bind which addresses and call which operations.
#
# Deny by default: an admitted node or client may do only what a rule below
# allows. Anything else is refused (PermissionDenied) and nothing runs.
#
# `who` names principals:
#   node:<name>     the node enrolled under that name (`fame enroll`)
#   client:<name>   every client holding the credential of that name
#   role:node       every enrolled node
#   role:client     every client
#   "*"             every admitted principal
# `addresses` and `operations` are globs: `*` matches anything, `?` one character,
# e.g. "*@fame.fabric" is every actor on the path fame.fabric.

# The agents' node serves the storage actor.
[[bind]]
who = [{node}]
addresses = [{address}]

# It serves its live storage administration there too (`fame backup`).
[[bind]]
who = [{node}]
addresses = [{node_admin}]

# Clients may call every operation of it.
[[call]]
who = ["role:client"]
addresses = [{address}]
operations = ["*"]

# The holder of the admin credential (FAME_ADMIN_TOKEN) may administer the
# running sentinel (`fame admin`, `fame enroll`, `fame revoke`, `fame backup`)
# and back up the running node.
[[call]]
who = ["client:admin"]
addresses = ["admin@sentinel.fame", {node_admin}]
operations = ["*"]
"""
