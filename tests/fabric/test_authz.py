"""The authorization policy: parsing, deny by default, globs and roles, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fame._core._errors import remote_error
from fame._protocol._authz import (
    MAX_POLICY_BYTES,
    MAX_POLICY_RULES,
    Policy,
    Principal,
    default_policy_text,
)
from fame.errors import FameError, PermissionDenied, PolicyError, RemoteError

AGENT = Principal("node", "agent", "n0123456789abcdef0123")
OTHER_NODE = Principal("node", "other", "nffffffffffffffffffff")
CLIENT = Principal("client", "default", "c1")
ADMIN = Principal("client", "admin", "c2")
SENTINEL = Principal("sentinel", "sentinel", "s1")
EVERYONE = (AGENT, OTHER_NODE, CLIENT, ADMIN)


def policy(text: str) -> Policy:
    return Policy.from_toml(text, source="policy.toml")


def refusal(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        policy(text)
    assert isinstance(info.value, FameError)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith("policy.toml: ")
    return message


# --- principals ---------------------------------------------------------------


def test_a_principal_names_itself_its_role_and_everyone() -> None:
    assert AGENT.names() == ("node:agent", "role:node", "*")
    assert CLIENT.names() == ("client:default", "role:client", "*")
    assert str(AGENT) == "node:agent"
    assert str(CLIENT) == "client:default"


def test_a_principal_is_a_frozen_value() -> None:
    assert Principal("node", "agent", "x") == Principal("node", "agent", "x")
    assert hash(Principal("node", "agent", "x")) == hash(Principal("node", "agent", "x"))
    with pytest.raises(AttributeError):
        AGENT.name = "other"  # type: ignore[misc]


def test_a_principal_of_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="a principal's kind is one of node, client, sentinel"):
        Principal("admin", "x", "y")


# --- the default policy -------------------------------------------------------


def test_the_default_policy_lets_the_agent_bind_and_clients_call() -> None:
    default = policy(default_policy_text())
    assert default.may_bind(AGENT, "storage@fame.fabric")
    assert not default.may_bind(OTHER_NODE, "storage@fame.fabric")
    assert not default.may_bind(CLIENT, "storage@fame.fabric")
    assert not default.may_bind(AGENT, "other@fame.fabric")
    assert default.may_call(CLIENT, "storage@fame.fabric", "get")
    assert default.may_call(ADMIN, "storage@fame.fabric", "put")
    assert not default.may_call(AGENT, "storage@fame.fabric", "get")
    assert not default.may_call(CLIENT, "other@fame.fabric", "get")


def test_the_default_policy_explains_itself() -> None:
    text = default_policy_text()
    assert "Deny by default" in text
    for name in ("node:<name>", "client:<name>", "role:node", "role:client", '"*"'):
        assert name in text


def test_the_default_policy_takes_the_agent_and_the_node_name() -> None:
    text = default_policy_text("kv@prod.fabric", "store-1")
    custom = policy(text)
    store = Principal("node", "store-1", "n1")
    assert custom.may_bind(store, "kv@prod.fabric")
    assert not custom.may_bind(store, "storage@fame.fabric")
    assert not custom.may_bind(AGENT, "kv@prod.fabric")
    assert custom.may_call(CLIENT, "kv@prod.fabric", "anything")


@pytest.mark.parametrize(
    ("address", "node_name", "words"),
    [
        ('x"@fame.fabric', "agent", "default policy: invalid address"),
        ("no-at-sign", "agent", "default policy: invalid address"),
        ("storage@fame.fabric", "not a label", "node name 'not a label' must be 1-63"),
        ("storage@fame.fabric", "", "node name '' must be 1-63"),
    ],
)
def test_the_default_policy_refuses_what_it_cannot_write(
    address: str, node_name: str, words: str
) -> None:
    with pytest.raises(PolicyError, match=words):
        default_policy_text(address, node_name)


# --- allow and deny -----------------------------------------------------------


def test_an_empty_policy_allows_nothing_but_the_sentinel_everything() -> None:
    for empty in (policy(""), policy("# nothing\n"), Policy()):
        for who in EVERYONE:
            assert not empty.may_bind(who, "storage@fame.fabric")
            assert not empty.may_call(who, "storage@fame.fabric", "get")
        assert empty.may_bind(SENTINEL, "anything@any.where")
        assert empty.may_call(SENTINEL, "anything@any.where", "op")


def test_allow_all_allows_every_principal_everything() -> None:
    everything = Policy.allow_all()
    for who in (*EVERYONE, SENTINEL):
        assert everything.may_bind(who, "storage@fame.fabric")
        assert everything.may_call(who, "x@y", "z")


def test_bind_rules_match_names_roles_and_everyone() -> None:
    rules = policy(
        """
        [[bind]]
        who = ["node:agent"]
        addresses = ["storage@fame.fabric"]

        [[bind]]
        who = ["role:node"]
        addresses = ["shared-*@fame.fabric"]

        [[bind]]
        who = ["*"]
        addresses = ["scratch@tmp"]

        [[bind]]
        who = ["client:admin"]
        addresses = ["console@fame.fabric"]
        """
    )
    assert rules.may_bind(AGENT, "storage@fame.fabric")
    assert not rules.may_bind(OTHER_NODE, "storage@fame.fabric")
    assert rules.may_bind(OTHER_NODE, "shared-cache@fame.fabric")
    assert not rules.may_bind(CLIENT, "shared-cache@fame.fabric")
    for who in EVERYONE:
        assert rules.may_bind(who, "scratch@tmp")
    assert rules.may_bind(ADMIN, "console@fame.fabric")
    assert not rules.may_bind(CLIENT, "console@fame.fabric")
    # Bind rules never grant calls.
    assert not rules.may_call(AGENT, "storage@fame.fabric", "get")


def test_call_rules_need_the_principal_the_address_and_the_operation() -> None:
    rules = policy(
        """
        [[call]]
        who = ["role:client"]
        addresses = ["storage@fame.fabric"]
        operations = ["get", "list_*"]

        [[call]]
        who = ["client:admin", "node:agent"]
        addresses = ["*@fame.fabric"]
        operations = ["*"]
        """
    )
    assert rules.may_call(CLIENT, "storage@fame.fabric", "get")
    assert rules.may_call(CLIENT, "storage@fame.fabric", "list_keys")
    assert not rules.may_call(CLIENT, "storage@fame.fabric", "put")
    assert not rules.may_call(CLIENT, "storage@fame.fabric", "Get")  # case-sensitive
    assert not rules.may_call(CLIENT, "other@fame.fabric", "get")
    assert not rules.may_call(OTHER_NODE, "storage@fame.fabric", "get")
    assert rules.may_call(ADMIN, "anything@fame.fabric", "put")
    assert rules.may_call(AGENT, "storage@fame.fabric", "delete")
    assert not rules.may_call(ADMIN, "storage@other.fabric", "get")
    # Call rules never grant binds.
    assert not rules.may_bind(ADMIN, "storage@fame.fabric")


def test_globs_follow_fnmatchcase() -> None:
    rules = policy(
        """
        [[call]]
        who = ["*"]
        addresses = ["node-?@fame.fabric", "[ab]x@fame.fabric"]
        operations = ["op[0-9]"]
        """
    )
    assert rules.may_call(CLIENT, "node-1@fame.fabric", "op7")
    assert not rules.may_call(CLIENT, "node-12@fame.fabric", "op7")
    assert rules.may_call(CLIENT, "bx@fame.fabric", "op0")
    assert not rules.may_call(CLIENT, "cx@fame.fabric", "op0")
    assert not rules.may_call(CLIENT, "ax@fame.fabric", "opx")
    assert not rules.may_call(CLIENT, "node-1@fame.fabric", "op7 ")


def test_who_names_principals_exactly_not_as_globs() -> None:
    rules = policy(
        """
        [[bind]]
        who = ["node:agent"]
        addresses = ["*"]
        """
    )
    assert not rules.may_bind(Principal("node", "agent2", "n"), "x@y")
    assert not rules.may_bind(Principal("client", "agent", "c"), "x@y")


def test_describe_sums_up_the_rules() -> None:
    summary = policy(default_policy_text()).describe()
    assert "policy.toml: 2 bind rule(s), 2 call rule(s); anything else is denied" in summary
    assert "bind node:agent -> storage@fame.fabric" in summary
    assert "call role:client -> storage@fame.fabric operations *" in summary
    # The live administration: the admin credential only.
    assert "call client:admin -> admin@sentinel.fame, admin@agent.fame operations *" in summary
    assert "allow-all" in Policy.allow_all().describe()


def test_describe_stays_short_for_a_long_policy() -> None:
    rule = '[[bind]]\nwho = ["*"]\naddresses = ["a@b"]\n'
    summary = policy(rule * 500).describe()
    assert len(summary.splitlines()) <= 25
    assert "... and 480 more" in summary


# --- refusals -----------------------------------------------------------------


def test_text_that_is_not_toml_is_refused() -> None:
    message = refusal("[[bind]\nwho = ")
    assert "not valid TOML" in message


def test_deeply_nested_toml_is_refused() -> None:
    message = refusal("x = " + "[" * 5000)
    assert "nested too deeply" in message


@pytest.mark.parametrize("table", ["binds", "calls", "allow", "who"])
def test_an_unknown_top_level_table_is_refused(table: str) -> None:
    message = refusal(f'{table} = ["x"]')
    assert f"unknown table or key {table!r} at the top level" in message
    assert "only [[bind]] and [[call]] rules" in message


@pytest.mark.parametrize("action", ["bind", "call"])
def test_a_single_table_instead_of_rules_is_refused(action: str) -> None:
    message = refusal(f'[{action}]\nwho = ["*"]\n')
    assert f"'{action}' must be a list of rules, each written [[{action}]]" in message


def test_a_rule_that_is_not_a_table_is_refused() -> None:
    message = refusal('bind = ["node:agent"]')
    assert "[[bind]] rule 1: a rule must be a table (keys: who, addresses)" in message


def test_an_unknown_key_is_named_with_its_rule() -> None:
    message = refusal(
        """
        [[call]]
        who = ["*"]
        addresses = ["*"]
        operations = ["*"]

        [[call]]
        who = ["*"]
        addresses = ["*"]
        operation = ["get"]
        """
    )
    assert message == (
        "policy.toml: [[call]] rule 2: unknown key 'operation'"
        " (keys: who, addresses, operations); fix its spelling or remove it"
    )


def test_operations_in_a_bind_rule_are_an_unknown_key() -> None:
    message = refusal('[[bind]]\nwho = ["*"]\naddresses = ["*"]\noperations = ["*"]\n')
    assert "[[bind]] rule 1: unknown key 'operations' (keys: who, addresses)" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[bind]]\naddresses = ["*"]\n', "[[bind]] rule 1: missing key 'who'"),
        ('[[bind]]\nwho = ["*"]\n', "[[bind]] rule 1: missing key 'addresses'"),
        (
            '[[call]]\nwho = ["*"]\naddresses = ["*"]\n',
            "[[call]] rule 1: missing key 'operations' (keys: who, addresses, operations); add it",
        ),
    ],
)
def test_a_missing_key_is_named(text: str, words: str) -> None:
    assert words in refusal(text)


@pytest.mark.parametrize(
    "value",
    ['"node:agent"', '[""]', "[1]", '["*", 2]', '[["*"]]', "{ a = 1 }", "true"],
)
def test_values_must_be_lists_of_non_empty_strings(value: str) -> None:
    message = refusal(f'[[bind]]\nwho = {value}\naddresses = ["*"]\n')
    assert "[[bind]] rule 1: 'who' must be a list of non-empty strings" in message
    assert 'e.g. who = ["node:agent"]' in message


def test_an_empty_list_is_refused_since_the_rule_would_allow_nothing() -> None:
    message = refusal('[[call]]\nwho = ["*"]\naddresses = ["*"]\noperations = []\n')
    assert "[[call]] rule 1: 'operations' is empty, so the rule allows nothing" in message


@pytest.mark.parametrize(
    "who",
    [
        "agent",
        "node:",
        "client:",
        "role:sentinel",
        "role:admin",
        "sentinel:x",
        "user:agent",
        "node:has space",
        "node:-leading",
        "node:a:b",
        "Node:agent",
        "**",
        "node:*",
    ],
)
def test_a_who_that_names_no_principal_is_refused(who: str) -> None:
    message = refusal(f'[[bind]]\nwho = ["*", "{who}"]\naddresses = ["*"]\n')
    assert f"[[bind]] rule 1: 'who' entry {who!r} names no principal" in message
    assert 'role:node, role:client or "*"' in message


def test_a_policy_over_one_mebibyte_is_refused() -> None:
    message = refusal("#" * (MAX_POLICY_BYTES + 1))
    assert f"larger than {MAX_POLICY_BYTES} bytes" in message
    # Counted in UTF-8 bytes, not characters.
    message = refusal("#" + "é" * (MAX_POLICY_BYTES // 2))
    assert f"larger than {MAX_POLICY_BYTES} bytes" in message


def test_a_policy_of_exactly_one_mebibyte_is_read() -> None:
    assert not policy("#" * MAX_POLICY_BYTES).may_bind(AGENT, "x@y")


def test_more_than_ten_thousand_rules_are_refused() -> None:
    bind = '[[bind]]\nwho=["*"]\naddresses=["a"]\n'
    call = '[[call]]\nwho=["*"]\naddresses=["a"]\noperations=["a"]\n'
    at_limit = policy(bind * (MAX_POLICY_RULES // 2) + call * (MAX_POLICY_RULES // 2))
    assert at_limit.may_call(CLIENT, "a", "a")
    message = refusal(bind * (MAX_POLICY_RULES // 2) + call * (MAX_POLICY_RULES // 2 + 1))
    assert f"more than {MAX_POLICY_RULES} rules" in message


def test_a_long_hostile_entry_is_quoted_short() -> None:
    message = refusal(f'[[bind]]\nwho = ["{"x" * 5000}"]\naddresses = ["*"]\n')
    assert len(message) < 400
    assert "(5000 characters)" in message


# --- PermissionDenied ---------------------------------------------------------


def test_permission_denied_travels_as_its_own_kind() -> None:
    assert PermissionDenied.kind == "permission_denied"
    assert issubclass(PermissionDenied, RemoteError)
    error = remote_error("permission_denied", "client:default may not call put", actor="s@f")
    assert type(error) is PermissionDenied
    assert str(error) == "s@f: client:default may not call put"


# --- properties ---------------------------------------------------------------

labels = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,20}", fullmatch=True)
principals = st.builds(Principal, st.sampled_from(["node", "client"]), labels, st.just("n0"))
# No glob metacharacters (*?[]): a literal address or operation in a rule
# then matches exactly itself.
plain = st.text(
    alphabet=st.characters(blacklist_characters="*?[]", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
)


def _basic(text: str) -> str:
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in text
    )
    return f'"{escaped}"'


@settings(max_examples=300, deadline=None)  # pure code: a loaded machine is not a bug
@given(principals, principals, plain, plain, plain, plain)
def test_only_a_matching_rule_allows_and_exactly_what_it_names(
    principal: Principal,
    someone_else: Principal,
    address: str,
    operation: str,
    other_address: str,
    other_operation: str,
) -> None:
    unrelated = (
        f"[[bind]]\nwho = [{_basic(str(someone_else))}]\naddresses = [{_basic(address)}]\n"
        f"[[call]]\nwho = [{_basic(str(someone_else))}]\naddresses = [{_basic(address)}]\n"
        f"operations = [{_basic(operation)}]\n"
    )
    before = policy(unrelated)
    if str(someone_else) != str(principal):
        assert not before.may_bind(principal, address)
        assert not before.may_call(principal, address, operation)

    granted = policy(
        unrelated + f"[[call]]\nwho = [{_basic(str(principal))}]\naddresses = [{_basic(address)}]\n"
        f"operations = [{_basic(operation)}]\n"
    )
    assert granted.may_call(principal, address, operation)
    assert granted.may_call(principal, other_address, operation) == (other_address == address)
    assert granted.may_call(principal, address, other_operation) == (other_operation == operation)
    assert granted.may_bind(principal, address) == (str(someone_else) == str(principal))
    assert granted.may_call(SENTINEL, other_address, other_operation)
