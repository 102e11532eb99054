"""The WAN's DHCPv6 client: `ClientFsm` (client.py) driven by one thread.

A UDP socket bound to the WAN NIC's link-local address, port 546
(SO_BINDTODEVICE), sends to ff02::1:2 port 547 (always multicast: the client
never asks for the server-unicast option). One supervised thread waits on the
socket and a wake-up socketpair with the state machine's next due time as
the timeout; nothing polls. The client configures nothing itself: every
change of the lease goes to `on_lease(lease)` (from the client thread) and
the IPv6 service adds the IA_NA address, routes the prefixes, etc.

State in `state_dir`: `dhcp6-duid` (DUID-LL of the WAN MAC, made once and
kept, so the ISP keeps recognising the gateway after a NIC swap too) and
`wan6-<ifname>.lease.json` (the lease, written atomically on every change,
removed when it is lost): a restart within the lifetimes REBINDs it.
The IAID is the last four bytes of the WAN MAC (stable, like dhcpcd's).

Until the NIC has a usable link-local address (DAD still running, link
down) the socket cannot be bound; the thread retries with a backoff that
grows to BIND_RETRY_MAX. A send error (link gone) closes the socket and
starts that again. `stats()`: datagrams sent/received, malformed ones by
reason, ignored ones by reason, send errors.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from homegw import supervise
from homegw.atomicfile import write_atomic
from homegw.dataplane.slowpath import hardware_address
from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.client import ClientFsm, Lease6, Phase

log = logging.getLogger(__name__)

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_SERVERS = "ff02::1:2"
BIND_RETRY_FIRST = 0.2
BIND_RETRY_MAX = 5.0
RELEASE_WAIT = 3.0  # seconds stop(release=True) waits for the server's REPLY
CLOCK_JUMP = 2.0  # seconds of wall-clock drift against monotonic taken as a jump
IDLE_WAIT = 60.0  # longest sleep when nothing is due (harmless wake-ups)
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08


def link_local(ifname: str) -> str | None:
    """The NIC's usable (not tentative) link-local address, in this thread's namespace."""
    with contextlib.suppress(OSError), open("/proc/thread-self/net/if_inet6") as table:
        for line in table:
            hexaddr, _index, _plen, scope, flags, name = line.split()
            usable = not int(flags, 16) & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
            if name == ifname and int(scope, 16) == 0x20 and usable:
                return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr))
    return None


def load_duid(state_dir: Path, mac: bytes, name: str = "dhcp6-duid") -> bytes:
    """A DUID kept in state_dir/`name`, else a new DUID-LL of `mac` (then kept)."""
    path = state_dir / name
    with contextlib.suppress(OSError, ValueError, wire.Dhcp6Error):
        return wire.check_duid(bytes.fromhex(path.read_text().strip()))
    duid = wire.duid_ll(mac)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, duid.hex().encode() + b"\n")
    return duid


def lease_path(state_dir: Path, ifname: str) -> Path:
    return state_dir / f"wan6-{ifname}.lease.json"


def load_lease(state_dir: Path, ifname: str) -> Lease6 | None:
    """The persisted lease, or None (missing or unreadable: logged)."""
    try:
        return Lease6.from_json(lease_path(state_dir, ifname).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable DHCPv6 lease file: %s", err)
        return None


class ClockWatch:
    """Notices jumps of the wall clock against the monotonic one."""

    def __init__(self, wall: float, mono: float) -> None:
        self._wall, self._mono = wall, mono

    def jump(self, wall: float, mono: float) -> float:
        """How far the wall clock jumped since the last call (0.0 under CLOCK_JUMP)."""
        drift = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return drift if abs(drift) >= CLOCK_JUMP else 0.0


class WanDhcp6Client:
    """Keeps a DHCPv6 lease (IA_NA and/or IA_PD) on the WAN NIC; reports changes."""

    def __init__(
        self,
        ifname: str,
        on_lease: Callable[[Lease6 | None], None],
        state_dir: Path,
        *,
        want_address: bool = True,
        want_prefix: bool = True,
        prefix_hint: int = 56,
        netns: str | None = None,
    ) -> None:
        self.ifname = ifname
        self.state_dir = Path(state_dir)
        self.want_address = want_address
        self.want_prefix = want_prefix
        self.prefix_hint = prefix_hint
        self.netns = netns  # tests: only the client thread enters this namespace
        self._on_lease = on_lease
        self._clock = time.time  # Lease6 times are wall-clock; ClockWatch catches jumps
        self._cond = threading.Condition()
        self._lease: Lease6 | None = None
        self._reported: Lease6 | None = None  # what on_lease has been called with
        self._thread: supervise.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._release = False
        self._renew = False
        self._sock: socket.socket | None = None
        self._fsm: ClientFsm | None = None
        self._counts: Counter[str] = Counter()
        self._stats_lock = threading.Lock()  # counters: the thread writes, stats() reads

    # ----------------------------------------------------------- public

    @property
    def lease(self) -> Lease6 | None:
        with self._cond:
            return self._lease

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("WAN DHCPv6 client already running")
        self._stopping = False
        self._thread = supervise.Thread(self._run, f"wan-dhcp6-{self.ifname}")
        self._thread.start()

    def stop(self, release: bool = False, timeout: float = 10.0) -> None:
        """Stop the thread; with `release`, give the lease back first (RELEASE)."""
        thread = self._thread
        if thread is None:
            return
        self._release = release
        self._stopping = True
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            log.error("WAN DHCPv6 client thread did not stop within %.1f s", timeout)
            return
        self._thread = None

    def renew(self) -> None:
        """Renew now (if bound)."""
        self._renew = True
        self._wake()

    def wait_for(self, predicate: Callable[[Lease6 | None], bool], timeout: float) -> Lease6 | None:
        """Block until on_lease has seen a lease satisfying `predicate` (or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self._reported), timeout)
            return self._reported

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            out = dict(self._counts)
            fsm = self._fsm
            if fsm is not None:
                out.update({f"ignored_{k}": v for k, v in fsm.ignored.items()})
        return out

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self._counts[key] += 1

    # ----------------------------------------------------------- thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        if self.netns:
            from pyroute2 import netns as pyroute2_netns

            pyroute2_netns.setns(self.netns, flags=0)  # this thread only
        mac = self._wait_for_nic()
        if mac is None:
            return  # stopped before the NIC appeared
        self._fsm = fsm = ClientFsm(
            load_duid(self.state_dir, mac),
            int.from_bytes(mac[2:6], "big"),
            want_address=self.want_address,
            want_prefix=self.want_prefix,
            prefix_hint=self.prefix_hint,
        )
        fsm.start(self._clock(), load_lease(self.state_dir, self.ifname))
        self._publish(fsm.lease)
        try:
            self._loop(fsm, lambda: self._stopping)
            if self._release:
                fsm.release(self._clock())
                self._publish(None)
                deadline = time.monotonic() + RELEASE_WAIT
                self._loop(fsm, lambda: fsm.phase is Phase.STOPPED or time.monotonic() > deadline)
        finally:
            self._close()

    def _wait_for_nic(self) -> bytes | None:
        """The NIC's MAC, once the NIC exists (None: stopped meanwhile)."""
        backoff = BIND_RETRY_FIRST
        while not self._stopping:
            try:
                return hardware_address(self.ifname)
            except OSError as err:
                self._count("nic_missing")
                log.warning("DHCPv6 client: no NIC %s yet: %s", self.ifname, err)
            if select.select([self._wake_r], [], [], backoff)[0]:
                self._wake_r.recv(64)
            backoff = min(backoff * 2, BIND_RETRY_MAX)
        return None

    def _loop(self, fsm: ClientFsm, done: Callable[[], bool]) -> None:
        retry_at = 0.0
        backoff = BIND_RETRY_FIRST
        watch = ClockWatch(self._clock(), time.monotonic())
        while not done():
            now = self._clock()
            jump = watch.jump(now, time.monotonic())
            if jump:
                log.warning("wall clock jumped %+.0f s: DHCPv6 timers moved along", jump)
                fsm.shift(jump)
                retry_at += jump
            if self._sock is None and now >= retry_at:
                if self._open():
                    backoff = BIND_RETRY_FIRST
                else:
                    retry_at, backoff = now + backoff, min(backoff * 2, BIND_RETRY_MAX)
            if self._renew:
                self._renew = False
                fsm.renew(now)
            if self._sock is not None:
                for msg in fsm.poll(now):
                    self._send(msg)
            else:
                fsm.poll(now)  # expiry goes on while the link is down
            self._publish(fsm.lease)
            self._wait(fsm, None if self._sock is not None else retry_at)

    def _wait(self, fsm: ClientFsm, retry_at: float | None) -> None:
        due = [t for t in (fsm.next_due(), retry_at) if t is not None]
        timeout = min(max(min(due) - self._clock(), 0.0), IDLE_WAIT) if due else IDLE_WAIT
        readers = [self._wake_r] + ([self._sock] if self._sock is not None else [])
        ready, _, _ = select.select(readers, [], [], timeout)
        if self._wake_r in ready:
            self._wake_r.recv(64)
        if self._sock is not None and self._sock in ready:
            self._receive(fsm)

    def _open(self) -> bool:
        address = link_local(self.ifname)
        if address is None:
            return False
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            index = socket.if_nametoindex(self.ifname)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.bind((address, CLIENT_PORT, 0, index))
        except OSError as err:
            sock.close()
            log.warning("DHCPv6 client cannot bind on %s (%s): %s", self.ifname, address, err)
            return False
        sock.setblocking(False)
        self._sock = sock
        self._dest = (ALL_SERVERS, SERVER_PORT, 0, index)
        log.info("DHCPv6 client on %s from [%s]:%d", self.ifname, address, CLIENT_PORT)
        return True

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, msg: wire.Message) -> None:
        assert self._sock is not None
        try:
            self._sock.sendto(wire.encode(msg), self._dest)
            self._count(f"sent_{wire.MsgType(msg.msg_type).name.lower()}")
        except OSError as err:
            self._count("send_errors")
            log.warning("DHCPv6 send on %s failed: %s", self.ifname, err)
            self._close()  # the link or its address went away: bind again

    def _receive(self, fsm: ClientFsm) -> None:
        assert self._sock is not None
        for _ in range(64):  # bounded: a flood cannot starve the timers
            try:
                data, _source = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.EINTR:
                    self._count("receive_errors")
                return
            self._count("received")
            try:
                msg = wire.decode(data)
            except wire.Dhcp6Error as err:
                self._count(f"malformed_{err.reason}")
                continue
            with self._stats_lock:  # handle() counts what it ignores
                fsm.handle(msg, self._clock())

    def _publish(self, lease: Lease6 | None) -> None:
        with self._cond:
            if lease == self._lease:
                return
            self._lease = lease
        self._persist(lease)
        if lease is None:
            log.info("DHCPv6 lease on %s lost", self.ifname)
        else:
            log.info("DHCPv6 lease on %s: %s", self.ifname, describe(lease))
        try:
            self._on_lease(lease)
        except Exception:
            log.exception("DHCPv6 on_lease callback failed")
        with self._cond:
            self._reported = lease
            self._cond.notify_all()

    def _persist(self, lease: Lease6 | None) -> None:
        path = lease_path(self.state_dir, self.ifname)
        try:
            if lease is None:
                path.unlink(missing_ok=True)
            else:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lease.to_json().encode())
        except OSError as err:
            log.error("cannot persist the DHCPv6 lease in %s: %s", path, err)


def describe(lease: Lease6) -> str:
    """One log line: addresses, prefixes, DNS."""
    items = [str(a.address) for a in lease.addresses] + [str(p.prefix) for p in lease.prefixes]
    dns = " ".join(str(d) for d in lease.dns) or "none"
    return f"{' '.join(items)} dns {dns} from {lease.server_id.hex()}"
