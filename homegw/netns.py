"""Small helpers around `ip netns` for the virtual home test bed.

Everything here shells out to iproute2 (`ip`, `ss`) and ethtool: those tools are
what an operator would type, their errors are readable, and they behave the same
in every namespace. Processes are only ever signalled by PID.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

IP = "ip"
POLL_INTERVAL = 0.05


class NetnsError(RuntimeError):
    """A namespace operation failed; the message names the command and its stderr."""


def run_cmd(argv: Sequence[str], check: bool = True, timeout: float = 30) -> str:
    """Run one command, return its stdout; raise NetnsError with stderr on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run `ip [-n ns] args...`."""
    prefix = [IP, "-n", ns] if ns else [IP]
    return run_cmd([*prefix, *args], check=check)


# `ip netns exec` remounts /sys for the namespace, which hides the machine's bpffs
# at /sys/fs/bpf (a fresh `mount -t bpf` would be a private, throw-away instance).
# This does the same remount but carries the machine's bpffs over by a bind mount.
_HOST_BPFFS_SH = """set -e
if mountpoint -q /sys/fs/bpf; then
  keep=$(mktemp -d /tmp/homegw-bpffs.XXXXXX)
  mount --bind /sys/fs/bpf "$keep"
  umount -l /sys
  mount -t sysfs sysfs /sys
  mount --bind "$keep" /sys/fs/bpf
  umount "$keep"
  rmdir "$keep"
else
  umount -l /sys
  mount -t sysfs sysfs /sys
fi
exec "$@"
"""


def exec_argv(ns: str, argv: Sequence[str], host_bpffs: bool = False) -> list[str]:
    """The argv that runs `argv` inside namespace `ns` (the final process keeps the PID).

    With `host_bpffs`, /sys/fs/bpf inside is the machine's bpffs, so pins made
    there are visible outside and outlive the process; /sys is the namespace's.
    """
    if not host_bpffs:
        return [IP, "netns", "exec", ns, *argv]
    enter = ["unshare", "--mount", "--propagation", "slave", "--"]
    enter += ["nsenter", f"--net=/run/netns/{ns}", "--"]
    return [*enter, "sh", "-c", _HOST_BPFFS_SH, "sh", *argv]


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace `name`: sockets and
    threads made inside stay there, the rest of the process does not move."""
    from pyroute2.netns import popns, pushns

    pushns(name)
    try:
        yield
    finally:
        popns()


def list_netns() -> list[str]:
    """Names of all named network namespaces (`ip netns list`)."""
    out = run_cmd([IP, "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_netns(name: str) -> None:
    """Create a namespace and bring its loopback up."""
    run_cmd([IP, "netns", "add", name])
    ip("link", "set", "lo", "up", ns=name)


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is `name`."""
    out = run_cmd([IP, "netns", "pids", name], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


def delete_netns(name: str) -> None:
    """Kill what runs in the namespace, then delete it (its veths go with it)."""
    if name not in list_netns():
        return
    kill_pids(netns_pids(name))
    run_cmd([IP, "netns", "del", name], check=False)


def link_exists(dev: str, ns: str | None = None) -> bool:
    """True if interface `dev` exists (in `ns`, or in the caller's namespace)."""
    prefix = [IP, "-n", ns] if ns else [IP]
    proc = subprocess.run([*prefix, "link", "show", "dev", dev], capture_output=True, timeout=10)
    return proc.returncode == 0


def delete_link(dev: str) -> bool:
    """Delete interface `dev` of the caller's namespace if it exists; True if it did."""
    if not link_exists(dev):
        return False
    try:
        ip("link", "del", dev)
    except NetnsError:
        # a veth goes by itself when the namespace of its peer is deleted (the
        # kernel does it a moment later): gone in between is deleted
        if link_exists(dev):
            raise
    return True


def add_veth(a: str, a_ns: str | None, b: str, b_ns: str | None) -> None:
    """Create a veth pair with each end directly in its namespace (None = caller's)."""
    argv = ["link", "add", a]
    if a_ns:
        argv += ["netns", a_ns]
    argv += ["type", "veth", "peer", "name", b]
    if b_ns:
        argv += ["netns", b_ns]
    ip(*argv)


def xdp_pass_on(dev: str, ns: str) -> None:
    """Attach an XDP_PASS program to dev (a peer of a gateway NIC). A veth
    takes frames sent to it with XDP (redirect, XDP_TX) only when its NAPI
    is on, and the kernel wakes that NAPI promptly only when the veth runs an
    XDP program (GRO alone leaves frames waiting in the ring for seconds). A
    physical NIC needs none of this. The program stays attached to the
    device after this process lets go of it."""
    from bcc import BPF  # Debian's python3-bpfcc

    from homegw.dataplane.attach import attach_xdp

    bpf = BPF(text="int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
    fd = bpf.load_func("xdp_pass", BPF.XDP).fd
    try:
        with in_netns(ns):
            attach_xdp(dev, fd, "native")
    finally:
        bpf.cleanup()


def tx_offload_off(dev: str, ns: str | None) -> None:
    """`ethtool -K dev tx off`: XDP rewrites packets, veth's CHECKSUM_PARTIAL breaks that."""
    if shutil.which("ethtool") is None:
        raise NetnsError("ethtool is missing: apt-get install -y ethtool (scripts/setup.sh)")
    argv = ["ethtool", "-K", dev, "tx", "off"]
    run_cmd(exec_argv(ns, argv) if ns else argv)


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pids(pids: Sequence[int], grace: float = 3.0) -> None:
    """SIGTERM the PIDs, wait up to `grace` seconds, then SIGKILL the survivors."""
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if wait_for(lambda: not any(pid_alive(p) for p in pids), grace):
            return
    log.warning("processes still alive after SIGKILL: %s", [p for p in pids if pid_alive(p)])


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll `cond` every POLL_INTERVAL until it is true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def listening(ns: str, proto: str, addr: str, port: int) -> bool:
    """True if a socket in `ns` listens on addr:port (`proto` is "tcp" or "udp").

    `addr` "*" matches any local address, including ones bound to a device
    (`0.0.0.0%isp0:67`).
    """
    flag = "-Hlnt" if proto == "tcp" else "-Hlnu"
    out = run_cmd(exec_argv(ns, ["ss", flag]), check=False)
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local_addr, _, local_port = fields[3].rpartition(":")
        if local_port != str(port):
            continue
        if addr == "*" or local_addr.split("%")[0] == addr:
            return True
    return False


def route_overlap(net: str) -> str | None:
    """A route of the caller's namespace, other than default, overlapping `net`."""
    wanted = ipaddress.ip_network(net)
    for line in ip("-4", "route", "show").splitlines():
        prefix = line.split()[0] if line.strip() else "default"
        if prefix == "default":
            continue
        try:
            if ipaddress.ip_network(prefix, strict=False).overlaps(wanted):
                return line.strip()
        except ValueError:
            continue
    return None


def rmtree_if_exists(path: Path) -> None:
    """shutil.rmtree that accepts a missing path (also unlinks bpffs pins)."""
    if path.exists():
        shutil.rmtree(path)
