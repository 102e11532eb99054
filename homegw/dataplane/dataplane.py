"""The dataplane: root programs on the NICs, module chains, the slow path.

Lifecycle: Dataplane(pin_dir, interfaces).load() compiles the roots and opens
the pinned chain maps; add_module() compiles and loads a module; set_order()
installs a NIC's chain; attach() puts the roots on the NICs. Enabling,
disabling and re-ordering modules later only rewrites chain slots.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from homegw.dataplane import attach as nic_attach
from homegw.dataplane.abi import (
    DATAPLANE_ID,
    META_REINJECTED,
    REASON_FRAGMENT,
    Hook,
    Nic,
    generation_key,
)
from homegw.dataplane.chain import Chain
from homegw.dataplane.fragment import Fragmenter
from homegw.dataplane.loader import ROOT_SOURCE, compile_source, load_function
from homegw.dataplane.module import IOModule
from homegw.dataplane.pinned import PinnedMap
from homegw.dataplane.slowpath import SlowPath
from homegw.dataplane.testrun import inject_xdp

log = logging.getLogger(__name__)

ROOT_FUNCTIONS = {Hook.XDP: "homegw_root_xdp", Hook.TC: "homegw_root_tc"}
FRAGMENT_SOURCE = Path(__file__).parent / "fragment.bpf.c"
# Pinned maps whose value grew, and its size now: a pin left by an older homegw
# is removed before loading (its contents are re-learned: the router mirrors
# the kernel's neighbours into router_neigh afresh at every start).
RESIZED_PINS = {"router_neigh": 24}  # struct homegw_neighbour


@dataclass
class LoadedModule:
    module: IOModule
    bpf: object  # bcc.BPF
    fds: dict[Hook, int] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


class DataplaneError(RuntimeError):
    pass


class Dataplane:
    def __init__(self, pin_dir: str, interfaces: dict[Nic, str], xdp_mode: str = "native") -> None:
        self.pin_dir = pin_dir
        self.interfaces = interfaces
        self.xdp_mode = xdp_mode
        self.modules: dict[str, LoadedModule] = {}
        self.order: dict[Nic, list[str]] = {nic: [] for nic in Nic}
        self._roots: dict[Nic, object] = {}
        self._fragment_bpf: object | None = None  # bcc.BPF of fragment.bpf.c
        self._root_fds: dict[tuple[Nic, Hook], int] = {}
        self._chains: dict[Hook, Chain] = {}
        self._attached: list[tuple[Nic, Hook]] = []
        self._ifindex: dict[int, Nic] = {}  # of the attached NICs
        self.slowpath: SlowPath | None = None
        # packets the router marked HOMEGW_F_FRAGMENT, punted by the chain's end
        self.fragmenter = Fragmenter(interfaces)

    # -- loading ---------------------------------------------------------
    def load(self) -> None:
        ensure_bpffs()
        drop_resized_pins(self.pin_dir)
        for nic in Nic:
            bpf = compile_source(
                ROOT_SOURCE, pin_dir=self.pin_dir, defines={"HOMEGW_NIC": int(nic)}
            )
            self._roots[nic] = bpf
            for hook, function in ROOT_FUNCTIONS.items():
                self._root_fds[(nic, hook)] = load_function(bpf, function, hook.name.lower())
        lan_root = self._roots[Nic.LAN]
        generations = lan_root["chain_generation"]
        self._chains = {
            Hook.XDP: Chain(Hook.XDP, lan_root["chain_xdp"], generations),
            Hook.TC: Chain(Hook.TC, lan_root["chain_tc"], generations),
        }
        self.slowpath = SlowPath(lan_root)
        self._load_fragment_program(lan_root)

    def _load_fragment_program(self, root) -> None:  # noqa: ANN001 - bcc.BPF
        """The chain's end for packets to fragment, and their slow-path handler."""
        bpf = compile_source(FRAGMENT_SOURCE, pin_dir=self.pin_dir, module_id=DATAPLANE_ID)
        fd = load_function(bpf, "homegw_fragment_xdp", "xdp")
        root["chain_fragment"][ctypes.c_uint32(0)] = ctypes.c_int(fd)
        self._fragment_bpf = bpf
        assert self.slowpath is not None
        self.slowpath.register(DATAPLANE_ID, REASON_FRAGMENT, self.fragmenter.handle)

    def add_module(self, module: IOModule) -> LoadedModule:
        if module.name in self.modules:
            raise DataplaneError(f"module {module.name} is already loaded")
        bpf = compile_source(
            module.source,
            pin_dir=self.pin_dir,
            module_id=module.module_id,
            defines=module.defines(),
        )
        loaded = LoadedModule(module, bpf)
        module.reinject = self.reinject
        if module.xdp_function:
            loaded.fds[Hook.XDP] = load_function(bpf, module.xdp_function, "xdp")
        if module.tc_function:
            loaded.fds[Hook.TC] = load_function(bpf, module.tc_function, "tc")
        module.on_load(bpf)
        if self.slowpath:
            for reason, handler in module.handlers().items():
                self.slowpath.register(module.module_id, reason, handler)
        self.modules[module.name] = loaded
        log.info(
            "loaded module %s (hooks: %s)",
            module.name,
            ", ".join(h.name for h in loaded.fds) or "none",
        )
        return loaded

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

    @staticmethod
    def _unload(loaded: LoadedModule) -> None:
        """on_unload and free the programs (the slow-path handlers of a
        replaced module were already overwritten by its successor's)."""
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

    # -- NICs ------------------------------------------------------------
    def attach(self) -> None:
        """Attach the roots to the NICs; on failure, undo what was attached."""
        try:
            for nic, ifname in self.interfaces.items():
                self._ifindex[nic_attach.ifindex(ifname)] = nic
                nic_attach.attach_xdp(ifname, self._root_fds[(nic, Hook.XDP)], self.xdp_mode)
                self._attached.append((nic, Hook.XDP))
                nic_attach.attach_tc_egress(
                    ifname, self._root_fds[(nic, Hook.TC)], f"homegw_root_{nic.name.lower()}"
                )
                self._attached.append((nic, Hook.TC))
        except nic_attach.AttachError:
            self.detach()
            raise

    def detach(self) -> None:
        for nic, hook in reversed(self._attached):
            ifname = self.interfaces[nic]
            if hook is Hook.XDP:
                nic_attach.detach_xdp(ifname, self.xdp_mode)
            else:
                nic_attach.detach_tc_egress(ifname)
        self._attached.clear()
        self._ifindex.clear()

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
        """Detach, empty the chains (freeing the programs), unload modules.
        State maps stay pinned for the next start. Safe to call twice."""
        if not self._roots:
            return
        if self.slowpath:
            self.slowpath.stop()
        self.fragmenter.close()
        self.detach()
        for nic in Nic:
            for chain in self._chains.values():
                chain.clear(nic)
        for loaded in self.modules.values():
            self._unload(loaded)
        self.modules.clear()
        if self._fragment_bpf:
            with contextlib.suppress(KeyError):
                del self._roots[Nic.LAN]["chain_fragment"][ctypes.c_uint32(0)]
            self._fragment_bpf.cleanup()
            self._fragment_bpf = None
        for bpf in self._roots.values():
            bpf.cleanup()
        self._roots.clear()
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


def drop_resized_pins(pin_dir: str) -> None:
    """Unpin the RESIZED_PINS an older homegw left with another value size
    (bcc would reuse them and the verifier refuse the programs)."""
    for name, value_size in RESIZED_PINS.items():
        path = Path(pin_dir) / name
        if not path.exists():
            continue
        pinned = PinnedMap(str(path))
        old_size = pinned.value_size
        pinned.close()
        if old_size != value_size:
            path.unlink()
            log.warning("removed pinned %s of an older layout (%d-byte values)", name, old_size)


def purge_pins(pin_dir: str) -> bool:
    """Remove every pinned map under pin_dir (the appliance's persistent
    datapath state). Returns whether anything was there."""
    path = Path(pin_dir)
    if not path.exists():
        return False
    shutil.rmtree(path)
    log.info("removed pinned maps under %s", pin_dir)
    return True
