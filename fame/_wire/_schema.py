"""The wire schema: every message fame sends, as tagged ``msgspec.Struct`` s.

One websocket message carries one :data:`LinkMessage` (or a :class:`Batch`
of them, each encoded on its own): either an
:class:`Envelope` (routed by address between actors) or a link frame that
only concerns the two ends of one connection (handshake, binding,
heartbeat). Envelopes carry one :data:`Frame` (request, reply, stream item,
...).

All structs are ``array_like``: a message is a msgpack array whose first
element is the tag. This keeps messages small and lets a router read the
routing header (:class:`RoutingHeader`) without decoding the frame, and
bump the hop count in place (:func:`bump_hops`) without re-encoding:
element 1 of an envelope is the hop count, a msgpack positive fixint at
byte offset 3 (``0x9N 0xa1 'e' hops``), because hops never exceed
:data:`MAX_HOPS`.

The same structs are used in-process without encoding, so a local call and
a remote one go through exactly the same code.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from .._core._errors import WireError
from .._core._tracing import TRACEPARENT_LENGTH, TRACEPARENT_PATTERN

__all__ = [
    "ANSWER_FRAME_TAGS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FINAL_FRAME_TAGS",
    "MAX_HOPS",
    "MAX_REQUEST_ID",
    "PROTOCOL_VERSION",
    "REPLY_FRAME_TAGS",
    "Attach",
    "Batch",
    "Bind",
    "BindRefused",
    "Bound",
    "Cancel",
    "Challenge",
    "Codec",
    "Credit",
    "Envelope",
    "Error",
    "Frame",
    "LinkError",
    "LinkMessage",
    "Ping",
    "Pong",
    "Refused",
    "Reply",
    "Request",
    "RequestId",
    "RoutingHeader",
    "StreamEnd",
    "StreamItem",
    "StreamItems",
    "TraceParent",
    "Unbind",
    "Welcome",
    "bump_hops",
    "challenge_payload",
    "check_request_id",
    "frame_tag",
    "peek_version",
    "request_head",
    "stamp_caller",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
"""Largest encoded message accepted by default (1 MiB)."""

MAX_HOPS: Final = 16
"""Routers drop an envelope that has been forwarded this many times."""

PROTOCOL_VERSION: Final = 2
"""The version of the fame wire protocol this code speaks.

:class:`Challenge` and :class:`Attach` carry it, so that two ends that
speak different versions refuse each other with one line naming both
instead of misreading each other's frames. Version 0 stands for a peer
from before the protocol was versioned (its frames have no such field).
The field is the last one of both frames in version 1, and every later
version keeps it at the same position (see :func:`peek_version`).
"""


MAX_REQUEST_ID: Final = 64
"""Longest request id accepted, in characters (the runtime makes 22)."""

RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID)]
"""A caller's id for one call, the same across its retries: 1 to 64 characters."""


def check_request_id(request_id: object) -> str:
    """``request_id`` if it is one (a str of 1 to 64 characters), else :class:`ValueError`."""
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise ValueError(
            f"a request id is a str of 1 to {MAX_REQUEST_ID} characters, got {request_id!r:.100}"
        )
    return request_id


TraceParent = Annotated[
    str,
    msgspec.Meta(
        min_length=TRACEPARENT_LENGTH, max_length=TRACEPARENT_LENGTH, pattern=TRACEPARENT_PATTERN
    ),
]
"""A W3C ``traceparent``: ``00-<trace id>-<parent span id>-<flags>``, lowercase hex."""


class _Msg(msgspec.Struct, array_like=True, omit_defaults=False, frozen=True):
    """Frozen: a message never changes once made, so queues, routers and traces share it safely."""


# --- frames carried inside an envelope ------------------------------------------------


class Request(_Msg, tag="req", frozen=True):
    """Call operation ``op`` with keyword ``args``.

    ``stream`` asks for a streaming operation; ``credit`` is then the number
    of items the caller is ready to receive before it sends more
    :class:`Credit`. ``timeout_ms`` is the caller's remaining deadline, so
    the callee can give up on work nobody waits for. ``credit_bytes`` is
    the stream's initial byte credit: the producer sends while it has item
    credit *and* byte credit (always one item when the byte credit is
    positive); ``None`` (an older caller) sets no byte limit.

    ``request_id`` is chosen by the caller and stays the same when the
    call is sent again (:data:`RequestId`): a callee that deduplicates
    writes keys them by it, scoped by the caller's verified principal, so a
    retry applies once and gets the original answer. ``None``: an older
    caller, or a request nobody retries.

    ``once`` (a told message, ``node.tell``): the receiving node
    deduplicates the request through its inbox by ``request_id`` scoped by
    the verified caller, so a message its sender's outbox sends again runs
    once (a duplicate is acknowledged without running). ``False`` (an older
    caller, or a plain call): no inbox is consulted.

    ``trace`` is the caller's span as a W3C ``traceparent``
    (:data:`TraceParent`) when the caller traces with OpenTelemetry, so the
    callee's spans join the caller's trace; ``None`` (tracing off, or an
    older caller): one ``nil`` byte. Anything else is a malformed request.

    ``batch`` (a stream): the most items the consumer takes in one
    :class:`StreamItems` frame; 0 or 1 (an older caller): one
    :class:`StreamItem` per item.
    """

    op: str
    args: dict[str, Any]
    stream: bool = False
    credit: int = 0
    timeout_ms: int | None = None
    credit_bytes: int | None = None
    request_id: RequestId | None = None
    once: bool = False
    trace: TraceParent | None = None
    batch: int = 0


class Reply(_Msg, tag="rep", frozen=True):
    """The result of a plain request."""

    result: Any


class StreamItem(_Msg, tag="item", frozen=True):
    """One item of a streaming operation, consuming one credit.

    ``size`` is the encoded size of ``item`` in bytes, as the producer
    counted it against its byte credit: the consumer grants it back once
    the item is consumed (0: an older producer, which counts no bytes).
    """

    item: Any
    size: int = 0


class StreamItems(_Msg, tag="items", frozen=True):
    """Several items of a streaming operation, each consuming one credit, in order.

    Only for a consumer that asked for them (``Request.batch``). Each item
    is its encoded bytes as the producer counted them against its byte
    credit: the consumer decodes it when it hands it over and grants its
    length back once it is consumed. A producer puts in one frame the items
    that are ready when it sends, never waiting for more.
    """

    items: list[msgspec.Raw]


class StreamEnd(_Msg, tag="end", frozen=True):
    """The streaming operation finished normally."""


class Credit(_Msg, tag="credit", frozen=True):
    """The consumer of a stream is ready for ``n`` more items and ``bytes`` more bytes."""

    n: int
    bytes: int = 0


class Cancel(_Msg, tag="cancel", frozen=True):
    """The caller gave up on a request or stream; the callee stops it."""

    reason: str = ""


class Error(_Msg, tag="err", frozen=True):
    """A request failed. ``kind`` names the :class:`fame.RemoteError` subclass.

    ``traceback`` is the crash's traceback as text for an ``actor_crashed``
    error (bounded, see ``fame._core._actor.crash_traceback``), else ``None``.
    """

    kind: str
    message: str
    actor: str | None = None
    exc_type: str | None = None
    traceback: str | None = None


Frame = Request | Reply | StreamItem | StreamItems | StreamEnd | Credit | Cancel | Error


class Envelope(_Msg, tag="e", frozen=True):
    """A routed message: ``frame`` for the actor at address ``to``.

    ``id`` is unique per sending node and only serves tracing. Replies to
    a request go to ``reply_to`` and carry the request's ``corr``; stream
    items, credits and cancels of one stream share the request's ``corr``.

    ``caller`` is who made a request, as the sentinel verified it
    (``"client:default"``, ``"node:agent"``): the sentinel writes it into
    every request it forwards (:func:`stamp_caller`) and refuses any
    envelope that arrives with one. None for calls inside one node.
    """

    hops: int
    to: str
    id: int
    frame: Frame
    reply_to: str | None = None
    corr: int | None = None
    caller: str | None = None


class RoutingHeader(_Msg, tag="e", frozen=True):
    """An :class:`Envelope` as a router decodes it: the frame stays raw bytes.

    ``frame`` is the undecoded frame (see :func:`frame_tag`); ``reply_to``
    and ``corr`` let a router answer requests whose target went away.
    """

    hops: int
    to: str
    id: int
    frame: msgspec.Raw
    reply_to: str | None = None
    corr: int | None = None
    caller: str | None = None


class _FrameTag(msgspec.Struct, array_like=True, frozen=True):
    tag: str


_frame_tag_decoder = msgspec.msgpack.Decoder(_FrameTag)

FINAL_FRAME_TAGS: Final = frozenset({"rep", "end", "err"})
"""Tags of the frames that end a request: after one, nothing more answers it."""

ANSWER_FRAME_TAGS: Final = frozenset({"rep", "item", "items", "end", "err"})
"""Tags of the frames that answer a request (they travel back to its caller)."""

REPLY_FRAME_TAGS: Final = frozenset({"req", "credit", "cancel"})
"""Tags of the only frames an envelope may carry with a ``reply_to``.

A request names where its answers go; a stream's credit and cancel name
the stream by its caller's ``(reply_to, corr)``. Any other frame with a
``reply_to`` is a protocol violation.
"""


class _RequestHead(msgspec.Struct, array_like=True, frozen=True, tag="req"):
    op: str
    args: msgspec.Raw = msgspec.Raw(b"")
    stream: bool = False
    # Skipped undecoded, up to ``trace``: a router checks it (a peer's hostile input
    # must not reach the callee's node, which would drop the whole message).
    credit: msgspec.Raw = msgspec.Raw(b"")
    timeout_ms: msgspec.Raw = msgspec.Raw(b"")
    credit_bytes: msgspec.Raw = msgspec.Raw(b"")
    request_id: msgspec.Raw = msgspec.Raw(b"")
    once: msgspec.Raw = msgspec.Raw(b"")
    trace: TraceParent | None = None


_request_head_decoder = msgspec.msgpack.Decoder(_RequestHead)


def request_head(frame: msgspec.Raw) -> tuple[str, bool]:
    """The operation name of an undecoded request frame and whether it asks for a stream.

    What a router needs (its policy checks the operation, its quotas count
    streams), in one decode that leaves the arguments undecoded. A
    malformed ``trace`` makes the request malformed.
    """
    try:
        head = _request_head_decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WireError(f"malformed request: {exc}") from None
    return head.op, head.stream


def frame_tag(frame: msgspec.Raw) -> str:
    """The tag of an undecoded frame (``"req"``, ``"rep"``, ...), decoding nothing else."""
    try:
        return _frame_tag_decoder.decode(frame).tag
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # msgspec reports a tag that is not UTF-8 as UnicodeDecodeError, not DecodeError.
        raise WireError(f"malformed frame: {exc}") from None


# --- link frames: between the two ends of one connection ------------------------------


class Challenge(_Msg, tag="challenge", frozen=True):
    """Sentinel to node, first message on a connection: prove who you are over ``nonce``.

    ``version`` is the sentinel's :data:`PROTOCOL_VERSION` (0: a sentinel
    from before versioning, whose challenge has no such field). ``keys``
    are the sentinel's Ed25519 public keys and ``signatures`` their
    signatures of :func:`challenge_payload` (one per key: during a
    rotation the sentinel signs with the old key and the new one). A node
    sends nothing before one of them verifies under a key it trusts.
    """

    nonce: bytes
    sentinel_id: str
    version: int = 0
    keys: list[bytes] = []
    signatures: list[bytes] = []


class Attach(_Msg, tag="attach", frozen=True):
    """Node to sentinel: who I am and proof of my credentials; no secret travels.

    ``role`` is ``"node"`` (admitted by its enrolled ``public_key``) or
    ``"client"`` (admitted by a client credential, ephemeral: it binds
    nothing). ``signature`` is the Ed25519 signature by ``public_key`` of
    :func:`attach_proof_payload`; ``proof`` is the HMAC of the same payload
    keyed by the client credential's token (:func:`fame._protocol._credentials.token_proof`),
    empty for a node that has none. ``version`` is the node's
    :data:`PROTOCOL_VERSION`, at the same index as in every version.
    """

    node_id: str
    public_key: bytes
    proof: bytes
    signature: bytes
    role: str = "node"
    version: int = 0


class Welcome(_Msg, tag="welcome", frozen=True):
    """Sentinel to node: admitted; ``path`` is the node's own path.

    ``heartbeat_ms`` is the sentinel's heartbeat interval: the node pings at
    this rate, and each side declares the other dead after three silent
    intervals.
    """

    node_id: str
    path: str
    heartbeat_ms: int = 5000


class Refused(_Msg, tag="refused", frozen=True):
    """Sentinel to node: not admitted, with the reason. The link closes."""

    reason: str


class Bind(_Msg, tag="bind", frozen=True):
    """Node to sentinel: route ``addresses`` to me (``pool``: shared)."""

    addresses: list[str]
    pool: bool = False


class Bound(_Msg, tag="bound", frozen=True):
    """Sentinel to node: ``address`` now routes to the node."""

    address: str


class BindRefused(_Msg, tag="bind_refused", frozen=True):
    """Sentinel to node: ``address`` was not bound, and why."""

    address: str
    reason: str


class Unbind(_Msg, tag="unbind", frozen=True):
    """Node to sentinel: stop routing ``addresses`` to me."""

    addresses: list[str]


class Ping(_Msg, tag="ping", frozen=True):
    """Heartbeat; the peer answers with a :class:`Pong` of the same nonce."""

    nonce: int


class Pong(_Msg, tag="pong", frozen=True):
    nonce: int


class Batch(_Msg, tag="batch", frozen=True):
    """Several encoded link messages in one websocket message.

    A link's writer sends what queued up while it was busy as one batch, so
    a stream of small items costs one websocket frame (and one system call)
    per batch rather than per item. Each element is the encoded message
    exactly as it would have been sent alone, so a router forwards elements
    without re-encoding them. Batches do not nest.
    """

    messages: list[bytes]


class LinkError(_Msg, tag="link_error", frozen=True):
    """The peer sent something the protocol does not allow; ``reason`` says what."""

    reason: str


_LinkFrame = (
    Challenge
    | Attach
    | Welcome
    | Refused
    | Bind
    | Bound
    | BindRefused
    | Unbind
    | Ping
    | Pong
    | Batch
    | LinkError
)
LinkMessage = Envelope | _LinkFrame

_HOPS_OFFSET: Final = 3


def _enc_hook(obj: Any) -> Any:
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


class Codec:
    """Encode and decode link messages with a maximum size.

    Every failure, whether the message is too large, not msgpack, or of the
    wrong shape, raises :class:`fame.WireError` with a reason fit to send
    back to the peer.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_size < 64:
            raise ValueError("max_size must be at least 64 bytes")
        self.max_size = max_size
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._decoder = msgspec.msgpack.Decoder(LinkMessage)
        self._header_decoder = msgspec.msgpack.Decoder(RoutingHeader | _LinkFrame)

    def encode(self, message: LinkMessage) -> bytes:
        try:
            data = self._encoder.encode(message)
        except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
            raise WireError(
                f"cannot encode {type(message).__name__}: {exc}", code="unencodable"
            ) from None
        if len(data) > self.max_size:
            raise WireError(
                f"message of {len(data)} bytes exceeds the limit of {self.max_size} bytes",
                code="too_large",
            )
        return data

    def decode(self, data: bytes) -> LinkMessage:
        self._check_size(data)
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise WireError(f"malformed message: {exc}") from None

    def decode_header(self, data: bytes) -> RoutingHeader | LinkMessage:
        """Decode just enough to route: the header of an envelope, or a link frame whole."""
        self._check_size(data)
        try:
            message = self._header_decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise WireError(f"malformed message: {exc}") from None
        if isinstance(message, RoutingHeader) and not 0 <= message.hops <= MAX_HOPS:
            raise WireError(f"hop count {message.hops} is outside 0..{MAX_HOPS}", code="hop_limit")
        return message

    def _check_size(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WireError(
                f"expected a binary message, got {type(data).__name__}", code="not_binary"
            )
        if len(data) > self.max_size:
            raise WireError(
                f"message of {len(data)} bytes exceeds the limit of {self.max_size} bytes",
                code="too_large",
            )


def bump_hops(data: bytes) -> bytes:
    """Return the encoded envelope ``data`` with its hop count raised by one.

    Raises :class:`fame.WireError` if the envelope already made
    :data:`MAX_HOPS` hops (a routing loop) or is not an encoded envelope.
    """
    if len(data) <= _HOPS_OFFSET or data[1:3] != b"\xa1e" or (data[0] & 0xF0) != 0x90:
        raise WireError("not an encoded envelope", code="not_an_envelope")
    hops = data[_HOPS_OFFSET]
    if hops >= MAX_HOPS:
        raise WireError(
            f"envelope exceeded the hop limit of {MAX_HOPS} (routing loop?)", code="hop_limit"
        )
    return b"".join((data[:_HOPS_OFFSET], bytes((hops + 1,)), data[_HOPS_OFFSET + 1 :]))


_ENVELOPE_ARRAY: Final = 0x98  # msgpack fixarray of 8: the tag and the seven fields
_NIL: Final = 0xC0


def stamp_caller(data: bytes, caller: str) -> bytes:
    """The encoded envelope ``data`` with ``caller`` written into its empty last field.

    ``caller`` is the envelope's last element, so it is the last bytes of
    the message: a ``nil`` (one byte) is replaced without re-encoding the
    frame. Raises :class:`fame.WireError` unless ``data`` has exactly the
    envelope's elements and an empty ``caller``: the sentinel refuses
    envelopes whose sender wrote one.
    """
    if len(data) < 2 or data[0] != _ENVELOPE_ARRAY or data[-1] != _NIL:
        raise WireError(
            "an envelope has exactly eight elements and no caller: the sentinel writes it",
            code="not_an_envelope",
        )
    return data[:-1] + msgspec.msgpack.encode(caller)


_VERSION_INDEX: Final = {"challenge": 3, "attach": 6}
"""Where :data:`PROTOCOL_VERSION` sits in each handshake frame (the tag is element 0)."""

_raw_elements = msgspec.msgpack.Decoder(list[msgspec.Raw])


def peek_version(data: bytes, tag: str) -> int | None:
    """The protocol version of an encoded ``tag`` frame this code cannot decode otherwise.

    A peer of another version may send a :class:`Challenge` or an
    :class:`Attach` of another shape; the version is still at its index
    (:data:`_VERSION_INDEX`), so the two ends can name each other's
    version. A ``tag`` frame of the arity from before versioning (one
    element short of the field) is version 0. Returns None for anything that is not a ``tag`` frame,
    or has something else than an integer at that index: a malformed
    message.
    Never raises.
    """
    index = _VERSION_INDEX[tag]
    try:
        elements = _raw_elements.decode(data)
        if not elements or msgspec.msgpack.decode(elements[0]) != tag:
            return None
        if len(elements) == index:
            return 0  # the arity from before versioning: no version field at all
        if len(elements) < index:
            return None
        version = msgspec.msgpack.decode(elements[index])
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, TypeError):
        return None
    if type(version) is not int:
        return None
    return version


def attach_proof_payload(
    nonce: bytes, sentinel_id: str, node_id: str, role: str, public_key: bytes
) -> bytes:
    """The bytes a node signs (and MACs with its client token) to attach.

    They bind the proof to this connection's nonce, this sentinel, this id,
    this role and this key: a proof seen once is worth nothing elsewhere.
    """
    return b"\x00".join(
        (
            b"fame/attach/v2",
            nonce,
            sentinel_id.encode(),
            node_id.encode(),
            role.encode(),
            public_key,
        )
    )


def challenge_payload(nonce: bytes, sentinel_id: str, version: int) -> bytes:
    """The bytes the sentinel signs with each of its keys in a :class:`Challenge`."""
    return b"\x00".join((b"fame/challenge/v2", nonce, sentinel_id.encode(), str(version).encode()))
