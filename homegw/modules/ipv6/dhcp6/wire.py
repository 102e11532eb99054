"""DHCPv6 messages on the wire (RFC 8415), without I/O.

`decode(data)` turns a datagram into a `Message`; `encode(message)` does the
reverse. Only client/server messages (no relay framing: the gateway talks to
its own links only). Every datagram is hostile: any length, nesting or
content problem raises `Dhcp6Error` with a short `reason` (used as a counter
key by the callers), never another exception. Bounds: at most MAX_IAS IA
options and MAX_IA_ITEMS addresses/prefixes per IA, DUIDs of at most
MAX_DUID bytes (RFC 8415 11.1: 128 + the type), names of at most 255 bytes.

Options understood: CLIENTID/SERVERID (DUID-LLT/EN/LL/UUID checked, other
types kept opaque), IA_NA + IAADDR, IA_PD + IAPREFIX, ORO, PREFERENCE,
ELAPSED_TIME, STATUS_CODE (top level and inside IAs/addresses), RAPID_COMMIT,
RECONF_ACCEPT, DNS_SERVERS (RFC 3646), DOMAIN_LIST, INFORMATION_REFRESH_TIME,
CLIENT_FQDN (RFC 4704, the name kept raw). Other options are skipped.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

INFINITY = 0xFFFFFFFF  # a lifetime or timer that never ends
MAX_IAS = 8  # IA_NA + IA_PD options per message
MAX_IA_ITEMS = 16  # IAADDR / IAPREFIX options per IA
MAX_DUID = 130
MAX_ORO = 64
MAX_SERVERS = 16  # DNS servers / domains kept
MAX_NAME = 255


class Dhcp6Error(ValueError):
    """A malformed DHCPv6 message; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class MsgType(enum.IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11
    RELAY_FORW = 12
    RELAY_REPL = 13


class Opt(enum.IntEnum):
    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    RECONF_ACCEPT = 20
    DNS_SERVERS = 23
    DOMAIN_LIST = 24
    IA_PD = 25
    IAPREFIX = 26
    INFORMATION_REFRESH_TIME = 32
    CLIENT_FQDN = 39


class Status(enum.IntEnum):
    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


class DuidType(enum.IntEnum):
    LLT = 1
    EN = 2
    LL = 3
    UUID = 4


HWTYPE_ETHERNET = 1
_OPT = struct.Struct(">HH")
_IA = struct.Struct(">III")
_LIFETIMES = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class StatusCode:
    code: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class IaAddr:
    address: IPv6Address
    preferred: int
    valid: int
    status: StatusCode | None = None


@dataclass(frozen=True, slots=True)
class IaPrefix:
    prefix: IPv6Network
    preferred: int
    valid: int
    status: StatusCode | None = None


@dataclass(frozen=True, slots=True)
class IaNa:
    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: tuple[IaAddr, ...] = ()
    status: StatusCode | None = None


@dataclass(frozen=True, slots=True)
class IaPd:
    iaid: int
    t1: int = 0
    t2: int = 0
    prefixes: tuple[IaPrefix, ...] = ()
    status: StatusCode | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One DHCPv6 message; absent options are None / empty / False."""

    msg_type: int
    transaction_id: int
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: tuple[IaNa, ...] = ()
    ia_pd: tuple[IaPd, ...] = ()
    oro: tuple[int, ...] = ()
    elapsed: int | None = None  # hundredths of a second
    preference: int | None = None
    status: StatusCode | None = None
    rapid_commit: bool = False
    reconf_accept: bool = False
    dns_servers: tuple[IPv6Address, ...] = ()
    domains: tuple[str, ...] = ()
    info_refresh: int | None = None
    fqdn: bytes | None = None  # CLIENT_FQDN option body (flags + wire name)
    unknown: tuple[int, ...] = field(default=())  # codes of skipped options


# --------------------------------------------------------------------- DUIDs


def check_duid(raw: bytes) -> bytes:
    """`raw` if it is a well-formed DUID, else Dhcp6Error("bad_duid")."""
    if not 2 < len(raw) <= MAX_DUID:
        raise Dhcp6Error("bad_duid", f"length {len(raw)}")
    kind = int.from_bytes(raw[:2], "big")
    minimum = {DuidType.LLT: 9, DuidType.EN: 7, DuidType.LL: 5, DuidType.UUID: 18}.get(kind, 3)
    if len(raw) < minimum or (kind == DuidType.UUID and len(raw) != 18):
        raise Dhcp6Error("bad_duid", f"type {kind} length {len(raw)}")
    return raw


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (RFC 8415 11.4) for an Ethernet MAC."""
    return struct.pack(">HH", DuidType.LL, HWTYPE_ETHERNET) + mac


def duid_mac(duid: bytes) -> bytes | None:
    """The Ethernet MAC inside a DUID-LL or DUID-LLT, else None."""
    if len(duid) < 4 or int.from_bytes(duid[2:4], "big") != HWTYPE_ETHERNET:
        return None
    kind = int.from_bytes(duid[:2], "big")
    mac = duid[4:] if kind == DuidType.LL else duid[8:] if kind == DuidType.LLT else b""
    return mac if len(mac) == 6 else None


# --------------------------------------------------------------------- decoding


def _options(data: bytes) -> list[tuple[int, bytes]]:
    """Split a run of options; every length is checked against what is left."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _OPT.size:
            raise Dhcp6Error("truncated_option", f"{len(data) - pos} bytes at {pos}")
        code, length = _OPT.unpack_from(data, pos)
        pos += _OPT.size
        if length > len(data) - pos:
            raise Dhcp6Error("option_overflow", f"option {code} length {length}")
        out.append((code, data[pos : pos + length]))
        pos += length
    return out


def _status(body: bytes) -> StatusCode:
    if len(body) < 2:
        raise Dhcp6Error("bad_status", f"length {len(body)}")
    text = body[2:].decode("utf-8", errors="replace")[:200]
    return StatusCode(int.from_bytes(body[:2], "big"), text)


def _sub_status(code: int, body: bytes, status: StatusCode | None) -> StatusCode:
    if status is not None:
        raise Dhcp6Error("duplicate_option", f"status in option {code}")
    return _status(body)


def _iaaddr(body: bytes) -> IaAddr:
    if len(body) < 24:
        raise Dhcp6Error("bad_iaaddr", f"length {len(body)}")
    preferred, valid = _LIFETIMES.unpack_from(body, 16)
    status = None
    for code, sub in _options(body[24:]):
        if code == Opt.STATUS_CODE:
            status = _sub_status(code, sub, status)
    return IaAddr(IPv6Address(body[:16]), preferred, valid, status)


def _iaprefix(body: bytes) -> IaPrefix:
    if len(body) < 25:
        raise Dhcp6Error("bad_iaprefix", f"length {len(body)}")
    preferred, valid = _LIFETIMES.unpack_from(body, 0)
    length = body[8]
    if length > 128:
        raise Dhcp6Error("bad_iaprefix", f"prefix length {length}")
    try:
        prefix = IPv6Network((IPv6Address(body[9:25]), length))
    except ValueError as err:
        raise Dhcp6Error("bad_iaprefix", "host bits set") from err
    status = None
    for code, sub in _options(body[25:]):
        if code == Opt.STATUS_CODE:
            status = _sub_status(code, sub, status)
    return IaPrefix(prefix, preferred, valid, status)


def _ia(body: bytes, item_code: int, parse_item) -> tuple[int, int, int, tuple, StatusCode | None]:
    if len(body) < _IA.size:
        raise Dhcp6Error("bad_ia", f"length {len(body)}")
    iaid, t1, t2 = _IA.unpack_from(body)
    items = []
    status = None
    for code, sub in _options(body[_IA.size :]):
        if code == item_code:
            if len(items) >= MAX_IA_ITEMS:
                raise Dhcp6Error("too_many_ia_items")
            items.append(parse_item(sub))
        elif code == Opt.STATUS_CODE:
            status = _sub_status(code, sub, status)
    return iaid, t1, t2, tuple(items), status


def _ia_na(body: bytes) -> IaNa:
    iaid, t1, t2, items, status = _ia(body, Opt.IAADDR, _iaaddr)
    return IaNa(iaid, t1, t2, items, status)


def _ia_pd(body: bytes) -> IaPd:
    iaid, t1, t2, items, status = _ia(body, Opt.IAPREFIX, _iaprefix)
    return IaPd(iaid, t1, t2, items, status)


def _u16(body: bytes, what: str) -> int:
    if len(body) != 2:
        raise Dhcp6Error(f"bad_{what}", f"length {len(body)}")
    return int.from_bytes(body, "big")


def _u32(body: bytes, what: str) -> int:
    if len(body) != 4:
        raise Dhcp6Error(f"bad_{what}", f"length {len(body)}")
    return int.from_bytes(body, "big")


def _addresses(body: bytes) -> tuple[IPv6Address, ...]:
    if len(body) % 16:
        raise Dhcp6Error("bad_dns_servers", f"length {len(body)}")
    count = min(len(body) // 16, MAX_SERVERS)
    return tuple(IPv6Address(body[i * 16 : i * 16 + 16]) for i in range(count))


def decode_names(body: bytes, *, partial: bool = False) -> tuple[str, ...]:
    """Uncompressed DNS names (RFC 8415 10) as dotted text, lower-case.
    `partial`: the last name may lack its root label (RFC 4704)."""
    names: list[str] = []
    labels: list[str] = []
    pos = size = 0
    while pos < len(body):
        length = body[pos]
        pos += 1
        if length == 0:
            if not labels:
                raise Dhcp6Error("bad_name", "empty name")
            names.append(".".join(labels))
            labels, size = [], 0
            continue
        if length > 63 or length > len(body) - pos:
            raise Dhcp6Error("bad_name", f"label length {length}")
        size += length + 1
        if size > MAX_NAME:
            raise Dhcp6Error("bad_name", "name too long")
        labels.append(body[pos : pos + length].decode("ascii", errors="replace").lower())
        pos += length
    if labels:
        if not partial:
            raise Dhcp6Error("bad_name", "no root label")
        names.append(".".join(labels))
    return tuple(names[:MAX_SERVERS])


def encode_name(name: str) -> bytes:
    """A dotted name as an uncompressed wire name with its root label."""
    labels = [label.encode("ascii") for label in name.strip(".").split(".") if label]
    if any(len(label) > 63 for label in labels):
        raise ValueError(f"label too long in {name!r}")
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def fqdn_first_label(fqdn: bytes) -> bytes | None:
    """The first label of a CLIENT_FQDN option body (flags byte + name), raw."""
    if len(fqdn) < 2:
        return None
    length = fqdn[1]
    if not 0 < length <= 63 or length > len(fqdn) - 2:
        return None
    return fqdn[2 : 2 + length]


_SINGLE = frozenset(
    {
        Opt.CLIENTID,
        Opt.SERVERID,
        Opt.ORO,
        Opt.PREFERENCE,
        Opt.ELAPSED_TIME,
        Opt.STATUS_CODE,
        Opt.RAPID_COMMIT,
        Opt.RECONF_ACCEPT,
        Opt.DNS_SERVERS,
        Opt.DOMAIN_LIST,
        Opt.INFORMATION_REFRESH_TIME,
        Opt.CLIENT_FQDN,
    }
)


def _flag(body: bytes, what: str) -> bool:
    if body:
        raise Dhcp6Error(f"bad_{what}", f"length {len(body)}")
    return True


def _oro(body: bytes) -> tuple[int, ...]:
    if len(body) % 2 or len(body) > 2 * MAX_ORO:
        raise Dhcp6Error("bad_oro", f"length {len(body)}")
    return struct.unpack(f">{len(body) // 2}H", body)


def _preference(body: bytes) -> int:
    if len(body) != 1:
        raise Dhcp6Error("bad_preference", f"length {len(body)}")
    return body[0]


_SIMPLE = {
    Opt.CLIENTID: ("client_id", check_duid),
    Opt.SERVERID: ("server_id", check_duid),
    Opt.ORO: ("oro", _oro),
    Opt.PREFERENCE: ("preference", _preference),
    Opt.ELAPSED_TIME: ("elapsed", lambda b: _u16(b, "elapsed")),
    Opt.STATUS_CODE: ("status", _status),
    Opt.RAPID_COMMIT: ("rapid_commit", lambda b: _flag(b, "rapid_commit")),
    Opt.RECONF_ACCEPT: ("reconf_accept", lambda b: _flag(b, "reconf_accept")),
    Opt.DNS_SERVERS: ("dns_servers", _addresses),
    Opt.DOMAIN_LIST: ("domains", decode_names),
    Opt.INFORMATION_REFRESH_TIME: ("info_refresh", lambda b: _u32(b, "info_refresh")),
    Opt.CLIENT_FQDN: ("fqdn", bytes),
}


def decode(data: bytes) -> Message:
    """Parse one client/server message; Dhcp6Error for anything malformed."""
    if len(data) < 4:
        raise Dhcp6Error("short_message", f"{len(data)} bytes")
    msg_type = data[0]
    if msg_type in (MsgType.RELAY_FORW, MsgType.RELAY_REPL) or not 1 <= msg_type <= 13:
        raise Dhcp6Error("bad_msg_type", str(msg_type))
    fields: dict[str, object] = {}
    ia_na: list[IaNa] = []
    ia_pd: list[IaPd] = []
    unknown: list[int] = []
    for code, body in _options(data[4:]):
        if code in (Opt.IA_NA, Opt.IA_PD):
            if len(ia_na) + len(ia_pd) >= MAX_IAS:
                raise Dhcp6Error("too_many_ias")
            if code == Opt.IA_NA:
                ia_na.append(_ia_na(body))
            else:
                ia_pd.append(_ia_pd(body))
        elif code in _SIMPLE:
            name, parse = _SIMPLE[code]
            if name in fields:
                raise Dhcp6Error("duplicate_option", str(code))
            fields[name] = parse(body)
        elif len(unknown) < 32:
            unknown.append(code)
    for ias in (ia_na, ia_pd):
        if len({ia.iaid for ia in ias}) != len(ias):
            raise Dhcp6Error("duplicate_iaid")
    return Message(
        msg_type=msg_type,
        transaction_id=int.from_bytes(data[1:4], "big"),
        ia_na=tuple(ia_na),
        ia_pd=tuple(ia_pd),
        unknown=tuple(unknown),
        **fields,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------- encoding


def _opt(code: int, body: bytes) -> bytes:
    return _OPT.pack(code, len(body)) + body


def _status_opt(status: StatusCode | None) -> bytes:
    if status is None:
        return b""
    return _opt(Opt.STATUS_CODE, status.code.to_bytes(2, "big") + status.message.encode())


def _iaaddr_opt(item: IaAddr) -> bytes:
    body = item.address.packed + _LIFETIMES.pack(item.preferred, item.valid)
    return _opt(Opt.IAADDR, body + _status_opt(item.status))


def _iaprefix_opt(item: IaPrefix) -> bytes:
    body = _LIFETIMES.pack(item.preferred, item.valid) + bytes((item.prefix.prefixlen,))
    return _opt(Opt.IAPREFIX, body + item.prefix.network_address.packed + _status_opt(item.status))


def _ia_na_opt(ia: IaNa) -> bytes:
    items = b"".join(_iaaddr_opt(a) for a in ia.addresses)
    return _opt(Opt.IA_NA, _IA.pack(ia.iaid, ia.t1, ia.t2) + items + _status_opt(ia.status))


def _ia_pd_opt(ia: IaPd) -> bytes:
    items = b"".join(_iaprefix_opt(p) for p in ia.prefixes)
    return _opt(Opt.IA_PD, _IA.pack(ia.iaid, ia.t1, ia.t2) + items + _status_opt(ia.status))


def encode(msg: Message) -> bytes:
    """The wire form of `msg`: options in a fixed order (ids, IAs, the rest)."""
    parts = [bytes((msg.msg_type,)) + msg.transaction_id.to_bytes(3, "big")]
    if msg.client_id is not None:
        parts.append(_opt(Opt.CLIENTID, msg.client_id))
    if msg.server_id is not None:
        parts.append(_opt(Opt.SERVERID, msg.server_id))
    parts += [_ia_na_opt(ia) for ia in msg.ia_na]
    parts += [_ia_pd_opt(ia) for ia in msg.ia_pd]
    if msg.oro:
        parts.append(_opt(Opt.ORO, struct.pack(f">{len(msg.oro)}H", *msg.oro)))
    if msg.elapsed is not None:
        parts.append(_opt(Opt.ELAPSED_TIME, min(msg.elapsed, 0xFFFF).to_bytes(2, "big")))
    if msg.preference is not None:
        parts.append(_opt(Opt.PREFERENCE, bytes((msg.preference,))))
    parts.append(_status_opt(msg.status))
    if msg.rapid_commit:
        parts.append(_opt(Opt.RAPID_COMMIT, b""))
    if msg.reconf_accept:
        parts.append(_opt(Opt.RECONF_ACCEPT, b""))
    if msg.dns_servers:
        parts.append(_opt(Opt.DNS_SERVERS, b"".join(a.packed for a in msg.dns_servers)))
    if msg.domains:
        parts.append(_opt(Opt.DOMAIN_LIST, b"".join(encode_name(d) for d in msg.domains)))
    if msg.info_refresh is not None:
        parts.append(_opt(Opt.INFORMATION_REFRESH_TIME, msg.info_refresh.to_bytes(4, "big")))
    if msg.fqdn is not None:
        parts.append(_opt(Opt.CLIENT_FQDN, msg.fqdn))
    return b"".join(parts)
