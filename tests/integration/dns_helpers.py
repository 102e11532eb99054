"""Helpers of the DNS integration tests: upstreams with odd behaviours, built
with dnslib, each a thread on a socket bound in the ISP namespace; namespace
switching for in-process servers; an XDP_PASS program for veth peers.

    198.51.100.54  truncates every UDP reply (TC), answers over TCP
    198.51.100.55  a black hole: reads queries, never answers
    198.51.100.56  nobody listens (ICMP port unreachable)
    198.51.100.57  answers at once (names pointing into the home included)
    198.51.100.58  holds every query until the test opens its gate
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator

from bcc import BPF
from dnslib import QTYPE, RR, SOA, A, DNSRecord

from homegw import netns
from homegw.dataplane.attach import attach_xdp, detach_xdp
from homegw.netns import in_netns
from homegw.virtualhome import VirtualHome

TRUNCATING, BLACK_HOLE, CLOSED, REBINDING, GATED = (f"198.51.100.{n}" for n in range(54, 59))
BIG = [f"198.51.100.{i}" for i in range(101, 141)]  # 40 records: over 512 bytes


def records(name: str) -> list[str] | None:
    """The test upstreams' zone; None: NXDOMAIN (with an SOA, minimum 60 s)."""
    table = {
        "big.example.test": BIG,
        "evil.example.test": ["192.168.1.50"],
        "fine.example.test": ["198.51.100.99"],
    }
    return table.get(name.rstrip(".").lower())


def answer(data: bytes, truncate: bool = False) -> bytes:
    query = DNSRecord.parse(data)
    reply = query.reply()
    addresses = records(str(query.q.qname))
    if truncate:
        reply.header.tc = 1
    elif addresses is None:
        reply.header.rcode = 3
        soa = SOA("ns.example.test", "admin.example.test", (1, 3600, 600, 86400, 60))
        reply.add_auth(RR("example.test", QTYPE.SOA, rdata=soa, ttl=3600))
    else:
        for address in addresses:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=300))
    return reply.pack()


class Upstreams:
    """The dnslib upstreams, each a thread on a socket bound in the ISP namespace."""

    def __init__(self, home: VirtualHome) -> None:
        isp = home.ns("isp")
        for address in (TRUNCATING, BLACK_HOLE, CLOSED, REBINDING, GATED):
            netns.ip("addr", "add", f"{address}/32", "dev", "inet0", ns=isp)
        self.received: Counter[tuple[str, str]] = Counter()
        self.gate = threading.Event()
        self.held: list[tuple[bytes, tuple[str, int]]] = []
        with in_netns(isp):
            self.udp = {
                a: self._bind(a, socket.SOCK_DGRAM)
                for a in (TRUNCATING, BLACK_HOLE, REBINDING, GATED)
            }
            self.tcp = self._bind(TRUNCATING, socket.SOCK_STREAM)
            self.tcp.listen(8)
        self.threads = [
            threading.Thread(target=self._serve_udp, args=(a, s), daemon=True)
            for a, s in self.udp.items()
        ]
        self.threads.append(threading.Thread(target=self._serve_tcp, daemon=True))
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _bind(address: str, kind: socket.SocketKind) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        sock.bind((address, 53))
        return sock

    def _serve_udp(self, address: str, sock: socket.socket) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                return
            if not data:
                return
            self.received[(address, "udp")] += 1
            if address == GATED and not self.gate.is_set():
                self.held.append((data, peer))
            elif address != BLACK_HOLE:
                sock.sendto(answer(data, truncate=address == TRUNCATING), peer)

    def open_gate(self) -> None:
        """Answer the held queries, and all later ones at once."""
        self.gate.set()
        for data, peer in self.held:
            self.udp[GATED].sendto(answer(data), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _peer = self.tcp.accept()
            except OSError:
                return
            with conn:
                (length,) = struct.unpack(">H", conn.recv(2, socket.MSG_WAITALL))
                data = conn.recv(length, socket.MSG_WAITALL)
                self.received[(TRUNCATING, "tcp")] += 1
                reply = answer(data)
                conn.sendall(struct.pack(">H", len(reply)) + reply)

    def close(self) -> None:
        for sock in [*self.udp.values(), self.tcp]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(5)


@contextlib.contextmanager
def xdp_pass(ns: str, dev: str) -> Iterator[None]:
    """An XDP_PASS program on the LAN veth's peer. veth hands XDP_TX frames to a
    peer at once only if that peer runs XDP; with GRO alone they wait in its
    ring until other traffic wakes it. (A real NIC transmits them itself.)"""
    bpf = BPF(text="int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
    fd = bpf.load_func("xdp_pass", BPF.XDP).fd
    with in_netns(ns):
        attach_xdp(dev, fd, "native")
    try:
        yield
    finally:
        with in_netns(ns):
            detach_xdp(dev, "native")
        bpf.cleanup()
