"""The last resort: a well-known server port -> app id (a guess: Verdict.guess)."""

from __future__ import annotations

from homegw.modules.dpi.classify.packet import IPPROTO_TCP, IPPROTO_UDP, FlowKey

_TCP = {
    20: "ftp",
    21: "ftp",
    22: "ssh",
    23: "telnet",
    25: "smtp",
    53: "dns",
    80: "http",
    110: "pop3",
    143: "imap",
    443: "https",
    465: "smtp",
    587: "smtp",
    853: "dot",  # DNS over TLS
    993: "imap",
    995: "pop3",
    1194: "openvpn",
    1723: "pptp",
    1935: "rtmp",
    3389: "rdp",
    5222: "xmpp",
    5223: "apple_push",
    5228: "google_push",
    5900: "vnc",
    6881: "bittorrent",
    8080: "http",
    8443: "https",
}
_UDP = {
    53: "dns",
    67: "dhcp",
    68: "dhcp",
    123: "ntp",
    443: "quic",
    500: "ipsec",
    853: "doq",  # DNS over QUIC
    1194: "openvpn",
    1900: "ssdp",
    3478: "stun",
    4500: "ipsec",
    5353: "mdns",
    6881: "bittorrent",
    19302: "stun",  # Google's STUN servers
    51820: "wireguard",
}
PORTS = {IPPROTO_TCP: _TCP, IPPROTO_UDP: _UDP}
#: Every app id a port guess can name.
PORT_APPS = frozenset(_TCP.values()) | frozenset(_UDP.values())


def guess(key: FlowKey) -> str | None:
    """The app usually found on the flow's remote port (None: no idea)."""
    return PORTS.get(key.proto, {}).get(key.remote_port)
