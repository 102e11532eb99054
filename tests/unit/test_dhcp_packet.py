"""The DHCP codec: exact bytes out, exact fields back, and every malformed
input ends in MalformedPacket with the right reason (never another error)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homegw.modules.dhcp import packet as p

MAC = bytes.fromhex("024847000001")


def discover(**options: bytes) -> p.DhcpMessage:
    opts = {p.OPT_MESSAGE_TYPE: bytes((p.DISCOVER,))}
    opts.update({int(k[1:]): v for k, v in options.items()})
    return p.DhcpMessage(p.BOOTREQUEST, 0x11223344, MAC, opts, flags=p.BROADCAST_FLAG)


def raw(msg: p.DhcpMessage) -> bytearray:
    return bytearray(p.encode(msg))


def test_encode_lays_out_the_header_cookie_options_and_padding() -> None:
    msg = p.DhcpMessage(
        p.BOOTREPLY,
        0xA1B2C3D4,
        MAC,
        {p.OPT_MESSAGE_TYPE: b"\x02", p.OPT_SERVER_ID: bytes((192, 168, 1, 1))},
        ciaddr=0,
        yiaddr=p.ip_int("192.168.1.100"),
        giaddr=p.ip_int("10.0.0.2"),
        flags=0x8000,
        secs=3,
    )
    data = p.encode(msg)
    assert len(data) == 300  # BOOTP minimum
    assert data[:12] == bytes((2, 1, 6, 0)) + bytes.fromhex("a1b2c3d4") + b"\x00\x03\x80\x00"
    assert data[12:28] == bytes(4) + bytes((192, 168, 1, 100)) + bytes(4) + bytes((10, 0, 0, 2))
    assert data[28:44] == MAC + bytes(10)
    assert data[44:236] == bytes(192)  # sname, file
    assert data[236:240] == p.MAGIC_COOKIE
    assert data[240:250] == bytes((53, 1, 2, 54, 4, 192, 168, 1, 1, 255))
    assert data[250:] == bytes(50)


def test_parse_returns_every_field() -> None:
    msg = discover(o12=b"h1", o55=bytes((1, 3, 6)), o50=bytes((192, 168, 1, 7)))
    msg.ciaddr, msg.giaddr, msg.secs, msg.hops = 0x0A000001, 0x0A000002, 9, 1
    got = p.parse(p.encode(msg))
    assert got == msg
    assert got.msg_type == p.DISCOVER
    assert got.mac == "02:48:47:00:00:01"
    assert got.broadcast is True
    assert got.requested_ip == p.ip_int("192.168.1.7")
    assert got.server_id is None
    assert got.param_list == bytes((1, 3, 6))
    assert list(got.options) == [53, 12, 55, 50]


def test_long_option_is_split_on_encode_and_concatenated_on_parse() -> None:
    value = bytes(range(256)) + bytes(44)  # 300 bytes
    encoded = p.encode_option(77, value)
    assert encoded[:2] == bytes((77, 255)) and encoded[257:259] == bytes((77, 45))
    assert len(encoded) == 304
    assert p.parse(p.encode(discover(o77=value))).options[77] == value


def test_overloaded_file_and_sname_carry_options_in_rfc3396_order() -> None:
    data = raw(discover(o52=b"\x03", o60=b"main"))
    data[p.FILE_AT : p.FILE_AT + 8] = bytes((60, 4)) + b"file" + b"\xff\x00"
    data[p.SNAME_AT : p.SNAME_AT + 9] = bytes((60, 5)) + b"sname" + b"\xff\x00"
    got = p.parse(bytes(data))
    assert got.options[60] == b"mainfilesname"


def test_missing_end_option_is_tolerated() -> None:
    data = bytes(raw(discover()))[: p.OPTIONS_AT + 3]  # 53/1/1 and nothing after
    assert p.parse(data).msg_type == p.DISCOVER


MALFORMED = [
    ("truncated", lambda d: d[:239]),
    ("bad_cookie", lambda d: d[:236] + b"\x63\x82\x53\x64" + d[240:]),
    ("wrong_op", lambda d: b"\x02" + d[1:]),
    ("bad_hardware", lambda d: d[:2] + b"\x10" + d[3:]),
    ("option_overrun", lambda d: d[:240] + bytes((53, 1, 1, 12, 200)) + b"abc"),
    ("option_overrun", lambda d: d[:240] + bytes((53, 1, 1, 12))),
    ("no_message_type", lambda d: d[:240] + bytes((12, 2)) + b"h1" + b"\xff"),
    ("bad_message_type", lambda d: d[:240] + bytes((53, 1, 9, 255))),
    ("bad_option_length", lambda d: d[:240] + bytes((53, 1, 1, 50, 3, 1, 2, 3, 255))),
    ("bad_overload", lambda d: d[:240] + bytes((53, 1, 1, 52, 1, 7, 255))),
    (
        "hostname_too_long",  # 300 bytes of host name in two option 12s
        lambda d: d[:240] + bytes((53, 1, 1, 12, 255)) + b"a" * 255 + bytes((12, 45)) + b"a" * 45,
    ),
]


@pytest.mark.parametrize(("reason", "mangle"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_its_reason(reason: str, mangle) -> None:
    data = mangle(bytes(raw(discover())))
    with pytest.raises(p.MalformedPacket) as exc:
        p.parse(data)
    assert exc.value.reason == reason


def test_hostname_of_255_bytes_is_accepted_and_sanitised() -> None:
    got = p.parse(p.encode(discover(o12=b"A" * 255)))
    assert p.client_hostname(got) == "a" * 63


@pytest.mark.parametrize(
    ("raw_name", "label"),
    [
        (b"My_Laptop.local", "my-laptop"),
        (b"--x--", "x"),
        (b"a b\tc", "a-b-c"),
        (b"\xff\xfe", None),
        (b"", None),
        (b"." * 5, None),
        (b"x" * 62 + b"-y", "x" * 62),
        (b"caf\xc3\xa9", "caf"),
    ],
)
def test_sanitize_label(raw_name: bytes, label: str | None) -> None:
    assert p.sanitize_label(raw_name) == label


def test_fqdn_option_beats_host_name_in_either_encoding() -> None:
    wire = bytes((0x05, 0, 0)) + b"\x06Laptop\x03lan\x00"  # E and S flags
    assert p.client_hostname(discover(o81=wire, o12=b"other")) == "laptop"
    ascii_name = bytes((0x00, 0, 0)) + b"phone.example"
    assert p.client_hostname(discover(o81=ascii_name)) == "phone"
    assert p.client_hostname(discover(o12=b"Printer")) == "printer"
    assert p.client_hostname(discover(o81=bytes((0x04, 0, 0)) + b"\x09ab")) is None
    assert p.client_hostname(discover()) is None


def test_fqdn_reply_flags_and_encoding() -> None:
    assert p.fqdn_reply(bytes((0x04, 0, 0)), "h1.lan") == bytes((0x07, 255, 255)) + (
        b"\x02h1\x03lan\x00"
    )
    assert p.fqdn_reply(bytes((0x01, 0, 0)), "h1.lan") == bytes((0x01, 255, 255)) + b"h1.lan"


def test_ip_helpers_round_trip() -> None:
    assert p.ip_int("192.168.1.100") == 0xC0A80164
    assert p.ip_str(0xC0A80164) == "192.168.1.100"


# --- fuzzing: no input may raise anything but MalformedPacket --------------------------


def _parse_or_malformed(data: bytes) -> None:
    try:
        msg = p.parse(data)
    except p.MalformedPacket as exc:
        assert exc.reason
        return
    assert msg.msg_type in p.TYPE_NAMES
    p.client_hostname(msg)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=700))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    _parse_or_malformed(data)


VALID = bytes(raw(discover(o12=b"host", o55=bytes((1, 3, 6, 15)), o61=b"\x01" + MAC)))


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(VALID)),
)
def test_mutated_valid_messages_never_crash_the_parser(
    flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(VALID)
    for index, value in flips:
        data[index] = value
    _parse_or_malformed(bytes(data[:cut]))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_random_option_area_never_crashes_the_parser(options: bytes) -> None:
    _parse_or_malformed(VALID[: p.OPTIONS_AT] + options)
