"""The appliance: one process that owns the dataplane and the slow path.

start() checks everything it can before changing anything (config is already
valid, interfaces must exist), then configures the interfaces, loads and
attaches the dataplane, starts the slow path and the web UI, and logs
"ready". stop() stops the process's part and leaves the datapath running
(roots attached, chains, maps and builds pinned, the kernel-path table in
place): the next start adopts it without dropping a flow. `homegw cleanup`
removes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from homegw import interfaces, kernelpath
from homegw.config import Config, config_diff
from homegw.configtypes import EPHEMERAL_PORTS
from homegw.control import Control
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.module import IOModule
from homegw.lan6 import Lan6Watcher
from homegw.modules.dhcp.service import DhcpService
from homegw.modules.dhcp.wan_client import WanDhcpClient, WanLease, to_wan_lease
from homegw.modules.dhcp.wan_client import _lease_type as wan_lease_type
from homegw.modules.dns.service import DnsService
from homegw.modules.ipv6 import service as ipv6_service
from homegw.registry import MODULES, spec
from webui import create_app
from webui.server import WebServer

if TYPE_CHECKING:  # the DPI service is imported with its module, when it is wanted
    from homegw.modules.dpi.service import DpiService
    from homegw.netfacts import Ipv6Facts
    from homegw.usermodules.manager import UserModules

log = logging.getLogger(__name__)
T = TypeVar("T")

# Sections that interfaces, addresses and every module hang on: a change
# restarts the whole appliance (its pinned state and attachments stay).
RESTART_SECTIONS = frozenset({"state_dir", "wan", "lan"})


def restart_needed(old: Config, new: Config) -> set[str]:
    """The changed sections that only a whole restart applies: the RESTART_SECTIONS,
    the web server's address, how the dataplane attaches (not its order)."""
    sections = config_diff(old, new) & RESTART_SECTIONS
    if old.webui.listen != new.webui.listen:
        sections.add("webui")  # webui.metrics_public is read at each request
    if old.dataplane.model_copy(update={"order": new.dataplane.order}) != new.dataplane:
        sections.add("dataplane")
    return sections


def release_nics(old: Config, new: Config) -> None:
    """Before a restart with other ports (the first-run page can swap WAN and
    LAN, or pick another port) or another XDP mode: what the old config put on
    a NIC goes where the new one does not want it, so that no port keeps the
    LAN's address, an old static WAN address, or a root program it no longer
    needs, and a root in another XDP mode does not block the new attach (the
    kernel has no native and generic program on one NIC at once)."""
    from homegw.dataplane import attach

    in_use = {new.lan.interface, new.wan.interface}
    left = [(old.lan.interface, old.lan.address)] if old.lan.interface != new.lan.interface else []
    if old.wan.mode == "static" and old.wan.address and old.wan.interface != new.wan.interface:
        left.append((old.wan.interface, old.wan.address))
    for ifname, address in left:
        try:
            interfaces.remove_address(ifname, address)
        except interfaces.InterfaceError as exc:
            log.warning("%s", exc)
    for ifname in sorted({old.lan.interface, old.wan.interface} - in_use):
        attach.detach_xdp(ifname, "auto")  # the program there, in whichever mode
        attach.detach_tc_egress(ifname)
    wanted = new.dataplane.xdp_mode
    for ifname in sorted(in_use) if wanted != "auto" else ():
        try:
            other_mode = attach.attached_xdp_mode(ifname) not in (None, wanted)
        except attach.AttachError:  # no such NIC: the start says so
            continue
        if other_mode:
            attach.detach_xdp(ifname, "auto")


class ApplianceError(RuntimeError):
    pass


class Appliance:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.dataplane: Dataplane | None = None
        self.web: WebServer | None = None
        self.wan_client: WanDhcpClient | None = None
        self.dhcp: DhcpService | None = None
        self.dns: DnsService | None = None
        self.lan6: Lan6Watcher | None = None  # the LAN NIC's IPv6 addresses and neighbours
        self.ipv6: ipv6_service.Ipv6Service | None = None
        self.user_modules: UserModules | None = None  # uploaded modules (homegw/usermodules)
        self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control")
        self.kernel_path = False
        # what the management API asks (homegw.management.Management), set by `homegw run`
        self.control: Control | None = None
        self.ready = threading.Event()
        self._reconfiguring = threading.RLock()  # one reconfiguration at a time
        self.started_at = time.time()

    # -- start -------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        missing = interfaces.missing_interfaces([cfg.wan.interface, cfg.lan.interface])
        if missing:
            raise ApplianceError(
                f"interface(s) not found: {', '.join(missing)}; check wan.interface and "
                "lan.interface (ip -br link lists the interfaces of this namespace)"
            )
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
        try:
            self._configure_interfaces()
            self._start_dataplane()
            self._start_dhcp_server()
            self._start_lan6()
            self._start_dns()
            self._start_wan_client()
            self._start_ipv6()
            self._start_forwarding_path()
            self._start_web()
            # process model: the last run's modules and builds go only now
            assert self.dataplane is not None
            self.dataplane.prune()
        except Exception:
            self._stop_parts()
            raise
        self.ready.set()
        log.info(
            "homegw ready: LAN %s %s, WAN %s (%s), web UI %s",
            cfg.lan.interface,
            cfg.lan.address,
            cfg.wan.interface,
            cfg.wan.mode,
            self.web.url if self.web else "-",
        )

    def _configure_interfaces(self) -> None:
        cfg = self.config
        interfaces.set_ephemeral_ports(*EPHEMERAL_PORTS)
        interfaces.set_address(cfg.lan.interface, cfg.lan.address)
        if cfg.wan.mode == "static":
            interfaces.set_address(cfg.wan.interface, cfg.wan.address, cfg.wan.mtu)
            interfaces.set_default_route(cfg.wan.interface, cfg.wan.gateway)
        else:
            interfaces.link_up(cfg.wan.interface)

    def _start_dhcp_server(self) -> None:
        if self.config.dhcp.enabled:
            self.dhcp = DhcpService(self.config, self._module("dhcp"))
            self.dhcp.start()

    def _start_lan6(self) -> None:
        """Follow the LAN's IPv6 neighbours (devices, local names' AAAA)."""
        if self.config.lan.ipv6.mode != "off":
            self.lan6 = Lan6Watcher(self.config.lan.interface)
            self.lan6.start()

    def _start_dns(self) -> None:
        if not self.config.dns.enabled:
            return
        self.dns = DnsService(self.config, self._wan_dns)
        if self.lan6 is not None:
            self.dns.set_ipv6(self.lan6.table)
        module = self._module("dns")
        if module is not None:
            self.dns.set_fast_path(module.fast_path())  # type: ignore[attr-defined]
        self.dns.on_answer = self._dpi_dns_answer
        self.dns.query_filter = self._dpi_dns_blocked
        self.dns.start()
        if self.dhcp is not None:
            self.dhcp.subscribe_names(self.dns.lease_name_changed)

    @property
    def dpi(self) -> DpiService | None:
        """The DPI module's slow path, while the module is loaded."""
        module = self._module("dpi")
        return getattr(module, "service", None)

    def _dpi_dns_answer(self, client: str, name: str, addresses: list[str]) -> None:
        """DNS answers attribute addresses to apps (through whichever DPI
        module is loaded now: a reload replaces it)."""
        dpi = self.dpi
        if dpi is not None:
            dpi.on_dns_answer(client, name, addresses)

    def _dpi_dns_blocked(self, client: str, name: str) -> bool:
        dpi = self.dpi
        return dpi is not None and dpi.dns_blocked(client, name)

    def _wan_dns(self) -> list[str]:
        """Upstreams learned from the ISP (wan.dns from config come first)."""
        lease = self.wan_client.lease if self.wan_client else None
        ipv4 = [str(a) for a in lease.dns] if lease else []
        return ipv4 + (self.ipv6.upstream_dns() if self.ipv6 else [])

    def _start_wan_client(self) -> None:
        """After the dataplane: a lease updates modules that must exist."""
        cfg = self.config
        if cfg.wan.mode == "dhcp":
            self.wan_client = WanDhcpClient(
                cfg.wan.interface, self._on_wan_lease, Path(cfg.state_dir), cfg.lan.hostname
            )
            self.wan_client.start()

    def _start_ipv6(self) -> None:
        """After the dataplane: the facts it finds go to loaded modules."""
        self.ipv6 = ipv6_service.for_config(self.config, self._on_ipv6_facts)
        if self.ipv6 is not None:
            self.ipv6.start()

    def _on_ipv6_facts(self, facts: Ipv6Facts) -> None:
        # from the IPv6 service's worker: applied in the control thread, in
        # order with WAN leases and reconfigurations
        self._control.submit(self._apply_ipv6_facts, facts)

    def _apply_ipv6_facts(self, facts: Ipv6Facts) -> None:
        self._tell_modules("the IPv6 facts", lambda module: module.on_ipv6(facts))

    def _tell_modules(self, what: str, tell: Callable[[IOModule], None]) -> None:
        """Every loaded module, in registry order (the firewall last: until it
        knows a new address, packets to it are dropped); one failing module
        does not keep the others from learning it."""
        for entry in MODULES:
            module = self._module(entry.name)
            if module is None:
                continue
            try:
                tell(module)
            except Exception:
                log.exception("module %s: applying %s failed", entry.name, what)
        if self.dataplane is not None:
            self.dataplane.invalidate_fastpath(what)

    def _forwarding_in_xdp(self, config: Config | None = None) -> bool:
        """The router forwards in XDP, with the NAT module after it when NAT
        is wanted; otherwise both stay out and the kernel forwards (and
        masquerades): XDP forwarding would bypass a kernel masquerade, and the
        NAT module translates what the router decided to send out."""
        cfg = config or self.config
        return cfg.router.enabled and all(
            entry.datapath is not None
            for entry in MODULES
            if entry.forwarding and getattr(cfg, entry.name).enabled
        )

    def wanted_modules(self, config: Config, quiet: bool = False) -> list[str]:
        """The modules whose datapath `config` asks for, in registry order."""
        in_chains = set(config.dataplane.order.lan + config.dataplane.order.wan)
        names = []
        for entry in MODULES:
            cls = entry.datapath_class()
            if entry.name not in in_chains or cls is None or not cls.wanted(config):
                continue
            if entry.forwarding and not self._forwarding_in_xdp(config):
                if not quiet:
                    log.info(
                        "module %s: left out, the kernel forwards (router disabled?)", entry.name
                    )
                continue
            names.append(entry.name)
        return names

    def build_module(self, name: str, config: Config) -> IOModule:
        cls = spec(name).datapath_class()
        assert cls is not None
        return cls(config)

    def _modules(self) -> list[IOModule]:
        return [self.build_module(name, self.config) for name in self.wanted_modules(self.config)]

    def _start_dataplane(self) -> None:
        cfg = self.config
        dataplane = Dataplane(
            cfg.dataplane.pin_dir,
            {Nic.LAN: cfg.lan.interface, Nic.WAN: cfg.wan.interface},
            cfg.dataplane.xdp_mode,
            fastpath=cfg.dataplane.fastpath,
        )
        self.dataplane = dataplane
        dataplane.load()
        # process model: read punts from the start (a restart adopts a running
        # chain); modules built in parallel children, given the last run's WAN
        # lease before they write their maps
        assert dataplane.slowpath is not None
        dataplane.slowpath.start()
        dataplane.add_modules(self._modules(), before_load=self._restore_wan_lease)
        from homegw.usermodules.host import start_user_modules  # it imports the manager

        self.user_modules = start_user_modules(self)
        self.install_chains()
        dataplane.attach()

    def install_chains(self) -> None:
        """Each NIC's chain: the configured order of the loaded modules, the
        user modules placed into it (run in the control thread, or at start)."""
        dataplane = self.dataplane
        assert dataplane is not None
        order = self.config.dataplane.order
        for nic, names in ((Nic.LAN, order.lan), (Nic.WAN, order.wan)):
            builtin = [n for n in names if n in dataplane.modules]
            users = self.user_modules
            dataplane.set_order(nic, users.arrange(nic, builtin) if users else builtin)

    def _restore_wan_lease(self) -> None:
        """Process model: the lease the last run held (persisted by the WAN
        client), applied to the modules before they write their maps, so that
        a restart forwards with the WAN address from its first packet. The
        client's own report of it follows and changes nothing."""
        cfg = self.config
        if cfg.wan.mode != "dhcp":
            return
        saved = wan_lease_type(Path(cfg.state_dir)).load(cfg.wan.interface)
        if saved is None:
            return
        try:
            lease = to_wan_lease(saved)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("ignoring the last run's WAN lease: %s", exc)
            return
        if lease.obtained_at + lease.lease_time <= time.time():
            return
        log.info("applying the last run's WAN lease %s until the client confirms it", lease.address)
        self._apply_wan_lease(lease)

    def _kernel_path(self, cfg: Config) -> kernelpath.KernelPath:
        return kernelpath.KernelPath(
            cfg.lan.interface,
            cfg.wan.interface,
            kernel_forwards=not self._forwarding_in_xdp(cfg),
            masquerade=cfg.nat.enabled,
            wan_ping=cfg.firewall.wan_ping,
            forward_wan_to_lan=cfg.firewall.forward_wan_to_lan,
            **kernelpath.paused_devices(cfg, self.dhcp.leases() if self.dhcp else []),
            **kernelpath.ipv6_options(cfg),
        )

    def _start_forwarding_path(self) -> None:
        path = self._kernel_path(self.config)
        kernelpath.enable(path)
        self.kernel_path = path.kernel_forwards and path.masquerade

    def _start_web(self) -> None:
        from homegw.management import Management  # it imports this module

        listen = self.config.webui.listen
        control = self.control if self.control is not None else Management(self, None)
        app = create_app(control, self.config.state_dir)
        self.web = WebServer(app, str(listen.host), listen.port)
        self.web.start()

    def _on_wan_lease(self, lease: WanLease | None) -> None:
        # Called in the DHCP client's event loop: apply it from our own thread,
        # where the modules may use pyroute2's blocking API.
        self._control.submit(self._apply_wan_lease, lease)

    def _apply_wan_lease(self, lease: WanLease | None) -> None:
        if lease is None:
            log.warning("WAN lease lost on %s", self.config.wan.interface)
        address, gateway = (lease.address, lease.router) if lease else (None, None)
        self._tell_modules("the WAN lease", lambda module: module.on_wan(address, gateway))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run fn in the control thread, after what is queued there (WAN
        leases, reconfigurations): one change to the modules at a time."""
        return self._control.submit(fn, *args)

    def renew_wan_lease(self) -> None:
        if self.wan_client:
            log.info("renewing the WAN lease")
            self.wan_client.renew()
        if self.ipv6:
            self.ipv6.renew()

    def _module(self, name: str) -> IOModule | None:
        loaded = self.dataplane.modules.get(name) if self.dataplane else None
        return loaded.module if loaded else None

    # -- reconfigure -------------------------------------------------------
    def reconfigure(self, new: Config) -> dict[str, str]:
        """Make `new` (validated) the running config, changing only what
        differs: map writes where a module can (apply), a reload of a module
        whose compile-time options changed, a restart of a service whose
        section changed, a whole restart for the sections everything hangs
        on. Returns how each changed part was applied. On a failure the old
        config is applied again and the error raised."""
        old = self.config
        with self._reconfiguring:
            try:
                return self._reconfigure(old, new)
            except Exception:
                log.exception("applying the new config failed: going back to the running one")
                self._reconfigure(new, old)
                raise

    def _reconfigure(self, old: Config, new: Config) -> dict[str, str]:
        changed = config_diff(old, new)
        if restart_needed(old, new):
            self._stop_parts()
            release_nics(old, new)
            self.config = new
            self.start()
            return dict.fromkeys(sorted(changed), "restart")
        self.config = new
        applied: dict[str, str] = {}
        if "log_level" in changed:
            logging.getLogger().setLevel(new.log_level.upper())
            applied["log_level"] = "set"
        applied |= self._reconfigure_datapath(old, new, changed)
        assert self.dataplane is not None
        self.dataplane.invalidate_fastpath("config applied")
        if "devices" in changed:
            applied["devices"] = "maps"  # the router's device policy (and the kernel path)
        applied |= self._reconfigure_services(changed)
        if self._kernel_path(old) != self._kernel_path(new):
            self._start_forwarding_path()
            applied["kernel_path"] = "replaced"
        return applied

    def _reconfigure_datapath(self, old: Config, new: Config, changed: set[str]) -> dict[str, str]:
        dataplane = self.dataplane
        assert dataplane is not None
        wanted = self.wanted_modules(new)
        applied: dict[str, str] = {}
        fresh: list[IOModule] = []
        for name in [n for n in wanted if n in dataplane.modules]:
            module = dataplane.modules[name].module
            if not module.compile_options_changed(new) and module.apply(new):
                if name in changed:
                    applied[name] = "maps"
                continue
            fresh.append(dataplane.replace_module(self.build_module(name, new)).module)
            applied[name] = "reload"
        for name in [n for n in wanted if n not in dataplane.modules]:
            fresh.append(dataplane.add_module(self.build_module(name, new)).module)
            applied[name] = "load"
        for name in [n for n in dataplane.modules if n not in wanted and not self._is_user(n)]:
            dataplane.remove_module(name)
            applied[name] = "unload"
        self.install_chains()
        if old.dataplane.order != new.dataplane.order:
            applied["dataplane.order"] = "chains"
        self._tell_wan(fresh)
        return applied

    def _is_user(self, name: str) -> bool:
        return self.user_modules is not None and self.user_modules.is_user_module(name)

    def _tell_wan(self, modules: list[IOModule]) -> None:
        """Modules loaded after the WAN lease (and the IPv6 facts) came learn them now."""
        lease = self.wan_client.lease if self.wan_client else None
        for module in modules:
            if lease is not None:
                module.on_wan(lease.address, lease.router)
            if self.ipv6 is not None:
                module.on_ipv6(self.ipv6.facts)

    def _reconfigure_services(self, changed: set[str]) -> dict[str, str]:
        applied: dict[str, str] = {}
        if "dhcp" in changed:
            if self.dhcp:
                self.dhcp.stop()
                self.dhcp = None
            self._start_dhcp_server()
            applied["dhcp.server"] = "restart"
        if "dns" in changed or "dhcp" in changed:
            if self.dns:
                self.dns.stop()
                self.dns = None
            self._start_dns()
            applied["dns.server"] = "restart"
        return applied

    def restart(self) -> None:
        """Stop every part and start them again with the running config, as a
        change of `wan` does (run it in the control thread: submit). The
        datapath keeps forwarding meanwhile; a failed start is tried once more."""
        with self._reconfiguring:
            log.info("restarting the appliance")
            self._stop_parts()
            try:
                self.start()
            except Exception:
                log.exception("the restart failed to start: trying once more")
                self.start()

    def missing_modules(self) -> list[str]:
        """Modules the running config asks for that are not loaded."""
        loaded = self.dataplane.modules if self.dataplane else {}
        return [n for n in self.wanted_modules(self.config, quiet=True) if n not in loaded]

    def restart_module(self, name: str) -> None:
        """Reload one module in place: a new instance switched into its chains."""
        with self._reconfiguring:
            assert self.dataplane is not None
            module = self.dataplane.replace_module(self.build_module(name, self.config)).module
            self._tell_wan([module])

    # -- observe -----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        lease = self.wan_client.lease if self.wan_client else None
        return {
            "ready": self.ready.is_set(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "modules": sorted(self.dataplane.modules) if self.dataplane else [],
            "kernel_path": self.kernel_path,
            "wan_address": str(lease.address)
            if lease
            else (str(self.config.wan.address) if self.config.wan.address else None),
            "ipv6": self.ipv6.status() if self.ipv6 else None,
        }

    # -- stop --------------------------------------------------------------
    def stop(self) -> None:
        """Undo start() in reverse; safe to call more than once."""
        self._stop_parts()
        self._control.shutdown(wait=True)

    def _stop_parts(self) -> None:
        """stop() but for the control thread (a restart runs in it)."""
        self.ready.clear()
        if self.web:
            self.web.stop()
            self.web = None
        # process model: the kernel-path table stays, so default-deny holds
        # while no process runs (a restart); `homegw cleanup` removes it
        self.kernel_path = False
        if self.dns:
            self.dns.stop()
            self.dns = None
        if self.lan6:
            self.lan6.stop()
            self.lan6 = None
        if self.dhcp:
            self.dhcp.stop()
            self.dhcp = None
        if self.ipv6:
            self.ipv6.stop()
            self.ipv6 = None
        if self.user_modules:
            self.user_modules.stop()
            self.user_modules = None
        if self.dataplane:
            self.dataplane.close()
            self.dataplane = None
        if self.wan_client:
            self.wan_client.stop()
            self.wan_client = None
        log.info(
            "homegw stopped: datapath left running for the next start (state pinned in %s; "
            "`homegw cleanup` removes it)",
            self.config.dataplane.pin_dir,
        )
