"""Master keys carry a version and a checksum; older keys keep working, with a warning.

``fame keygen`` writes ``fk1_`` + base64url(key bytes || 4-byte checksum).
A mistyped, cut-off or hand-made key in that form is refused at start with
one line naming the variable; a key in the older form (base64url or hex of
at least 32 random bytes) is read as before, and a warning is logged. The
storage config keeps the key as bytes only, never its text.
"""

from __future__ import annotations

import base64
import logging
import secrets

import pytest

from fame._storage import MasterKey, StorageConfigError, parse_master_key, storage_config_from_env
from fame._storage._keys import CHECKSUM_BYTES, KEY_PREFIX, MIN_MASTER_KEY_BYTES

VARIABLE = "FAME_STORAGE_MASTER_KEY"


def _env(key: str) -> dict[str, str]:
    return {
        "FAME_STORAGE_PROFILE": "encrypted-sqlite",
        "FAME_STORAGE_DB_DIRECTORY": "/nonexistent/not-opened-here",
        VARIABLE: key,
    }


def test_a_generated_key_is_versioned_checksummed_and_reads_back() -> None:
    key = MasterKey.generate()
    text = key.export()
    assert text.startswith(KEY_PREFIX) and "=" not in text
    body = base64.urlsafe_b64decode(text.removeprefix(KEY_PREFIX) + "==")
    assert len(body) == MIN_MASTER_KEY_BYTES + CHECKSUM_BYTES
    parsed = parse_master_key(text)
    assert parsed == key and parsed.checked
    assert MasterKey.generate() != key


def _flip(text: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other = alphabet[(alphabet.index(text[index]) + 1) % len(alphabet)]
    return text[:index] + other + text[index + 1 :]


def test_a_mistyped_or_cut_off_key_is_refused_naming_the_variable() -> None:
    text = MasterKey.generate().export()
    # Any single mistyped character of the key part fails the checksum.
    for index in range(len(KEY_PREFIX), len(text) - 2):
        with pytest.raises(StorageConfigError) as caught:
            parse_master_key(_flip(text, index))
        assert caught.value.variable == VARIABLE
        assert "checksum" in str(caught.value) or "not a valid" in str(caught.value)
    cases = {
        text[:-6]: "too short",  # cut off
        text[:20]: "too short",
        KEY_PREFIX: "not a valid",
        text + "!": "not a valid",
        text.replace(KEY_PREFIX, "fk2_"): "cannot read",  # a future version
    }
    for bad, reason in cases.items():
        with pytest.raises(StorageConfigError) as caught:
            storage_config_from_env(_env(bad))
        assert caught.value.variable == VARIABLE
        message = str(caught.value)
        assert reason in message and len(message.splitlines()) == 1
        assert text[len(KEY_PREFIX) :][:12] not in message  # the key is never echoed


def test_a_hand_made_key_with_a_valid_checksum_must_still_look_random() -> None:
    material = b"my key my key my key my key my k"  # chosen by hand, a pattern
    hand_made = MasterKey(material).export()
    with pytest.raises(StorageConfigError, match="does not look random"):
        parse_master_key(hand_made)


def test_an_older_key_keeps_working_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    legacy = secrets.token_urlsafe(32)
    hex_key = secrets.token_hex(32)
    for text in (legacy, hex_key):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fame.storage"):
            config = storage_config_from_env(_env(text))
        assert config.master_key == parse_master_key(text)
        assert config.master_key is not None and not config.master_key.checked
        warnings = [r for r in caplog.records if r.name == "fame.storage"]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        message = warnings[0].getMessage()
        assert VARIABLE in message and "fame keygen" in message and "\n" not in message
        assert text not in message
    # The checked form of the same key is the same key: the data stays readable.
    key = parse_master_key(legacy)
    converted = parse_master_key(key.export())
    assert converted == key and converted.checked
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fame.storage"):
        storage_config_from_env(_env(key.export()))
    assert [r for r in caplog.records if r.name == "fame.storage"] == []


def test_the_config_keeps_no_text_of_the_master_key() -> None:
    for text in (MasterKey.generate().export(), secrets.token_urlsafe(32)):
        env = {**_env(text), "FAME_SOMETHING_ELSE": "kept"}
        config = storage_config_from_env(env)
        assert config.master_key == parse_master_key(text)
        assert VARIABLE not in config.env
        assert config.env["FAME_SOMETHING_ELSE"] == "kept"
        assert all(text not in value for value in config.env.values())
        assert text not in repr(config)
        assert env[VARIABLE] == text  # the caller's mapping is not changed
