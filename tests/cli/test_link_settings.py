"""The sentinel's link limits and per-principal quotas from FAME_* settings."""

from __future__ import annotations

import pytest

from fame._cli._settings import (
    SettingError,
    byte_setting,
    sentinel_link_limits,
    sentinel_quotas,
)
from fame.lowlevel import DEFAULT_LINK_BUFFER, DEFAULT_STALL_GRACE, LinkLimits, Quotas


def test_defaults_are_the_library_defaults() -> None:
    assert sentinel_link_limits({}) == LinkLimits()
    assert LinkLimits() == LinkLimits(buffer=DEFAULT_LINK_BUFFER, stall_grace=DEFAULT_STALL_GRACE)
    assert sentinel_quotas({}) == Quotas()


def test_every_limit_and_quota_has_its_setting() -> None:
    limits = sentinel_link_limits(
        {"FAME_SENTINEL_LINK_BUFFER": "2MiB", "FAME_SENTINEL_STALL_GRACE": "2.5"}
    )
    assert limits == LinkLimits(buffer=2 << 20, stall_grace=2.5)
    quotas = sentinel_quotas(
        {
            "FAME_QUOTA_REQUESTS_IN_FLIGHT": "10",
            "FAME_QUOTA_STREAMS": "11",
            "FAME_QUOTA_BINDINGS": "12",
            "FAME_QUOTA_ENROLLED_NODES": "13",
            "FAME_QUOTA_BYTES_QUEUED": "64k",
        }
    )
    assert quotas == Quotas(
        requests_in_flight=10, streams=11, bindings=12, enrolled_nodes=13, bytes_queued=65536
    )


def test_sizes_take_binary_units() -> None:
    for text, value in (("123", 123), ("1K", 1024), ("4 MiB", 4 << 20), ("1g", 1 << 30)):
        assert byte_setting({"B": text}, "B", 1) == value


@pytest.mark.parametrize("bad", ["0", "-1", "1.5M", "4 TB", "lots"])
def test_a_bad_size_names_the_variable(bad: str) -> None:
    with pytest.raises(SettingError) as info:
        sentinel_link_limits({"FAME_SENTINEL_LINK_BUFFER": bad})
    assert str(info.value).startswith("FAME_SENTINEL_LINK_BUFFER: expected a positive number")


def test_a_bad_quota_names_the_variable() -> None:
    with pytest.raises(SettingError) as info:
        sentinel_quotas({"FAME_QUOTA_STREAMS": "0"})
    assert str(info.value).startswith("FAME_QUOTA_STREAMS:")
    with pytest.raises(SettingError) as info:
        sentinel_link_limits({"FAME_SENTINEL_STALL_GRACE": "never"})
    assert str(info.value).startswith("FAME_SENTINEL_STALL_GRACE:")
