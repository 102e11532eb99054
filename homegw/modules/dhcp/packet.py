"""DHCPv4 wire format (RFC 2131/2132): a small strict codec over `struct`.

`parse()` turns a UDP payload into a `DhcpMessage` or raises `MalformedPacket`
whose `reason` names what was wrong (the server counts drops by reason):
every length is checked against the buffer before it is used, so no input
can make the parser read past the end or allocate more than the packet.

Options are kept as raw bytes in a dict in wire order; an option that
appears more than once is concatenated (RFC 3396), and with option overload
(52) the `file` and then `sname` fields are parsed as further options.
Addresses are plain ints (host order) on the hot path; `ip_str()` shows them.

`encode()` builds a message: options in dict order, values over 255 bytes
split into several instances (RFC 3396), padded to the BOOTP minimum of
300 bytes that old clients need (RFC 1542).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHER = 1
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BROADCAST_FLAG = 0x8000
MIN_MESSAGE = 300  # BOOTP minimum (RFC 1542 §2.1)
HEADER = struct.Struct("!BBBBIHHIIII16s64s128s")  # 236 bytes, then the cookie
OPTIONS_AT = HEADER.size + len(MAGIC_COOKIE)
SNAME_AT, FILE_AT = 44, 108  # offsets of the 64-byte sname and 128-byte file fields

# Message types (option 53)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {
    DISCOVER: "DHCPDISCOVER",
    OFFER: "DHCPOFFER",
    REQUEST: "DHCPREQUEST",
    DECLINE: "DHCPDECLINE",
    ACK: "DHCPACK",
    NAK: "DHCPNAK",
    RELEASE: "DHCPRELEASE",
    INFORM: "DHCPINFORM",
}

# Option codes used here
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_DOMAIN = 1, 3, 6, 12, 15
OPT_BROADCAST = 28
OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_OVERLOAD, OPT_MESSAGE_TYPE = 50, 51, 52, 53
OPT_SERVER_ID, OPT_PARAM_LIST, OPT_MESSAGE, OPT_MAX_SIZE = 54, 55, 56, 57
OPT_T1, OPT_T2, OPT_CLIENT_ID, OPT_FQDN = 58, 59, 61, 81

#: Options whose value has a fixed length; anything else is malformed.
FIXED_LENGTH = {
    OPT_REQUESTED_IP: 4,
    OPT_LEASE_TIME: 4,
    OPT_OVERLOAD: 1,
    OPT_MESSAGE_TYPE: 1,
    OPT_SERVER_ID: 4,
    OPT_MAX_SIZE: 2,
}
MAX_NAME_OPTION = 255  # longest hostname / FQDN option value accepted
MAX_LABEL = 63  # RFC 1123 label


class MalformedPacket(ValueError):
    """A message that breaks the wire format; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class DhcpMessage:
    """One DHCP message. Addresses are ints in host order; chaddr is 6 bytes."""

    op: int
    xid: int
    chaddr: bytes
    options: dict[int, bytes] = field(default_factory=dict)
    ciaddr: int = 0
    yiaddr: int = 0
    siaddr: int = 0
    giaddr: int = 0
    flags: int = 0
    secs: int = 0
    hops: int = 0

    @property
    def msg_type(self) -> int:
        return self.options[OPT_MESSAGE_TYPE][0]

    @property
    def mac(self) -> str:
        return self.chaddr.hex(":")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    def ip_option(self, code: int) -> int | None:
        """A 4-byte address option as an int, or None when absent."""
        value = self.options.get(code)
        return int.from_bytes(value, "big") if value is not None else None

    @property
    def requested_ip(self) -> int | None:
        return self.ip_option(OPT_REQUESTED_IP)

    @property
    def server_id(self) -> int | None:
        return self.ip_option(OPT_SERVER_ID)

    @property
    def client_id(self) -> bytes | None:
        value = self.options.get(OPT_CLIENT_ID)
        return value or None

    @property
    def param_list(self) -> bytes:
        return self.options.get(OPT_PARAM_LIST, b"")


def ip_str(value: int) -> str:
    """Dotted quad of an int address."""
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def ip_int(text: str) -> int:
    """Int of a dotted quad."""
    return int.from_bytes(socket.inet_aton(text), "big")


# --- parsing ----------------------------------------------------------------------


def parse(data: bytes, expect_op: int = BOOTREQUEST) -> DhcpMessage:
    """Decode one message; raise MalformedPacket on anything out of bounds."""
    if len(data) < OPTIONS_AT:
        raise MalformedPacket("truncated", f"{len(data)} bytes, need at least {OPTIONS_AT}")
    op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, _, _ = HEADER.unpack_from(data)
    if op != expect_op:
        raise MalformedPacket("wrong_op", f"op {op}")
    if data[HEADER.size : OPTIONS_AT] != MAGIC_COOKIE:
        raise MalformedPacket("bad_cookie", data[HEADER.size : OPTIONS_AT].hex())
    if htype != HTYPE_ETHER or hlen != 6:
        raise MalformedPacket("bad_hardware", f"htype {htype} hlen {hlen}")
    options: dict[int, bytes] = {}
    _parse_options(data, OPTIONS_AT, len(data), options)
    _parse_overload(data, options)
    _check_options(options)
    return DhcpMessage(op, xid, chaddr[:6], options, ci, yi, si, gi, flags, secs, hops)


def _parse_options(buf: bytes, start: int, end: int, out: dict[int, bytes]) -> None:
    i = start
    while i < end:
        code = buf[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return
        if i + 1 >= end:
            raise MalformedPacket("option_overrun", f"option {code} has no length byte")
        stop = i + 2 + buf[i + 1]
        if stop > end:
            raise MalformedPacket("option_overrun", f"option {code} runs past the end")
        value = buf[i + 2 : stop]
        out[code] = out[code] + value if code in out else value
        i = stop
    # A missing END option is tolerated: some stacks stop at the last option.


def _parse_overload(buf: bytes, options: dict[int, bytes]) -> None:
    overload = options.get(OPT_OVERLOAD)
    if overload is None:
        return
    if len(overload) != 1 or overload[0] not in (1, 2, 3):
        raise MalformedPacket("bad_overload", overload.hex())
    # RFC 3396 §7: options, then file, then sname.
    if overload[0] & 1:
        _parse_options(buf, FILE_AT, FILE_AT + 128, options)
    if overload[0] & 2:
        _parse_options(buf, SNAME_AT, SNAME_AT + 64, options)


def _check_options(options: dict[int, bytes]) -> None:
    for code, size in FIXED_LENGTH.items():
        value = options.get(code)
        if value is not None and len(value) != size:
            raise MalformedPacket("bad_option_length", f"option {code} has {len(value)} bytes")
    mtype = options.get(OPT_MESSAGE_TYPE)
    if mtype is None:
        raise MalformedPacket("no_message_type")
    if mtype[0] not in TYPE_NAMES:
        raise MalformedPacket("bad_message_type", str(mtype[0]))
    for code in (OPT_HOSTNAME, OPT_FQDN):
        if len(options.get(code, b"")) > MAX_NAME_OPTION:
            raise MalformedPacket("hostname_too_long", f"option {code}")


# --- building ---------------------------------------------------------------------


def encode(msg: DhcpMessage, min_size: int = MIN_MESSAGE) -> bytes:
    """Wire bytes of `msg`: header, cookie, options in dict order, END, padding."""
    chaddr = msg.chaddr.ljust(16, b"\0")
    head = HEADER.pack(
        msg.op,
        HTYPE_ETHER,
        6,
        msg.hops,
        msg.xid,
        msg.secs,
        msg.flags,
        msg.ciaddr,
        msg.yiaddr,
        msg.siaddr,
        msg.giaddr,
        chaddr,
        b"",
        b"",
    )
    parts = [head, MAGIC_COOKIE]
    for code, value in msg.options.items():
        parts.append(encode_option(code, value))
    parts.append(b"\xff")
    out = b"".join(parts)
    return out.ljust(min_size, b"\0") if len(out) < min_size else out


def encode_option(code: int, value: bytes) -> bytes:
    """One option; a value over 255 bytes becomes several instances (RFC 3396)."""
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
    return b"".join(bytes((code, len(c))) + c for c in chunks)


# --- host names -------------------------------------------------------------------

_LABEL_OK = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")


def sanitize_label(raw: bytes) -> str | None:
    """An RFC 1123 label from untrusted bytes: the first label, lower-case,
    other characters turned into '-', no leading/trailing '-', at most 63
    characters; None when nothing usable is left."""
    first = raw.split(b".", 1)[0].lower()[: MAX_LABEL * 4]
    cleaned = bytes(c if c in _LABEL_OK else 0x2D for c in first)
    label = cleaned.strip(b"-")[:MAX_LABEL].rstrip(b"-")
    return label.decode("ascii") or None


def client_hostname(msg: DhcpMessage) -> str | None:
    """The client's name from option 81 (FQDN, preferred) or option 12, sanitised."""
    fqdn = msg.options.get(OPT_FQDN)
    if fqdn is not None and len(fqdn) > 3:
        name = _fqdn_first_label(fqdn)
        if name:
            return sanitize_label(name)
    host = msg.options.get(OPT_HOSTNAME)
    return sanitize_label(host) if host else None


MAX_SENT_NAME = 64  # characters of a client's name kept for display


def name_as_sent(msg: DhcpMessage) -> str | None:
    """The client's name as it sent it (option 81's host label, else option
    12 whole), for people to read: UTF-8 (bad bytes become U+FFFD), control
    characters dropped, at most MAX_SENT_NAME characters. Untrusted text: it
    is shown escaped and never used as a DNS name (client_hostname is)."""
    fqdn = msg.options.get(OPT_FQDN)
    raw = b""
    if fqdn is not None and len(fqdn) > 3:  # the host part of the FQDN
        raw = _fqdn_first_label(fqdn).split(b".", 1)[0]
    raw = raw or msg.options.get(OPT_HOSTNAME) or b""
    text = raw[: MAX_SENT_NAME * 4].decode("utf-8", "replace")
    text = "".join(c for c in text if c.isprintable())[:MAX_SENT_NAME].strip()
    return text or None


def _fqdn_first_label(value: bytes) -> bytes:
    """First label of option 81's name: wire format when the E flag is set."""
    flags, name = value[0], value[3:]
    if not flags & 0x04:
        return name
    length = name[0]
    return name[1 : 1 + length] if 0 < length < len(name) else b""


def fqdn_reply(request: bytes, fqdn: str) -> bytes:
    """Option 81 for a reply (RFC 4702 §4): the server updates the A record
    (S=1), says so when it overrode the client (O), same encoding (E)."""
    encoded = request[0] & 0x04
    overridden = 0x02 if not request[0] & 0x01 else 0
    flags = 0x01 | overridden | encoded
    if encoded:
        name = b"".join(bytes((len(p),)) + p.encode() for p in fqdn.split(".")) + b"\0"
    else:
        name = fqdn.encode()
    return bytes((flags, 255, 255)) + name
