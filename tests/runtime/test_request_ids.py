"""Request ids: chosen by the caller, the same across retries, scoped by the verified caller."""

from __future__ import annotations

import msgspec
import pytest
import trio

import fame
from fame._wire._schema import MAX_REQUEST_ID, Codec, Envelope, Request, check_request_id
from fame.errors import (
    InvalidArguments,
    MailboxFull,
    NoAnswerInTime,
    NoRoute,
    NotApplied,
    NotSentInTime,
    OutcomeUnknown,
    Overloaded,
    PermissionDenied,
    QuotaExceeded,
    RequestLost,
    UnknownOperation,
)
from fame.security import request_key

PROVIDER = object()


class Keys(fame.BaseAgent):
    """Answers with the request key its operation sees, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = trio.Event()

    @fame.operation
    async def key(self) -> str | None:
        self.calls += 1
        return request_key()

    @fame.operation(idempotent=True)
    async def read(self) -> int:
        return self.calls

    @fame.operation(deduplicated=True)
    async def write(self) -> int:
        self.calls += 1
        return self.calls

    @fame.operation
    async def hang(self) -> None:
        await self.release.wait()


async def test_every_call_carries_a_fresh_request_id_scoped_as_local() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(Keys(), "keys@local")
        first, second = await proxy.key(), await proxy.key()
        assert first is not None and second is not None and first != second
        for key in (first, second):
            principal_length, principal, request_id = key.split(":", 2)
            assert (principal_length, principal) == ("5", "local")
            assert len(request_id) == 28  # time order, then 68 random bits, in hex
            int(request_id, 16)
        assert first[8:19] <= second[8:19]  # milliseconds: the second is not earlier


async def test_a_chosen_request_id_reaches_the_operation_unchanged() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(Keys(), "keys@local")
        chosen = proxy.with_request_id("order-42")
        assert await chosen.key() == "5:local:order-42"
        assert await chosen.with_timeout(5).key() == "5:local:order-42"  # kept by with_timeout
        assert await proxy.key() != "5:local:order-42"  # the original proxy is unchanged


async def test_no_request_key_outside_an_operation() -> None:
    assert request_key() is None


@pytest.mark.parametrize("bad", ["", "x" * (MAX_REQUEST_ID + 1), 42, b"bytes"])
async def test_a_bad_request_id_is_refused_at_the_call_site(bad: object) -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(Keys(), "keys@local")
        with pytest.raises(ValueError, match="request id"):
            proxy.with_request_id(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="request id"):
            await node.call("keys@local", "key", {}, request_id=bad)  # type: ignore[arg-type]
    assert check_request_id("x" * MAX_REQUEST_ID) == "x" * MAX_REQUEST_ID


def test_a_request_id_past_the_limit_is_refused_by_the_codec() -> None:
    codec = Codec()
    fine = Envelope(0, "a@b", 1, Request("op", {}, request_id="x" * MAX_REQUEST_ID), "r@b", 1)
    assert codec.decode(codec.encode(fine)) == fine
    # Hand-made, as a hostile peer would: the struct itself does not check.
    long = msgspec.msgpack.encode(
        Envelope(0, "a@b", 1, Request("op", {}, request_id="x" * (MAX_REQUEST_ID + 1)), "r@b", 1)
    )
    with pytest.raises(fame.errors.WireError) as raised:
        codec.decode(long)
    assert raised.value.code == "malformed"


def test_each_error_says_whether_the_call_was_applied() -> None:
    for refused in (
        NoRoute,
        Overloaded,
        QuotaExceeded,
        PermissionDenied,
        InvalidArguments,
        UnknownOperation,
        MailboxFull,
    ):
        assert issubclass(refused, NotApplied) and not issubclass(refused, OutcomeUnknown)
    assert issubclass(NotSentInTime, NotApplied) and issubclass(
        NotSentInTime, fame.DeadlineExceeded
    )
    assert issubclass(NoAnswerInTime, OutcomeUnknown)
    assert issubclass(NoAnswerInTime, fame.DeadlineExceeded)
    assert issubclass(RequestLost, OutcomeUnknown) and issubclass(RequestLost, fame.RemoteError)


async def test_a_call_past_its_deadline_says_it_may_have_run() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent = Keys()
        proxy = await node.spawn(agent, "keys@local")
        with pytest.raises(NoAnswerInTime) as raised:
            await proxy.with_timeout(0.2).hang()
        assert "may have run" in str(raised.value)
        agent.release.set()


async def test_a_local_call_to_a_missing_address_fails_at_once_with_no_route() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        with trio.fail_after(5):  # a node without uplink: nothing can bring it back
            with pytest.raises(NoRoute):
                await node.call("nobody@local", "key", {}, timeout=60)


async def test_operations_declare_whether_a_lost_answer_may_be_retried() -> None:
    specs = Keys.operations
    assert not specs["key"].retry_safe
    assert specs["read"].idempotent and specs["read"].retry_safe
    assert specs["write"].deduplicated and specs["write"].retry_safe


def test_the_wire_kinds_of_no_route_and_request_lost_come_back_as_themselves() -> None:
    from fame._core._errors import remote_error

    for cls, kind in ((NoRoute, "no_route"), (RequestLost, "request_lost")):
        assert cls.kind == kind
        error = remote_error(kind, "why", actor="a@b")
        assert type(error) is cls and error.actor == "a@b"
