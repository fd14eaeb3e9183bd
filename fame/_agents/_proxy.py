"""Proxies: an agent's operations called as methods.

``node.proxy(address, AgentType)`` (or the proxy ``node.spawn`` returns)
turns attribute access into calls: ``await proxy.op(x=1)`` for a plain
operation, ``async for item in proxy.op()`` for a streaming one. The same
proxy works whether the agent is in this process or behind a sentinel,
because it only builds requests; the node decides where they go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ._agent import BaseAgent
from ._operation import OperationSpec
from ._stream import Stream

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["Proxy"]


class Proxy:
    """Calls an agent's operations as methods: ``await proxy.op(x=1)``.

    Every attribute is an operation. A plain one is awaited; a streaming
    one is iterated (``async for item in proxy.op()``). Without an agent
    type the proxy cannot tell which is which, so the returned call object
    supports both.
    """

    def __init__(
        self,
        node: Node,
        address: str,
        agent_type: type[BaseAgent] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        self._node = node
        self._address = address
        self._agent_type = agent_type
        self._timeout = timeout

    @property
    def address(self) -> str:
        return self._address

    def __repr__(self) -> str:
        kind = self._agent_type.__name__ if self._agent_type else "agent"
        return f"<Proxy {kind} at {self._address}>"

    def with_timeout(self, timeout: float) -> Proxy:
        """A proxy to the same agent whose calls have this deadline (seconds)."""
        return Proxy(self._node, self._address, self._agent_type, timeout=timeout)

    def __getattr__(self, name: str) -> Callable[..., _Call]:
        if name.startswith("_"):
            raise AttributeError(name)
        spec: OperationSpec | None = None
        if self._agent_type is not None and self._agent_type is not BaseAgent:
            spec = self._agent_type.operations.get(name)
            if spec is None:
                raise AttributeError(
                    f"{self._agent_type.__name__} at {self._address} has no operation {name!r}"
                )

        def call(*args: Any, **kwargs: Any) -> _Call:
            if spec is not None:
                kwargs = spec.bind(args, kwargs)
            elif args:
                raise TypeError(
                    f"{name}(): pass keyword arguments (this proxy does not know the signature)"
                )
            return _Call(self, name, kwargs, spec)

        call.__name__ = name
        return call


class _Call:
    """One call through a proxy: awaitable (plain) and async-iterable (streaming)."""

    __slots__ = ("_args", "_name", "_proxy", "_spec", "_stream")

    def __init__(
        self, proxy: Proxy, name: str, args: dict[str, Any], spec: OperationSpec | None
    ) -> None:
        self._proxy = proxy
        self._name = name
        self._args = args
        self._spec = spec
        self._stream: Stream | None = None

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        proxy = self._proxy
        result = await proxy._node.call(
            proxy._address, self._name, self._args, timeout=proxy._timeout
        )
        spec = self._spec
        if spec is not None and spec.result_type is not Any:
            return msgspec.convert(result, spec.result_type, strict=False)
        return result

    def _open(self) -> Stream:
        if self._stream is None:
            proxy = self._proxy
            item_type = self._spec.result_type if self._spec is not None else Any
            self._stream = proxy._node.open_stream(
                proxy._address,
                self._name,
                self._args,
                timeout=proxy._timeout,
                item_type=item_type,
            )
        return self._stream

    def __aiter__(self) -> Stream:
        return self._open()

    async def __aenter__(self) -> Stream:
        return self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()
