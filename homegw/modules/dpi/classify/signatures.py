"""Fixed signatures on a flow's first payload (the client's first packet).

Each check looks at one payload and says MATCH (with the app id), NEED_MORE
(a TCP prefix of the signature: more bytes may complete it) or NO. The
checks, in this order (the strictest first):

- STUN (RFC 5389 6): the two top bits zero, length a multiple of 4 that is
  exactly the rest of a UDP datagram (at most the rest over TCP), magic
  cookie 0x2112A442 at offset 4;
- WireGuard: message type 1..4 then three zero bytes, and the type's exact
  size: initiation 148, response 92, cookie reply 64, data 32 + 16n (UDP);
- SSH (RFC 4253 4.2): "SSH-2.0-" or "SSH-1.99-" (TCP);
- BitTorrent: the handshake "\\x13BitTorrent protocol" (TCP); the DHT's
  bencoded query "d1:a..." with "1:y1:q" (UDP);
- OpenVPN: a P_CONTROL_HARD_RESET_CLIENT_V2/V3 with key id 0 (first byte
  0x38 / 0x50) and a nonzero session id, 14 bytes at least; over TCP behind
  a 2-byte length that matches the packet (this one is the weakest: last);
- by well-known UDP port and format: DHCP (67/68, BOOTREQUEST/REPLY and the
  magic cookie at 236), NTP (123, version 1..4, mode 1..4, 48 bytes + 4n),
  mDNS (5353, a DNS header with opcode 0), SSDP (1900, M-SEARCH / NOTIFY).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from homegw.modules.dpi.classify.packet import IPPROTO_TCP, IPPROTO_UDP, FlowKey

STUN_COOKIE = b"\x21\x12\xa4\x42"
WIREGUARD_SIZES = {1: 148, 2: 92, 3: 64}
WIREGUARD_DATA_MIN = 32
SSH_BANNERS = (b"SSH-2.0-", b"SSH-1.99-")
BITTORRENT_HANDSHAKE = b"\x13BitTorrent protocol"
OPENVPN_HARD_RESET_CLIENT = (0x38, 0x50)  # opcode 7 (V2) / 10 (V3) << 3, key id 0
OPENVPN_MIN = 14  # opcode, session id (8), ack array length (1), packet id (4)
OPENVPN_MAX = 1500
DHCP_COOKIE = b"\x63\x82\x53\x63"
DHCP_COOKIE_AT = 236
NTP_LEN = 48
NTP_MAX = 1024
SSDP_STARTS = (b"M-SEARCH * HTTP/1.1\r\n", b"NOTIFY * HTTP/1.1\r\n")


class Match(Enum):
    MATCH = "match"
    NEED_MORE = "need_more"
    NO = "no"


@dataclass(frozen=True, slots=True)
class SignatureResult:
    match: Match
    app: str | None = None


NO = SignatureResult(Match.NO)
NEED_MORE = SignatureResult(Match.NEED_MORE)


def _prefix_of(payload: bytes, signature: bytes, app: str) -> SignatureResult:
    """MATCH when payload starts with signature, NEED_MORE when it is a shorter prefix of it."""
    if payload.startswith(signature):
        return SignatureResult(Match.MATCH, app)
    if len(payload) < len(signature) and signature.startswith(payload):
        return NEED_MORE
    return NO


def stun(payload: bytes, proto: int) -> SignatureResult:
    if len(payload) < 20:
        if proto == IPPROTO_TCP and _could_be_stun_start(payload):
            return NEED_MORE
        return NO
    if payload[0] & 0xC0 or payload[4:8] != STUN_COOKIE:
        return NO
    length = int.from_bytes(payload[2:4], "big")
    rest = len(payload) - 20
    if length % 4 or length > rest or (proto == IPPROTO_UDP and length != rest):
        return NO
    return SignatureResult(Match.MATCH, "stun")


def _could_be_stun_start(payload: bytes) -> bool:
    if payload and payload[0] & 0xC0:
        return False
    cookie = payload[4:8]
    return STUN_COOKIE.startswith(cookie)


def wireguard(payload: bytes, proto: int) -> SignatureResult:
    if proto != IPPROTO_UDP or len(payload) < WIREGUARD_DATA_MIN:
        return NO
    kind = payload[0]
    if kind not in (1, 2, 3, 4) or payload[1:4] != b"\x00\x00\x00":
        return NO
    if kind in WIREGUARD_SIZES:
        ok = len(payload) == WIREGUARD_SIZES[kind]
    else:
        ok = (len(payload) - WIREGUARD_DATA_MIN) % 16 == 0
    return SignatureResult(Match.MATCH, "wireguard") if ok else NO


def ssh(payload: bytes, proto: int) -> SignatureResult:
    if proto != IPPROTO_TCP:
        return NO
    results = [_prefix_of(payload, banner, "ssh") for banner in SSH_BANNERS]
    return _best(results)


def bittorrent(payload: bytes, proto: int) -> SignatureResult:
    if proto == IPPROTO_TCP:
        return _prefix_of(payload, BITTORRENT_HANDSHAKE, "bittorrent")
    if payload.startswith(b"d1:a") and b"1:y1:q" in payload and payload.endswith(b"e"):
        return SignatureResult(Match.MATCH, "bittorrent")  # a DHT query (BEP 5)
    return NO


def openvpn(payload: bytes, proto: int) -> SignatureResult:
    packet = payload
    if proto == IPPROTO_TCP:
        if len(payload) < 3:
            return NEED_MORE if len(payload) < 2 or payload[0] == 0 else NO
        if int.from_bytes(payload[0:2], "big") != len(payload) - 2:
            return NO
        packet = payload[2:]
    if not OPENVPN_MIN <= len(packet) <= OPENVPN_MAX:
        return NO
    if packet[0] not in OPENVPN_HARD_RESET_CLIENT or packet[1:9] == bytes(8):
        return NO
    return SignatureResult(Match.MATCH, "openvpn")


def dhcp(payload: bytes, key: FlowKey) -> SignatureResult:
    if key.proto != IPPROTO_UDP or not {key.lan_port, key.remote_port} & {67, 68}:
        return NO
    if len(payload) < DHCP_COOKIE_AT + 4 or payload[0] not in (1, 2):
        return NO
    if payload[DHCP_COOKIE_AT : DHCP_COOKIE_AT + 4] != DHCP_COOKIE:
        return NO
    return SignatureResult(Match.MATCH, "dhcp")


def ntp(payload: bytes, key: FlowKey) -> SignatureResult:
    if key.proto != IPPROTO_UDP or key.remote_port != 123:
        return NO
    if not NTP_LEN <= len(payload) <= NTP_MAX or (len(payload) - NTP_LEN) % 4:
        return NO
    version, mode = (payload[0] >> 3) & 0x07, payload[0] & 0x07
    if not 1 <= version <= 4 or not 1 <= mode <= 4:
        return NO
    return SignatureResult(Match.MATCH, "ntp")


def mdns(payload: bytes, key: FlowKey) -> SignatureResult:
    if key.proto != IPPROTO_UDP or key.remote_port != 5353 or len(payload) < 12:
        return NO
    if payload[2] & 0x78:  # opcode 0 (RFC 6762 18.3)
        return NO
    return SignatureResult(Match.MATCH, "mdns")


def ssdp(payload: bytes, key: FlowKey) -> SignatureResult:
    if key.proto != IPPROTO_UDP or key.remote_port != 1900:
        return NO
    if payload.startswith(SSDP_STARTS):
        return SignatureResult(Match.MATCH, "ssdp")
    return NO


PAYLOAD_CHECKS: tuple[Callable[[bytes, int], SignatureResult], ...] = (
    stun,
    wireguard,
    ssh,
    bittorrent,
    openvpn,
)
PORT_CHECKS: tuple[Callable[[bytes, FlowKey], SignatureResult], ...] = (dhcp, ntp, mdns, ssdp)
#: Every app id a signature can name.
SIGNATURE_APPS = frozenset(
    {"stun", "wireguard", "ssh", "bittorrent", "openvpn", "dhcp", "ntp", "mdns", "ssdp"}
)


def _best(results: list[SignatureResult]) -> SignatureResult:
    for wanted in (Match.MATCH, Match.NEED_MORE):
        for result in results:
            if result.match is wanted:
                return result
    return NO


def match(payload: bytes, key: FlowKey) -> SignatureResult:
    """The first signature payload matches (NEED_MORE if one may, with more TCP bytes)."""
    results = [check(payload, key.proto) for check in PAYLOAD_CHECKS]
    results += [check(payload, key) for check in PORT_CHECKS]
    return _best(results)
