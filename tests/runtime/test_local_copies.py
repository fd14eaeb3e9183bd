"""Local calls behave like remote ones: caller and agent never share a mutable object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import fame
from fame._wire._schema import Envelope, Request

PROVIDER = object()


class Tag(msgspec.Struct):
    name: str
    labels: list[str]


class Keeper(fame.BaseAgent):
    """Returns its own state, and keeps what it is given, as careless agents do."""

    def __init__(self) -> None:
        self.names = ["a"]
        self.counts = {"a": 1}
        self.tag = Tag("t", ["x"])
        self.kept: list[str] = []
        self.kept_tag: Tag | None = None

    @fame.operation
    async def get_names(self) -> list[str]:
        return self.names

    @fame.operation
    async def get_counts(self) -> dict[str, int]:
        return self.counts

    @fame.operation
    async def get_tag(self) -> Tag:
        return self.tag

    @fame.operation
    async def keep(self, names: list[str], tag: Tag) -> None:
        self.kept = names
        self.kept_tag = tag

    @fame.operation(streaming=True)
    async def tags(self) -> AsyncIterator[Tag]:
        yield self.tag

    @fame.operation
    async def untyped(self) -> Any:
        return self.names


async def test_mutating_a_result_does_not_change_the_agent() -> None:
    agent = Keeper()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        keeper = await node.spawn(agent, "keeper@local")
        names = await keeper.get_names()
        names.append("mine")
        counts = await keeper.get_counts()
        counts["a"] = 99
        tag = await keeper.get_tag()
        assert isinstance(tag, Tag)
        tag.labels.append("mine")
        tag.name = "changed"
        untyped = await node.call("keeper@local", "untyped", {})
        untyped.append("mine")
        async for item in keeper.tags():
            item.labels.append("streamed")
        assert agent.names == ["a"]
        assert agent.counts == {"a": 1}
        assert agent.tag == Tag("t", ["x"])
        assert await keeper.get_names() == ["a"]


async def test_mutating_an_argument_after_the_call_does_not_change_the_agent() -> None:
    agent = Keeper()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        keeper = await node.spawn(agent, "keeper@local")
        names = ["n"]
        tag = Tag("mine", ["y"])
        await keeper.keep(names=names, tag=tag)
        names.append("later")
        tag.labels.append("later")
        assert agent.kept == ["n"]
        assert agent.kept_tag == Tag("mine", ["y"])
        assert agent.kept_tag is not tag


async def test_a_local_result_the_wire_cannot_carry_fails_as_a_remote_one_would() -> None:
    class Leaky(fame.BaseAgent):
        @fame.operation
        async def handle(self) -> Any:
            return object()  # no wire form

    async with fame.open_node(storage_provider=PROVIDER) as node:
        leaky = await node.spawn(Leaky(), "leaky@local")
        with pytest.raises(fame.errors.ProtocolError, match="cannot be sent"):
            await leaky.handle()


def test_wire_messages_are_frozen() -> None:
    envelope = Envelope(0, "a@b", 1, Request("op", {}), None, None)
    with pytest.raises(AttributeError):
        envelope.to = "c@d"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        envelope.frame.op = "other"  # type: ignore[union-attr,misc]
