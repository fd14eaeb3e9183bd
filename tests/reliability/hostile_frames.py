"""Hostile websocket messages: what an attacker sends a sentinel, as bytes.

Shared by the in-process fuzzing (``test_fuzz_frames.py``) and the attacks
on a real sentinel (``test_hostile_connections.py``,
``test_handshake_abuse.py``): well-formed messages to start from, messages
at and past the size limit, lengths that claim gigabytes, deep nesting,
and :func:`hostile`, which draws one message from all of those categories
and more (truncated, type-confused, flipped, text instead of binary...).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

from fame._wire._schema import (
    MAX_HOPS,
    Attach,
    Batch,
    Bind,
    Challenge,
    Codec,
    Envelope,
    Ping,
    Reply,
    Request,
    StreamEnd,
    Unbind,
    Welcome,
)

codec = Codec()
LIMIT = codec.max_size
# Every tag of the wire, and two that are not.
TAGS = [
    "e", "req", "rep", "item", "end", "credit", "cancel", "err", "challenge", "attach",
    "welcome", "refused", "bind", "bound", "bind_refused", "unbind", "ping", "pong",
    "batch", "link_error", "nope", "",
]  # fmt: skip


def message_of_size(size: int, to: str = "nobody@fame.fabric") -> bytes:
    """An encoded envelope of exactly ``size`` bytes (a Reply nobody waits for)."""
    overhead = len(codec.encode(Envelope(0, to, 1, Reply(b"x" * 70_000), None, 1))) - 70_000
    data = msgspec.msgpack.encode(
        Envelope(0, to, 1, Reply(b"x" * (size - overhead)), None, 1)  # bypass the codec's limit
    )
    assert len(data) == size
    return data


VALID_ENVELOPE = codec.encode(
    Envelope(0, "echo@fame.fabric", 1, Request("say", {"text": "x"}), "_reply@nowhere", 1)
)
AT_LIMIT = message_of_size(LIMIT)
HUGE_LENGTHS = [
    b"\xdd\xff\xff\xff\xff\xa1e",  # array32 of 4 G elements
    b"\x97\xa1e\x00\xdb\xff\xff\xff\xffabc",  # envelope whose address claims 4 GB
    b"\x97\xa1e\x00\xa3a@b\x01\xc6\xff\xff\xff\xff",  # bin32 frame of 4 GB
    b"\x92\xa4ping\xcf" + b"\xff" * 8,  # a nonce of 2**64-1
    b"\x92\xa5batch\xdd\x7f\xff\xff\xff",  # a batch of 2 G messages
    b"\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
]
DEEP = [
    b"\x91" * 100_000 + b"\xc0",
    VALID_ENVELOPE[:9] + b"\x92\xa3rep" + b"\x91" * 50_000 + b"\xc0",
    codec.encode(Batch([b"\x91" * 10_000 + b"\xc0"])),
]


def _msgpack_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([-(2**63), -1, 0, 1, 2**64 - 1, rng.randrange(-1000, 1000)])
    if kind == 2:
        return rng.random() * 1e300
    if kind == 3:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind == 4:
        return rng.randbytes(rng.randrange(40))
    if kind == 5:
        return rng.choice(TAGS)
    if kind == 6:
        return [_msgpack_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if kind == 7:
        return {str(i): _msgpack_value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [rng.choice(TAGS), *(_msgpack_value(rng, depth + 1) for _ in range(3))]


def hostile(rng: random.Random) -> bytes | str:
    """One hostile websocket message, from one of the categories of the brief."""
    kind = rng.randrange(13)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(300))
    if kind == 1:  # truncated msgpack
        valid = rng.choice([VALID_ENVELOPE, codec.encode(Bind(["a@b"])), AT_LIMIT[:4000]])
        return valid[: rng.randrange(len(valid))]
    if kind == 2:  # a known or unknown tag with type-confused fields
        fields = [_msgpack_value(rng) for _ in range(rng.randrange(8))]
        return msgspec.msgpack.encode([rng.choice([*TAGS, 7, None, b"e"]), *fields])
    if kind == 3:
        return rng.choice(DEEP)
    if kind == 4:
        return rng.choice(HUGE_LENGTHS)
    if kind == 5:  # at the size limit (fine), just above (LinkError), far above (closed)
        return rng.choice([AT_LIMIT, AT_LIMIT + b"\x00", b"\x00" * (2 * LIMIT + 4096)])
    if kind == 6:  # a valid routing header with a garbage frame
        head = VALID_ENVELOPE[:4] + msgspec.msgpack.encode("echo@fame.fabric") + b"\x07"
        garbage = rng.choice([rng.randbytes(30), msgspec.msgpack.encode(_msgpack_value(rng))])
        tail = rng.choice([b"\xc0\xc0", b"\xaa_reply@x.y\x05", b""])
        return head + garbage + tail
    if kind == 7:  # a batch of garbage, nested, or oversized
        items = [
            rng.randbytes(rng.randrange(50)),
            codec.encode(Batch([VALID_ENVELOPE])),
            VALID_ENVELOPE[: rng.randrange(20)],
            codec.encode(Welcome("x", "y")),
        ]
        return codec.encode(Batch(rng.sample(items, rng.randrange(1, 5))))
    if kind == 8:  # a hop count out of range, a bad tag byte
        return rng.choice(
            [
                VALID_ENVELOPE[:3] + bytes([MAX_HOPS + rng.randrange(1, 100)]) + VALID_ENVELOPE[4:],
                VALID_ENVELOPE[:1] + b"\xa1x" + VALID_ENVELOPE[3:],
            ]
        )
    if kind == 9:  # text instead of binary
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(60)))
    if kind == 10:  # absurd link frames
        return codec.encode(
            rng.choice(
                [
                    Bind(["x" * 100_000 + "@fame.fabric"]),
                    Bind([f"a{i}@fame.fabric" for i in range(2000)]),
                    Unbind(["echo@fame.fabric", "nope"]),
                    Attach("n" * 100_000, b"k" * 5000, "t" * 10_000, b"s" * 5000),
                    Challenge(b"", ""),
                    Ping(rng.randrange(2**63)),
                ]
            )
        )
    if kind == 11:  # well-formed envelopes where they should not go
        to = rng.choice(["nobody@fame.fabric", "_reply@n0000", "echo@fame.fabric"])
        frame = rng.choice([StreamEnd(), Reply("spoof"), Request("nope", {})])
        return codec.encode(Envelope(rng.randrange(MAX_HOPS + 1), to, 1, frame, None, 3))
    # a flipped byte in a valid message
    data = bytearray(rng.choice([VALID_ENVELOPE, codec.encode(Ping(1))]))
    data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    return bytes(data)
