"""What the management API (webui/api), the CLI and /metrics may ask of the
running appliance: one interface, implemented by homegw.appliance.Appliance.

Everything here is plain data (dicts, lists, str, int) so that it serialises
to JSON unchanged; the API adds no knowledge of modules of its own. Errors are
the exceptions below, mapped by the API to HTTP status codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Problem:
    """One reason a config was refused: ``loc`` is the dotted key path
    (``nat.forwards.0.external_port``), ``msg`` says what is wrong."""

    loc: str
    msg: str


class ConfigRejected(Exception):
    """A config (or one section) failed validation; nothing was changed. -> 400"""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the config")
        self.problems = problems


class NotFound(KeyError):
    """No such table, module, history entry or action target. -> 404"""


class Conflict(RuntimeError):
    """The request is valid but cannot be done in the current state
    (e.g. disabling a module the chain rules need, no WAN DHCP client). -> 409"""


class ModuleRefused(Exception):
    """A user module did not pass the source check, did not compile, or the
    verifier refused it; nothing was changed. -> 400 with ``stage``
    ("check" | "compile" | "verifier" | "limit"), ``line`` (1-based line of
    the uploaded source, or None), ``message`` (the compiler's or the
    verifier's own words) and ``log`` (the tail of its output)."""

    def __init__(self, stage: str, message: str, line: int | None = None, log: str = "") -> None:
        super().__init__(f"{stage}: {message}" + (f" (line {line})" if line else ""))
        self.stage = stage
        self.message = message
        self.line = line
        self.log = log


@dataclass(frozen=True)
class ApplyResult:
    """What applying a config changed: the dotted keys that differ, and per
    module how the change was applied ("maps", "reload", "restart")."""

    version: int
    changed: list[str]
    applied: dict[str, str]
    dry_run: bool = False


@dataclass(frozen=True)
class Page:
    """One page of a table: ``total`` rows match the filters, ``items`` are
    rows offset..offset+limit of them, each a flat JSON object."""

    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample: name without the ``homegw_`` prefix."""

    name: str
    kind: str  # "counter" | "gauge"
    help: str
    labels: dict[str, str]
    value: float


class Control(Protocol):
    # -- status ----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """ready, version, uptime_s, wan {interface, mode, address, gateway,
        state, xdp_mode}, lan {interface, address, xdp_mode}, nics {lan|wan:
        rx/tx packets, bytes, drops}, kernel_path. xdp_mode: the mode the
        NIC's XDP root runs in (native | generic), None before attach."""
        ...

    # -- config ----------------------------------------------------------
    def config_get(self, section: str | None = None) -> dict[str, Any]:
        """The running config (or one top-level section) as the YAML file
        would hold it. NotFound for an unknown section."""
        ...

    def config_apply(
        self, document: dict[str, Any], section: str | None = None, dry_run: bool = False
    ) -> ApplyResult:
        """Replace the whole config (section None) or one section with
        `document`, validated as a whole. ConfigRejected with every problem
        when invalid (nothing changed: no file, no map). dry_run validates and
        diffs only."""
        ...

    def config_history(self) -> list[dict[str, Any]]:
        """The last 10 applied configs, newest first: {version, applied_at
        (unix seconds), changed (dotted keys), current (bool)}."""
        ...

    def config_rollback(self, version: int) -> ApplyResult:
        """Apply history entry `version` again. NotFound if not kept."""
        ...

    # -- modules ---------------------------------------------------------
    def modules(self) -> list[dict[str, Any]]:
        """Every module: {name, id, enabled, loaded, chains: [{nic, hook,
        position}], counters: {reason: count}}."""
        ...

    def module_set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Take a module in or out of its chains at run time (as a config
        change of `<name>.enabled`). NotFound / ConfigRejected / Conflict."""
        ...

    def module_set_order(self, nic: str, names: list[str]) -> dict[str, Any]:
        """Re-order the chain of nic ("lan" | "wan") at run time (as a config
        change of dataplane.order.<nic>). ConfigRejected names the key path."""
        ...

    # -- user modules (homegw/usermodules): uploaded C, chained at run time --
    # `caller`: the address a change came from, for the audit log
    def module_upload(self, upload: dict[str, Any], admin: str | None) -> dict[str, Any]:
        """Check, compile (in a child, with limits), load and chain a new
        user module on trial (usermodules.spec.ModuleUpload's fields).
        `admin`: the address the caller is connected from (a health check
        of the trial pings it). ConfigRejected (fields, loc = field name),
        ModuleRefused (source check, compiler, verifier: nothing changed),
        Conflict (the name is taken, the chain is full). Returns the module
        as user_modules() lists it."""
        ...

    def module_replace(
        self, name: str, upload: dict[str, Any], admin: str | None
    ) -> dict[str, Any]:
        """A new version of a user module (same fields, `name` must match),
        switched in atomically and on trial; reverting goes back to the
        version that ran before. NotFound / ConfigRejected / ModuleRefused /
        Conflict (a trial of it is running)."""
        ...

    def user_modules(self) -> list[dict[str, Any]]:
        """Every user module, in upload order: {name, kind: "user", id,
        nic, hook, position, function, defines, maps [names], counters
        {name: count}, enabled, state ("trial" | "confirmed" | "disabled"),
        trial {ends_at (unix s), remaining_s, checks [{name, ok (bool or
        None: not checked), detail}]} or None, version (int, 1 for the
        first upload), source_sha256, uploaded_at, confirmed_at (unix s or
        None), chains [{nic, hook, position}] (where it runs now), punts
        {subscribers, delivered, dropped}}."""
        ...

    def user_module(self, name: str) -> dict[str, Any]:
        """One user module as user_modules() gives it plus ``source``."""
        ...

    def module_confirm(self, name: str, caller: str | None = None) -> dict[str, Any]:
        """End the trial of a module: it stays, saved under state_dir, and
        comes back after a restart. Conflict when it is not on trial."""
        ...

    def module_revert(self, name: str, caller: str | None = None) -> dict[str, Any] | None:
        """End the trial now by going back: a new module is removed (None),
        a replaced one runs its previous version again (returned). Conflict
        when it is not on trial."""
        ...

    def module_delete(self, name: str, caller: str | None = None) -> None:
        """Take a user module out of its chain, unload it and forget it."""
        ...

    def module_move(self, name: str, position: str, caller: str | None = None) -> dict[str, Any]:
        """Move a user module in its chain ("first", "last", "before:<m>",
        "after:<m>"), at once (one generation flip). ConfigRejected (loc
        ``position``) when the anchor is not in that chain."""
        ...

    def module_map(self, name: str, map_name: str) -> list[dict[str, Any]]:
        """The entries of an exposed map: [{key, value}] as hex of their
        bytes (a per-CPU map: value summed over CPUs when it is one integer,
        else ``values`` one hex per CPU). NotFound when not exposed."""
        ...

    def module_map_set(
        self, name: str, map_name: str, key: str, value: str, caller: str | None = None
    ) -> None:
        """Write one entry (hex of exactly the key's and the value's size).
        ConfigRejected (loc ``key`` / ``value``) on a size mismatch,
        Conflict when the map is full."""
        ...

    def module_map_delete(
        self, name: str, map_name: str, key: str, caller: str | None = None
    ) -> bool:
        """Delete one entry; whether it was there."""
        ...

    def module_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last `limit` audit records, newest first: {time (unix s),
        action ("upload" | "replace" | "confirm" | "revert" | "delete" |
        "enable" | "disable" | "move" | "map_set" | "map_delete" |
        "refused"), module, version, caller (address), detail}."""
        ...

    def module_examples(self) -> list[dict[str, Any]]:
        """The example modules shipped in homegw/usermodules/examples, as
        uploads: {name, description, upload {ModuleUpload fields}}."""
        ...

    def module_punts(self, name: str) -> Any:
        """Subscribe to a user module's punts: a homegw.usermodules.punts
        Subscription (iterate it with next_event(timeout); close() it).
        Conflict when the module has too many subscribers."""
        ...

    def module_packet_out(self, name: str, nic: str, frame: bytes) -> None:
        """Send one Ethernet frame out of nic ("lan" | "wan") for a user
        module's slow path (through the NIC's TC egress chain). ConfigRejected
        (loc ``frame``) for a frame under 14 or over 1514 bytes."""
        ...

    # -- tables ----------------------------------------------------------
    def tables(self) -> list[str]:
        """Names of the tables: nat_sessions, nat_bindings, dhcp_leases,
        dhcp_reservations, neighbours, routes, dns_cache, dns_queries, devices."""
        ...

    def table(
        self, name: str, offset: int = 0, limit: int = 100, filters: dict[str, str] | None = None
    ) -> Page:
        """One page of a table; filters match a column's value exactly or,
        for strings, as a substring. NotFound for an unknown table."""
        ...

    # -- actions ---------------------------------------------------------
    def renew_wan_lease(self) -> None:
        """Conflict when the WAN is static."""
        ...

    def flush_table(self, name: str) -> int:
        """Empty a flushable table (nat_sessions, dns_cache, neighbours,
        dns_queries); returns the rows removed."""
        ...

    def restart_module(self, name: str) -> None:
        """Reload one module in place (flows of other modules untouched)."""
        ...

    def restart(self) -> None:
        """Restart the whole appliance (answered first: the restart stops
        the server that answers; the datapath keeps forwarding)."""
        ...

    # -- devices ---------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        """Every device the gateway knows (DHCP leases and reservations, the
        datapath's device table, neighbours, the ``devices`` config section),
        one per MAC, sorted by name: {mac, name (user-given, else the DHCP
        hostname, else None), user_name, hostname, vendor (from the OUI, or
        None), random_mac (bool: locally administered, so no vendor),
        addresses [IPv4 text], online (bool), first_seen, last_seen
        (unix seconds or None), paused (bool), reserved_address (or None),
        lease_expires (unix seconds or None), today {from_bytes, to_bytes}
        (since local midnight), total {from_bytes, to_bytes, from_packets,
        to_packets, dropped}}. Every string is as the device sent it: the UI
        escapes it."""
        ...

    def device(self, mac: str) -> dict[str, Any]:
        """One device as devices() gives it, plus ``history``: 24 hourly
        buckets, oldest first, [{hour (unix seconds of its start),
        from_bytes, to_bytes}]. NotFound for a MAC never seen."""
        ...

    def device_set(self, mac: str, changes: dict[str, Any]) -> ApplyResult:
        """Change a device's entry of the ``devices`` config section (made
        when missing): ``changes`` holds ``name`` (str, or None to forget it)
        and/or ``paused`` (bool: no forwarding to or from it, established
        flows included). Applied as a config change; ConfigRejected names
        ``devices.<i>.<field>``."""
        ...

    def traffic_history(self, hours: int = 24) -> list[dict[str, Any]]:
        """The whole LAN's forwarded traffic by hour, oldest first:
        [{hour, from_bytes, to_bytes}] (from = sent by LAN devices)."""
        ...

    # -- DNS -------------------------------------------------------------
    def dns_stats(self, limit: int = 10) -> dict[str, Any]:
        """Over the query log: {queries, blocked, top_domains, top_blocked,
        top_clients}, each top a list of {name, count}, most first."""
        ...

    def blocklists(self) -> list[dict[str, Any]]:
        """Every blocklist source of the DNS config (default and groups):
        {source, groups [names; "default" for the top level], entries (int
        or None when not loaded), updated_at (unix seconds or None), error
        (str or None)}."""
        ...

    def blocklist_store(self, name: str, content: bytes) -> dict[str, Any]:
        """Keep an uploaded blocklist file as state_dir/blocklists/<name>.txt
        after parsing it (hosts or domain-per-line); returns {source (the
        absolute path to put in dns.blocklists), entries}. ConfigRejected
        (loc ``blocklist``) for a bad name, an oversized or unparseable file."""
        ...

    def blocklists_refresh(self) -> None:
        """Fetch every URL blocklist again now and reload the policy."""
        ...

    # -- logs and alerts -------------------------------------------------
    def logs(self, module: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """The last `limit` (at most 500) log records of this process,
        oldest first, optionally of one module (router, nat, dhcp, dns,
        firewall, webui, appliance, ...): {time (unix s), level, module,
        logger, message}."""
        ...

    def alerts(self) -> list[dict[str, Any]]:
        """What needs the owner's eye now: {code, severity ("warning" |
        "critical"), message, since (unix s or None)}. Codes: wan_down,
        pool_nearly_full, flood_drops, module_failed."""
        ...

    # -- DPI: applications and parental controls --------------------------
    def apps(self) -> dict[str, Any]:
        """The application database: {categories [{id (str), label}],
        apps [{id (str), label, category (id), domains [patterns]}], source
        (where it was loaded from), loaded_at (unix s)}."""
        ...

    def app_usage(
        self, mac: str | None = None, hours: int = 24, bucket: str = "hour"
    ) -> list[dict[str, Any]]:
        """Per-application usage over the last `hours` (at most 30 days),
        oldest first, by `bucket` ("hour" or "day", local days): [{start (unix
        s of the bucket), mac, app (id; an unknown name's registrable domain),
        category, up_bytes, down_bytes, packets, active_minutes}]; one device
        when `mac` is given (NotFound for a MAC never seen)."""
        ...

    def top_apps(
        self, mac: str | None = None, hours: int = 24, limit: int = 10
    ) -> list[dict[str, Any]]:
        """The applications with the most bytes over the last `hours`, most
        first: [{app, label, category, up_bytes, down_bytes, active_minutes}]."""
        ...

    def parental(self) -> dict[str, Any]:
        """What the parental-control policies do now: {now (unix s),
        devices [{mac, profile (name or None), blocked_apps [ids],
        blocked_categories [ids], paused_until (unix s or None), budgets
        [{rule, used_minutes, limit_minutes, exhausted}], rules [names of
        the rules in force], next_change (unix s or None)}]}. The policies
        themselves are the ``dpi`` config section (config_get/config_apply)."""
        ...

    def pause(self, target: str, minutes: int | None) -> ApplyResult:
        """Pause a device (a MAC) or a profile (its name) for `minutes`
        (None: until local midnight), as a config change of dpi.pauses;
        minutes=0 ends a pause. ConfigRejected (loc ``dpi.pauses``) for an
        unknown target or a bad duration."""
        ...

    # -- the image: version, A/B slots, upgrade, factory reset (homegw/upgrade) --
    def system(self) -> dict[str, Any]:
        """{version (the package's), image (the release file's KEY: value, or
        None on a plain install), upgrade_supported (bool), reason (why not,
        or None), slots (None without an image): {booted, active, trial (or
        None), tried (bool), slots {a|b: {partition, version (or None; "bad"
        while or after a write that did not complete), booted (bool)}}}}."""
        ...

    def system_upgrade(self, stream: Any) -> dict[str, Any]:
        """Write the upgrade bundle read from `stream` (a binary file object,
        read in chunks) into the inactive slot and mark it for one trial boot:
        {slot, version, rebooting: true} (the caller reboots with
        system_reboot once its answer is out). homegw.upgrade.manifest
        .BundleRejected (reason: nothing marked for trial) -> 400; Conflict
        when not on an image, a trial is pending or an upgrade is running."""
        ...

    def system_factory_reset(self) -> dict[str, Any]:
        """On an image: flag /data to be emptied at the next boot ({image:
        true, rebooting: true, message}: the caller reboots); on a plain
        install: empty state_dir and put the packaged default config back
        ({image: false, rebooting: false, message}). Conflict when the
        packaged default config is missing (nothing removed)."""
        ...

    def system_reboot(self) -> None:
        """Reboot the machine now (from a supervised thread)."""
        ...

    # -- metrics ---------------------------------------------------------
    def samples(self) -> Iterable[Sample]:
        """Every metric of the appliance and its modules, read now."""
        ...
