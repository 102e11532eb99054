"""User modules at run time: upload, trial, confirm, revert, replace, move,
disable, delete, and their restore at start.

One manager per appliance start. An upload is checked (spec.check_source),
compiled in a build child under limits (Dataplane.prebuild: nothing changes
when that fails), its exposed maps checked against the build, then the
health checks' baseline is taken and the module is switched into its chain
in the appliance's control thread (one generation flip, as for a built-in
module) on trial. The trial watch reverts it when the window ends without a
confirm or a health check fails; a replaced module's previous build stays
pinned (Dataplane.hold_build) so that going back is a reuse, not a compile.
Only confirmed versions are saved (store.py) and restored.

Locks: `_lock` serialises operations (it is held while the control thread
works for one); `_state` guards the table of running modules and is never
held while waiting, so the control thread may call arrange() at any time.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homegw.control import ConfigRejected, Conflict, ModuleRefused, NotFound, Problem
from homegw.dataplane.abi import Hook, Nic
from homegw.dataplane.dataplane import Dataplane
from homegw.dataplane.loader import LoadError
from homegw.dataplane.slowpath import PacketOut, Punt
from homegw.usermodules import module as usermodule
from homegw.usermodules.audit import AuditLog
from homegw.usermodules.compile import refusal
from homegw.usermodules.health import HealthTargets
from homegw.usermodules.module import UserModule
from homegw.usermodules.punts import PuntHub
from homegw.usermodules.spec import ModuleUpload, SourceRefused, check_source, name_problem
from homegw.usermodules.store import DIRECTORY, ModuleRecord, ModuleStore, free_module_id
from homegw.usermodules.trial import TrialWatch
from homegw.usermodules.uploads import HOOKS, NICS, check_maps, check_room, placed, program_of

log = logging.getLogger(__name__)

FRAME_MIN, FRAME_MAX = 14, 1514


@dataclass
class Running:
    record: ModuleRecord  # the version in the chain
    previous: ModuleRecord | None = None  # the confirmed version a trial goes back to
    on_trial: bool = False
    failed: str | None = None  # why it could not be loaded at start

    @property
    def saved(self) -> ModuleRecord | None:
        """The version a restart brings back: the confirmed one."""
        return self.previous if self.on_trial else self.record


@dataclass(frozen=True)
class Host:
    """What the manager needs of the appliance."""

    dataplane: Dataplane
    interfaces: dict[str, str]  # "lan" / "wan" -> interface name
    submit: Callable[..., Future]  # run in the appliance's control thread
    install_chains: Callable[[], None]  # every NIC's chain again (control thread)
    health_targets: Callable[[], HealthTargets | None]


class UserModules:
    def __init__(self, state_dir: Path, host: Host, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.clock = clock
        self.store = ModuleStore(state_dir)
        self.audit = AuditLog(Path(state_dir) / DIRECTORY / "audit.jsonl", clock)
        self.hub = PuntHub()
        self.watch = TrialWatch(host.health_targets, self._revert_by_watch)
        self._running: dict[str, Running] = {}
        self._lock = threading.RLock()
        self._state = threading.Lock()
        self._admins: dict[str, str | None] = {}  # module on trial -> admin address
        self._ifnames = {socket.if_nametoindex(n): nic for nic, n in host.interfaces.items()}
        self.packets_out = 0

    # -- start and stop --------------------------------------------------------------
    def restore(self) -> None:
        """Load the confirmed modules (builds reused when pinned); one that
        fails is kept in the list as failed, the others load. Call before
        the appliance installs its chains."""
        for record in self.store.load():
            entry = Running(record)
            try:
                self.host.dataplane.add_module(self._module(record))
                if not record.enabled:
                    self.host.dataplane.modules[record.name].enabled = False
            except Exception as exc:
                log.exception("user module %s failed to load: left out", record.name)
                entry.failed = str(exc)[:500]
            with self._state:
                self._running[record.name] = entry
        self.watch.start()

    def stop(self) -> None:
        """A trial still running ends with the process (the next start
        restores the confirmed versions)."""
        self.watch.stop()
        self.hub.close_all()

    # -- the chains ------------------------------------------------------------------
    def arrange(self, nic: Nic, names: list[str]) -> list[str]:
        """A NIC's module order with the loaded user modules placed into it,
        in upload order, each where its position says."""
        with self._state:
            records = [r.record for r in self._running.values() if r.failed is None]
        loaded = self.host.dataplane.modules
        order = list(names)
        for record in records:
            if NICS[record.nic] is nic and record.name in loaded:
                order = placed(order, record.name, record.position)
        return order

    def is_user_module(self, name: str) -> bool:
        return name in self._running

    # -- upload, replace ---------------------------------------------------------------
    def upload(self, upload: ModuleUpload, admin: str | None) -> dict[str, Any]:
        with self._lock:
            problem = name_problem(upload.name)
            if problem:
                raise ConfigRejected([Problem("name", problem)])
            if upload.name in self._running:
                raise Conflict(f"user module {upload.name} exists: PUT a new version instead")
            record = self._new_record(upload, self._free_id(), 1, admin)
            self._load_on_trial(record, None, admin, "upload")
            return self.describe(upload.name)

    def replace(self, name: str, upload: ModuleUpload, admin: str | None) -> dict[str, Any]:
        with self._lock:
            running = self._get(name)
            if upload.name != name:
                raise ConfigRejected([Problem("name", f"must be {name!r} (the module replaced)")])
            if running.on_trial:
                raise Conflict(f"{name} is on trial: confirm or revert it first")
            if running.failed:
                raise Conflict(f"{name} failed to load at start: delete it and upload it again")
            old = running.record
            record = self._new_record(upload, old.module_id, old.version + 1, admin)
            self._load_on_trial(record, old, admin, "replace")
            return self.describe(name)

    def _new_record(
        self,
        upload: ModuleUpload,
        module_id: int,
        version: int,
        admin: str | None,
    ) -> ModuleRecord:
        try:
            check_source(upload.source)
        except SourceRefused as exc:
            first = exc.problems[0]
            detail = "\n".join(f"line {p.line}: {p.message}" for p in exc.problems)
            self.audit.record("refused", upload.name, version, admin, f"check: {detail}")
            raise ModuleRefused("check", first.message, first.line, detail) from None
        function = program_of(upload)
        check_room(self.host.dataplane, upload)
        path = self.store.put_source(upload.source)
        return ModuleRecord(
            name=upload.name,
            module_id=module_id,
            version=version,
            nic=upload.nic,
            hook=upload.hook,
            position=upload.position,
            function=function,
            source_sha256=path.name.removesuffix(".bpf.c"),
            defines=dict(upload.defines),
            maps=tuple(upload.maps),
            counters=tuple(upload.counters),
            trial_s=upload.trial_s,
            uploaded_at=self.clock(),
        )

    def _load_on_trial(
        self, record: ModuleRecord, previous: ModuleRecord | None, admin: str | None, action: str
    ) -> None:
        module = self._module(record)
        dataplane = self.host.dataplane
        try:
            manifest = dataplane.prebuild(module)
        except LoadError as exc:
            refused = refusal(exc, module.source)
            where = f" (line {refused.line})" if refused.line else ""
            self.audit.record(
                "refused", record.name, record.version, admin,
                f"{refused.stage}: {refused.message}{where}",
            )  # fmt: skip
            raise refused from None
        check_maps(record, manifest)
        admin_ip = _ipv4(admin)
        baseline = self.watch.baseline(admin_ip)

        def switch() -> None:
            if previous is None:
                dataplane.add_module(module)
            else:
                dataplane.hold_build(self._module(previous), True)
                dataplane.replace_module(module)
            with self._state:
                self._running[record.name] = Running(record, previous, on_trial=True)
            self.host.install_chains()

        self.host.submit(switch).result()
        self._admins[record.name] = admin
        self.watch.begin(record.name, record.trial_s, baseline, admin_ip)
        self.audit.record(
            action, record.name, record.version, admin,
            f"{record.nic} {record.hook} {record.position}, trial {record.trial_s} s",
        )  # fmt: skip

    # -- trial: confirm, revert ------------------------------------------------------------
    def confirm(self, name: str, caller: str | None) -> dict[str, Any]:
        with self._lock:
            running = self._get(name)
            if not running.on_trial:
                raise Conflict(f"{name} is not on trial")
            self._end_trial(name)
            previous = running.previous
            with self._state:
                running.record = running.record.with_changes(confirmed_at=self.clock())
                running.on_trial, running.previous = False, None
            if previous is not None:
                self.host.dataplane.hold_build(self._module(previous), False)
                self.host.submit(self.host.dataplane.prune).result()
            self._save()
            self.audit.record("confirm", name, running.record.version, caller)
            return self.describe(name)

    def revert(self, name: str, caller: str | None, reason: str = "by the admin") -> None:
        with self._lock:
            running = self._get(name)
            if not running.on_trial:
                raise Conflict(f"{name} is not on trial")
            self._revert(running, caller, reason)

    def _revert_by_watch(self, name: str, reason: str) -> None:
        with self._lock:
            running = self._running.get(name)
            if running is None or not running.on_trial:
                return
            self._revert(running, self._admins.get(name), reason)

    def _revert(self, running: Running, caller: str | None, reason: str) -> None:
        name, version = running.record.name, running.record.version
        self._end_trial(name)
        dataplane = self.host.dataplane
        previous = running.previous

        def switch() -> None:
            if previous is None:
                dataplane.remove_module(name)
                with self._state:
                    del self._running[name]
            else:
                back = self._module(previous)
                dataplane.replace_module(back)
                dataplane.hold_build(back, False)
                with self._state:
                    self._running[name] = Running(previous)
            self.host.install_chains()

        self.host.submit(switch).result()
        if previous is None:
            self.hub.close_module(name)
        self.audit.record("revert", name, version, caller, reason)
        log.warning("user module %s v%d reverted: %s", name, version, reason)

    # -- delete, enable, move --------------------------------------------------------------
    def delete(self, name: str, caller: str | None) -> None:
        with self._lock:
            running = self._get(name)
            self._end_trial(name)
            dataplane = self.host.dataplane

            def switch() -> None:
                if name in dataplane.modules:
                    dataplane.remove_module(name)
                if running.previous is not None:
                    dataplane.hold_build(self._module(running.previous), False)
                    dataplane.prune()
                with self._state:
                    del self._running[name]
                self.host.install_chains()

            self.host.submit(switch).result()
            self.hub.close_module(name)
            self._save()
            self.audit.record("delete", name, running.record.version, caller)

    def set_enabled(self, name: str, enabled: bool, caller: str | None) -> dict[str, Any]:
        with self._lock:
            running = self._get(name)
            if running.failed:
                raise Conflict(f"{name} failed to load at start: {running.failed}")
            self.host.submit(self.host.dataplane.set_enabled, name, enabled).result()
            with self._state:
                running.record = running.record.with_changes(enabled=enabled)
            if not running.on_trial:
                self._save()
            self.audit.record(
                "enable" if enabled else "disable", name, running.record.version, caller
            )
            return self.describe(name)

    def move(self, name: str, position: str, caller: str | None) -> dict[str, Any]:
        with self._lock:
            running = self._get(name)
            record = running.record
            anchor = position.partition(":")[2]
            chain = self.host.dataplane.chain_of(NICS[record.nic], HOOKS[record.hook])
            if anchor == name or (anchor and anchor not in chain):
                raise ConfigRejected(
                    [Problem("position", f"{anchor} is not another module of this chain")]
                )
            with self._state:
                running.record = record.with_changes(position=position)
                if running.previous is not None:
                    running.previous = running.previous.with_changes(position=position)
            self.host.submit(self.host.install_chains).result()
            self._save()
            self.audit.record("move", name, record.version, caller, position)
            return self.describe(name)

    # -- maps, punts, packets ----------------------------------------------------------------
    def _exposed(self, name: str, map_name: str) -> Any:
        running = self._get(name)
        if map_name not in running.record.maps:
            raise NotFound(f"{name} exposes no map {map_name!r}")
        loaded = self.host.dataplane.modules.get(name)
        if loaded is None:
            raise Conflict(f"{name} is not loaded")
        return loaded.module.table(map_name)  # type: ignore[attr-defined]

    def map_rows(self, name: str, map_name: str) -> list[dict[str, Any]]:
        return usermodule.map_rows(self._exposed(name, map_name))

    def map_set(self, name: str, map_name: str, key: str, value: str, caller: str | None) -> None:
        table = self._exposed(name, map_name)
        try:
            usermodule.write_entry(table, bytes.fromhex(key), bytes.fromhex(value))
        except ValueError as exc:
            loc, _, msg = str(exc).partition(": ")
            raise ConfigRejected([Problem(loc, msg)]) from None
        except OSError as exc:
            raise Conflict(f"{map_name}: the entry was not written ({exc.strerror})") from None
        self.audit.record("map_set", name, None, caller, f"{map_name} {key} = {value}")

    def map_delete(self, name: str, map_name: str, key: str, caller: str | None) -> bool:
        table = self._exposed(name, map_name)
        try:
            found = usermodule.delete_entry(table, bytes.fromhex(key))
        except ValueError as exc:
            raise ConfigRejected([Problem("key", str(exc).partition(": ")[2])]) from None
        if found:
            self.audit.record("map_delete", name, None, caller, f"{map_name} {key}")
        return found

    def _on_punt(self, name: str, punt: Punt) -> None:
        self.hub.publish(name, punt, self._ifnames.get(punt.ifindex))

    def subscribe(self, name: str) -> Any:
        self._get(name)
        return self.hub.subscribe(name)

    def packet_out(self, name: str, nic: str, frame: bytes) -> None:
        self._get(name)
        if nic not in self.host.interfaces:
            raise ConfigRejected([Problem("nic", "lan or wan")])
        if not FRAME_MIN <= len(frame) <= FRAME_MAX:
            raise ConfigRejected([Problem("frame", f"{FRAME_MIN} to {FRAME_MAX} bytes")])
        out = PacketOut(self.host.interfaces[nic])
        try:
            out.send(frame)
        except OSError as exc:
            raise Conflict(f"sending on {nic} failed: {exc.strerror}") from None
        finally:
            out.close()
        self.packets_out += 1

    # -- what the API shows ------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._state:
            return list(self._running)

    def describe(self, name: str, source: bool = False) -> dict[str, Any]:
        running = self._get(name)
        record = running.record
        loaded = self.host.dataplane.modules.get(name)
        state = "trial" if running.on_trial else "confirmed" if record.enabled else "disabled"
        out = {
            "name": name,
            "kind": "user",
            "id": record.module_id,
            "nic": record.nic,
            "hook": record.hook,
            "position": record.position,
            "function": record.function,
            "defines": dict(record.defines),
            "maps": list(record.maps),
            "counters": loaded.module.counters() if loaded else {},
            "enabled": record.enabled,
            "loaded": loaded is not None,
            "state": "failed" if running.failed else state,
            "error": running.failed,
            "trial": self.watch.status(name) if running.on_trial else None,
            "trial_s": record.trial_s,
            "version": record.version,
            "source_sha256": record.source_sha256,
            "uploaded_at": record.uploaded_at,
            "confirmed_at": record.confirmed_at,
            "chains": self._chains(name),
            "punts": self.hub.stats(name),
        }
        if source:
            out["source"] = self.store.source(record)
        return out

    def _chains(self, name: str) -> list[dict[str, Any]]:
        dataplane = self.host.dataplane
        out = []
        for nic in Nic:
            for hook in Hook:
                chain = dataplane.chain_of(nic, hook)
                if name in chain:
                    out.append(
                        {
                            "nic": nic.name.lower(),
                            "hook": hook.name.lower(),
                            "position": chain.index(name),
                        }
                    )
        return out

    # -- helpers -----------------------------------------------------------------------------
    def _end_trial(self, name: str) -> None:
        self.watch.end(name)
        self._admins.pop(name, None)

    def _get(self, name: str) -> Running:
        running = self._running.get(name)
        if running is None:
            raise NotFound(f"no user module {name!r}")
        return running

    def _module(self, record: ModuleRecord) -> UserModule:
        return UserModule(record, self.store.source_path(record.source_sha256), self._on_punt)

    def _free_id(self) -> int:
        taken = set()
        for running in self._running.values():
            taken.add(running.record.module_id)
        return free_module_id(taken)

    def _save(self) -> None:
        """The confirmed versions, in order (a module on trial: the version
        it would go back to, if any)."""
        with self._state:
            saved = [r.saved for r in self._running.values()]
            in_use = frozenset(r.record.source_sha256 for r in self._running.values())
        self.store.save([record for record in saved if record is not None], in_use)


def _ipv4(address: str | None) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(address) if address else None
    except ValueError:
        return None
