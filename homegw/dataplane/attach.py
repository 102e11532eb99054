"""Attach root programs to NICs with pyroute2: XDP ingress, TC clsact egress.

Errors name the interface, the errno and what to do about it.
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
TC_EGRESS_PARENT = 0xFFFFFFF3  # clsact egress ("ffff:fff3")
TC_FILTER_PRIO = 1


class AttachError(RuntimeError):
    pass


def _hint(code: int) -> str:
    return {
        errno.EOPNOTSUPP: "the driver has no native XDP: set dataplane.xdp_mode: generic",
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


def attach_xdp(ifname: str, prog_fd: int, mode: str) -> None:
    flags = XDP_MODES[mode]
    index = ifindex(ifname)
    attrs = [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", flags)]
    try:
        with IPRoute() as ipr:
            ipr.link("set", index=index, xdp={"attrs": attrs})
    except NetlinkError as exc:
        raise _fail(ifname, f"attach XDP ({mode})", exc) from exc
    log.info("attached XDP program (%s) on %s", mode, ifname)


def detach_xdp(ifname: str, mode: str) -> None:
    flags = XDP_MODES[mode]
    try:
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
