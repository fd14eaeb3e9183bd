"""The programs' settings: ``conf/*.env`` files, the environment on top, checked values.

``fame/_cli/_settings.py`` is the one reader of ``FAME_*``. These tests pin
what it accepts (python-dotenv's syntax without expansion), how a bad file
or value is reported (fame's own lines, naming the file and line or the
variable), and that the defaults are the library's own constants.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fame._agents._stream import DEFAULT_IDLE_TIMEOUT
from fame._cli._settings import (
    ConfigFileError,
    SettingError,
    admission,
    admission_token,
    agent_entries,
    delivery_config,
    flag_setting,
    load_settings,
    positive_setting,
    read_env_file,
    sentinel_host,
    sentinel_limits,
    sentinel_port,
    sentinel_url,
    stream_idle_timeout,
)
from fame._cli._trust import (
    authorization_policy,
    client_credentials,
    client_token,
    sentinel_keys,
)
from fame._fabric._transport import HANDSHAKE_TIMEOUT
from fame._fabric.sentinel._server import DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT
from fame.lowlevel import DeliveryConfig


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_conf_file_is_read_with_comments_quotes_and_export(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "a.env",
        "# a comment\n"
        "\n"
        "FAME_SENTINEL_PORT=8100\n"
        "export FAME_SENTINEL_HOST = '0.0.0.0'\n"
        'FAME_AGENTS="a.b:C@x@y d.e:F@z@w"\n'
        "FAME_ADMISSION_TOKEN=abc${HOME}  # not expanded, comment dropped\n"
        "FAME_EMPTY=\n",
    )
    assert read_env_file(conf) == {
        "FAME_SENTINEL_PORT": "8100",
        "FAME_SENTINEL_HOST": "0.0.0.0",
        "FAME_AGENTS": "a.b:C@x@y d.e:F@z@w",
        "FAME_ADMISSION_TOKEN": "abc${HOME}",
        "FAME_EMPTY": "",
    }


@pytest.mark.parametrize(
    ("text", "line", "shown"),
    [
        ("A=1\nthis is not a setting\n", 2, "this is not a setting"),
        ("A=1\n\n\nNO_EQUALS_SIGN\n", 4, "NO_EQUALS_SIGN"),
        ("# c\n1BAD=2\n", 2, "1BAD=2"),
        ("A='unterminated\n", 1, "A='unterminated"),
    ],
)
def test_a_malformed_line_is_an_error_naming_the_file_and_line(
    tmp_path: Path, text: str, line: int, shown: str
) -> None:
    conf = write(tmp_path / "bad.env", text)
    with pytest.raises(ConfigFileError) as info:
        read_env_file(conf)
    assert str(info.value) == f"{conf}:{line}: expected NAME=value, got {shown!r}"


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigFileError, match=r"^config file .*nope\.env does not exist"):
        read_env_file(missing)
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(ConfigFileError, match=r"binary\.env is not UTF-8 text$"):
        read_env_file(binary)


def test_files_merge_in_order_and_the_environment_overrides_them(tmp_path: Path) -> None:
    first = write(tmp_path / "first.env", "A=1\nB=1\nC=1\n")
    second = write(tmp_path / "second.env", "B=2\nC=2\n")
    merged = load_settings([first, second], env={"C": "env"})
    assert (merged["A"], merged["B"], merged["C"]) == ("1", "2", "env")
    with pytest.raises(ConfigFileError):
        load_settings([tmp_path / "missing.env"], env={})
    assert load_settings([tmp_path / "missing.env", first], env={}, optional=True) == {
        "A": "1",
        "B": "1",
        "C": "1",
    }


def test_defaults_are_the_library_constants() -> None:
    assert stream_idle_timeout({}) == DEFAULT_IDLE_TIMEOUT
    assert sentinel_limits({}) == (DEFAULT_MAX_CONNECTIONS, HANDSHAKE_TIMEOUT)
    assert (sentinel_host({}), sentinel_port({})) == (DEFAULT_HOST, DEFAULT_PORT)
    assert sentinel_url({}) == f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}"
    assert sentinel_url({"FAME_SENTINEL_HOST": "0.0.0.0", "FAME_SENTINEL_PORT": "9"}) == (
        f"ws://{DEFAULT_HOST}:9"
    )


def test_one_parser_for_positive_numbers_names_the_variable() -> None:
    assert positive_setting({"N": " 7 "}, "N", 1, int) == 7
    assert positive_setting({"S": "0.25"}, "S", 1.0, float) == 0.25
    for bad in ("0", "-1", "1.5", "x"):
        with pytest.raises(SettingError) as info:
            positive_setting({"N": bad}, "N", 1, int)
        assert str(info.value) == f"N: expected a positive whole number, got {bad!r}"
    for bad in ("0", "-0.5", "nan", "inf", "soon"):
        with pytest.raises(SettingError) as info:
            positive_setting({"S": bad}, "S", 1.0, float)
        assert str(info.value) == f"S: expected a positive number of seconds, got {bad!r}"


def test_port_flag_and_admission_settings() -> None:
    assert sentinel_port({"FAME_SENTINEL_PORT": "0"}) == 0
    for bad in ("-1", "65536", "http"):
        with pytest.raises(SettingError) as info:
            sentinel_port({"FAME_SENTINEL_PORT": bad})
        expected = f"FAME_SENTINEL_PORT: expected a port number from 0 to 65535, got {bad!r}"
        assert str(info.value) == expected
    for on in ("1", "yes", "TRUE", " on "):
        assert flag_setting({"F": on}, "F") is True
    for off in ("", "0", "no", "False", "off"):
        assert flag_setting({"F": off}, "F") is False
    assert flag_setting({}, "F") is False
    with pytest.raises(SettingError) as info:
        flag_setting({"F": "maybe"}, "F")
    assert str(info.value).startswith("F: expected 1 or 0")
    assert admission({"FAME_ADMISSION_TOKEN": " t0k "}) == ("t0k", False)
    assert admission({"FAME_OPEN_ADMISSION": "1"}) == (None, True)
    unset = r"^FAME_ADMISSION_TOKEN \(or FAME_ADMISSION_TOKEN_FILE\) is not set"
    with pytest.raises(SettingError, match=unset):
        admission({"FAME_OPEN_ADMISSION": "0"})
    assert admission_token({"FAME_ADMISSION_TOKEN": "  "}) is None


def test_trust_settings_tokens_from_a_file_rotation_and_the_policy_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789\n")
    from_file = {"FAME_ADMISSION_TOKEN_FILE": str(token_file)}
    # The sentinel, the nodes and the clients all read the file.
    assert admission(from_file) == ("from-a-file-0123456789", False)
    assert client_token(from_file) == "from-a-file-0123456789"
    missing = {"FAME_ADMISSION_TOKEN_FILE": str(tmp_path / "nope")}
    with pytest.raises(SettingError, match=r"^FAME_ADMISSION_TOKEN_FILE: .* does not exist"):
        client_token(missing)
    # A rotation: the previous token with the end of its grace period, and the admin's own.
    rotating = {
        "FAME_ADMISSION_TOKEN": "new-token-0123456789",
        "FAME_ADMISSION_TOKEN_PREVIOUS": "old-token-0123456789",
        "FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL": "2030-01-01T00:00:00+00:00",
        "FAME_ADMIN_TOKEN": "admin-token-0123456789",
    }
    default, previous, admin = client_credentials(rotating)
    assert (default.name, default.token, default.not_after) == (
        "default",
        "new-token-0123456789",
        None,
    )
    assert (previous.name, previous.token) == ("default", "old-token-0123456789")
    assert previous.not_after == 1893456000.0
    assert (admin.name, admin.token) == ("admin", "admin-token-0123456789")
    with pytest.raises(SettingError, match=r"needs FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL"):
        client_credentials({**rotating, "FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL": ""})
    with pytest.raises(SettingError, match=r"give the time zone"):
        client_credentials({**rotating, "FAME_ADMISSION_TOKEN_PREVIOUS_UNTIL": "2030-01-01"})
    with pytest.raises(SettingError, match=r"must be its own secret"):
        client_credentials({**rotating, "FAME_ADMIN_TOKEN": "new-token-0123456789"})
    # No policy file: the sentinel does not start, and says what to do.
    with pytest.raises(SettingError, match=r"^no authorization policy: .*policy.toml does not"):
        authorization_policy({"FAME_POLICY_FILE": str(tmp_path / "policy.toml")})
    assert authorization_policy({"FAME_POLICY_FILE": "allow-all"}) is None
    (tmp_path / "policy.toml").write_text("[[bind]]\nwho = ['x']\naddresses = ['a@b']\n")
    with pytest.raises(SettingError, match=r"policy.toml"):
        authorization_policy({"FAME_POLICY_FILE": str(tmp_path / "policy.toml")})
    # Sentinel keys: inline, from a file, or a clear error.
    key = "ed25519:" + "A" * 43
    assert sentinel_keys({"FAME_SENTINEL_KEYS": f"{key}, {key}"}) == [bytes(32), bytes(32)]
    with pytest.raises(SettingError, match=r"no trusted sentinel keys: .* does not exist"):
        sentinel_keys({"FAME_SENTINEL_KEYS_FILE": str(tmp_path / "none.keys")})
    (tmp_path / "bad.keys").write_text("# a comment\ned25519:short\n")
    with pytest.raises(SettingError, match=r"bad.keys line 2: "):
        sentinel_keys({"FAME_SENTINEL_KEYS_FILE": str(tmp_path / "bad.keys")})


def test_agent_entries_are_split_on_spaces_and_commas() -> None:
    assert agent_entries({}) == []
    text = " a.b:C@x@y, d.e:F@z@w\tg:H@q "
    assert agent_entries({"FAME_AGENTS": text}) == ["a.b:C@x@y", "d.e:F@z@w", "g:H@q"]


def test_delivery_settings_bound_the_outbox_and_name_a_bad_value() -> None:
    assert delivery_config({}) == DeliveryConfig()
    config = delivery_config(
        {
            "FAME_DELIVERY_MAX_ATTEMPTS": "5",
            "FAME_DELIVERY_OUTBOX_MAX_MESSAGES": "100",
            "FAME_DELIVERY_OUTBOX_MAX_BYTES": "65536",
            "FAME_DELIVERY_INBOX_WINDOW": "3600",
        }
    )
    assert (config.max_attempts, config.max_messages, config.max_bytes) == (5, 100, 65536)
    assert config.inbox_window == 3600.0
    with pytest.raises(SettingError) as info:
        delivery_config({"FAME_DELIVERY_MAX_ATTEMPTS": "0"})
    assert str(info.value).startswith("FAME_DELIVERY_MAX_ATTEMPTS: expected a positive")
