"""Hypothesis against the DHCPv6 codec: any bytes decode or raise Dhcp6Error
(nothing else), mutations of real messages likewise, and every message the
encoder can build decodes back to itself."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.server import BindingTable, ServerLogic, ServerOptions
from homegw.modules.ipv6.dhcp6.wire import Dhcp6Error, IaAddr, IaNa, IaPd, IaPrefix, Message

u32 = st.integers(0, 0xFFFFFFFF)
addresses = st.integers(0, 2**128 - 1).map(IPv6Address)
prefixes = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    lambda t: IPv6Network((t[0], t[1]), strict=False)
)
duids = st.one_of(
    st.binary(min_size=6, max_size=6).map(wire.duid_ll),
    st.binary(min_size=1, max_size=120).map(lambda b: b"\x00\x02\x00\x00\x00\x09" + b),
)
ia_nas = st.builds(
    IaNa, u32, u32, u32, st.lists(st.builds(IaAddr, addresses, u32, u32), max_size=3).map(tuple)
)
ia_pds = st.builds(
    IaPd, u32, u32, u32, st.lists(st.builds(IaPrefix, prefixes, u32, u32), max_size=3).map(tuple)
)
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
messages = st.builds(
    Message,
    st.sampled_from([t for t in wire.MsgType if t < wire.MsgType.RELAY_FORW]),
    st.integers(0, 0xFFFFFF),
    client_id=st.none() | duids,
    server_id=st.none() | duids,
    ia_na=st.lists(ia_nas, max_size=2, unique_by=lambda ia: ia.iaid).map(tuple),
    ia_pd=st.lists(ia_pds, max_size=2, unique_by=lambda ia: ia.iaid).map(tuple),
    oro=st.lists(st.integers(0, 0xFFFF), max_size=5).map(tuple),
    elapsed=st.none() | st.integers(0, 0xFFFF),
    preference=st.none() | st.integers(0, 255),
    rapid_commit=st.booleans(),
    dns_servers=st.lists(addresses, max_size=3).map(tuple),
    domains=st.lists(st.lists(labels, min_size=1, max_size=3).map(".".join), max_size=2).map(tuple),
    info_refresh=st.none() | u32,
)


def decode_or_error(data: bytes) -> None:
    try:
        wire.decode(data)
    except Dhcp6Error as err:
        assert err.reason


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decode_or_error(data)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_encode_decode_round_trip(msg: Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


@settings(max_examples=400, deadline=None)
@given(messages, st.data())
def test_mutated_messages(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw) - 1))
        raw[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    decode_or_error(bytes(raw[:cut]))


POOLS = ServerOptions(
    (IPv6Address("fd00::1"),),
    ("home.arpa",),
    pools=((IPv6Address("fd00::1000"), IPv6Address("fd00::1fff")),),
)


@settings(max_examples=400, deadline=None)
@given(messages, st.data())
def test_server_survives_any_message(msg: Message, data: st.DataObject) -> None:
    server_duid = wire.duid_ll(b"\x02\x00\x00\x00\x00\x01")
    logic = ServerLogic(server_duid, BindingTable())
    options = data.draw(st.sampled_from([POOLS, ServerOptions((), ())]))
    if data.draw(st.booleans()):  # addressed to this server (REQUEST, RENEW...)
        msg = dataclasses.replace(msg, server_id=server_duid)
    for step in range(3):  # the same message again, later: renewals of what it got
        reply = logic.handle(msg, IPv6Address("fe80::1"), options, 10.0 * step)
        if reply is not None:
            assert wire.decode(wire.encode(reply)) == reply
            assert reply.transaction_id == msg.transaction_id
