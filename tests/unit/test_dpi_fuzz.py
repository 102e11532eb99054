"""The DPI classifiers against hostile input: hypothesis throws random frames,
random segment streams and mutated real hellos and QUIC Initials at every
entry point. Nothing may raise; a name, when one comes out, is a valid host
name, and a mutation outside the name never yields another name."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homegw.modules.dpi.classify import FlowClassifier, http, quic, signatures, tls
from homegw.modules.dpi.classify.names import hostname
from homegw.modules.dpi.classify.reassembly import Reassembler
from tests.unit.dpi_classify_frames import (
    big_client_hello,
    quic_initials,
    ssl_client_hello,
    tcp_frame,
    tcp_key,
    udp_frame,
    udp_key,
)

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
SMALL_HELLO = ssl_client_hello("www.youtube.com")
BIG_HELLO = big_client_hello("video.example.com")
QUIC_V1 = quic_initials("www.youtube.com", quic.QUIC_V1)[0]
QUIC_V2_BIG = quic_initials("video.example.com", quic.QUIC_V2, big=True)


def assert_sane(result: object, allowed_names: set[str | None] | None = None) -> None:
    """A feed() result: None or (key, verdict) whose name is a valid host name."""
    if result is None:
        return
    _key, verdict = result  # type: ignore[misc]
    if verdict.name is not None:
        assert hostname(verdict.name.encode()) == verdict.name
    if allowed_names is not None:
        assert verdict.name in allowed_names, verdict


@FUZZ
@given(st.binary(max_size=400))
def test_random_frames(frame: bytes) -> None:
    classifier = FlowClassifier(max_flows=8)
    assert_sane(classifier.feed(frame, 1.0))
    assert_sane(classifier.feed(b"\x00" * 12 + b"\x08\x00" + frame, 1.0))


@FUZZ
@given(st.binary(max_size=1500), st.booleans(), st.integers(0, 65535))
def test_random_payloads_in_valid_frames(payload: bytes, udp: bool, port: int) -> None:
    classifier = FlowClassifier()
    frame = udp_frame(payload, dport=port) if udp else tcp_frame(payload, dport=port)
    assert_sane(classifier.feed(frame, 1.0))
    key = udp_key(dport=port) if udp else tcp_key(dport=port)
    assert classifier.give_up(key).source in ("port", "unknown")


@FUZZ
@given(st.binary(max_size=2000))
def test_every_parser_on_random_bytes(data: bytes) -> None:
    for result in (tls.parse_records(data), tls.parse_handshake(data)):
        assert result.sni is None or hostname(result.sni.encode()) == result.sni
    assert http.parse_request(data).status in http.HttpStatus
    signatures.match(data, tcp_key())
    signatures.match(data, udp_key(dport=123))
    assert quic.QuicHello().feed(data).sni is None
    quic.crypto_frames(data)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(-3000, 3000), st.binary(min_size=1, max_size=600)),
        max_size=12,
    )
)
def test_random_segment_streams(pieces: list[tuple[int, bytes]]) -> None:
    classifier = FlowClassifier(max_bytes=2048)
    for offset, payload in pieces:
        assert_sane(classifier.feed(tcp_frame(payload, seq=100000 + offset), 1.0))
    assert len(classifier) <= 1


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 2999), st.integers(1, 700)), max_size=10),
    st.integers(100, 4000),
)
def test_reassembly_matches_a_model(spans: list[tuple[int, int]], max_bytes: int) -> None:
    data = random.Random(7).randbytes(3700)
    stream = Reassembler(max_bytes=max_bytes, max_pieces=64, start=0)
    covered: set[int] = set()
    for offset, length in spans:
        stream.add(offset, data[offset : offset + length])
        covered.update(range(offset, min(offset + length, len(data))))
    expected = 0
    while expected in covered and expected < max_bytes:
        expected += 1
    assert stream.prefix() == data[:expected]


@st.composite
def deliveries(draw: st.DrawFn, stream: bytes) -> list[tuple[int, bytes]]:
    """stream cut into 1..4 segments, sent in any order, a few duplicated (4 sends at most)."""
    count = draw(st.integers(1, 4))
    cuts = sorted(draw(st.sets(st.integers(1, len(stream) - 1), min_size=count - 1,
                               max_size=count - 1)))  # fmt: skip
    bounds = [0, *cuts, len(stream)]
    parts = [(a, stream[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    extra = draw(st.lists(st.sampled_from(parts), max_size=4 - count))
    return draw(st.permutations(parts + extra))


@FUZZ
@given(st.data())
def test_a_hello_cut_and_reordered_any_way_gives_its_name(data: st.DataObject) -> None:
    hello = data.draw(st.sampled_from([SMALL_HELLO, BIG_HELLO]))
    name = "www.youtube.com" if hello is SMALL_HELLO else "video.example.com"
    classifier = FlowClassifier()
    results = [
        classifier.feed(tcp_frame(part, seq=5000 + offset), 1.0)
        for offset, part in data.draw(deliveries(hello))
    ]
    verdicts = [r for r in results if r is not None]
    assert len(verdicts) == 1
    assert verdicts[0][1].source == "sni" and verdicts[0][1].name == name


def _mutate(data: bytes, draw: st.DrawFn, avoid: range) -> bytes:
    """One to four byte flips, inserts or deletes away from the `avoid` range."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(out) - 1))
        if position in avoid:
            continue
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if kind == "flip":
            out[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            out.insert(position, draw(st.integers(0, 255)))
        elif kind == "delete":
            del out[position]
        else:
            del out[position:]
        if kind in ("insert", "delete", "cut"):
            break  # positions after it moved: `avoid` no longer holds
    return bytes(out)


def _name_span(hello: bytes, name: bytes) -> range:
    """The server_name extension, from its type to the end of the name."""
    at = hello.index(name)
    return range(at - 9, at + len(name))


@FUZZ
@given(st.data())
def test_mutated_hellos_never_give_another_name(data: st.DataObject) -> None:
    hello, name = data.draw(
        st.sampled_from([(SMALL_HELLO, "www.youtube.com"), (BIG_HELLO, "video.example.com")])
    )
    mutated = _mutate(hello, data.draw, _name_span(hello, name.encode()))
    classifier = FlowClassifier()
    result = classifier.feed(tcp_frame(mutated), 1.0)
    assert_sane(result, allowed_names={None, name})
    anywhere = _mutate(hello, data.draw, range(0))
    assert_sane(FlowClassifier().feed(tcp_frame(anywhere), 1.0))


@FUZZ
@given(st.data())
def test_mutated_quic_initials_never_give_another_name(data: st.DataObject) -> None:
    header = quic.long_header(QUIC_V1, 0)
    assert header is not None
    mutated = _mutate(QUIC_V1[: header.end], data.draw, range(0)) + QUIC_V1[header.end :]
    assert quic.QuicHello().feed(mutated).sni in (None, "www.youtube.com")
    first, second = QUIC_V2_BIG
    hello = quic.QuicHello()
    hello.feed(_mutate(first, data.draw, range(0)))
    assert hello.feed(second).sni in (None, "video.example.com")
