"""The slow-path channel: punts from the datapath up to Python, packets back out.

A module punts with homegw_punt_xdp(ctx, reason, meta0, meta1): a struct
homegw_punt header followed by the packet's first bytes, on the pinned perf
ring `slowpath`. The reader thread dispatches on (module id, reason) to the
handler that module registered. Packet-out is an AF_PACKET socket per NIC.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class _PuntHeader(ctypes.Structure):
    # struct homegw_punt in include/homegw.h
    _fields_ = [
        ("module", ctypes.c_uint16),
        ("reason", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("pkt_len", ctypes.c_uint32),
        ("meta", ctypes.c_uint32 * 4),
    ]


PUNT_HEADER_SIZE = ctypes.sizeof(_PuntHeader)


@dataclass(frozen=True)
class Punt:
    module: int
    reason: int
    ifindex: int
    pkt_len: int  # full length on the wire; packet may be shorter (capped)
    meta: tuple[int, int, int, int]
    packet: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Punt:
        if len(raw) < PUNT_HEADER_SIZE:
            raise ValueError(f"slow-path message of {len(raw)} bytes is shorter than its header")
        hdr = _PuntHeader.from_buffer_copy(raw[:PUNT_HEADER_SIZE])
        captured = min(hdr.pkt_len, len(raw) - PUNT_HEADER_SIZE)
        packet = raw[PUNT_HEADER_SIZE : PUNT_HEADER_SIZE + captured]
        return cls(hdr.module, hdr.reason, hdr.ifindex, hdr.pkt_len, tuple(hdr.meta), packet)


PuntHandler = Callable[[Punt], None]


class SlowPath:
    """Reads the perf ring in a thread and calls handlers[(module, reason)]."""

    def __init__(self, bpf) -> None:  # noqa: ANN001 - any bcc object that opened `slowpath`
        self._bpf = bpf
        self._handlers: dict[tuple[int, int], PuntHandler] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.unhandled = 0
        self.failed = 0
        self.lost = 0

    def register(self, module_id: int, reason: int, handler: PuntHandler) -> None:
        self._handlers[(module_id, reason)] = handler

    def unregister_module(self, module_id: int) -> None:
        for key in [k for k in self._handlers if k[0] == module_id]:
            del self._handlers[key]

    def start(self) -> None:
        self._bpf["slowpath"].open_perf_buffer(self._on_event, page_cnt=64, lost_cb=self._on_lost)
        self._thread = threading.Thread(target=self._run, name="slowpath", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._bpf.perf_buffer_poll(timeout=100)

    def _on_lost(self, count: int) -> None:
        self.lost += count
        log.warning("slow path lost %d punts (ring full)", count)

    def _on_event(self, _cpu: int, data: int, size: int) -> None:
        raw = ctypes.string_at(data, size)
        self.dispatch(raw)

    def dispatch(self, raw: bytes) -> None:
        """Parse one message and hand it to its handler; never raises."""
        self.received += 1
        try:
            punt = Punt.parse(raw)
        except ValueError as exc:
            self.failed += 1
            log.warning("dropped malformed slow-path message: %s", exc)
            return
        handler = self._handlers.get((punt.module, punt.reason))
        if handler is None:
            self.unhandled += 1
            log.debug("no handler for module %d reason %d", punt.module, punt.reason)
            return
        try:
            handler(punt)
        except Exception:
            self.failed += 1
            log.exception(
                "slow-path handler for module %d reason %d failed", punt.module, punt.reason
            )


class PacketOut:
    """Send whole Ethernet frames out of one interface (bypasses XDP ingress,
    goes through TC egress like any packet the gateway sends)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._sock.bind((ifname, 0))

    def send(self, frame: bytes) -> None:
        self._sock.send(frame)

    def close(self) -> None:
        self._sock.close()
