"""The slow-path channel: punts from the datapath up to Python, packets back out.

A module punts with homegw_punt_xdp(ctx, reason, meta0, meta1): a struct
homegw_punt header followed by the packet's first bytes, on the pinned perf
ring `slowpath`. The reader thread sleeps in epoll on libbpf's perf buffer
(opened on the pinned map by path, no bcc) and dispatches each message on
(module id, reason) to the handler that module registered. Packet-out is an
AF_PACKET socket per NIC.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from homegw import supervise
from homegw.dataplane import libbpf
from homegw.dataplane.abi import PUNT_MAX_BYTES
from homegw.dataplane.testrun import _lib

log = logging.getLogger(__name__)
PAGES_PER_CPU = 64

_SAMPLE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
_LOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64)


class PerfBuffer:
    """libbpf's perf_buffer on a BPF_MAP_TYPE_PERF_EVENT_ARRAY: one ring per
    CPU, installed in the map (replacing a previous process's), readable
    through one epoll fd."""

    def __init__(
        self,
        map_fd: int,
        on_sample: Callable[[bytes], None],
        on_lost: Callable[[int], None],
        pages: int = PAGES_PER_CPU,
    ) -> None:
        lib = _lib()
        lib.perf_buffer__new.restype = ctypes.c_void_p
        lib.perf_buffer__new.argtypes = [
            ctypes.c_int,
            ctypes.c_size_t,
            _SAMPLE_FN,
            _LOST_FN,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        for call in ("perf_buffer__epoll_fd", "perf_buffer__consume"):
            getattr(lib, call).argtypes = [ctypes.c_void_p]
            getattr(lib, call).restype = ctypes.c_int
        lib.perf_buffer__free.argtypes = [ctypes.c_void_p]
        lib.perf_buffer__free.restype = None
        # kept referenced: libbpf calls them for as long as the buffer lives
        self._sample = _SAMPLE_FN(
            lambda _ctx, _cpu, data, size: on_sample(ctypes.string_at(data, size))
        )
        self._lost = _LOST_FN(lambda _ctx, _cpu, count: on_lost(count))
        self._pb = lib.perf_buffer__new(map_fd, pages, self._sample, self._lost, None, None)
        if not self._pb:
            err = ctypes.get_errno()
            raise OSError(err, f"perf_buffer__new: {os.strerror(err)}")

    def epoll_fd(self) -> int:
        return _lib().perf_buffer__epoll_fd(self._pb)

    def consume(self) -> None:
        """Hand every waiting message to on_sample."""
        if _lib().perf_buffer__consume(self._pb) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"perf_buffer__consume: {os.strerror(err)}")

    def free(self) -> None:
        if self._pb:
            _lib().perf_buffer__free(self._pb)
            self._pb = None


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
        # a capped frame's sample ends in the perf ring's padding to 8 bytes
        captured = min(hdr.pkt_len, PUNT_MAX_BYTES, len(raw) - PUNT_HEADER_SIZE)
        packet = raw[PUNT_HEADER_SIZE : PUNT_HEADER_SIZE + captured]
        return cls(hdr.module, hdr.reason, hdr.ifindex, hdr.pkt_len, tuple(hdr.meta), packet)


PuntHandler = Callable[[Punt], None]


class SlowPath:
    """Reads the pinned perf ring at `path` in a thread and calls
    handlers[(module, reason)]. With path None only dispatch() works."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._handlers: dict[tuple[int, int], PuntHandler] = {}
        # a module's handler for every reason (user modules: any reason code)
        self._module_handlers: dict[int, PuntHandler] = {}
        self._buffer: PerfBuffer | None = None
        self._wakeup = -1  # eventfd: stop() wakes the reader with it
        self._map_fd = -1
        self._thread: threading.Thread | None = None
        self.received = 0
        self.unhandled = 0
        self.failed = 0
        self.lost = 0

    def register(self, module_id: int, reason: int, handler: PuntHandler) -> None:
        self._handlers[(module_id, reason)] = handler

    def register_module(self, module_id: int, handler: PuntHandler) -> None:
        """handler takes the module's punts of every reason it has no
        handler of its own for."""
        self._module_handlers[module_id] = handler

    def unregister_module(self, module_id: int) -> None:
        for key in [k for k in self._handlers if k[0] == module_id]:
            del self._handlers[key]
        self._module_handlers.pop(module_id, None)

    def start(self) -> None:
        if self.path is None:
            raise RuntimeError("a SlowPath without a perf ring cannot start")
        # kept open while the rings are in use: the kernel takes a perf event
        # array's entries out when the file they were written through closes
        self._map_fd = libbpf.obj_get(self.path)
        self._buffer = PerfBuffer(self._map_fd, self.dispatch, self._on_lost)
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC)
        self._thread = supervise.Thread(self._run, "slowpath")
        self._thread.start()

    def stop(self) -> None:
        if self._thread:
            os.eventfd_write(self._wakeup, 1)
            self._thread.join(timeout=5)
            self._thread = None
        if self._buffer:
            self._buffer.free()
            self._buffer = None
        for fd in (self._wakeup, self._map_fd):
            if fd >= 0:
                os.close(fd)
        self._wakeup = self._map_fd = -1

    def _run(self) -> None:
        assert self._buffer is not None
        with contextlib.closing(select.epoll()) as poller:
            poller.register(self._buffer.epoll_fd(), select.EPOLLIN)
            poller.register(self._wakeup, select.EPOLLIN)
            # A ring's readiness is handed out once per wakeup (perf_poll
            # clears it), and registering above may have taken it for a punt
            # that came before: read what is there, then wait for more.
            while True:
                try:
                    self._buffer.consume()
                except OSError:
                    log.exception("reading the slow-path ring failed")
                    return
                ready = {fd for fd, _ in poller.poll()}
                if self._wakeup in ready:
                    return

    def _on_lost(self, count: int) -> None:
        self.lost += count
        log.warning("slow path lost %d punts (ring full)", count)

    def dispatch(self, raw: bytes) -> None:
        """Parse one message and hand it to its handler; never raises."""
        self.received += 1
        try:
            punt = Punt.parse(raw)
        except ValueError as exc:
            self.failed += 1
            log.warning("dropped malformed slow-path message: %s", exc)
            return
        handler = self._handlers.get((punt.module, punt.reason)) or self._module_handlers.get(
            punt.module
        )
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


SIOCGIFHWADDR = 0x8927


def hardware_address(ifname: str) -> bytes:
    """The NIC's MAC (an ioctl: right in the calling thread's namespace, even
    when its /sys is another namespace's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        info = fcntl.ioctl(sock, SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15]))
    return info[18:24]


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
