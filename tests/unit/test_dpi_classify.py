"""The DPI flow classifier: frames decoded, TCP streams rebuilt from segments in
any order, ClientHellos across segments, HTTP Host, the fallbacks and bounds."""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from pathlib import Path

import pytest

from homegw.modules.dpi.classify import FINAL_AFTER, SOURCE_NUMBERS, FlowClassifier, Verdict
from homegw.modules.dpi.classify.packet import IPPROTO_TCP, FlowKey, parse_frame
from homegw.modules.dpi.classify.reassembly import Reassembler, TcpStream
from tests.unit.dpi_classify_frames import (
    FIN,
    LAN,
    REMOTE,
    SYN,
    big_client_hello,
    ethernet,
    ipv4,
    segments,
    ssl_client_hello,
    tcp_frame,
    tcp_key,
    udp_frame,
    udp_key,
)

# ---- frames -----------------------------------------------------------------


def test_a_tcp_frame_decodes_to_its_flow_seq_and_payload() -> None:
    segment = parse_frame(tcp_frame(b"hello", seq=0xFFFFFFF0, sport=40000, dport=8443))
    assert segment is not None
    assert segment.key == FlowKey(LAN, REMOTE, 40000, 8443, IPPROTO_TCP)
    assert (segment.seq, segment.payload, segment.syn, segment.fin) == (0xFFFFFFF0, b"hello", 0, 0)
    syn = parse_frame(tcp_frame(b"", flags=SYN))
    assert syn is not None and syn.syn and not syn.payload
    assert parse_frame(tcp_frame(b"", flags=FIN | 0x10)).fin  # type: ignore[union-attr]


def test_a_scapy_frame_decodes_the_same() -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Dot1Q, Ether

    frame = bytes(
        Ether() / Dot1Q(vlan=5) / IP(src=LAN, dst=REMOTE, options=b"\x01\x01\x01\x00")
        / UDP(sport=5000, dport=3478) / b"payload"
    )  # fmt: skip
    segment = parse_frame(frame)
    assert segment is not None
    assert segment.key == udp_key(5000, 3478)
    assert segment.payload == b"payload"


def test_ethernet_padding_is_cut_by_the_ip_total_length() -> None:
    segment = parse_frame(udp_frame(b"ab") + bytes(20))
    assert segment is not None and segment.payload == b"ab"


def test_ip_options_are_skipped() -> None:
    udp = struct.pack(">HHHH", 1, 2, 10, 0) + b"xy"
    segment = parse_frame(ethernet(ipv4(17, udp, options=b"\x01\x01\x01\x00" * 2)))
    assert segment is not None and segment.payload == b"xy"


def test_fragments_only_the_first_carries_ports() -> None:
    udp = struct.pack(">HHHH", 1, 443, 1000, 0) + b"first part"
    first = parse_frame(ethernet(ipv4(17, udp, frag=0x2000)))
    assert first is not None and first.fragment and first.payload == b"first part"
    drops: Counter[str] = Counter()
    assert parse_frame(ethernet(ipv4(17, udp, frag=0x0010)), drops) is None
    assert drops == {"later_fragment": 1}


def _with_ttl(frame: bytes, ttl: int) -> bytes:
    return frame[:22] + bytes([ttl]) + frame[23:]


def test_a_decoy_that_dies_at_the_gateway_is_not_read() -> None:
    """TTL 1: the gateway drops it, the server never sees it (an evasion tool's fake hello)."""
    classifier = FlowClassifier()
    decoy = _with_ttl(tcp_frame(ssl_client_hello("allowed.example")), 1)
    assert classifier.feed(decoy, 1.0) is None
    assert classifier.counters["ttl_expires"] == 1
    real = _with_ttl(tcp_frame(ssl_client_hello("blocked.example")), 2)
    assert classifier.feed(real, 1.0) == (tcp_key(), Verdict("sni", name="blocked.example"))


BAD_FRAMES = {
    "short_frame": b"\x00" * 13,
    "not_ipv4": ethernet(b"\x60" + bytes(40), ethertype=0x86DD),
    "bad_ip_header": ethernet(b"\x45\x00\x00\x10" + bytes(16)),  # total length < 20
    "not_tcp_udp": ethernet(ipv4(1, b"\x08\x00" + bytes(6))),
    "bad_tcp_header": ethernet(ipv4(6, bytes(12))),
    "bad_udp_header": ethernet(ipv4(17, struct.pack(">HHHH", 1, 2, 500, 0))),
}


@pytest.mark.parametrize("reason", BAD_FRAMES)
def test_bad_frames_are_counted_drops(reason: str) -> None:
    drops: Counter[str] = Counter()
    assert parse_frame(BAD_FRAMES[reason], drops) is None
    assert drops == {reason: 1}


def test_ip_total_length_past_the_frame_and_tcp_offset_past_the_packet() -> None:
    frame = bytearray(tcp_frame(b"abc"))
    frame[16:18] = struct.pack(">H", 200)
    assert parse_frame(bytes(frame)) is None
    frame = bytearray(tcp_frame(b"abc"))
    frame[14 + 20 + 12] = 0xF0  # data offset 60 > 23 bytes of TCP
    assert parse_frame(bytes(frame)) is None


# ---- reassembly -------------------------------------------------------------


def test_pieces_in_any_order_give_the_stream() -> None:
    data = bytes(range(256)) * 4
    cuts = [0, 100, 101, 500, 900, len(data)]
    pieces = [(a, data[a:b]) for a, b in itertools.pairwise(cuts)]
    for order in itertools.permutations(pieces):
        stream = Reassembler(max_bytes=4096, start=0)
        for offset, piece in order:
            stream.add(offset, piece)
        assert stream.prefix() == data


def test_overlaps_keep_the_first_copy() -> None:
    stream = Reassembler(start=0)
    stream.add(2, b"CDEF")
    stream.add(0, b"abcdefgh")
    assert stream.prefix() == b"abCDEFgh"
    stream.add(0, b"XXXXXXXXXX")
    assert stream.prefix() == b"abCDEFghXX"


def test_a_copy_that_disagrees_is_counted() -> None:
    stream = Reassembler(start=0)
    stream.add(0, b"abcdef")
    stream.add(2, b"cd")  # the same bytes again: a retransmission
    assert stream.conflicts == 0
    stream.add(4, b"EFgh")
    assert stream.conflicts == 1 and stream.prefix() == b"abcdefgh"
    classifier = FlowClassifier()
    decoy, real = ssl_client_hello("allowed.example"), ssl_client_hello("blocked.example")
    classifier.feed(tcp_frame(decoy[:100]), 1.0)
    classifier.feed(tcp_frame(real), 1.0)
    assert classifier.counters["tcp_overlap_conflict"] == 1


def test_a_gap_stops_the_prefix() -> None:
    stream = Reassembler(start=0)
    stream.add(0, b"abc")
    stream.add(5, b"fgh")
    assert stream.prefix() == b"abc"
    stream.add(3, b"de")
    assert stream.prefix() == b"abcdefgh"


def test_bounds_bytes_and_pieces() -> None:
    stream = Reassembler(max_bytes=10, max_pieces=2, start=0)
    stream.add(0, b"0123456789abc")
    assert stream.prefix() == b"0123456789" and stream.overflow
    few = Reassembler(max_bytes=100, max_pieces=2, start=0)
    for offset in (0, 10, 20):
        few.add(offset, b"x")
    assert few.pieces == 2 and few.overflow


def test_tcp_start_is_the_lowest_seq_and_moves_back() -> None:
    stream = TcpStream(max_bytes=100)
    stream.add(5000 + 4, b"efgh")
    assert stream.data() == b"efgh" and not stream.start_known
    stream.add(5000, b"abcd")
    assert stream.data() == b"abcdefgh"


def test_tcp_sequence_wrap() -> None:
    stream = TcpStream()
    stream.add(2, b"cd")
    stream.add((1 << 32) - 2, b"yzab")
    assert stream.data() == b"yzabcd"


def test_a_syn_fixes_the_start_and_drops_what_lies_below() -> None:
    stream = TcpStream()
    stream.add(99, b"", syn=True)
    assert stream.start_known
    stream.add(90, b"0123456789")  # 90..99: bytes below the first (100)
    stream.add(104, b"!!")
    assert stream.data() == b""  # 100..103 missing
    stream.add(100, b"data")
    assert stream.data() == b"data!!"


def test_a_window_that_moves_back_cuts_the_far_bytes() -> None:
    stream = TcpStream(max_bytes=8)
    stream.add(1004, b"4567")
    stream.add(1000, b"0123")
    stream.add(996, b"abcd")
    assert stream.data() == b"abcd0123" and stream.overflow


# ---- TCP flows --------------------------------------------------------------


def feed_all(classifier: FlowClassifier, frames: list[bytes], now: float = 1.0) -> list:
    return [classifier.feed(frame, now) for frame in frames]


def test_a_hello_in_one_segment() -> None:
    results = feed_all(FlowClassifier(), [tcp_frame(ssl_client_hello("www.netflix.com"))])
    assert results == [(tcp_key(), Verdict("sni", name="www.netflix.com"))]


@pytest.mark.parametrize("cuts", [[800], [600, 1200], [1, 5, 9]])
def test_a_big_hello_across_segments_in_every_order(cuts: list[int]) -> None:
    frames = segments(big_client_hello("video.example.com"), cuts)
    for order in itertools.permutations(frames):
        classifier = FlowClassifier()
        results = feed_all(classifier, list(order))
        assert results[:-1] == [None] * (len(order) - 1), order
        assert results[-1] == (tcp_key(), Verdict("sni", name="video.example.com"))
        assert len(classifier) == 0


def test_duplicates_and_a_gap_wait_then_the_missing_segment_decides() -> None:
    first, second, third = segments(big_client_hello("cdn.example.net"), [500, 1000])
    classifier = FlowClassifier()
    assert feed_all(classifier, [first, first, third]) == [None, None, None]
    assert classifier.feed(second, 2.0) == (tcp_key(), Verdict("sni", name="cdn.example.net"))


def test_packets_of_a_decided_flow_are_ignored_until_a_new_syn() -> None:
    first, second = segments(big_client_hello("a.example.com"), [700])
    classifier = FlowClassifier()
    assert feed_all(classifier, [first, second])[1] is not None
    assert classifier.feed(second, 2.0) is None  # a retransmission: no mid-stream restart
    assert classifier.counters["decided_flow_packet"] == 1
    classifier.feed(tcp_frame(b"", seq=4999, flags=SYN), 3.0)
    hello = ssl_client_hello("b.example.com")
    assert classifier.feed(tcp_frame(hello, seq=5000), 3.0) == (
        tcp_key(),
        Verdict("sni", name="b.example.com"),
    )


def test_a_mid_stream_start_waits_for_the_first_segments() -> None:
    """The lowest seq is not the start until the datapath's punts have all come."""
    classifier = FlowClassifier()
    frames = [tcp_frame(b"\x00\x01garbage" * 10, seq=1000 + 100 * i, dport=7000) for i in range(4)]
    assert feed_all(classifier, frames[:3]) == [None] * 3
    assert classifier.feed(frames[3], 1.0) == (tcp_key(dport=7000), Verdict("unknown"))


def test_after_a_syn_an_unknown_start_is_final_at_once() -> None:
    classifier = FlowClassifier()
    classifier.feed(tcp_frame(b"", seq=99, flags=SYN, dport=443), 1.0)
    assert classifier.feed(tcp_frame(b"\x00binary", seq=100), 1.0) == (
        tcp_key(),
        Verdict("port", app="https", guess=True),
    )


def test_a_hello_without_a_name_falls_back_to_the_port() -> None:
    result = FlowClassifier().feed(tcp_frame(ssl_client_hello(None), dport=8443), 1.0)
    assert result == (tcp_key(dport=8443), Verdict("port", app="https", guess=True))


def test_a_hello_bigger_than_the_bound_gives_up() -> None:
    classifier = FlowClassifier(max_bytes=1000)
    first, _second = segments(big_client_hello(), [900])
    assert classifier.feed(first, 1.0) == (tcp_key(), Verdict("port", app="https", guess=True))
    assert classifier.counters["tls_hello_too_big"] == 1


def test_a_fin_ends_the_wait() -> None:
    classifier = FlowClassifier()
    assert classifier.feed(tcp_frame(b"\x16\x03\x01\x02\x00\x01"), 1.0) is None
    fin = tcp_frame(b"x", seq=1006, flags=FIN | 0x10)
    assert classifier.feed(fin, 1.0) == (tcp_key(), Verdict("port", app="https", guess=True))
    assert classifier.feed(tcp_frame(b"\x16\x03", dport=80), 1.0) is None
    bare_fin = tcp_frame(b"", seq=1002, flags=FIN | 0x10, dport=80)
    assert classifier.feed(bare_fin, 1.0) == (
        tcp_key(dport=80),
        Verdict("port", app="http", guess=True),
    )
    assert classifier.feed(tcp_frame(b"", flags=FIN, dport=81), 1.0) is None  # no flow: nothing


@pytest.mark.parametrize(
    ("request_bytes", "host"),
    [
        (b"GET / HTTP/1.1\r\nHost: www.Example.com\r\n\r\n", "www.example.com"),
        (b"GET / HTTP/1.1\r\nhOsT:api.example.com:8080\r\n\r\n", "api.example.com"),
        (b"POST /x HTTP/1.0\r\nUA: t\r\nHost: \t b.example \r\nHost: c.example\r\n", "b.example"),
        (b"GET http://x/ HTTP/1.1\nHost: lf.example\n\n", "lf.example"),
        (b"HEAD / HTTP/1.1\r\nHost: fqdn.example.\r\n\r\n", "fqdn.example"),
    ],
)  # fmt: skip
def test_http_host_variants(request_bytes: bytes, host: str) -> None:
    result = FlowClassifier().feed(tcp_frame(request_bytes, dport=80), 1.0)
    assert result == (tcp_key(dport=80), Verdict("host", name=host))


def test_http_host_across_segments() -> None:
    request = b"GET /video HTTP/1.1\r\nAccept: */*\r\nHost: media.example.org\r\n\r\n"
    frames = segments(request, [3, 30])
    classifier = FlowClassifier()
    assert feed_all(classifier, [frames[0], frames[2]]) == [None, None]
    assert classifier.feed(frames[1], 1.0) == (
        tcp_key(),
        Verdict("host", name="media.example.org"),
    )


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: bad_name.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : spaced.example\r\n\r\n",  # not a Host header
        b"GET / HTTP/1.1\r\nX-Host: other.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.example:http\r\n\r\n",
        b"GET / HTTP/1.1\r\n\x01\x02\x03\r\nHost: late.example\r\n\r\n",  # junk line
    ],
)
def test_http_without_a_usable_host_falls_back_to_the_port(request_bytes: bytes) -> None:
    result = FlowClassifier().feed(tcp_frame(request_bytes, dport=80), 1.0)
    assert result == (tcp_key(dport=80), Verdict("port", app="http", guess=True))


def test_an_endless_header_block_is_bounded() -> None:
    from homegw.modules.dpi.classify import http

    block = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\nHost: late.example\r\n\r\n"
    assert http.parse_request(block).status is http.HttpStatus.NO_HOST
    assert http.parse_request(b"GE").status is http.HttpStatus.NEED_MORE
    assert http.parse_request(b"GET / HTTP/1.1\r\nHo").status is http.HttpStatus.NEED_MORE
    assert http.parse_request(b"GETS / HTTP/1.1\r\n").status is http.HttpStatus.NOT_HTTP
    assert http.parse_request(b"GET / HTTP/2.0\r\n").status is http.HttpStatus.NOT_HTTP


# ---- bounds, expiry, give_up ------------------------------------------------


def test_give_up_is_the_port_guess_and_drops_the_state() -> None:
    classifier = FlowClassifier()
    assert classifier.feed(tcp_frame(b"\x16\x03", dport=22), 1.0) is None
    assert len(classifier) == 1
    assert classifier.give_up(tcp_key(dport=22)) == Verdict("port", app="ssh", guess=True)
    assert len(classifier) == 0
    assert classifier.give_up(tcp_key(dport=9)) == Verdict("unknown")


def test_expire_drops_flows_past_the_timeout() -> None:
    classifier = FlowClassifier(timeout=10.0)
    classifier.feed(tcp_frame(b"\x16", sport=1), 100.0)
    classifier.feed(tcp_frame(b"\x16", sport=2), 105.0)
    assert classifier.expire(109.9) == []
    assert classifier.expire(110.0) == [tcp_key(sport=1)]
    assert classifier.expire(200.0) == [tcp_key(sport=2)]
    assert len(classifier) == 0


def test_the_oldest_flow_makes_room_and_the_next_expire_reports_it() -> None:
    classifier = FlowClassifier(max_flows=3)
    for port in (1, 2, 3, 4):
        classifier.feed(tcp_frame(b"\x16", sport=port), float(port))
    assert len(classifier) == 3
    assert classifier.counters["evicted"] == 1
    assert classifier.expire(4.0) == [tcp_key(sport=1)]
    assert classifier.expire(4.0) == []


def test_constants_match_the_datapath_contract() -> None:
    dpi_h = (Path(__file__).parents[2] / "homegw/modules/dpi/dpi.h").read_text()
    assert f"#define DPI_PUNT_PACKETS {FINAL_AFTER} " in dpi_h
    for source, number in SOURCE_NUMBERS.items():
        assert f"#define DPI_SOURCE_{source.upper()} {number} " in dpi_h


def test_frames_as_bytearray_or_memoryview() -> None:
    """A perf-buffer callback may hand over any bytes-like object."""
    hello = ssl_client_hello("www.netflix.com")
    for frame in (bytearray(tcp_frame(hello)), memoryview(tcp_frame(hello, sport=2))):
        result = FlowClassifier().feed(frame, 1.0)  # type: ignore[arg-type]
        assert result is not None and result[1] == Verdict("sni", name="www.netflix.com")
