"""Hostile input at the sentinel: fuzzed frames, connection floods, handshake abuse.

The sentinel and the storage node are real ``fame`` processes (``fame
sentinel``, ``fame node`` with encrypted SQLite) on 127.0.0.1; attackers
and a well-behaved client run in the test over real websockets. Each
scenario checks the same three things: the attacker gets a clear error (a
``LinkError``, a ``Refused``, an HTTP 503, an ``InvalidKey``...), the
sentinel process never dies, and the well-behaved peers see nothing.

Complements ``tests/fabric/test_fabric_robustness.py`` (hypothesis garbage
at a test sentinel), ``tests/fabric/test_fabric_lifecycle.py`` (stolen node
id, wrong token via a node process) and ``tests/runtime/test_wire.py``
(codec round trips, random bytes, deep nesting).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection
from wsproto.events import Request as WsRequest

import fame
from agents.storage_agent import StorageAgent
from fame._cli._settings import SettingError, positive_setting
from fame._client import connect
from fame._identity import Identity
from fame._protocol import NodeHandshake, SentinelLink, SentinelPolicy
from fame._route_table import RouteTable
from fame._transport import SentinelUnreachable
from fame._wire import (
    MAX_HOPS,
    Attach,
    Batch,
    Bind,
    BindRefused,
    Bound,
    Challenge,
    Codec,
    Envelope,
    LinkError,
    Ping,
    Pong,
    Refused,
    Reply,
    Request,
    RoutingHeader,
    StreamEnd,
    Unbind,
    Welcome,
    bump_hops,
    frame_tag,
)

from .conftest import Report

HERE = Path(__file__).parent
FABRIC = HERE.parent / "fabric"  # fabric_agents.Echo, importable from there
STARTUP_LIMIT = 30.0
GUARD = 60.0  # a "does not hang" guard, never a speed assertion
codec = Codec()
LIMIT = codec.max_size
TAGS = [
    "e", "req", "rep", "item", "end", "credit", "cancel", "err", "challenge", "attach",
    "welcome", "refused", "bind", "bound", "bind_refused", "unbind", "ping", "pong",
    "batch", "link_error", "nope", "",
]  # fmt: skip
LINK_DOWN = (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError)


# --- real processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A ``fame`` CLI child process; its output is collected by reader threads."""

    def __init__(self, args: list[str], env: dict[str, str], ready_file: Path) -> None:
        self.ready_file = ready_file
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fame._cli.fame", *args, "--ready-file", str(ready_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            cwd=FABRIC,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_ready(self) -> None:
        until = time.monotonic() + STARTUP_LIMIT
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > until:
                raise AssertionError(f"not ready (rc={self.proc.poll()}):\n" + "\n".join(self.err))
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _status_kib(self, field: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field}")

    def rss_mib(self) -> float:
        return self._status_kib("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        """The kernel's high-water mark of resident memory (VmHWM), in MiB."""
        return self._status_kib("VmHWM") / 1024

    def tracebacks(self) -> list[str]:
        return [line for line in self.err if "Traceback" in line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Services:
    """A ``fame sentinel`` and ``fame node`` (echo + storage agent) under test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.token = secrets.token_urlsafe(24)
        self.procs: list[Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
        env["FAME_ADMISSION_TOKEN"] = self.token
        env["FAME_STORAGE_PROFILE"] = "memory"
        env.update(extra)
        return env

    def sentinel(self, **extra: str) -> tuple[Proc, str]:
        port = free_port()
        env = self.env(FAME_SENTINEL_PORT=str(port), **extra)
        proc = Proc(["sentinel"], env, self.tmp / f"sentinel-{port}.ready")
        self.procs.append(proc)
        proc.wait_ready()
        return proc, f"ws://127.0.0.1:{port}/"

    def node(self, url: str) -> Proc:
        """A node serving ``echo@fame.fabric`` and the real storage agent, on SQLCipher."""
        env = self.env(
            FAME_SENTINEL_URL=url,
            FAME_STORAGE_PROFILE="encrypted-sqlite",
            FAME_STORAGE_MASTER_KEY=secrets.token_hex(32),
            FAME_STORAGE_DB_DIRECTORY=str(self.tmp / "node"),
        )
        agents = [
            "--agent=fabric_agents:Echo@echo@fame.fabric",
            "--agent=agents.storage_agent:StorageAgent@storage@fame.fabric",
        ]
        proc = Proc(["node", *agents], env, self.tmp / "node.ready")
        self.procs.append(proc)
        proc.wait_ready()
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    s = Services(tmp_path)
    try:
        yield s
    finally:
        s.close()


class Echo(fame.BaseAgent):
    """The interface of ``fabric_agents.Echo`` as the client sees it."""

    @fame.operation
    async def say(self, text: str) -> str:
        raise NotImplementedError

    @fame.operation(streaming=True)
    async def count(self, up_to: int, size: int = 0) -> Any:
        raise NotImplementedError
        yield


class WellBehaved:
    """A client that keeps calling echo while attackers do their worst."""

    def __init__(self, node: fame.Node) -> None:
        self.echo = node.proxy("echo@fame.fabric", Echo).with_timeout(GUARD)
        self.ok = 0
        self.failed: list[str] = []
        self.done = trio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            text = f"call {self.ok}"
            try:
                answer = await self.echo.say(text=text)
            except Exception as exc:
                self.failed.append(repr(exc))
                if len(self.failed) >= 20:
                    return  # enough to show what broke; the test fails on any
                await trio.sleep(0.1)
                continue
            if answer == text:
                self.ok += 1
            else:
                self.failed.append(f"wrong answer {answer!r} to {text!r}")
            await trio.sleep(0.002)

    async def still_fine(self) -> None:
        assert [item["i"] async for item in self.echo.count(up_to=50)] == list(range(50))


# --- hostile inputs ---------------------------------------------------------------------


def _message_of_size(size: int, to: str = "nobody@fame.fabric") -> bytes:
    """An encoded envelope of exactly ``size`` bytes (a Reply nobody waits for)."""
    overhead = len(codec.encode(Envelope(0, to, 1, Reply(b"x" * 70_000)))) - 70_000
    data = msgspec.msgpack.encode(
        Envelope(0, to, 1, Reply(b"x" * (size - overhead)))  # bypass the codec's limit
    )
    assert len(data) == size
    return data


VALID_ENVELOPE = codec.encode(
    Envelope(0, "echo@fame.fabric", 1, Request("say", {"text": "x"}), "_reply@nowhere", 1)
)
AT_LIMIT = _message_of_size(LIMIT)
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


class Tally:
    def __init__(self) -> None:
        self.inputs = 0
        self.connections = 0
        self.refused = 0
        self.answers: dict[str, int] = {}


async def _attach_raw(ws: WebSocketConnection, token: str, *, ephemeral: bool = True) -> None:
    challenge = codec.decode(await ws.get_message())
    assert type(challenge) is Challenge
    handshake = NodeHandshake(Identity.generate(), token, ephemeral=ephemeral)
    await ws.send_message(codec.encode(handshake.receive(challenge)))  # type: ignore[arg-type]
    assert type(codec.decode(await ws.get_message())) is Welcome


async def attack(url: str, token: str, rng: random.Random, tally: Tally) -> None:
    """One connection: maybe attach, send a few hostile messages, read what comes back."""
    messages = [hostile(rng) for _ in range(rng.randrange(1, 7))]
    tally.connections += 1
    try:
        async with open_websocket_url(url, connect_timeout=GUARD) as ws:
            if rng.random() < 0.5:
                await _attach_raw(ws, token)
            for message in messages:
                tally.inputs += 1
                await ws.send_message(message)
            with trio.move_on_after(0.05):
                while True:
                    answer = await ws.get_message()
                    name = type(codec.decode(answer)).__name__ if isinstance(answer, bytes) else "?"
                    tally.answers[name] = tally.answers.get(name, 0) + 1
    except ConnectionRejected:
        tally.refused += 1
    except LINK_DOWN:
        pass  # closed after repeated violations or an over-long message: expected


async def sample_rss(proc: Proc, samples: list[float], done: trio.Event) -> None:
    while not done.is_set():
        samples.append(proc.rss_mib())
        await trio.sleep(0.1)


# --- 1a. the decoder and the attach state machine, in process ---------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=15,
)
type_confused = st.builds(
    lambda tag, fields: msgspec.msgpack.encode([tag, *fields]),
    st.sampled_from(TAGS) | msgpack_values,
    st.lists(msgpack_values, max_size=9),
)


def _decode_everything(data: bytes) -> None:
    """What a router does with ``data``; only ``WireError`` may come out."""
    for decode in (codec.decode, codec.decode_header):
        try:
            message = decode(data)
        except fame.WireError as exc:
            assert exc.reason and len(exc.reason) < 2000, exc.reason[:200]
            continue
        if type(message) is RoutingHeader:
            try:
                frame_tag(message.frame)
            except fame.WireError as exc:
                assert exc.reason
            try:
                assert bump_hops(data)[3] == message.hops + 1
            except fame.WireError as exc:
                assert exc.reason


HYPOTHESIS = settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def test_type_confused_and_huge_frames_decode_or_raise_wire_error(
    reliability_report: Report,
) -> None:
    tried = 0

    @HYPOTHESIS
    @given(type_confused | st.sampled_from([*HUGE_LENGTHS, *DEEP, AT_LIMIT, AT_LIMIT + b"\x00"]))
    def check(data: bytes) -> None:
        nonlocal tried
        for cut in (len(data), 1, len(data) // 2, len(data) - 1):
            tried += 1
            _decode_everything(data[:cut])

    check()
    reliability_report(hypothesis_inputs=tried, crashes=0)


def _frames() -> st.SearchStrategy[Any]:
    text = st.text(max_size=80) | st.sampled_from(["", "echo@fame.fabric", "x" * 1_100_000])
    return st.one_of(
        st.builds(
            Attach, text, st.binary(max_size=40), text, st.binary(max_size=70), st.booleans()
        ),
        st.builds(Bind, st.lists(text, max_size=5), st.booleans()),
        st.builds(Unbind, st.lists(text, max_size=5)),
        st.builds(Ping, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        st.builds(Pong, st.integers(min_value=0, max_value=5)),
        st.builds(Welcome, text, text),
        st.builds(Challenge, st.binary(max_size=40), text),
        st.builds(Refused, text),
        st.builds(LinkError, text),
        st.builds(Batch, st.lists(st.binary(max_size=20), max_size=3)),
        st.builds(BindRefused, text, text),
        st.builds(Bound, text),
    )


def test_sentinel_link_answers_any_frames_with_sendable_frames(reliability_report: Report) -> None:
    tried = 0

    @HYPOTHESIS
    @given(st.lists(_frames(), min_size=1, max_size=12), st.booleans())
    def check(frames: list[Any], open_admission: bool) -> None:
        nonlocal tried
        tried += len(frames)
        _feed_links(frames, open_admission)

    check()
    reliability_report(hypothesis_frames=tried, crashes=0)


def _feed_links(frames: list[Any], open_admission: bool) -> None:
    """Feed ``frames`` to a link being attached and to an attached one, as the sentinel does."""
    policy = SentinelPolicy("sentinel1", None if open_admission else "tok", {}, RouteTable())
    identity = Identity.generate()
    fresh = SentinelLink(policy, b"a" * 32)
    fresh.start()
    attached = SentinelLink(policy, b"b" * 32, max_strikes=10**6)
    attach = NodeHandshake(identity, "tok").receive(attached.start())
    assert type(attached.receive(attach)[0]) is Welcome
    for frame in frames:
        for link in (fresh, attached):
            for answer in link.receive(frame):
                # The sentinel must be able to send every answer (within the limit).
                assert len(codec.encode(answer)) <= LIMIT
    # Only a correct signature over this link's nonce attaches.
    assert not fresh.attached
    assert fresh.should_close or fresh.strikes < fresh.max_strikes


def test_bind_of_a_megabyte_address_is_refused_with_a_short_reason() -> None:
    # Regression: the AddressError quoted the whole address, so the BindRefused
    # answering it exceeded the size limit and the sentinel's handler failed.
    policy = SentinelPolicy("sentinel1", "tok", {}, RouteTable())
    link = SentinelLink(policy, b"n" * 32)
    link.receive(NodeHandshake(Identity.generate(), "tok").receive(link.start()))
    for address in ("x" * 1_000_000 + "@fame.fabric", "a@" + "b" * 1_000_000, "x" * 1_000_000):
        [refused] = link.receive(Bind([address]))
        assert type(refused) is BindRefused
        assert "(1000" in refused.reason and len(codec.encode(refused)) < 1000, refused.reason


def test_a_frame_tag_that_is_not_utf8_is_a_wire_error() -> None:
    # Regression (found by both fuzzers): msgspec raises UnicodeDecodeError, which
    # frame_tag let through, and the sentinel's handler for that link failed.
    header = VALID_ENVELOPE[:4] + msgspec.msgpack.encode("echo@fame.fabric") + b"\x07"
    data = header + b"\x91\xa3r\xf0\x81" + b"\xaa_reply@x.y\x05"  # the tag: "r", then not UTF-8
    head = codec.decode_header(data)
    assert type(head) is RoutingHeader
    with pytest.raises(fame.WireError, match="malformed frame: 'utf-8' codec can't decode"):
        frame_tag(head.frame)


# --- 1c. atheris ------------------------------------------------------------------------


def _seed_corpus(directory: Path) -> None:
    """Valid messages of every kind, so the fuzzer starts past the msgpack parser."""
    directory.mkdir()
    ident = Identity.generate()
    messages: list[Any] = [
        Envelope(0, "echo@fame.fabric", 1, Request("say", {"text": "x"}), "_reply@n1", 7),
        Envelope(3, "_reply@n1", 2, Reply({"a": [1, 2.5, None]}), None, 7),
        Challenge(b"n" * 32, "sentinel1"),
        Attach(ident.node_id, ident.public_key, "fuzz-token", b"s" * 64),
        Bind(["echo@fame.fabric"], True),
        Unbind(["a@b"]),
        Ping(3),
        Batch([VALID_ENVELOPE, codec.encode(Ping(1))]),
        Welcome("a", "b"),
    ]
    for i, message in enumerate(messages):
        (directory / f"raw{i}").write_bytes(b"\x00" + codec.encode(message))
    for i in range(4):
        (directory / f"structured{i}").write_bytes(bytes([1, *range(i * 9, i * 9 + 120)]))
        (directory / f"link{i}").write_bytes(bytes([2, *range(i * 7, i * 7 + 200)]))


ATHERIS_RUNS = 20_000


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="atheris ships wheels for Linux x86_64 only (see the dev extra)",
)
def test_atheris_finds_no_crash_in_the_decoder_or_the_attach_machine(
    tmp_path: Path, reliability_report: Report
) -> None:
    corpus = tmp_path / "corpus"
    _seed_corpus(corpus)
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_envelope.py"),
            str(corpus),
            f"-runs={ATHERIS_RUNS}",
            "-max_len=8192",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    output = run.stdout + run.stderr
    done = re.search(r"Done (\d+) runs in (\d+) second", output)
    crash = output.find("=== Uncaught Python exception")
    shown = output[crash : crash + 4000] if crash >= 0 else output[-4000:]
    assert run.returncode == 0 and done, f"atheris failed (rc={run.returncode}):\n{shown}"
    executed = int(done.group(1))
    assert executed == ATHERIS_RUNS
    coverage = re.findall(r"cov: (\d+)", output)
    seed = re.search(r"Seed: (\d+)", output)
    reliability_report(
        atheris_inputs=executed,
        atheris_edges=int(coverage[-1]) if coverage else 0,
        atheris_seed=seed.group(1) if seed else "?",
        crashes=0,
    )


# --- 1b. hostile connections against a real sentinel ------------------------------------

ATTACK_CONNECTIONS = 800
ATTACKERS = 8


async def test_hostile_connections_leave_the_sentinel_and_a_client_unharmed(
    services: Services, reliability_report: Report
) -> None:
    sentinel, url = services.sentinel(FAME_SENTINEL_MAX_CONNECTIONS="256")
    node = services.node(url)
    tally = Tally()
    baseline = sentinel.rss_mib()
    samples: list[float] = []
    rng = random.Random(int.from_bytes(os.urandom(4)))
    seeds = [rng.randrange(2**32) for _ in range(ATTACK_CONNECTIONS)]
    async with connect(url, token=services.token) as client:
        good = WellBehaved(client)
        sampled = trio.Event()
        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(good.run)
                nursery.start_soon(sample_rss, sentinel, samples, sampled)
                limiter = trio.CapacityLimiter(ATTACKERS)

                async def one(seed: int) -> None:
                    async with limiter:
                        await attack(url, services.token, random.Random(seed), tally)
                    assert sentinel.alive, "\n".join(sentinel.err[-40:])

                async with trio.open_nursery() as attackers:
                    for seed in seeds:
                        attackers.start_soon(one, seed)
                sampled.set()
                # A few more calls after the storm, then the stream check.
                for _ in range(20):
                    assert await good.echo.say(text="after") == "after"
                good.done.set()
            await good.still_fine()
    peak = sentinel.peak_rss_mib()
    reliability_report(
        inputs_tried=tally.inputs,
        connections_opened=tally.connections,
        connections_refused=tally.refused,
        sentinel_crashes=0 if sentinel.alive else 1,
        peak_sentinel_rss_mib=round(peak, 1),
        baseline_sentinel_rss_mib=round(baseline, 1),
        well_behaved_calls_ok=good.ok,
        well_behaved_calls_failed=len(good.failed),
        answers=" ".join(f"{k}:{v}" for k, v in sorted(tally.answers.items())),
        seed=seeds[0],
    )
    assert sentinel.alive and node.alive
    assert good.failed == [], good.failed[:5]
    assert good.ok > 0
    assert tally.connections == ATTACK_CONNECTIONS and tally.refused == 0
    # Every class of hostile input was answered as such (not ignored, not fatal).
    assert tally.answers.get("LinkError", 0) > 0 and tally.answers.get("Challenge", 0) > 0
    assert not sentinel.tracebacks(), "\n".join(sentinel.err[-60:])
    # Bounded memory: at most a few over-long messages per attacker are buffered at once
    # (trio-websocket accepts up to ~2 MiB), nothing accumulates across connections.
    assert peak - baseline < ATTACKERS * 3 * 2 * (LIMIT >> 20) + 64, (peak, baseline, samples)


async def test_an_over_long_message_to_a_closing_link_does_not_stop_the_sentinel(
    services: Services, reliability_report: Report
) -> None:
    # Regression (found by the test above): while the sentinel closed a link after
    # three violations, a message over the websocket limit made trio-websocket's
    # reader raise wsproto's LocalProtocolError in the server's nursery, and the
    # sentinel process exited. Raw frames, so the peer can ignore the close.
    sentinel, url = services.sentinel()
    services.node(url)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    size = 2 * LIMIT + 4096  # over trio-websocket's limit (WS_MAX_MESSAGE)
    # FIN + binary, masked with a zero key (so the payload goes as is), 64-bit length.
    too_long = b"\x82\xff" + size.to_bytes(8, "big") + b"\x00" * 4 + b"\x00" * size
    attempts = 3
    for _ in range(attempts):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(WsRequest(host="127.0.0.1", target="/")))
            accepted: list[object] = []
            with trio.fail_after(GUARD):
                while not any(isinstance(e, AcceptConnection) for e in accepted):
                    ws.receive_data(await stream.receive_some(1 << 16))
                    accepted.extend(ws.events())
            for _ in range(3):
                await stream.send_all(ws.send(BytesMessage(b"\xc1")))
            closing = False
            with trio.fail_after(GUARD):
                while not closing:
                    data = await stream.receive_some(1 << 16)
                    assert data, "closed without a close frame"
                    ws.receive_data(data)
                    closing = any(isinstance(e, CloseConnection) for e in ws.events())
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(too_long)
    for _ in range(int(GUARD / 0.05)):  # the sentinel reads 2 MiB, then logs the failure
        if len([line for line in sentinel.err if "websocket layer" in line]) >= attempts:
            break
        await trio.sleep(0.05)
    contained = [line for line in sentinel.err if "failed in the websocket layer" in line]
    async with connect(url, token=services.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        assert await echo.say(text="still serving") == "still serving"
    reliability_report(attempts=attempts, contained_failures=len(contained), sentinel_crashes=0)
    assert sentinel.alive and not sentinel.tracebacks()
    assert contained and "LocalProtocolError" in contained[0], sentinel.err[-5:]


# --- 2. connection floods ---------------------------------------------------------------


async def _open_attached(url: str, token: str, count: int, stack: Any) -> list[WebSocketConnection]:
    links = []
    for _ in range(count):
        ws = await stack.enter_async_context(open_websocket_url(url, connect_timeout=GUARD))
        await _attach_raw(ws, token)
        links.append(ws)
    return links


async def _refused(url: str) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, connect_timeout=GUARD):
            pass
    return info.value


async def test_connection_flood_is_refused_past_the_limit_and_recovers(
    services: Services, reliability_report: Report
) -> None:
    limit = 32
    sentinel, url = services.sentinel(FAME_SENTINEL_MAX_CONNECTIONS=str(limit))
    services.node(url)  # connection 1
    opened = 2  # the node and the client
    refused = refused_while_freeing = 0

    async with connect(url, token=services.token) as client:  # connection 2
        good = WellBehaved(client)
        with trio.fail_after(GUARD):
            async with contextlib.AsyncExitStack() as flood:
                links = await _open_attached(url, services.token, limit - 2, flood)
                opened += len(links)
                # Full: the next one gets a 503 with the reason, raw or through fame.
                rejected = await _refused(url)
                refused += 1
                assert rejected.status_code == 503
                assert (
                    rejected.body
                    == f"too many connections: this sentinel serves at most {limit}".encode()
                )
                with pytest.raises(SentinelUnreachable) as info:
                    async with connect(url, token=services.token):
                        pass
                refused += 1
                message = str(info.value)
                assert "\n" not in message
                assert message.endswith(
                    f"(HTTP 503): too many connections: this sentinel serves at most {limit}"
                ), message
                # The attached node and client do not notice.
                assert await good.echo.say(text="still here") == "still here"
                await good.still_fine()
                # Closing some makes room for exactly as many again.
                for ws in links[:5]:
                    await ws.aclose()
                for _ in range(5):
                    for _ in range(500):  # the sentinel notices a close asynchronously
                        try:
                            await _open_attached(url, services.token, 1, flood)
                        except ConnectionRejected:
                            refused_while_freeing += 1
                            await trio.sleep(0.02)
                            continue
                        opened += 1
                        break
                    else:
                        raise AssertionError("closing connections did not make room")
                await _refused(url)
                refused += 1
                assert await good.echo.say(text="and now") == "and now"
    reliability_report(
        max_connections=limit,
        connections_opened=opened,
        connections_refused=refused + refused_while_freeing,
        sentinel_crashes=0 if sentinel.alive else 1,
        peak_sentinel_rss_mib=round(sentinel.peak_rss_mib(), 1),
    )
    assert sentinel.alive and not sentinel.tracebacks()
    # The first refusal is logged once, not one line per refused connection.
    assert len([line for line in sentinel.err if "refusing connections" in line]) == 1


async def test_connections_that_never_attach_are_closed_after_the_handshake_timeout(
    services: Services, reliability_report: Report
) -> None:
    limit, timeout = 8, 1.0
    sentinel, url = services.sentinel(
        FAME_SENTINEL_MAX_CONNECTIONS=str(limit), FAME_SENTINEL_HANDSHAKE_TIMEOUT=str(timeout)
    )
    port = int(url.rsplit(":", 1)[1].strip("/"))

    closed_after: dict[str, list[float]] = {}

    async def closed_by_sentinel(ws: WebSocketConnection) -> None:
        started = trio.current_time()
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.get_message()  # the challenge, then nothing until the close
        closed_after.setdefault("websocket, no attach", []).append(trio.current_time() - started)

    async def raw_tcp(kind: str, payload: bytes) -> None:
        started = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(payload)
            while await stream.receive_some(4096):
                pass  # whatever the server says before closing (nothing, or an error)
        closed_after.setdefault(kind, []).append(trio.current_time() - started)

    raw = {
        "tcp, silent": b"",
        "tcp, half a request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "tcp, not http": b"\x16\x03\x01\x02\x00",
    }

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            # Raw TCP that never finishes the websocket handshake: closed, never counted.
            for kind, payload in raw.items():
                for _ in range(limit):
                    nursery.start_soon(raw_tcp, kind, payload)
            async with contextlib.AsyncExitStack() as stack:
                silent = [
                    await stack.enter_async_context(open_websocket_url(url, connect_timeout=GUARD))
                    for _ in range(limit)
                ]
                # Websockets that never attach count until the timeout closes them.
                await _refused(url)
                async with trio.open_nursery() as waiting:
                    for ws in silent:
                        waiting.start_soon(closed_by_sentinel, ws)
            # Freed: a real client attaches (the raw TCP connections did not count).
            for _ in range(200):
                try:
                    async with connect(url, token=services.token):
                        break
                except SentinelUnreachable:
                    await trio.sleep(0.05)
            else:
                raise AssertionError("no room after the silent connections were closed")
    reliability_report(
        handshake_timeout_s=timeout,
        idle_connections_closed=sum(map(len, closed_after.values())),
        slowest_close_s=round(max(max(times) for times in closed_after.values()), 2),
        sentinel_crashes=0 if sentinel.alive else 1,
    )
    assert {kind: len(times) for kind, times in closed_after.items()} == {
        "tcp, silent": limit,
        "tcp, half a request": limit,
        "tcp, not http": limit,  # a bad request is closed at once
        "websocket, no attach": limit,
    }
    # Those that wait were closed by the timeout, not sooner (the guard bounds "later").
    for kind in ("tcp, silent", "tcp, half a request", "websocket, no attach"):
        assert min(closed_after[kind]) >= timeout * 0.9, (kind, closed_after[kind])
    assert sentinel.alive and not sentinel.tracebacks()


def test_connection_settings_are_checked_and_name_the_variable() -> None:
    name = "FAME_SENTINEL_MAX_CONNECTIONS"
    assert positive_setting({}, name, 1024, int) == 1024
    assert positive_setting({name: " 32 "}, name, 1024, int) == 32
    timeout = "FAME_SENTINEL_HANDSHAKE_TIMEOUT"
    assert positive_setting({timeout: "0.5"}, timeout, 10.0, float) == 0.5
    for bad in ("0", "-3", "many", "1.5"):
        with pytest.raises(SettingError, match=f"^{name}: expected a positive whole number"):
            positive_setting({name: bad}, name, 1024, int)
    for bad in ("0", "nan", "inf", "-1"):
        with pytest.raises(SettingError, match=f"^{timeout}: expected a positive number"):
            positive_setting({timeout: bad}, timeout, 10.0, float)


def test_a_bad_connection_setting_stops_the_sentinel_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env.update(
        FAME_ADMISSION_TOKEN="t", FAME_SENTINEL_PORT="0", FAME_SENTINEL_MAX_CONNECTIONS="lots"
    )
    run = subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", "sentinel"],
        capture_output=True,
        text=True,
        env=env,
        timeout=GUARD,
        cwd=tmp_path,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "fame sentinel: FAME_SENTINEL_MAX_CONNECTIONS: expected a positive whole number, got 'lots'"
    )


# --- 3. handshake abuse -----------------------------------------------------------------


async def _answer(ws: WebSocketConnection) -> Any:
    with trio.fail_after(GUARD):
        return codec.decode(await ws.get_message())


async def _closed(ws: WebSocketConnection) -> bool:
    try:
        with trio.fail_after(GUARD):
            while True:
                await ws.get_message()
    except ConnectionClosed:
        return True


async def test_handshake_abuse_is_refused_with_a_reason_and_harms_no_one(
    services: Services, reliability_report: Report
) -> None:
    sentinel, url = services.sentinel()
    services.node(url)
    refusals: dict[str, str] = {}
    async with connect(url, token=services.token) as client:
        good = WellBehaved(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good.run)

            async def attempt(name: str, attach: Callable[[Challenge], Any]) -> Any:
                async with open_websocket_url(url, connect_timeout=GUARD) as ws:
                    challenge = await _answer(ws)
                    message = attach(challenge)
                    await ws.send_message(
                        message if isinstance(message, bytes) else codec.encode(message)
                    )
                    answer = await _answer(ws)
                    refusals[name] = getattr(answer, "reason", type(answer).__name__)
                    if type(answer) is Refused:
                        assert await _closed(ws)
                    return answer

            def signed(identity: Identity, token: str, **fields: Any) -> Callable[[Any], Attach]:
                def make(challenge: Challenge) -> Attach:
                    attach = NodeHandshake(identity, token).receive(challenge)
                    assert attach is not None
                    return msgspec.structs.replace(attach, **fields)

                return make

            token = services.token
            # No token, and a wrong one.
            answer = await attempt("no token", signed(Identity.generate(), ""))
            assert type(answer) is Refused and answer.reason == "wrong admission token"
            answer = await attempt("wrong token", signed(Identity.generate(), token + "x"))
            assert type(answer) is Refused and answer.reason == "wrong admission token"

            # A replayed attach: recorded on one connection, sent on another.
            owner = Identity.generate()
            recorded: list[bytes] = []
            nonces: list[bytes] = []

            def record(challenge: Challenge) -> bytes:
                nonces.append(challenge.nonce)
                recorded.append(codec.encode(signed(owner, token)(challenge)))
                return recorded[0]

            async with open_websocket_url(url, connect_timeout=GUARD) as first:
                await first.send_message(record(await _answer(first)))
                assert type(await _answer(first)) is Welcome

                def replay(challenge: Challenge) -> bytes:
                    nonces.append(challenge.nonce)
                    return recorded[0]

                answer = await attempt("replayed attach", replay)
                assert type(answer) is Refused and "bad signature" in answer.reason
                assert nonces[0] != nonces[1]  # a nonce per connection

                # Binding an address another node owns; a megabyte-long one.
                await first.send_message(codec.encode(Bind(["echo@fame.fabric"])))
                refused = await _answer(first)
                assert type(refused) is BindRefused
                assert refused.reason.startswith("echo@fame.fabric is already bound to node n")
                refusals["bind taken"] = refused.reason
                await first.send_message(codec.encode(Bind(["x" * 1_000_000 + "@fame.fabric"])))
                refused = await _answer(first)
                assert type(refused) is BindRefused and "(1000012 characters)" in refused.reason
                refusals["bind 1 MB address"] = refused.reason[-80:]
                await first.send_message(codec.encode(Ping(-5)))
                assert await _answer(first) == Pong(-5)  # the link is still fine

                # A message of exactly the size limit is taken (and routed: nobody
                # is there, it is dropped); one byte more is a violation.
                await first.send_message(AT_LIMIT)
                await first.send_message(codec.encode(Ping(1)))
                assert await _answer(first) == Pong(1)
                await first.send_message(AT_LIMIT + b"\x00")
                answer = await _answer(first)
                assert type(answer) is LinkError
                assert (
                    answer.reason
                    == f"message of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes"
                )

                # Another key claiming the id that is attached right now.
                thief = Identity.generate(owner.node_id)
                answer = await attempt("stolen node id", signed(thief, token))
                assert type(answer) is Refused and "is pinned to another key" in answer.reason
                await first.send_message(codec.encode(Ping(2)))
                assert await _answer(first) == Pong(2)  # the owner's link is untouched

            # Absurd field values.
            huge = "n" * (LIMIT - 1000)
            answer = await attempt("huge node id", signed(owner, token, node_id=huge))
            assert type(answer) is Refused and answer.reason.startswith("invalid node id 'nnn")
            assert len(answer.reason) < 200
            answer = await attempt("huge token", signed(owner, huge))
            assert type(answer) is Refused and answer.reason == "wrong admission token"
            answer = await attempt(
                "huge key", signed(owner, token, public_key=b"k" * 100_000, signature=b"")
            )
            assert type(answer) is Refused and "bad signature" in answer.reason
            negative = msgspec.msgpack.encode(["attach", -1, -(2**63), -7, -9, -1])
            answer = await attempt("negative numbers", lambda _: negative)
            assert type(answer) is LinkError and answer.reason.startswith("malformed message")
            answer = await attempt("non-ascii id", signed(owner, token, node_id="n\u00e9\x00"))
            assert type(answer) is Refused and answer.reason.startswith("invalid node id")
            good.done.set()
        # The owner of echo still serves it, to everyone.
        assert await good.echo.say(text="mine") == "mine"
    reliability_report(
        abuse_cases=len(refusals),
        well_behaved_calls_ok=good.ok,
        well_behaved_calls_failed=len(good.failed),
        sentinel_crashes=0 if sentinel.alive else 1,
    )
    assert good.failed == [] and good.ok > 0
    assert sentinel.alive and not sentinel.tracebacks()


# --- 4. oversized keys and values through the real storage agent ------------------------


async def test_oversized_keys_and_values_fail_for_their_caller_only(
    services: Services, reliability_report: Report
) -> None:
    sentinel, url = services.sentinel()
    node = services.node(url)
    async with (
        connect(url, token=services.token) as attacker,
        connect(url, token=services.token) as bystander,
    ):
        bad = attacker.proxy("storage@fame.fabric", StorageAgent).with_timeout(GUARD)
        other = bystander.proxy("storage@fame.fabric", StorageAgent).with_timeout(GUARD)
        stored: list[str] = []
        done = trio.Event()

        async def keep_storing() -> None:
            while not done.is_set():
                key = f"k{len(stored)}"
                assert (await other.store_value(key=key, value="v")).value == "v"
                stored.append(key)

        errors: dict[str, str] = {}
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_storing)
                # A key far too long, but in a message that fits: the agent refuses it.
                key = "k" * (LIMIT - 300)
                for call in (
                    lambda: bad.store_value(key=key, value="v"),
                    lambda: bad.retrieve_value(key=key),
                ):
                    with pytest.raises(fame.OperationFailed) as failed:
                        await call()
                    assert failed.value.exc_type == "InvalidKey"
                    assert f"({len(key)} characters): expected 1 to 1024 characters" in str(
                        failed.value
                    )
                errors["long key"] = str(failed.value)[-80:]
                # A 1 MiB key and a value over the limit: refused before sending.
                for args in (
                    {"key": "k" * LIMIT, "value": "v"},
                    {"key": "k", "value": "v" * LIMIT},
                ):
                    with pytest.raises(fame.WireError) as too_big:
                        await bad.store_value(**args)
                    assert str(too_big.value).endswith(f"exceeds the limit of {LIMIT} bytes")
                errors["over the limit"] = str(too_big.value)
                # The largest value that fits goes through and comes back whole.
                value = "v" * (LIMIT - 200)
                assert (await bad.store_value(key="big", value=value)).value == value
                assert (await bad.retrieve_value(key="big")).value == value  # type: ignore[union-attr]
                # The attacker's own link and the agent are fine.
                assert (await bad.store_value(key="after", value="ok")).value == "ok"
                done.set()
        assert len(stored) > 0
        for key in stored:
            assert (await other.retrieve_value(key=key)).value == "v"  # type: ignore[union-attr]
    reliability_report(
        refused_calls=4,
        bystander_writes_ok=len(stored),
        agent_restarts=len([line for line in node.err if "crashed" in line]),
        sentinel_crashes=0 if sentinel.alive else 1,
    )
    # No restart: a bad argument is the caller's error, not the agent's.
    assert not [line for line in node.err if "crashed" in line], node.err[-10:]
    assert sentinel.alive and node.alive and not sentinel.tracebacks()


async def test_a_result_too_big_for_the_wire_fails_at_once_without_a_restart() -> None:
    # Regression: the node could not encode the reply, the agent "crashed" and
    # the caller waited out its whole deadline.
    class Big(fame.BaseAgent):
        @fame.operation
        async def big(self, n: int) -> str:
            return "x" * n

        @fame.operation(streaming=True)
        async def items(self, n: int) -> Any:
            yield "small"
            yield "x" * n

    from fame._sentinel import open_sentinel

    async with open_sentinel(port=0, token="t") as sentinel:
        url = f"ws://127.0.0.1:{sentinel.port}/"
        async with fame.open_node() as node, fame.attach(node, url, token="t"):
            await node.spawn(Big, "big@fame.fabric")
            async with connect(url, token="t") as client:
                big = client.proxy("big@fame.fabric", Big).with_timeout(GUARD)
                with trio.fail_after(GUARD / 2):
                    with pytest.raises(fame.ProtocolError) as info:
                        await big.big(n=2 * LIMIT)
                    assert str(info.value).startswith("big@fame.fabric: the result of big()")
                    assert str(info.value).endswith(f"exceeds the limit of {LIMIT} bytes")
                    got = []
                    with pytest.raises(fame.ProtocolError, match="the result of items"):
                        async for item in big.items(n=2 * LIMIT):
                            got.append(item)
                    assert got == ["small"]
                    assert await big.big(n=3) == "xxx"
            assert node.supervisor.ref("big@fame.fabric") is not None
