"""Attach root programs to NICs with pyroute2: XDP ingress, TC clsact egress.

Errors name the interface, the errno and what to do about it.

XDP modes: `native` (the driver's hook), `generic` (the kernel's, any driver,
slower), and `auto`: native first; when the driver refuses it (EOPNOTSUPP: no
native XDP at all; EINVAL/ENOMEM/E2BIG: drivers such as virtio-net that cannot
do it in their current setup, e.g. too few queues, an MTU over a page, LRO
offloads on) generic, logged once per NIC with the reason. `attach_xdp`
returns the mode in use; `attached_xdp_mode` reads it back from the kernel.
"""

from __future__ import annotations

import errno
import logging
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
# IFLA_XDP_ATTACHED (XDP_ATTACHED_*: pyroute2 decodes them as ip(8) names)
ATTACHED_MODES = {
    1: "native", 2: "generic", 3: "offload", 4: "multi",
    "xdpdrv": "native", "xdp": "native", "xdpgeneric": "generic",
    "xdpoffload": "offload", "xdpmulti": "multi",
}  # fmt: skip
# a driver saying "not native XDP here": auto falls back to generic on these
NATIVE_REFUSALS = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOMEM, errno.E2BIG)
TC_EGRESS_PARENT = 0xFFFFFFF3  # clsact egress ("ffff:fff3")
TC_FILTER_PRIO = 1


class AttachError(RuntimeError):
    pass


def _hint(code: int) -> str:
    return {
        errno.EOPNOTSUPP: "the driver has no native XDP: set dataplane.xdp_mode: auto (or generic)",
        errno.EBUSY: "another XDP program is attached: detach it (ip link set DEV xdp off)",
        errno.EEXIST: "another XDP program is attached: detach it (ip link set DEV xdp off)",
        errno.ENODEV: "the interface is gone",
        errno.EINVAL: "the kernel refused the program for this interface (MTU too large for "
        "native XDP?)",
        errno.EPERM: "run as root",
    }.get(code, "see the kernel log (dmesg)")


def _fail(ifname: str, action: str, exc: NetlinkError) -> AttachError:
    code = exc.code
    return AttachError(
        f"{ifname}: cannot {action}: {os.strerror(code)} (errno {code}); {_hint(code)}"
    )


def ifindex(ifname: str) -> int:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise AttachError(f"{ifname}: no such interface in this network namespace")
    return found[0]


def attach_xdp(ifname: str, prog_fd: int, mode: str) -> str:
    """Attach in `mode` (native | generic | auto); the mode in use."""
    index = ifindex(ifname)
    if mode == "auto":
        mode = _attach_auto(ifname, index, prog_fd)
    else:
        _set_xdp_or_fail(ifname, index, prog_fd, mode)
    log.info("attached XDP program (%s) on %s", mode, ifname)
    return mode


def _attach_auto(ifname: str, index: int, prog_fd: int) -> str:
    if attached_xdp_mode(ifname) == "generic":
        # a program there in generic mode (the last run's fallback): replaced
        # in place, as the kernel has no native and generic programs at once
        _set_xdp_or_fail(ifname, index, prog_fd, "generic")
        return "generic"
    try:
        _set_xdp(index, prog_fd, "native")
        return "native"
    except NetlinkError as exc:
        if exc.code not in NATIVE_REFUSALS:
            raise _fail(ifname, "attach XDP (native)", exc) from exc
        log.warning(
            "%s: the driver refused native XDP (%s, errno %d): attaching generic XDP",
            ifname,
            os.strerror(exc.code),
            exc.code,
        )
    _set_xdp_or_fail(ifname, index, prog_fd, "generic")
    return "generic"


def _set_xdp_or_fail(ifname: str, index: int, prog_fd: int, mode: str) -> None:
    try:
        _set_xdp(index, prog_fd, mode)
    except NetlinkError as exc:
        raise _fail(ifname, f"attach XDP ({mode})", exc) from exc


def _set_xdp(index: int, prog_fd: int, mode: str) -> None:
    attrs = [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", XDP_MODES[mode])]
    with IPRoute() as ipr:
        ipr.link("set", index=index, xdp={"attrs": attrs})


def detach_xdp(ifname: str, mode: str) -> None:
    """Detach the program of `mode`; with auto, of the mode it is attached in."""
    try:
        if mode == "auto":
            found = attached_xdp_mode(ifname)
            if found is None or found not in XDP_MODES:
                return
            mode = found
        flags = XDP_MODES[mode]
        index = ifindex(ifname)
        with IPRoute() as ipr:
            ipr.link(
                "set", index=index, xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags)]}
            )
    except (AttachError, NetlinkError) as exc:
        log.warning("%s: detaching XDP failed: %s", ifname, exc)
        return
    log.info("detached XDP from %s", ifname)


def xdp_prog_id(ifname: str) -> int | None:
    """Id of the XDP program attached to ifname, if any."""
    with IPRoute() as ipr:
        link = ipr.link("get", index=ifindex(ifname))[0]
    xdp = link.get_attr("IFLA_XDP")
    if not xdp:
        return None
    return xdp.get_attr("IFLA_XDP_PROG_ID")


def attached_xdp_mode(ifname: str) -> str | None:
    """The mode the XDP program on ifname runs in (native, generic...), None: none."""
    with IPRoute() as ipr:
        link = ipr.link("get", index=ifindex(ifname))[0]
    xdp = link.get_attr("IFLA_XDP")
    attached = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp else None
    return ATTACHED_MODES.get(attached) if attached else None


def attach_tc_egress(ifname: str, prog_fd: int, name: str) -> None:
    index = ifindex(ifname)
    try:
        with IPRoute() as ipr:
            try:
                ipr.tc("add", "clsact", index)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            ipr.tc(
                "replace-filter",
                "bpf",
                index,
                handle=1,
                fd=prog_fd,
                name=name,
                parent=TC_EGRESS_PARENT,
                prio=TC_FILTER_PRIO,
                protocol=0x0003,
                classid=1,
                direct_action=True,
            )
    except NetlinkError as exc:
        raise _fail(ifname, "attach TC egress", exc) from exc
    log.info("attached TC egress root on %s", ifname)


def detach_tc_egress(ifname: str) -> None:
    """Remove the clsact qdisc (and with it our filter)."""
    try:
        index = ifindex(ifname)
        with IPRoute() as ipr:
            ipr.tc("del", "clsact", index)
    except (AttachError, NetlinkError) as exc:
        if not isinstance(exc, NetlinkError) or exc.code not in (errno.EINVAL, errno.ENOENT):
            log.warning("%s: removing clsact failed: %s", ifname, exc)
        return
    log.info("detached TC egress from %s", ifname)
