"""Fuzzing what a sentinel does with a peer's bytes, in process: decoder and attach machine.

Hypothesis feeds type-confused, huge-length, deeply nested and size-limit
messages to ``Codec.decode``/``decode_header`` (and ``frame_tag``,
``bump_hops`` on what decodes as a routing header), and arbitrary frames to
a ``SentinelLink`` being attached and to an attached one: only
``WireError`` may come out, and every answer must be sendable. atheris
(``fuzz_envelope.py``) does the same, coverage-guided, for a bounded
number of inputs. Two regressions the fuzzers found are pinned here.

Complements ``tests/fabric/test_fabric_robustness.py`` (hypothesis garbage
at a test sentinel) and ``tests/runtime/test_wire.py`` (codec round trips,
random bytes, deep nesting).
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fame
from fame._protocol import NodeHandshake, SentinelLink, SentinelPolicy
from fame._protocol._credentials import ClientCredential, EnrolledKey, Enrollment
from fame._protocol._identity import Identity
from fame._protocol._route_table import RouteTable
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Batch,
    Bind,
    BindRefused,
    Bound,
    Challenge,
    Envelope,
    LinkError,
    Ping,
    Pong,
    Refused,
    Reply,
    Request,
    RoutingHeader,
    Unbind,
    Welcome,
    bump_hops,
    frame_tag,
)

from .conftest import Report
from .hostile_frames import AT_LIMIT, DEEP, HUGE_LENGTHS, LIMIT, TAGS, VALID_ENVELOPE, codec

HERE = Path(__file__).parent

# --- the decoder and the attach state machine -------------------------------------------

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
        except fame.errors.WireError as exc:
            assert exc.reason and len(exc.reason) < 2000, exc.reason[:200]
            continue
        if type(message) is RoutingHeader:
            try:
                frame_tag(message.frame)
            except fame.errors.WireError as exc:
                assert exc.reason
            try:
                assert bump_hops(data)[3] == message.hops + 1
            except fame.errors.WireError as exc:
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
    policy = SentinelPolicy(
        "sentinel1",
        () if open_admission else (ClientCredential("default", "tok"),),
        {},
        RouteTable(),
        open_admission=open_admission,
        trust_on_first_use=True,
    )
    identity = Identity.generate()
    # Enrolled: open admission admits clients only, nodes by their key.
    policy.enrolled[identity.node_id] = Enrollment(
        identity.node_id, "fuzzed", (EnrolledKey(identity.public_key),)
    )
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
    policy = SentinelPolicy(
        "sentinel1",
        (ClientCredential("default", "tok"),),
        {},
        RouteTable(),
        trust_on_first_use=True,
    )
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
    data = header + b"\x91\xa3r\xf0\x81" + b"\xaa_reply@x.y\x05\xc0"  # the tag: "r", not UTF-8
    head = codec.decode_header(data)
    assert type(head) is RoutingHeader
    with pytest.raises(fame.errors.WireError) as info:
        frame_tag(head.frame)
    # fame's own code and words; the decoder's detail after them is msgspec's to change.
    assert info.value.code == "malformed"
    assert info.value.reason.startswith("malformed frame: ")


# --- atheris ------------------------------------------------------------------------------


def _seed_corpus(directory: Path) -> None:
    """Valid messages of every kind, so the fuzzer starts past the msgpack parser."""
    directory.mkdir()
    ident = Identity.generate()
    messages: list[Any] = [
        Envelope(0, "echo@fame.fabric", 1, Request("say", {"text": "x"}), "_reply@n1", 7),
        Envelope(3, "_reply@n1", 2, Reply({"a": [1, 2.5, None]}), None, 7),
        Challenge(b"n" * 32, "sentinel1", PROTOCOL_VERSION),
        Attach(ident.node_id, ident.public_key, "fuzz-token", b"s" * 64, False, PROTOCOL_VERSION),
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
