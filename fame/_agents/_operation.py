"""``@operation``: how an agent method becomes callable by message.

The decorator only marks the function. When a :class:`fame.BaseAgent`
subclass is created, every marked method is turned into an
:class:`OperationSpec`: a msgspec ``Struct`` type built from the method's
signature validates and converts the keyword arguments of each call, and
the return (or, for streams, the item) annotation validates results. A bad
argument gives the caller :class:`fame.InvalidArguments` naming the
parameter, before the method runs.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import msgspec

from .._core._errors import InvalidArguments, quoted

__all__ = ["OperationSpec", "operation"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__fame_operation__"

PLAIN: frozenset[Any] = frozenset({int, str, float, bool, bytes, type(None)})
"""Types whose exact instances msgspec's ``convert`` returns unchanged (so it may be skipped)."""

_MISSING = object()


@attrs.frozen
class _Mark:
    streaming: bool
    errors: tuple[type[BaseException], ...]
    name: str | None
    idempotent: bool = False
    deduplicated: bool = False


@typing.overload
def operation(fn: F, /) -> F: ...
@typing.overload
def operation(
    *,
    streaming: bool = False,
    errors: tuple[type[BaseException], ...] = (),
    name: str | None = None,
    idempotent: bool = False,
    deduplicated: bool = False,
) -> Callable[[F], F]: ...


def operation(
    fn: Any = None,
    /,
    *,
    streaming: bool = False,
    errors: tuple[type[BaseException], ...] = (),
    name: str | None = None,
    idempotent: bool = False,
    deduplicated: bool = False,
) -> Any:
    """Mark an agent method as an operation callable by message.

    ``@operation`` for an ``async def`` returning a value;
    ``@operation(streaming=True)`` for an async generator whose items are
    streamed to the caller. ``errors`` lists exception types that are part
    of the operation's contract: the caller gets them as
    :class:`fame.OperationFailed` and the agent keeps running. Any other
    exception is a crash: the caller gets :class:`fame.ActorCrashed` and the
    agent is restarted by its supervisor. ``name`` overrides the wire name.

    What a caller's runtime may do when an answer is lost (the request may
    have run) depends on two declarations. ``idempotent=True``: running it
    twice has the effect of running it once (a read, a set to a fixed
    value), so it is sent again freely. ``deduplicated=True``: it applies a
    repeated request id once and answers the original result (it passes
    :func:`fame.security.request_key` to its store's writes), so it is sent again
    with the same id. Neither: a lost answer raises
    :class:`fame.errors.RequestLost` and nothing is sent again.
    """
    mark = _Mark(
        streaming=streaming,
        errors=tuple(errors),
        name=name,
        idempotent=idempotent,
        deduplicated=deduplicated,
    )

    def decorate(func: F) -> F:
        if streaming and not inspect.isasyncgenfunction(func):
            raise TypeError(f"@operation(streaming=True) needs an async generator: {func!r}")
        if not streaming and not inspect.iscoroutinefunction(func):
            kind = "an async generator" if inspect.isasyncgenfunction(func) else "not async"
            raise TypeError(
                f"@operation needs an 'async def' method, {func.__qualname__} is {kind}"
                + (" (use @operation(streaming=True))" if kind.startswith("an") else "")
            )
        setattr(func, _MARK, mark)
        return func

    return decorate(fn) if fn is not None else decorate


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


@attrs.frozen
class OperationSpec:
    """Everything needed to call one operation with untrusted arguments."""

    name: str
    function: Callable[..., Any]
    streaming: bool
    errors: tuple[type[BaseException], ...]
    params: tuple[str, ...]
    required: frozenset[str]
    param_types: dict[str, Any]
    args_type: type[msgspec.Struct]
    result_type: Any
    idempotent: bool = False
    deduplicated: bool = False
    plain_args: tuple[tuple[str, Any], ...] | None = None
    """Each parameter with its type, if all are required and of a :data:`PLAIN` type."""
    result_box: type[msgspec.Struct] | None = None
    """A one-field struct of ``result_type`` (see :meth:`convert_result`), or None."""
    plain_result: Any = None
    """The result type if it is a :data:`PLAIN` one: a result exactly of it needs no conversion."""

    @property
    def retry_safe(self) -> bool:
        """Whether a call whose answer was lost may be sent again (same request id)."""
        return self.idempotent or self.deduplicated

    @classmethod
    def from_function(cls, attr_name: str, func: Callable[..., Any], owner: type) -> OperationSpec:
        mark: _Mark = getattr(func, _MARK)
        hints = typing.get_type_hints(func, include_extras=True)
        signature = inspect.signature(func)
        fields: list[Any] = []
        params: list[str] = []
        required: set[str] = set()
        param_types: dict[str, Any] = {}
        for index, param in enumerate(signature.parameters.values()):
            if index == 0:
                continue  # self
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"operation {func.__qualname__} may not take *args or **kwargs")
            annotation = hints.get(param.name, Any)
            param_types[param.name] = annotation
            if param.default is inspect.Parameter.empty:
                fields.append((param.name, annotation))
                required.add(param.name)
            else:
                fields.append((param.name, annotation, param.default))
            params.append(param.name)
        args_type = msgspec.defstruct(
            f"{owner.__name__}.{attr_name}.args", fields, forbid_unknown_fields=True, kw_only=True
        )
        result = hints.get("return", Any)
        if mark.streaming:
            result = _item_type(result)
        all_plain = required == set(params) and all(param_types[n] in PLAIN for n in params)
        plain = tuple((name, param_types[name]) for name in params) if all_plain else None
        box = None
        if not (result is Any or result in PLAIN or _is_struct(result)):
            box = msgspec.defstruct(
                f"{owner.__name__}.{attr_name}.result", [("value", result)], array_like=True
            )
        return cls(
            name=mark.name or attr_name,
            function=func,
            streaming=mark.streaming,
            errors=mark.errors,
            params=tuple(params),
            required=frozenset(required),
            param_types=param_types,
            args_type=args_type,
            result_type=result,
            idempotent=mark.idempotent,
            deduplicated=mark.deduplicated,
            plain_args=plain,
            result_box=box,
            plain_result=result if result in PLAIN else None,
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Turn a proxy call's positional and keyword arguments into keywords."""
        if len(args) > len(self.params):
            raise TypeError(
                f"{self.name}() takes {len(self.params)} arguments but {len(args)} were given"
            )
        if not args:
            return kwargs  # a fresh dict of the call's own: nothing to add or check
        bound = dict(zip(self.params, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            bound[key] = value
        return bound

    def convert_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate and convert call arguments; raise :class:`fame.InvalidArguments`.

        Arguments that are exactly of their parameters' plain types (see
        :data:`PLAIN`) are already what the conversion would give: they are
        taken as they are, without building the ``args_type`` struct.
        """
        plain = self.plain_args
        if plain is not None and type(args) is dict and len(args) == len(plain):
            for name, kind in plain:
                if type(args.get(name, _MISSING)) is not kind:
                    break
            else:
                return args
        try:
            converted = msgspec.convert(args, self.args_type, strict=False)
        except msgspec.ValidationError:
            raise InvalidArguments(self._explain(args)) from None
        return {name: getattr(converted, name) for name in self.params}

    def convert_result(self, value: Any) -> Any:
        """Validate a result (or stream item) against the annotation.

        A result type that is not a class (``tuple[str, Record]``, a union)
        is converted as the one field of :attr:`result_box`: msgspec keeps
        what it learnt about a struct's fields, but works out a bare
        ``tuple[...]`` again on every call (about 4x the time, for every
        item of a stream). A value that does not fit is converted again the
        plain way, so that it fails exactly as it always did.
        """
        result_type = self.result_type
        if result_type is Any or (type(value) is result_type and result_type in PLAIN):
            return value  # what the conversion would return
        box = self.result_box
        if box is not None:
            try:
                return msgspec.convert((value,), box, strict=False).value  # type: ignore[attr-defined]
            except (msgspec.ValidationError, TypeError):
                pass
        return msgspec.convert(value, self.result_type, strict=False)

    def _explain(self, args: Any) -> str:
        """Say which argument is wrong, from fame's own checks.

        The failed conversion is redone one parameter at a time, so the
        message never depends on the wording of msgspec's errors.
        """
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            return f"{self.name}(): arguments must be a map of parameter names to values"
        if unknown := sorted(set(args) - set(self.params)):
            return f"{self.name}(): unexpected argument {quoted(unknown[0])}"
        if missing := [name for name in self.params if name in self.required - set(args)]:
            return f"{self.name}(): missing required argument {missing[0]!r}"
        for name in self.params:
            if name not in args:
                continue
            expected = self.param_types[name]
            try:
                msgspec.convert(args[name], expected, strict=False)
            except msgspec.ValidationError:
                return (
                    f"{self.name}(): invalid argument {name!r}: expected {_type_name(expected)},"
                    f" got {type(args[name]).__name__}"
                )
        return f"{self.name}(): invalid arguments"


def _type_name(annotation: Any) -> str:
    """A short, readable name of a type annotation for an error message."""
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _item_type(annotation: Any) -> Any:
    """``AsyncIterator[T]`` / ``AsyncGenerator[T, None]`` -> ``T``."""
    origin = typing.get_origin(annotation)
    if origin in (
        collections.abc.AsyncIterator,
        collections.abc.AsyncGenerator,
        collections.abc.AsyncIterable,
    ):
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return Any


def collect_operations(owner: type) -> dict[str, OperationSpec]:
    """Every operation of an agent class, by wire name, inherited ones included."""
    specs: dict[str, OperationSpec] = {}
    for klass in reversed(owner.__mro__):
        for attr_name, value in vars(klass).items():
            if hasattr(value, _MARK):
                spec = OperationSpec.from_function(attr_name, value, owner)
                specs[spec.name] = spec
    return specs
