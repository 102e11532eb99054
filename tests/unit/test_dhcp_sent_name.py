"""The name a DHCP client sent, kept for people to read beside the DNS label
made of it: hostile bytes are kept as text (the UI escapes them), never as
a DNS name, and the lease file of an older version gains the column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.leases import LeaseDb, State
from homegw.modules.dhcp.protocol import DhcpProtocol
from tests.unit.test_dhcp_protocol import T0, dora, msg, proto, reply_of

_ = proto  # the fixture


def named(hostname: bytes) -> p.DhcpMessage:
    return msg(p.REQUEST, options={p.OPT_HOSTNAME: hostname})


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        (b"<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("Anna’s iPhone".encode(), "Anna’s iPhone"),
        (b"bad\xff\xfeutf8", "bad\ufffd\ufffdutf8"),
        (b"tab\there\x00nul\x1b[31m", "tabherenul[31m"),
        (b"x" * 255, "x" * p.MAX_SENT_NAME),
        (b"\x00\x01\x02", None),
        (b"   ", None),
    ],
)
def test_the_name_as_sent_is_printable_text_of_bounded_length(
    sent: bytes, shown: str | None
) -> None:
    assert p.name_as_sent(named(sent)) == shown


def test_option_81_wins_over_option_12() -> None:
    fqdn = bytes((0, 0, 0)) + b"Kitchen Display.example"
    message = msg(p.REQUEST, options={p.OPT_FQDN: fqdn, p.OPT_HOSTNAME: b"other"})
    assert p.name_as_sent(message) == "Kitchen Display"


def test_the_lease_keeps_the_name_as_sent_and_the_dns_label_apart(proto: DhcpProtocol) -> None:
    dora(proto, o12=b"<script>alert(1)</script>")
    [lease] = proto.pool.active(T0)
    assert lease.sent_name == "<script>alert(1)</script>"
    assert lease.hostname == "script-alert-1---script"
    # a renewal that sends no name keeps the one sent before
    options = {p.OPT_REQUESTED_IP: lease.address.to_bytes(4, "big")}
    ack = reply_of(proto.handle(msg(p.REQUEST, options=options), T0 + 60))
    assert ack.msg_type == p.ACK
    [renewed] = proto.pool.active(T0 + 60)
    assert renewed.sent_name == "<script>alert(1)</script>"


def test_a_lease_file_without_the_column_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE leases (address INTEGER PRIMARY KEY, client TEXT NOT NULL,"
        " mac TEXT NOT NULL, hostname TEXT, expires REAL NOT NULL, state TEXT NOT NULL)"
    )
    old.execute("INSERT INTO leases VALUES (5, 'hw:m', 'm', 'h', 9.0, 'bound')")
    old.commit()
    old.close()
    db = LeaseDb(path)
    [lease] = db.load()
    assert (lease.hostname, lease.sent_name, lease.state) == ("h", None, State.BOUND)
    db.save(lease.__class__(6, "hw:n", "n", "n", 9.0, State.BOUND, "N’s phone"))
    assert {x.sent_name for x in db.load()} == {None, "N’s phone"}
    db.close()
