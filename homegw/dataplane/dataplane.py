"""The dataplane: root programs on the NICs, module chains, the slow path.

Lifecycle: Dataplane(pin_dir, interfaces).load() gets the roots' builds and
opens the pinned chain maps; add_modules() gets the modules' builds (reused
from the pin dir when nothing changed, else compiled in parallel children:
builds.py) and hands each module its adopted build; set_order() installs a
NIC's chain; attach() puts the roots on the NICs (replacing, atomically, the
roots a previous process left there if their build changed); prune() then
unpins the builds nothing uses any more. Enabling, disabling and re-ordering
modules later only rewrites chain slots.

close() leaves everything in the kernel: roots attached, chains filled, maps
and builds pinned, so traffic keeps flowing while the process is away and
the next start adopts it (a hitless restart). detach() and purge_pins()
(`homegw cleanup`) take it all away.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homegw.dataplane import attach as nic_attach
from homegw.dataplane.abi import (
    DATAPLANE_ID,
    META_REINJECTED,
    REASON_FRAGMENT,
    Hook,
    Nic,
    generation_key,
)
from homegw.dataplane.builds import AdoptedBuild, BuildSpec, get_builds, prune_builds
from homegw.dataplane.chain import Chain
from homegw.dataplane.fastpath import FastPath
from homegw.dataplane.fragment import Fragmenter
from homegw.dataplane.loader import ROOT_SOURCE
from homegw.dataplane.module import IOModule
from homegw.dataplane.slowpath import SlowPath
from homegw.dataplane.testrun import inject_xdp

log = logging.getLogger(__name__)

ROOT_FUNCTIONS = {Hook.XDP: "homegw_root_xdp", Hook.TC: "homegw_root_tc"}
FRAGMENT_SOURCE = Path(__file__).parent / "fragment.bpf.c"
LEARN_SOURCE = Path(__file__).parent / "fastpath.bpf.c"


@dataclass
class LoadedModule:
    module: IOModule
    bpf: AdoptedBuild
    fds: dict[Hook, int] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


class DataplaneError(RuntimeError):
    pass


class Dataplane:
    def __init__(
        self,
        pin_dir: str,
        interfaces: dict[Nic, str],
        xdp_mode: str = "native",
        fastpath: bool = True,
    ) -> None:
        self.pin_dir = pin_dir
        self.fastpath_on = fastpath  # off: nothing is learnt (fastpath.py)
        self.interfaces = interfaces
        self.xdp_mode = xdp_mode  # as configured: native | generic | auto
        self.xdp_in_use: dict[Nic, str] = {}  # the mode each NIC's root runs in
        self.modules: dict[str, LoadedModule] = {}
        self.order: dict[Nic, list[str]] = {nic: [] for nic in Nic}
        self._roots: dict[Nic, AdoptedBuild] = {}
        self._fragment: AdoptedBuild | None = None
        self._learn: AdoptedBuild | None = None
        self.fastpath: FastPath | None = None
        self._root_fds: dict[tuple[Nic, Hook], int] = {}
        self._chains: dict[Hook, Chain] = {}
        self._ifindex: dict[int, Nic] = {}  # of the attached NICs
        self._held: set[Path] = set()  # builds prune() keeps though unloaded
        self.slowpath: SlowPath | None = None
        # packets the router marked HOMEGW_F_FRAGMENT, punted by the chain's end
        self.fragmenter = Fragmenter(interfaces)

    # -- loading ---------------------------------------------------------
    def load(self) -> None:
        ensure_bpffs()
        os.makedirs(self.pin_dir, exist_ok=True)
        specs = [
            BuildSpec(
                f"root_{nic.name.lower()}", ROOT_SOURCE, self.pin_dir, 0, {"HOMEGW_NIC": int(nic)}
            )
            for nic in Nic
        ]
        specs.append(BuildSpec("fragment", FRAGMENT_SOURCE, self.pin_dir, DATAPLANE_ID))
        specs.append(BuildSpec("fastpath", LEARN_SOURCE, self.pin_dir, DATAPLANE_ID))
        *roots, fragment, learn = get_builds(specs)
        for nic, build in zip(Nic, roots, strict=True):
            self._roots[nic] = build
            for hook, function in ROOT_FUNCTIONS.items():
                self._root_fds[(nic, hook)] = build.program_fd(function, hook.name.lower())
        lan_root = self._roots[Nic.LAN]
        generations = lan_root["chain_generation"]
        self._chains = {
            Hook.XDP: Chain(Hook.XDP, lan_root["chain_xdp"], generations),
            Hook.TC: Chain(Hook.TC, lan_root["chain_tc"], generations),
        }
        self.slowpath = SlowPath(f"{self.pin_dir}/slowpath")
        self._install_fragment_program(fragment)
        self._install_learn_program(learn)

    def _install_fragment_program(self, build: AdoptedBuild) -> None:
        """The chain's end for packets to fragment, and their slow-path handler."""
        fd = build.program_fd("homegw_fragment_xdp", "xdp")
        self._roots[Nic.LAN]["chain_fragment"][ctypes.c_uint32(0)] = ctypes.c_int(fd)
        self._fragment = build
        assert self.slowpath is not None
        self.slowpath.register(DATAPLANE_ID, REASON_FRAGMENT, self.fragmenter.handle)

    def _install_learn_program(self, build: AdoptedBuild) -> None:
        """The chain's end for flows the fast path may learn (with the fast
        path off: none, nothing is learnt). The epoch moves on: what the last
        process's entries say is not this one's to vouch for."""
        self._learn = build
        self.fastpath = FastPath(self._roots[Nic.LAN])
        self.set_fastpath(self.fastpath_on)

    def set_fastpath(self, on: bool) -> None:
        """Let the chains' end teach the fast path, or not (then no entry is
        made and the ones there retire at once: every packet takes the chain)."""
        assert self._learn is not None and self.fastpath is not None
        slot = self._roots[Nic.LAN]["chain_learn"]
        if on:
            fd = self._learn.program_fd("homegw_learn_xdp", "xdp")
            slot[ctypes.c_uint32(0)] = ctypes.c_int(fd)
        else:
            with contextlib.suppress(KeyError):
                del slot[ctypes.c_uint32(0)]
        self.fastpath_on = on
        self.fastpath.invalidate("fast path on" if on else "fast path off")

    def add_module(self, module: IOModule) -> LoadedModule:
        return self.add_modules([module])[0]

    def add_modules(
        self, modules: Iterable[IOModule], before_load: Callable[[], None] | None = None
    ) -> list[LoadedModule]:
        """Build (or reuse) the modules' datapaths, all at once, then load
        them (on_load, handlers). `before_load` runs when every module is in
        self.modules but none has written its maps yet: the appliance hands
        them the last run's WAN lease there, so that modules whose build was
        reused (their maps are the ones the running chain reads) never write
        a state without it."""
        modules = list(modules)
        for module in modules:
            if module.name in self.modules:
                raise DataplaneError(f"module {module.name} is already loaded")
        builds = get_builds([self.build_spec(m) for m in modules])
        loaded = [self._adopt(m, b) for m, b in zip(modules, builds, strict=True)]
        try:
            if before_load is not None:
                before_load()
            for entry in loaded:
                self._load(entry)
        except Exception:
            for entry in loaded:
                self.modules.pop(entry.module.name, None)
            raise
        return loaded

    def build_spec(self, module: IOModule) -> BuildSpec:
        return BuildSpec(
            module.name,
            module.source,
            self.pin_dir,
            module.module_id,
            module.defines(),
            module.sdk,
            module.build_limits,
        )

    def prebuild(self, module: IOModule) -> dict[str, Any]:
        """Compile a module's build (or find it pinned) without loading it:
        add_module or replace_module then reuse it, so that the compile (and
        its errors) come before anything changes. LoadError as add_module.
        Returns the build's manifest (programs, maps)."""
        build = get_builds([self.build_spec(module)])[0]
        build.cleanup()
        return build.manifest

    def hold_build(self, module: IOModule, held: bool) -> None:
        """Keep (or stop keeping) a module's build pinned while it is not
        loaded: the version a trial would go back to."""
        build_dir = self.build_spec(module).build_dir()
        if held:
            self._held.add(build_dir)
        else:
            self._held.discard(build_dir)

    def _adopt(self, module: IOModule, build: AdoptedBuild) -> LoadedModule:
        loaded = LoadedModule(module, build)
        module.reinject = self.reinject
        module.invalidate_fastpath = self.invalidate_fastpath  # type: ignore[method-assign]
        if module.xdp_function:
            loaded.fds[Hook.XDP] = build.program_fd(module.xdp_function, "xdp")
        if module.tc_function:
            loaded.fds[Hook.TC] = build.program_fd(module.tc_function, "tc")
        self.modules[module.name] = loaded
        return loaded

    def _load(self, loaded: LoadedModule) -> None:
        module, build = loaded.module, loaded.bpf
        module.on_load(build)
        if self.slowpath:
            for reason, handler in module.handlers().items():
                self.slowpath.register(module.module_id, reason, handler)
            catch_all = module.all_punts()
            if catch_all is not None:
                self.slowpath.register_module(module.module_id, catch_all)
        log.info(
            "loaded module %s (hooks: %s; build %s, %s)",
            module.name,
            ", ".join(h.name for h in loaded.fds) or "none",
            build.key[:12],
            "reused" if build.reused else "new",
        )

    def replace_module(self, module: IOModule) -> LoadedModule:
        """Load a new instance of a loaded module (new config or compile-time
        options) and switch the chains to it in one generation flip each; the
        old instance is unloaded only then, so no packet misses the module."""
        old = self.modules.pop(module.name, None)
        if old is None:
            raise DataplaneError(f"module {module.name} is not loaded")
        try:
            loaded = self.add_module(module)
        except Exception:
            self.modules[module.name] = old
            raise
        loaded.enabled = old.enabled
        for nic, names in self.order.items():
            if module.name in names:
                self._install(nic)
        self._unload(old)
        self.prune()  # the old build, if it was another one
        return loaded

    def remove_module(self, name: str) -> None:
        """Take a module out of every chain, then unload it."""
        loaded = self.modules[name]
        for nic, names in self.order.items():
            if name in names:
                self.order[nic] = [n for n in names if n != name]
                self._install(nic)
        del self.modules[name]
        if self.slowpath:
            self.slowpath.unregister_module(loaded.module.module_id)
        self._unload(loaded)
        self.prune()

    @staticmethod
    def _unload(loaded: LoadedModule) -> None:
        """on_unload and close this process's handles of its build (the
        slow-path handlers of a replaced module were already overwritten by
        its successor's; a build no chain uses is unpinned by prune())."""
        try:
            loaded.module.on_unload()
        except Exception:
            log.exception("module %s failed to unload", loaded.module.name)
        loaded.bpf.cleanup()

    # -- chains ----------------------------------------------------------
    def set_order(self, nic: Nic, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.modules]
        if unknown:
            raise DataplaneError(f"{nic.name} chain names modules that are not loaded: {unknown}")
        self.order[nic] = list(names)
        self._install(nic)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Take a module in or out of every chain it is listed in."""
        self.modules[name].enabled = enabled
        for nic, names in self.order.items():
            if name in names:
                self._install(nic)

    def chain_of(self, nic: Nic, hook: Hook) -> list[str]:
        """The modules a packet on (nic, hook) runs through, in order."""
        return [
            n for n in self.order[nic] if self.modules[n].enabled and hook in self.modules[n].fds
        ]

    def _install(self, nic: Nic) -> None:
        for hook, chain in self._chains.items():
            fds = [self.modules[n].fds[hook] for n in self.chain_of(nic, hook)]
            chain.install(nic, fds)
        self.invalidate_fastpath(f"{nic.name} chain installed")

    def invalidate_fastpath(self, why: str) -> None:
        """What the chains decide may have changed: every flow's next packet
        goes through them again (fastpath.py)."""
        if self.fastpath is not None:
            self.fastpath.invalidate(why)

    # -- NICs ------------------------------------------------------------
    def attach(self) -> None:
        """Put the roots on the NICs. A root already there (left by the last
        run, same build) stays; another one is replaced atomically, never
        detached first."""
        for nic, ifname in self.interfaces.items():
            self._ifindex[nic_attach.ifindex(ifname)] = nic
            xdp_id = self._roots[nic].program_id(ROOT_FUNCTIONS[Hook.XDP])
            if nic_attach.xdp_prog_id(ifname) == xdp_id:
                log.info("%s: XDP root (program %d) kept from the last run", ifname, xdp_id)
                in_use = nic_attach.attached_xdp_mode(ifname) or self.xdp_mode
            else:
                fd = self._root_fds[(nic, Hook.XDP)]
                in_use = nic_attach.attach_xdp(ifname, fd, self.xdp_mode)
            self.xdp_in_use[nic] = in_use
            nic_attach.attach_tc_egress(
                ifname, self._root_fds[(nic, Hook.TC)], f"homegw_root_{nic.name.lower()}"
            )

    def detach(self) -> None:
        """Take the roots off the NICs (`homegw cleanup`, tests)."""
        for ifname in self.interfaces.values():
            nic_attach.detach_xdp(ifname, self.xdp_mode)
            nic_attach.detach_tc_egress(ifname)
        self._ifindex.clear()
        self.xdp_in_use.clear()

    def prune(self) -> None:
        """Once the chains and roots are this process's: empty the chains'
        inactive generations (the last run's modules) and unpin every build
        nothing uses now, so their programs and private maps are freed."""
        for nic in Nic:
            for chain in self._chains.values():
                chain.clear_inactive(nic)
        keep = [b.build_dir for b in self._builds()] + list(self._held)
        prune_builds(self.pin_dir, keep)

    def _builds(self) -> list[AdoptedBuild]:
        builds = list(self._roots.values()) + [m.bpf for m in self.modules.values()]
        return builds + [b for b in (self._fragment, self._learn) if b]

    def reinject(self, frame: bytes, ingress_ifindex: int) -> None:
        """Send a frame through the XDP chain of the NIC it arrived on, for real."""
        nic = self._ifindex.get(ingress_ifindex)
        if nic is None:
            log.warning(
                "dropped a re-injected frame: ifindex %d is not an attached NIC", ingress_ifindex
            )
            return
        inject_xdp(self._root_fds[(nic, Hook.XDP)], frame, ingress_ifindex, meta=META_REINJECTED)

    # -- observation -----------------------------------------------------
    def root_fd(self, nic: Nic, hook: Hook) -> int:
        return self._root_fds[(nic, hook)]

    def chain_stats(self, nic: Nic, hook: Hook) -> Counter:
        table = self._roots[Nic.LAN]["chain_stats"]
        per_cpu = table.getvalue(ctypes.c_uint32(generation_key(nic, hook)))
        return Counter(sum(c.packets for c in per_cpu), sum(c.bytes for c in per_cpu))

    # -- shutdown --------------------------------------------------------
    def close(self) -> None:
        """Stop the slow path and the modules' threads, close this process's
        fds. Roots, chains, maps and builds stay in the kernel for the next
        start. Safe to call twice."""
        if not self._roots:
            return
        if self.slowpath:
            self.slowpath.stop()
        self.fragmenter.close()
        for loaded in self.modules.values():
            try:
                loaded.module.on_unload()
            except Exception:
                log.exception("module %s failed to unload", loaded.module.name)
        for build in self._builds():
            build.cleanup()
        self.modules.clear()
        self._fragment = None
        self._learn = None
        self.fastpath = None
        self._roots.clear()
        self._root_fds.clear()
        self._chains.clear()


BPFFS = "/sys/fs/bpf"


def bpffs_mounted() -> bool:
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == BPFFS and " - bpf " in line for line in mounts)


def ensure_bpffs() -> None:
    """Pinned maps need bpffs at /sys/fs/bpf; mount it if absent.

    `ip netns exec` remounts /sys and so hides the machine's bpffs: a bpffs
    mounted here then lives only as long as this process's mount namespace,
    and pinned state does not outlive the process. Run the appliance in a
    namespace with `nsenter --net=...` to keep the machine's bpffs.
    """
    if bpffs_mounted():
        return
    result = subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], capture_output=True, text=True)
    if result.returncode != 0:
        raise DataplaneError(
            f"bpffs is not mounted on {BPFFS} and mounting failed: {result.stderr.strip()}"
        )
    log.warning(
        "mounted a private bpffs on %s: pinned state will not outlive this mount "
        "namespace (inside `ip netns exec`? use nsenter --net=...)",
        BPFFS,
    )


def purge_pins(pin_dir: str) -> bool:
    """Remove every pinned map under pin_dir (the appliance's persistent
    datapath state). Returns whether anything was there."""
    path = Path(pin_dir)
    if not path.exists():
        return False
    shutil.rmtree(path)
    log.info("removed pinned maps under %s", pin_dir)
    return True
