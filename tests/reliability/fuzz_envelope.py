"""Coverage-guided fuzzing (atheris) of what a sentinel does with a peer's bytes.

usage: python tests/reliability/fuzz_envelope.py [CORPUS_DIR] [libFuzzer flags, e.g. -runs=20000]

Each input is one peer's traffic. Its first byte picks what to fuzz:

- raw bytes into ``Codec.decode`` and ``Codec.decode_header``, then
  ``frame_tag`` and ``bump_hops`` on whatever decoded as a routing header;
- a structured message (a known tag followed by fuzzer-chosen msgpack
  values), so that type checking past the tag is reached, not only the
  msgpack parser;
- a sequence of length-prefixed frames fed, as the sentinel does, to a
  ``SentinelLink`` that has just sent its challenge and to one that is
  attached, and to a node's ``NodeHandshake``.

The only errors allowed out are the declared ones (``WireError`` from the
codec, ``AdmissionRefused``/``ProtocolError`` from the node's handshake),
and every frame a ``SentinelLink`` answers with must encode within the size
limit. Anything else is a crash: atheris prints it and exits non-zero.
``tests/reliability/test_fuzz_frames.py`` runs this for a bounded number
of inputs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["fame"]):
    import msgspec

    from fame._core._errors import AdmissionRefused, ProtocolError, WireError
    from fame._protocol import NodeHandshake, SentinelLink, SentinelPolicy
    from fame._protocol._credentials import ClientCredential
    from fame._protocol._identity import Identity
    from fame._protocol._route_table import RouteTable
    from fame._wire._schema import (
        PROTOCOL_VERSION,
        Attach,
        Batch,
        Bind,
        Challenge,
        Codec,
        Envelope,
        Ping,
        Reply,
        Request,
        RoutingHeader,
        Unbind,
        Welcome,
        bump_hops,
        frame_tag,
    )

TOKEN = "fuzz-token"
TAGS = [
    "e", "req", "rep", "item", "end", "credit", "cancel", "err", "challenge", "attach",
    "welcome", "refused", "bind", "bound", "bind_refused", "unbind", "ping", "pong",
    "batch", "link_error", "nope", "",
]  # fmt: skip
SMALL = Codec(max_size=4096)  # small, so that the size limit is fuzzed too
CODEC = Codec()
IDENTITY = Identity.generate()
NONCE = b"n" * 32


def _value(fdp: Any, depth: int = 0) -> Any:
    """A msgpack value of a fuzzer-chosen type (nested a little)."""
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**63), 2**64 - 1)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
    if kind == 5:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
    if kind == 6:
        return fdp.PickValueInList(TAGS)
    if kind == 7:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    if kind == 8:
        return {
            fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))
        }
    # A message nested inside: an envelope's frame, a batch's element.
    return [fdp.PickValueInList(TAGS), *(_value(fdp, depth + 1) for _ in range(3))]


def _structured(fdp: Any) -> bytes:
    message = [fdp.PickValueInList(TAGS)]
    message.extend(_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 8)))
    if fdp.ConsumeBool() and message[0] == "batch":
        message[1:] = [[msgspec.msgpack.encode(_value(fdp)) for _ in range(3)]]
    return msgspec.msgpack.encode(message)


def _decode(codec: Codec, data: bytes) -> None:
    for decode in (codec.decode, codec.decode_header):
        try:
            message = decode(data)
        except WireError as exc:
            assert exc.reason, "a WireError without a reason"
            continue
        if type(message) is RoutingHeader:
            with contextlib.suppress(WireError):
                frame_tag(message.frame)
            with contextlib.suppress(WireError):
                assert bump_hops(data)[3] == message.hops + 1


def _answers_fit(frames: list[Any]) -> None:
    for frame in frames:
        CODEC.encode(frame)  # a WireError here is a bug: the sentinel could not send it


def _feed(link: SentinelLink, node: NodeHandshake | None, data: bytes) -> None:
    """Handle one message as the sentinel's reader does (a batch's elements one by one)."""
    try:
        head = CODEC.decode_header(data)
    except WireError as exc:
        _answers_fit(link.undecodable(data, exc.reason))
        if node is not None and not node.attached:
            with contextlib.suppress(AdmissionRefused, ProtocolError):
                node.undecodable(data, exc.reason)
        return
    if type(head) is Batch:
        for item in head.messages[:8]:
            _feed(link, None, item)
        return
    if type(head) is RoutingHeader:
        return
    _answers_fit(link.receive(head))
    link.events.clear()
    if node is not None and not node.attached:
        with contextlib.suppress(AdmissionRefused, ProtocolError):
            node.receive(head)


def _links() -> tuple[SentinelLink, SentinelLink]:
    """A link that just sent its challenge, and one whose node attached properly."""
    policy = SentinelPolicy(
        "sentinel1",
        (ClientCredential("default", TOKEN),),
        {},
        RouteTable(),
        trust_on_first_use=True,
    )
    fresh = SentinelLink(policy, NONCE, max_strikes=10**6)
    fresh.start()
    attached = SentinelLink(policy, NONCE, max_strikes=10**6)
    attach = NodeHandshake(IDENTITY, TOKEN).receive(attached.start())
    [welcome] = attached.receive(attach)
    assert type(welcome) is Welcome
    attached.events.clear()
    return fresh, attached


def _frames(fdp: Any) -> list[bytes]:
    """Length-prefixed chunks, some replaced by well-formed frames with fuzzed fields."""
    frames: list[bytes] = []
    while fdp.remaining_bytes() and len(frames) < 16:
        choice = fdp.ConsumeIntInRange(0, 5)
        if choice == 0:
            frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
        elif choice == 1:
            frames.append(_structured(fdp))
        elif choice == 2:
            node_id = fdp.PickValueInList([IDENTITY.node_id, fdp.ConsumeUnicodeNoSurrogates(70)])
            attach = Attach(
                node_id,
                fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)),
                fdp.PickValueInList([TOKEN, fdp.ConsumeUnicodeNoSurrogates(20)]),
                fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70)),
                fdp.ConsumeBool(),
                fdp.PickValueInList([PROTOCOL_VERSION, fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)]),
            )
            frames.append(CODEC.encode(attach))
        elif choice == 3:
            addresses = [
                fdp.PickValueInList(["echo@fame.fabric", fdp.ConsumeUnicodeNoSurrogates(400)])
                for _ in range(fdp.ConsumeIntInRange(0, 4))
            ]
            kind = fdp.PickValueInList([Bind, Unbind])
            frame = Bind(addresses, fdp.ConsumeBool()) if kind is Bind else Unbind(addresses)
            frames.append(CODEC.encode(frame))
        elif choice == 4:
            envelope = Envelope(
                fdp.ConsumeIntInRange(0, 16),
                fdp.ConsumeUnicodeNoSurrogates(30),
                fdp.ConsumeIntInRange(0, 2**63),
                fdp.PickValueInList([Request("say", {"text": "x"}), Reply(None)]),
                fdp.PickValueInList([None, "_reply@x"]),
                fdp.PickValueInList([None, 1]),
            )
            frames.append(CODEC.encode(envelope))
        else:
            frame = fdp.PickValueInList(
                [Ping(1), Challenge(NONCE, "sentinel1", PROTOCOL_VERSION), Welcome("a", "b")]
            )
            frames.append(CODEC.encode(frame))
    return frames


def fuzz_one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        _decode(SMALL, rest)
        _decode(CODEC, rest)
        return
    fdp = atheris.FuzzedDataProvider(rest)
    if mode == 1:
        message = _structured(fdp)
        _decode(SMALL, message)
        _decode(CODEC, message)
        return
    fresh, attached = _links()
    node = NodeHandshake(IDENTITY, TOKEN)
    for frame in _frames(fdp):
        _feed(fresh, node, frame)
        _feed(attached, None, frame)


def main() -> None:
    atheris.Setup(sys.argv, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
