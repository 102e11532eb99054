"""The gateway's WAN DHCP client: pyroute2's AsyncDHCPClient in a thread of its own.

The appliance's main thread is not asyncio, so `WanDhcpClient.start()` runs
`pyroute2.dhcp.client.AsyncDHCPClient` in a dedicated thread with its own event
loop. The client configures the WAN interface itself (address, default route)
and then reports every change through `on_change(lease)` / `on_change(None)` so
the appliance can update the router, NAT and DNS modules live.

Decisions, and the pyroute2 0.9.7 behaviour they work around:

* Own hooks instead of pyroute2's `configure_ip` / `add_default_gw` /
  `remove_ip` / `remove_default_gw`: those only run on BOUND (a renewal that
  changes the router is ignored), `add_default_gw` passes `oif` as a tuple
  holding a list, and nothing removes the previous address when the client
  falls back from INIT-REBOOT to DISCOVER after a silent server (no UNBOUND is
  triggered then), so the gateway would end up with two WAN addresses.
  `_apply` here diffs the new lease against what this client configured.
* Lease persistence: `JSONFileLease` writes to the working directory with a
  plain `open('wt')`. `_lease_type(state_dir)` builds a `Lease` subclass bound
  to `state_dir` that writes temp-file + fsync + rename, so a restart does an
  INIT-REBOOT for the previous address and never reads a half-written file.
* Signals: `ClientConfig.handle_signals=False`. pyroute2 would otherwise call
  `loop.add_signal_handler` for USR1/USR2/HUP, which only works in the main
  thread and would steal those signals from the appliance. SIGTERM stays with
  the appliance, which calls `stop()`. `renew()` replaces SIGUSR1.
* `release=False` by default on `stop()`: like other routers, the gateway
  keeps its lease (and its WAN address) across a restart.
* The client runs in the calling process's network namespace (production: the
  appliance runs inside the gateway namespace). `netns=` makes only the client
  thread `setns()` into a named namespace first; the tests use it.
* If the client's socket tasks end (e.g. ENETDOWN when the WAN link goes
  down) or it cannot start (interface missing), it is restarted with backoff.

`python -m homegw.standalone wan-client IFACE --state-dir DIR` runs it alone
and logs leases, for manual checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import threading
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from pyroute2 import netns as pyroute2_netns
from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
from pyroute2.dhcp.hooks import Hook, Trigger
from pyroute2.dhcp.leases import Lease, MissingOptionError
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from homegw import supervise
from homegw.atomicfile import write_atomic

log = logging.getLogger(__name__)

LeaseCallback = Callable[["WanLease | None"], None]

NETLINK_TIMEOUT = 5.0
RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 30.0
DEFAULT_ROUTE = "0.0.0.0/0"
APPLY_TRIGGERS = (Trigger.BOUND, Trigger.RENEWED, Trigger.REBOUND)
LOSS_TRIGGERS = (Trigger.UNBOUND, Trigger.EXPIRED)


@dataclasses.dataclass(frozen=True)
class WanLease:
    """What the appliance needs to know about the WAN lease."""

    address: IPv4Interface
    router: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    server_id: IPv4Address | None
    lease_time: int
    obtained_at: float

    def describe(self) -> str:
        """One log line: `203.0.113.23/24 via 203.0.113.1 dns 198.51.100.53 (lease 600 s)`."""
        dns = " ".join(str(d) for d in self.dns) or "none"
        return f"{self.address} via {self.router or 'none'} dns {dns} (lease {self.lease_time} s)"


def _option(lease: Lease, name: str, default: Any = None) -> Any:
    """A DHCP option of a pyroute2 lease, or `default` if the server did not send it."""
    try:
        return getattr(lease, name)
    except MissingOptionError:
        return default


def to_wan_lease(lease: Lease) -> WanLease:
    """Convert a pyroute2 lease; a missing subnet mask means a /32."""
    mask = _option(lease, "subnet_mask", "255.255.255.255")
    routers = _option(lease, "routers", []) or []
    server_id = _option(lease, "server_id")
    return WanLease(
        address=IPv4Interface(f"{lease.ip}/{mask}"),
        router=IPv4Address(routers[0]) if routers else None,
        dns=tuple(IPv4Address(a) for a in _option(lease, "name_servers", []) or []),
        server_id=IPv4Address(server_id) if server_id else None,
        lease_time=int(_option(lease, "lease_time", 0)),
        obtained_at=float(lease.obtained),
    )


def _essence(lease: WanLease | None) -> WanLease | None:
    """The lease without its timestamp: a renewal that changes nothing else is no change."""
    return None if lease is None else dataclasses.replace(lease, obtained_at=0.0)


def lease_path(state_dir: Path, interface: str) -> Path:
    """Where the lease of `interface` is persisted."""
    return state_dir / f"wan-{interface}.lease.json"


def _lease_type(state_dir: Path) -> type[Lease]:
    """A pyroute2 Lease class persisted as `<state_dir>/wan-<iface>.lease.json`."""

    class StateDirLease(Lease):
        @staticmethod
        def path(interface: str) -> Path:
            return lease_path(state_dir, interface)

        def dump(self) -> None:
            state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(
                self.path(self.interface),
                json.dumps(dataclasses.asdict(self), indent=2).encode(),
            )

        @classmethod
        def load(cls, interface: str) -> Lease | None:
            try:
                data = json.loads(cls.path(interface).read_text())
                return cls(**data)
            except FileNotFoundError:
                return None
            except (OSError, TypeError, ValueError) as err:
                log.warning("ignoring unreadable WAN lease file: %s", err)
                return None

    return StateDirLease


class _Netlink:
    """The interface changes the client makes, each bounded by NETLINK_TIMEOUT."""

    def __init__(self, interface: str) -> None:
        self.interface = interface

    async def _ifindex(self, ipr: AsyncIPRoute) -> int:
        found = await ipr.link_lookup(ifname=self.interface)
        if not found:
            raise OSError(errno.ENODEV, f"no interface {self.interface}")
        return found[0]

    async def set_address(self, address: IPv4Interface) -> None:
        extra = {}
        if address.network.prefixlen < 31:
            extra["broadcast"] = str(address.network.broadcast_address)
        async with asyncio.timeout(NETLINK_TIMEOUT), AsyncIPRoute() as ipr:
            index = await self._ifindex(ipr)
            await ipr.addr(
                "replace",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                **extra,
            )

    async def del_address(self, address: IPv4Interface) -> None:
        async with asyncio.timeout(NETLINK_TIMEOUT), AsyncIPRoute() as ipr:
            index = await self._ifindex(ipr)
            with _ignore_netlink(errno.EADDRNOTAVAIL):
                await ipr.addr(
                    "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )

    async def set_default_route(self, router: IPv4Address, address: IPv4Interface) -> None:
        extra = {} if router in address.network else {"flags": 4}  # RTNH_F_ONLINK
        async with asyncio.timeout(NETLINK_TIMEOUT), AsyncIPRoute() as ipr:
            index = await self._ifindex(ipr)
            await ipr.route("replace", dst=DEFAULT_ROUTE, gateway=str(router), oif=index, **extra)

    async def del_default_route(self, router: IPv4Address) -> None:
        async with asyncio.timeout(NETLINK_TIMEOUT), AsyncIPRoute() as ipr:
            index = await self._ifindex(ipr)
            with _ignore_netlink(errno.ESRCH):
                await ipr.route("del", dst=DEFAULT_ROUTE, gateway=str(router), oif=index)


@contextlib.contextmanager
def _ignore_netlink(code: int):
    """Swallow one NetlinkError code (e.g. 'already gone')."""
    try:
        yield
    except NetlinkError as err:
        if err.code != code:
            raise


class WanDhcpClient:
    """Keeps a DHCP lease on the WAN interface, configures it, reports changes."""

    def __init__(
        self,
        interface: str,
        on_change: LeaseCallback,
        state_dir: Path,
        hostname: str = "homegw",
        *,
        netns: str | None = None,
    ) -> None:
        self.interface = interface
        self.state_dir = Path(state_dir)
        self.hostname = hostname
        self.netns = netns
        self._on_change = on_change
        self._lease_cls = _lease_type(self.state_dir)
        self._netlink = _Netlink(interface)
        self._cond = threading.Condition()
        self._lease: WanLease | None = None
        # the lease on_change has already been called with (what waiters see)
        self._reported: WanLease | None = None
        # what this client put on the interface (starts from the persisted lease)
        self._configured: WanLease | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: AsyncDHCPClient | None = None
        self._release = False

    # public API -----------------------------------------------------------

    @property
    def lease(self) -> WanLease | None:
        """The current lease, or None."""
        with self._cond:
            return self._lease

    @property
    def running(self) -> bool:
        """Whether the client thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the client thread; returns once its event loop runs."""
        if self.running:
            raise RuntimeError("WAN DHCP client already running")
        ready = threading.Event()
        self._thread = supervise.Thread(
            self._thread_main, f"wan-dhcp-{self.interface}", args=(ready,)
        )
        self._thread.start()
        ready.wait(timeout=10.0)

    def stop(self, release: bool = False, timeout: float = 10.0) -> None:
        """Stop the client (send DHCPRELEASE and unconfigure only if `release`)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        self._release = release
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            log.error("WAN DHCP client thread did not stop within %.1f s", timeout)
            return
        self._thread = None

    def renew(self) -> None:
        """Renew the lease now (what SIGUSR1 does for pyroute2's CLI client)."""
        loop, client = self._loop, self._client
        if loop is None or client is None:
            return
        # pyroute2 has no public renew API; _renew is what its SIGUSR1 handler calls.
        asyncio.run_coroutine_threadsafe(client._renew(), loop)

    def wait_for_lease(self, timeout: float) -> WanLease | None:
        """Block until a lease is held and on_change has seen it (or `timeout`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._reported is not None, timeout)
            return self._reported

    # client thread ----------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            if self.netns:
                pyroute2_netns.setns(self.netns, flags=0)  # this thread only
            asyncio.run(self._supervise(ready))
        except Exception:
            log.exception("WAN DHCP client thread crashed")
        finally:
            ready.set()
            self._loop = self._stop = self._client = None

    async def _supervise(self, ready: threading.Event) -> None:
        """Run client sessions until stop(), restarting failed ones with backoff."""
        self._loop = asyncio.get_running_loop()
        supervise.watch_loop(self._loop, f"wan-dhcp-{self.interface}")
        self._stop = asyncio.Event()
        ready.set()
        backoff = RESTART_BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                await self._session()
                backoff = RESTART_BACKOFF_FIRST
            except Exception as err:
                log.error("WAN DHCP client on %s failed: %r", self.interface, err)
            if self._stop.is_set():
                break
            log.info("restarting WAN DHCP client in %.0f s", backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    def _config(self) -> ClientConfig:
        return ClientConfig(
            interface=self.interface,
            lease_type=self._lease_cls,
            hooks=(
                Hook(func=self._hook_apply, triggers=set(APPLY_TRIGGERS)),
                Hook(func=self._hook_lost, triggers=set(LOSS_TRIGGERS)),
            ),
            release=False,
            handle_signals=False,
            write_pidfile=False,
            hook_timeout=None,  # _Netlink bounds itself; on_change may be slow
            host_name=self.hostname,
            vendor_id=None,
        )

    async def _session(self) -> None:
        """One AsyncDHCPClient lifetime: bootstrap, then wait for stop() or failure."""
        assert self._stop is not None
        persisted = self._lease_cls.load(self.interface)
        if persisted is not None and self._configured is None:
            self._configured = to_wan_lease(persisted)
        async with AsyncDHCPClient(self._config()) as client:
            self._client = client
            try:
                await client.bootstrap()
                await self._wait_stop_or_failure(client)
            finally:
                self._client = None
                client.config.release = self._release and self._stop.is_set()

    async def _wait_stop_or_failure(self, client: AsyncDHCPClient) -> None:
        assert self._stop is not None
        stop = asyncio.create_task(self._stop.wait())
        # pyroute2's socket tasks return on ENETDOWN and expect a restart
        io_tasks = [t for t in (client._receiver_task, client._sender_task) if t]
        done, _ = await asyncio.wait([stop, *io_tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if stop not in done:
            log.warning("WAN DHCP client I/O on %s ended (link down?)", self.interface)

    # hooks (run in the client thread's event loop) -------------------------------

    async def _hook_apply(self, lease: Lease) -> None:
        await self._apply(to_wan_lease(lease))

    async def _hook_lost(self, lease: Lease) -> None:
        await self._unconfigure(to_wan_lease(lease))

    async def _apply(self, new: WanLease) -> None:
        old = self._configured
        if old is not None and old.address != new.address:
            await self._netlink.del_address(old.address)
        await self._netlink.set_address(new.address)
        self._configured = new
        if old is not None and old.router and old.router != new.router:
            await self._netlink.del_default_route(old.router)
        if new.router is not None:
            await self._netlink.set_default_route(new.router, new.address)
        log.info("WAN lease %s", new.describe())
        self._publish(new)

    async def _unconfigure(self, lost: WanLease) -> None:
        log.info("WAN lease %s lost", lost.address)
        leases = [lost] if self._configured is None else [lost, self._configured]
        for router in {wan.router for wan in leases} - {None}:
            await self._netlink.del_default_route(router)
        for address in {wan.address for wan in leases}:
            await self._netlink.del_address(address)
        self._configured = None
        # an invalid lease must not be INIT-REBOOTed into at the next start
        with contextlib.suppress(OSError):
            lease_path(self.state_dir, self.interface).unlink(missing_ok=True)
        self._publish(None)

    def _publish(self, lease: WanLease | None) -> None:
        """Store the lease, call on_change (errors only logged), then wake waiters."""
        with self._cond:
            changed = _essence(lease) != _essence(self._lease)
            self._lease = lease
        if changed:
            try:
                self._on_change(lease)
            except Exception:
                log.exception("WAN lease on_change callback failed")
        with self._cond:
            self._reported = lease
            self._cond.notify_all()
