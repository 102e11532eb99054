"""BPF_PROG_TEST_RUN: run a loaded program on a packet, get verdict and bytes.

bcc 0.26 has no Python wrapper for it; libbpf's bpf_prog_test_run_opts is
called through ctypes. Test runs use the caller's network namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import socket
from dataclasses import dataclass

from homegw.dataplane.abi import TC_VERDICTS, XDP_VERDICTS

log = logging.getLogger(__name__)


class _ProgTestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts from libbpf's bpf.h (libbpf 1.x)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


_libbpf: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libbpf
    if _libbpf is None:
        _libbpf = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
        _libbpf.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_ProgTestRunOpts)]
    return _libbpf


@dataclass(frozen=True)
class RunResult:
    retval: int
    data: bytes
    duration_ns: int  # mean per run, as the kernel measured it
    hook: str = "xdp"

    @property
    def verdict(self) -> str:
        names = XDP_VERDICTS if self.hook == "xdp" else TC_VERDICTS
        signed = ctypes.c_int32(self.retval).value
        return names.get(signed, str(signed))


def prog_test_run(
    prog_fd: int,
    packet: bytes,
    *,
    repeat: int = 1,
    hook: str = "xdp",
    meta: bytes = b"",
    ingress_ifindex: int = 0,
) -> RunResult:
    """Run prog_fd once (or `repeat` times: later runs see the modified packet).
    XDP only: `meta` (a multiple of 4 bytes, at most 32) is the frame's XDP
    metadata, the result's data is the frame without it; `ingress_ifindex`
    the interface it arrived on (0: none)."""
    data_in = ctypes.create_string_buffer(meta + bytes(packet), len(meta) + len(packet))
    out_size = len(meta) + len(packet) + 4096
    data_out = ctypes.create_string_buffer(out_size)
    ctx = _XdpMd(len(meta), len(meta) + len(packet), 0, ingress_ifindex, 0, 0)
    opts = _ProgTestRunOpts(
        sz=ctypes.sizeof(_ProgTestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(meta) + len(packet),
        data_size_out=out_size,
        repeat=repeat,
    )
    if meta or ingress_ifindex:
        opts.ctx_in = ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    if _lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN failed: {os.strerror(err)}")
    data = data_out.raw[len(meta) : opts.data_size_out]  # data_out starts at data_meta
    return RunResult(opts.retval, data, opts.duration, hook)


class _XdpMd(ctypes.Structure):
    # struct xdp_md (uapi): the context a live-frames run receives
    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def inject_xdp(
    prog_fd: int,
    frame: bytes,
    ingress_ifindex: int,
    repeat: int = 1,
    batch_size: int = 0,
    meta: bytes = b"",
) -> str | None:
    """Run an XDP program on `frame` as if it had arrived on ingress_ifindex,
    and carry out its verdict for real (XDP_TX, XDP_REDIRECT, XDP_PASS into
    the stack): the packet-out path for frames the slow path held, and, with
    `repeat`, the benchmarks' traffic generator. `meta`: XDP metadata (a
    multiple of 4 bytes, at most 32) in front of the frame. None, or where
    the kernel refuses live frames the verdict (_deliver carried it out,
    all but XDP_PASS)."""
    size = len(meta) + len(frame)
    data_in = ctypes.create_string_buffer(meta + bytes(frame), size)
    ctx = _XdpMd(len(meta), size, 0, ingress_ifindex, 0, 0)
    opts = _ProgTestRunOpts(
        sz=ctypes.sizeof(_ProgTestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_size_in=size,
        ctx_in=ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p),
        ctx_size_in=ctypes.sizeof(ctx),
        repeat=repeat,
        flags=BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size=batch_size,
    )
    global _live_frames
    if not _live_frames and repeat == 1:
        return _deliver(prog_fd, frame, ingress_ifindex, meta)
    if _lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)) == 0:
        return None
    err = ctypes.get_errno()
    if err not in LIVE_FRAMES_REFUSED or repeat != 1:
        raise OSError(err, f"re-injecting a frame failed: {os.strerror(err)}")
    log.warning(
        "this kernel refuses live frames (%s): frames go out by packet socket", os.strerror(err)
    )
    _live_frames = False
    return _deliver(prog_fd, frame, ingress_ifindex, meta)


# Some kernels and sandboxes refuse BPF_F_TEST_XDP_LIVE_FRAMES (seen: EPERM
# with every capability but CAP_SYS_RESOURCE); a single frame then goes
# through the program once without it, and its verdict is carried out here.
LIVE_FRAMES_REFUSED = (errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL)
_live_frames = True


def live_frames_refused() -> bool:
    """Whether a re-injection found that this kernel refuses live frames."""
    return not _live_frames


def _deliver(prog_fd: int, frame: bytes, ingress_ifindex: int, meta: bytes) -> str:
    """One test run of the program on the frame, then its verdict by hand:
    XDP_TX out of the ingress, XDP_REDIRECT out of the interface whose MAC
    the frame now carries as its source (what the chain's redirects write);
    XDP_PASS cannot enter the stack this way and is dropped, logged. The
    verdict."""
    from homegw.dataplane import slowpath  # which imports this module

    result = prog_test_run(prog_fd, frame, meta=meta, ingress_ifindex=ingress_ifindex)
    if result.verdict == "XDP_TX":
        egress: str | None = socket.if_indextoname(ingress_ifindex)
    elif result.verdict == "XDP_REDIRECT":
        source = result.data[6:12]
        names = (name for _index, name in socket.if_nameindex() if name != "lo")
        egress = next((n for n in names if slowpath.hardware_address(n) == source), None)
    else:
        if result.verdict == "XDP_PASS":
            log.warning("a re-injected frame for the gateway's stack dropped (no live frames)")
        return result.verdict
    if egress is None:
        log.warning("a re-injected frame dropped: no interface has its source MAC")
        return result.verdict
    sender = slowpath.PacketOut(egress)
    try:
        sender.send(result.data)
    finally:
        sender.close()
    return result.verdict
