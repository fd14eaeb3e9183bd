"""Proxies: an agent's operations called as methods, typed or by name.

``node.proxy(address, AgentType)`` (or the proxy ``node.spawn`` returns)
offers two styles. The typed one names the operation by its function, so
a type checker sees the operation's own parameters and result, no plugin
needed::

    record = await proxy.call(StorageAgent.store_value, key="k", value="v")
    async for key, record in proxy.stream(StorageAgent.retrieve_all_values):
        ...

The attribute style sends any name: ``await proxy.store_value(key="k")``
for a plain operation, ``async for item in proxy.op()`` for a streaming
one. Both give coroutines Trio accepts, so ``nursery.start_soon(
proxy.store_value, "k", "v")`` and ``nursery.start_soon(proxy.call,
StorageAgent.store_value, "k", "v")`` work. The same proxy works whether
the agent is in this process or behind a sentinel, because it only builds
requests; the node decides where they go.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from .._wire._schema import check_request_id
from ._agent import BaseAgent
from ._caller import Caller  # what a proxy needs of a node: keeps the arrows one way
from ._operation import _MARK, OperationSpec
from ._stream import Stream

__all__ = ["AgentT", "Proxy"]

AgentT = TypeVar("AgentT", bound=BaseAgent, covariant=True)
"""The agent class a proxy calls (``Proxy[StorageAgent]``); ``Any`` when unknown."""

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Proxy(Generic[AgentT]):
    """Calls the operations of the agent at one address.

    ``await proxy.call(Agent.op, ...)`` and ``proxy.stream(Agent.op, ...)``
    are typed from the operation's signature; ``proxy.op(...)`` sends any
    name (awaited for a plain operation, iterated for a streaming one).
    Without an agent type the proxy cannot tell which is which, so the
    attribute-style call object supports both. An operation named like one
    of the proxy's own members (``call``, ``stream``, ``address``,
    ``with_timeout``) is reached through ``call`` or ``stream`` only.
    """

    def __init__(
        self,
        node: Caller,
        address: str,
        agent_type: type[AgentT] | None = None,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self._node = node
        self._address = address
        # A plain actor is registered as BaseAgent: it has no operations to check.
        self._agent_type = None if agent_type is BaseAgent else agent_type
        self._timeout = timeout
        self._request_id = None if request_id is None else check_request_id(request_id)
        # A node's own entry for proxies (a call returning its coroutine, the result
        # converted inside it): one coroutine frame less than awaiting node.call.
        self._call_converted: _CallConverted | None = getattr(node, "_call_converted", None)
        # The specs of the operations this proxy called (plain dict: the class-level
        # cache is weakly keyed, a lookup there costs a weakref and two calls).
        self._seen: dict[Callable[..., Any], OperationSpec] = {}

    @property
    def address(self) -> str:
        return self._address

    def __repr__(self) -> str:
        kind = self._agent_type.__name__ if self._agent_type else "agent"
        return f"<Proxy {kind} at {self._address}>"

    def with_timeout(self, timeout: float) -> Proxy[AgentT]:
        """A proxy to the same agent whose calls have this deadline (seconds)."""
        return Proxy(
            self._node,
            self._address,
            self._agent_type,
            timeout=timeout,
            request_id=self._request_id,
        )

    def with_request_id(self, request_id: str) -> Proxy[AgentT]:
        """A proxy whose calls carry ``request_id`` (1 to 64 characters) instead of a fresh one.

        For a program that retries a call itself, across its own restarts
        too: an operation that deduplicates by request id applies it once
        and answers every retry with the original result. Use a new id for
        each distinct call (a proxy from this is for one call and its
        retries).
        """
        return Proxy(
            self._node,
            self._address,
            self._agent_type,
            timeout=self._timeout,
            request_id=request_id,
        )

    # --- typed calls ----------------------------------------------------------------

    def call(
        self,
        operation: Callable[Concatenate[AgentT, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, R]:
        """Call plain ``operation`` (``Agent.op``, unbound) with these arguments.

        Returns a coroutine: await it, or hand ``proxy.call`` and the
        arguments to ``nursery.start_soon``. The operation is sent by its
        wire name (``@operation(name=...)`` respected). Raises
        :class:`TypeError` at once if ``operation`` is not a plain
        operation of this proxy's agent, or the arguments do not bind.
        """
        spec = self._seen.get(operation) or self._spec_of(operation)
        if spec.streaming:
            raise TypeError(
                f"{spec.name} is a streaming operation: use proxy.stream({_qualname(operation)})"
            )
        return _Call(self, spec.name, spec.bind(args, kwargs) if args else kwargs, spec)

    async def tell(
        self,
        operation: Callable[Concatenate[AgentT, P], Awaitable[Any]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> str:
        """Tell plain ``operation`` (``Agent.op``, unbound) these arguments; return the message id.

        Returns once the message is in this node's outbox, not when it is
        delivered: see :meth:`fame.Node.tell` (at-least-once delivery,
        applied once by the receiver's inbox, no order promised). The
        proxy's request id (``with_request_id``) is the message id if it
        has one. Raises :class:`TypeError` at once if ``operation`` is not
        a plain operation of this proxy's agent or the arguments do not
        bind; :class:`fame.errors.OutboxFull` if the outbox is full.
        """
        spec = self._spec_of(operation)
        if spec.streaming:
            raise TypeError(f"{spec.name} is a streaming operation: it cannot be told")
        return await self._node.tell(
            self._address, spec.name, spec.bind(args, kwargs), request_id=self._request_id
        )

    def stream(
        self,
        operation: Callable[Concatenate[AgentT, P], AsyncIterator[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Stream[T]:
        """Open streaming ``operation`` (``Agent.op``, unbound): iterate the result.

        Nothing is sent until the first item is asked for. Use it as
        ``async with`` (or call ``aclose()``) to stop early. Raises
        :class:`TypeError` at once if ``operation`` is not a streaming
        operation of this proxy's agent, or the arguments do not bind.
        """
        spec = self._spec_of(operation)
        if not spec.streaming:
            raise TypeError(
                f"{spec.name} is a plain operation: use await proxy.call({_qualname(operation)})"
            )
        return self._open(spec.name, spec.bind(args, kwargs), spec.result_type)

    def _spec_of(self, operation: Callable[..., Any]) -> OperationSpec:
        """The spec of ``operation`` as this proxy's agent serves it."""
        mark = getattr(operation, _MARK, None)
        if mark is None:
            raise TypeError(
                f"{_qualname(operation)} is not an operation (mark it with @fame.operation)"
            )
        agent_type = self._agent_type
        if agent_type is None:
            found = self._seen[operation] = _spec_from_function(operation)
            return found
        known = _typed_specs.get(agent_type)
        if known is None:
            known = _typed_specs[agent_type] = {}
        spec = known.get(operation)
        if spec is not None:
            self._seen[operation] = spec
            return spec
        # Found by identity in the class hierarchy, so that a same-named method of
        # another agent is refused and an overridden one is called by its wire name.
        for klass in agent_type.__mro__:
            for attr_name, value in vars(klass).items():
                if value is operation:
                    spec = agent_type.operations.get(mark.name or attr_name)
                    if spec is not None:
                        known[operation] = spec  # the search is done once per operation
                        self._seen[operation] = spec
                        return spec
        raise TypeError(f"{_qualname(operation)} is not an operation of {agent_type.__name__}")

    # --- calls by attribute ---------------------------------------------------------

    def __getattr__(self, name: str) -> Callable[..., _Call[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        spec: OperationSpec | None = None
        if self._agent_type is not None:
            spec = self._agent_type.operations.get(name)
            if spec is None:
                raise AttributeError(
                    f"{self._agent_type.__name__} at {self._address} has no operation {name!r}"
                )

        def call(*args: Any, **kwargs: Any) -> _Call[Any]:
            if args:  # keywords alone need no binding: they are checked by the agent
                if spec is None:
                    raise TypeError(
                        f"{name}(): pass keyword arguments (this proxy does not know the signature)"
                    )
                kwargs = spec.bind(args, kwargs)
            return _Call(self, name, kwargs, spec)

        call.__name__ = call.__qualname__ = name
        # Kept on the proxy: the next ``proxy.name`` is a plain attribute, not this again.
        self.__dict__[name] = call
        return call

    # --- the node's side --------------------------------------------------------------

    async def _result(self, name: str, args: dict[str, Any], spec: OperationSpec | None) -> Any:
        result = await self._node.call(
            self._address,
            name,
            args,
            timeout=self._timeout,
            request_id=self._request_id,
            retry_safe=spec is not None and spec.retry_safe,
        )
        if spec is not None:
            return spec.convert_result(result)
        return result

    def _open(self, name: str, args: dict[str, Any], item_type: Any) -> Stream[Any]:
        return self._node.open_stream(
            self._address, name, args, timeout=self._timeout, item_type=item_type
        )


class _Call(Coroutine[Any, Any, R]):
    """One call through a proxy: a coroutine (plain) that is also async-iterable (streaming).

    The arguments are bound when the call is made, so a mistake raises at
    the call site. Being a coroutine object is what lets Trio start it
    (``nursery.start_soon(proxy.op, ...)``); the request is sent only when
    the coroutine first runs, or, for a stream, when the first item is
    asked for. A call object that is never awaited sends nothing and, unlike
    an ``async def`` coroutine, owes no warning.
    """

    __slots__ = ("_args", "_coro", "_name", "_proxy", "_spec", "_stream")

    def __init__(
        self, proxy: Proxy[Any], name: str, args: dict[str, Any], spec: OperationSpec | None
    ) -> None:
        self._proxy = proxy
        self._name = name
        self._args = args
        self._spec = spec
        self._coro: Coroutine[Any, Any, R] | None = None
        self._stream: Stream[Any] | None = None

    def __repr__(self) -> str:
        return f"<call {self._name}() to {self._proxy.address}>"

    def _started(self) -> Coroutine[Any, Any, R]:
        """The call's coroutine, made on first use: the node's entry for proxies if it has one."""
        coro = self._coro
        if coro is not None:
            return coro
        proxy, spec = self._proxy, self._spec
        call_converted = proxy._call_converted
        if call_converted is None:
            coro = proxy._result(self._name, self._args, spec)
        elif spec is None:
            coro = call_converted(
                proxy._address, self._name, self._args, proxy._timeout, proxy._request_id
            )
        else:
            coro = call_converted(
                proxy._address,
                self._name,
                self._args,
                proxy._timeout,
                proxy._request_id,
                spec.idempotent or spec.deduplicated,  # spec.retry_safe
                spec.convert_result,
            )
        self._coro = coro
        return coro

    def __await__(self) -> Generator[Any, None, R]:
        return (self._coro or self._started()).__await__()

    def send(self, value: Any, /) -> Any:
        return self._started().send(value)

    def throw(
        self,
        typ: type[BaseException] | BaseException,
        val: object = None,
        tb: TracebackType | None = None,
        /,
    ) -> Any:
        if val is None and tb is None:
            return self._started().throw(typ)
        return self._started().throw(typ, val, tb)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def _open(self) -> Stream[Any]:
        if self._stream is None:
            item_type = self._spec.result_type if self._spec is not None else Any
            self._stream = self._proxy._open(self._name, self._args, item_type)
        return self._stream

    def __aiter__(self) -> Stream[Any]:
        return self._open()

    async def __aenter__(self) -> Stream[Any]:
        return self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()


class _CallConverted(Protocol):
    """``Node._call_converted``: :meth:`Caller.call` as a coroutine, its result converted."""

    def __call__(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float | None,
        request_id: str | None,
        retry_safe: bool = False,
        convert: Callable[[Any], Any] | None = None,
        /,
    ) -> Coroutine[Any, Any, Any]: ...


_specs: weakref.WeakKeyDictionary[Callable[..., Any], OperationSpec] = weakref.WeakKeyDictionary()

_typed_specs: weakref.WeakKeyDictionary[type, dict[Callable[..., Any], OperationSpec]] = (
    weakref.WeakKeyDictionary()
)
"""What ``proxy.call(Agent.op, ...)`` found for each agent class and function."""


def _spec_from_function(operation: Callable[..., Any]) -> OperationSpec:
    """The spec of an operation read from its function alone (for an untyped proxy)."""
    spec = _specs.get(operation)
    if spec is None:
        spec = OperationSpec.from_function(operation.__name__, operation, BaseAgent)
        _specs[operation] = spec
    return spec


def _qualname(function: object) -> str:
    return getattr(function, "__qualname__", repr(function))
