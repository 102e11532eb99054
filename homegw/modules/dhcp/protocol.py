"""RFC 2131 server decisions as a pure function of (message, pool, now).

`DhcpProtocol.handle()` returns an `Outcome`: the reply to send and where
(RFC 2131 §4.1), the address to ARP-probe before the reply goes out, the
MAC ↔ address binding to publish or withdraw, and the log line. It performs
no I/O, so unit tests drive it with a fake clock.

REQUEST states (RFC 2131 §4.3.2): SELECTING (server id present: ours → bind,
another server's → free our offer, stay silent), INIT-REBOOT (requested
address, no server id), RENEWING / REBINDING (ciaddr). The server is
authoritative for its LAN: a request for an address outside the subnet, or
one that is someone else's, gets a NAK; a request for a free address the
store has no record of (a lease lost with an OS crash) is re-adopted.

Reply options: 53 and 54 first, then the parameter request list (55) in
the client's order, then the rest of 51, 58, 59, 1, 3, 6, 15, 28; 12 when
asked for and known, 81 when the client sent 81.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.leases import Lease, LeasePool, Reservation, client_key

BROADCAST = 0xFFFFFFFF
SERVER_PORT, CLIENT_PORT = 67, 68
ALWAYS_SENT = (
    p.OPT_LEASE_TIME,
    p.OPT_T1,
    p.OPT_T2,
    p.OPT_SUBNET_MASK,
    p.OPT_ROUTER,
    p.OPT_DNS,
    p.OPT_DOMAIN,
    p.OPT_BROADCAST,
)
LEASE_OPTIONS = (p.OPT_LEASE_TIME, p.OPT_T1, p.OPT_T2)


@dataclass(frozen=True)
class ServerSettings:
    """What the LAN DHCP server serves (built from the config by the service)."""

    interface: str
    server_ip: IPv4Address
    network: IPv4Network
    range_start: IPv4Address
    range_end: IPv4Address
    lease_time: int
    domain: str
    reservations: tuple[Reservation, ...] = ()
    probe_timeout: float = 0.5  # seconds to wait for an ARP answer; 0 disables probing


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a reply goes; with `mac` set it is sent as a raw frame to that
    MAC (a client without an address cannot answer ARP for yiaddr)."""

    ip: int
    port: int
    mac: bytes | None = None


@dataclass(slots=True)
class Outcome:
    reply: bytes | None = None
    kind: int = 0  # message type of `reply`
    dest: Destination | None = None
    probe: int | None = None  # ARP-probe this address before sending `reply`
    bound: Lease | None = None  # publish this binding
    unbound: Lease | None = None  # withdraw this binding
    event: str | None = None  # one log line for the lease event
    counter: str = "ignored"  # which counter this message adds to
    warning: bool = False  # log `event` at WARNING (pool exhausted)


class DhcpProtocol:
    def __init__(self, settings: ServerSettings, pool: LeasePool) -> None:
        self.settings = settings
        self.pool = pool
        self.server_ip = int(settings.server_ip)
        net = settings.network
        lease = settings.lease_time
        self._static = {
            p.OPT_SUBNET_MASK: net.netmask.packed,
            p.OPT_ROUTER: settings.server_ip.packed,
            p.OPT_DNS: settings.server_ip.packed,
            p.OPT_DOMAIN: settings.domain.encode(),
            p.OPT_BROADCAST: net.broadcast_address.packed,
            p.OPT_LEASE_TIME: struct.pack("!I", lease),
            p.OPT_T1: struct.pack("!I", lease // 2),
            p.OPT_T2: struct.pack("!I", lease * 7 // 8),
        }
        self._server_id = settings.server_ip.packed
        self._net_lo = int(net.network_address)
        self._net_hi = int(net.broadcast_address)

    def in_subnet(self, address: int) -> bool:
        return self._net_lo < address < self._net_hi

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, msg: p.DhcpMessage, now: float) -> Outcome:
        if msg.giaddr and not self.in_subnet(msg.giaddr):
            return Outcome(counter="foreign_relay")  # a relay for a subnet we do not serve
        handler = {
            p.DISCOVER: self._discover,
            p.REQUEST: self._request,
            p.DECLINE: self._decline,
            p.RELEASE: self._release,
            p.INFORM: self._inform,
        }.get(msg.msg_type)
        if handler is None:
            return Outcome(counter="unexpected_type")
        return handler(msg, client_key(msg.client_id, msg.mac), now)

    def _discover(self, msg: p.DhcpMessage, client: str, now: float) -> Outcome:
        requested = msg.requested_ip
        if requested is not None and not self.in_subnet(requested):
            requested = None
        offer = self.pool.offer(client, msg.mac, requested, now)
        if offer is None:
            event = f"DHCP pool exhausted: no address to offer to {msg.mac}"
            return Outcome(event=event, counter="exhausted", warning=True)
        probe = None if offer.known or self.settings.probe_timeout <= 0 else offer.address
        name = self._hostname(msg, client, offer.address)
        out = self._reply(msg, p.OFFER, offer.address, name)
        out.probe, out.counter = probe, "offers"
        return out

    def _request(self, msg: p.DhcpMessage, client: str, now: float) -> Outcome:
        server_id, requested = msg.server_id, msg.requested_ip
        if server_id is not None and server_id != self.server_ip:
            self.pool.cancel_offer(client, now)  # SELECTING another server
            return Outcome(counter="other_server")
        address = requested if requested is not None else msg.ciaddr
        if not address:
            return Outcome(counter="bad_request")
        if not self.in_subnet(address):
            return self._nak(msg, address, "wrong subnet")
        name = self._hostname(msg, client, address)
        sent = p.name_as_sent(msg) or self._sent_before(client, address)
        lease = self.pool.bind(
            client, msg.mac, address, name, self.settings.lease_time, now, sent_name=sent
        )
        if lease is None:
            return self._nak(msg, address, "address not available")
        out = self._reply(msg, p.ACK, address, lease.hostname)
        out.bound, out.counter = lease, "acks"
        shown = f" ({lease.hostname})" if lease.hostname else ""
        out.event = (
            f"DHCPACK {p.ip_str(address)} to {msg.mac}{shown} lease {self.settings.lease_time} s"
        )
        return out

    def _decline(self, msg: p.DhcpMessage, client: str, now: float) -> Outcome:
        address = msg.requested_ip
        if address is None or not self._for_us(msg):
            return Outcome(counter="bad_request")
        lease = self.pool.decline(client, msg.mac, address, now)
        if lease is None:
            return Outcome(counter="bad_request")
        event = (
            f"DHCPDECLINE {p.ip_str(address)} from {msg.mac}: "
            f"quarantined for {int(lease.expires - now)} s"
        )
        return Outcome(unbound=lease, event=event, counter="declines")

    def _release(self, msg: p.DhcpMessage, client: str, now: float) -> Outcome:
        if not msg.ciaddr or not self._for_us(msg):
            return Outcome(counter="bad_request")
        lease = self.pool.release(client, msg.ciaddr, now)
        if lease is None:
            return Outcome(counter="bad_request")
        event = f"DHCPRELEASE {p.ip_str(msg.ciaddr)} from {msg.mac}"
        return Outcome(unbound=lease, event=event, counter="releases")

    def _inform(self, msg: p.DhcpMessage, client: str, now: float) -> Outcome:
        if not msg.ciaddr or not self.in_subnet(msg.ciaddr):
            return Outcome(counter="bad_request")
        out = self._reply(msg, p.ACK, 0, None, lease=False)
        out.counter = "informs"
        return out

    def _for_us(self, msg: p.DhcpMessage) -> bool:
        return msg.server_id in (None, self.server_ip)

    # -- replies -------------------------------------------------------------------------

    def _hostname(self, msg: p.DhcpMessage, client: str, address: int) -> str | None:
        name = p.client_hostname(msg)
        if name is None:
            known = self.pool.record(address)
            name = known.hostname if known is not None and known.client == client else None
        return name

    def _sent_before(self, client: str, address: int) -> str | None:
        """A renewal without a name keeps the name the client sent before."""
        known = self.pool.record(address)
        return known.sent_name if known is not None and known.client == client else None

    def _nak(self, msg: p.DhcpMessage, address: int, why: str) -> Outcome:
        options = {
            p.OPT_MESSAGE_TYPE: bytes((p.NAK,)),
            p.OPT_SERVER_ID: self._server_id,
            p.OPT_MESSAGE: why.encode(),
        }
        flags = msg.flags | p.BROADCAST_FLAG if msg.giaddr else msg.flags
        reply = p.DhcpMessage(p.BOOTREPLY, msg.xid, msg.chaddr, options, flags=flags)
        reply.giaddr = msg.giaddr
        event = f"DHCPNAK {p.ip_str(address)} to {msg.mac}: {why}"
        dest = self.destination(msg, p.NAK, 0)
        return Outcome(p.encode(reply), p.NAK, dest, event=event, counter="naks")

    def _reply(
        self, msg: p.DhcpMessage, kind: int, yiaddr: int, name: str | None, lease: bool = True
    ) -> Outcome:
        options = {p.OPT_MESSAGE_TYPE: bytes((kind,)), p.OPT_SERVER_ID: self._server_id}
        available = dict(self._static)
        if not lease:
            for code in LEASE_OPTIONS:
                del available[code]
        if name:
            available[p.OPT_HOSTNAME] = name.encode()
            fqdn = msg.options.get(p.OPT_FQDN)
            if fqdn:
                available[p.OPT_FQDN] = p.fqdn_reply(fqdn, f"{name}.{self.settings.domain}")
        for code in msg.param_list:
            if code in available and code not in options:
                options[code] = available[code]
        for code in (*ALWAYS_SENT, p.OPT_FQDN):
            if code in available and code not in options:
                options[code] = available[code]
        reply = p.DhcpMessage(
            p.BOOTREPLY,
            msg.xid,
            msg.chaddr,
            options,
            ciaddr=msg.ciaddr if kind == p.ACK else 0,
            yiaddr=yiaddr,
            giaddr=msg.giaddr,
            flags=msg.flags,
        )
        return Outcome(p.encode(reply), kind, self.destination(msg, kind, yiaddr))

    @staticmethod
    def destination(msg: p.DhcpMessage, kind: int, yiaddr: int) -> Destination:
        """RFC 2131 §4.1: relay, then NAK broadcast, then ciaddr, then the
        broadcast flag, else unicast to the client's MAC and yiaddr."""
        if msg.giaddr:
            return Destination(msg.giaddr, SERVER_PORT)
        if kind == p.NAK:
            return Destination(BROADCAST, CLIENT_PORT)
        if msg.ciaddr:
            return Destination(msg.ciaddr, CLIENT_PORT)
        if msg.broadcast or not yiaddr:
            return Destination(BROADCAST, CLIENT_PORT)
        return Destination(yiaddr, CLIENT_PORT, msg.chaddr)
