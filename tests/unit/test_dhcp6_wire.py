"""The DHCPv6 codec: exact bytes of a SOLICIT, round trips of every option,
and a clean Dhcp6Error (with its reason) for each kind of malformed input."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address, IPv6Network

import pytest

from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.wire import (
    Dhcp6Error,
    IaAddr,
    IaNa,
    IaPd,
    IaPrefix,
    Message,
    MsgType,
    Opt,
    StatusCode,
)

MAC = bytes.fromhex("020000000001")
DUID = wire.duid_ll(MAC)
SERVER = bytes.fromhex("000100012b3c4d5e020000000099")


def opt(code: int, body: bytes) -> bytes:
    return struct.pack(">HH", code, len(body)) + body


def header(kind: int = MsgType.REPLY) -> bytes:
    return bytes((kind,)) + b"\x12\x34\x56"


def test_solicit_exact_bytes() -> None:
    msg = Message(
        MsgType.SOLICIT,
        0x123456,
        client_id=DUID,
        ia_na=(IaNa(1),),
        ia_pd=(IaPd(1, prefixes=(IaPrefix(IPv6Network("::/56"), 0, 0),)),),
        oro=(Opt.DNS_SERVERS, Opt.DOMAIN_LIST),
        elapsed=0,
    )
    expected = bytes.fromhex(
        "01123456"
        "0001000a00030001020000000001"
        "0003000c000000010000000000000000"
        "00190029000000010000000000000000"
        "001a0019000000000000000038" + "00" * 16 + "0006000400170018"
        "000800020000"
    )
    assert wire.encode(msg) == expected
    assert wire.decode(expected) == msg


def test_reply_round_trip_with_every_option() -> None:
    msg = Message(
        MsgType.REPLY,
        0xABCDEF,
        client_id=DUID,
        server_id=SERVER,
        ia_na=(
            IaNa(
                7,
                10,
                16,
                (IaAddr(IPv6Address("2001:db8:ffff:1::1000"), 30, 40),),
                StatusCode(wire.Status.SUCCESS, "ok"),
            ),
        ),
        ia_pd=(
            IaPd(
                7,
                10,
                16,
                (
                    IaPrefix(IPv6Network("2001:db8:100::/56"), 0, 0, StatusCode(0, "gone")),
                    IaPrefix(IPv6Network("2001:db8:200::/56"), 30, 40),
                ),
            ),
        ),
        preference=255,
        status=StatusCode(wire.Status.SUCCESS, "all good"),
        rapid_commit=True,
        reconf_accept=True,
        dns_servers=(IPv6Address("2001:db8:ffff:53::53"),),
        domains=("home.arpa", "example.test"),
        info_refresh=86400,
        fqdn=b"\x01\x05laptop\x00",
    )
    assert wire.decode(wire.encode(msg)) == msg


def test_unknown_options_are_skipped_and_listed() -> None:
    data = header() + opt(Opt.CLIENTID, DUID) + opt(999, b"xyz")
    msg = wire.decode(data)
    assert msg.client_id == DUID and msg.unknown == (999,)


def test_duid_helpers() -> None:
    assert wire.duid_mac(DUID) == MAC
    llt = struct.pack(">HHI", 1, 1, 12345) + MAC
    assert wire.duid_mac(llt) == MAC
    assert wire.duid_mac(struct.pack(">HI", 2, 9) + b"abc") is None
    assert wire.check_duid(llt) == llt


def test_fqdn_first_label() -> None:
    assert wire.fqdn_first_label(b"\x00\x06laptop\x04home\x00") == b"laptop"
    assert wire.fqdn_first_label(b"\x00\x40" + b"a" * 64) is None
    assert wire.fqdn_first_label(b"\x00\x09abc") is None
    assert wire.fqdn_first_label(b"\x00") is None


def test_partial_name() -> None:
    assert wire.decode_names(b"\x06laptop", partial=True) == ("laptop",)
    with pytest.raises(Dhcp6Error):
        wire.decode_names(b"\x06laptop")


def ia_na(body_items: bytes = b"", iaid: int = 1) -> bytes:
    return opt(Opt.IA_NA, struct.pack(">III", iaid, 0, 0) + body_items)


BAD = {
    "short_message": b"\x07\x00",
    "bad_msg_type": b"\x0c\x00\x00\x00",
    "truncated_option": header() + b"\x00\x01\x00",
    "option_overflow": header() + b"\x00\x01\x00\x20" + DUID,
    "bad_duid": header() + opt(Opt.CLIENTID, b"\x00\x03\x00"),
    "bad_duid ": header() + opt(Opt.CLIENTID, b"\x00\x04" + b"u" * 15),
    "bad_duid  ": header() + opt(Opt.SERVERID, b"\x00\x01" + b"x" * 200),
    "duplicate_option": header() + opt(Opt.CLIENTID, DUID) + opt(Opt.CLIENTID, DUID),
    "bad_ia": header() + opt(Opt.IA_NA, b"\x00" * 11),
    "bad_iaaddr": header() + ia_na(opt(Opt.IAADDR, b"\x00" * 23)),
    "bad_iaprefix": header()
    + opt(Opt.IA_PD, b"\x00" * 12 + opt(Opt.IAPREFIX, b"\x00" * 8 + b"\x81" + b"\x00" * 16)),
    "bad_iaprefix ": header()
    + opt(Opt.IA_PD, b"\x00" * 12 + opt(Opt.IAPREFIX, b"\x00" * 8 + b"\x08" + b"\xff" * 16)),
    "option_overflow ": header() + ia_na(b"\x00\x05\x00\x30" + b"\x00" * 24),
    "too_many_ias": header() + b"".join(ia_na(iaid=i) for i in range(wire.MAX_IAS + 1)),
    "too_many_ia_items": header() + ia_na(opt(Opt.IAADDR, b"\x00" * 24) * (wire.MAX_IA_ITEMS + 1)),
    "duplicate_iaid": header() + ia_na() + ia_na(),
    "bad_status": header() + opt(Opt.STATUS_CODE, b"\x00"),
    "bad_elapsed": header() + opt(Opt.ELAPSED_TIME, b"\x00"),
    "bad_oro": header() + opt(Opt.ORO, b"\x00\x17\x00"),
    "bad_preference": header() + opt(Opt.PREFERENCE, b""),
    "bad_rapid_commit": header() + opt(Opt.RAPID_COMMIT, b"\x00"),
    "bad_dns_servers": header() + opt(Opt.DNS_SERVERS, b"\x00" * 17),
    "bad_name": header() + opt(Opt.DOMAIN_LIST, b"\x40" + b"a" * 64 + b"\x00"),
    "bad_name ": header() + opt(Opt.DOMAIN_LIST, b"\x04home"),
    "bad_name  ": header() + opt(Opt.DOMAIN_LIST, b"\x00"),
    "bad_name   ": header() + opt(Opt.DOMAIN_LIST, (b"\x3f" + b"a" * 63) * 5 + b"\x00"),
    "bad_info_refresh": header() + opt(Opt.INFORMATION_REFRESH_TIME, b"\x00\x00"),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_malformed_message_raises_its_reason(reason: str) -> None:
    with pytest.raises(Dhcp6Error) as err:
        wire.decode(BAD[reason])
    assert err.value.reason == reason.strip()
