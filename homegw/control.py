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
        state}, lan {interface, address}, nics {lan|wan: rx/tx packets, bytes,
        drops}, kernel_path."""
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

    # -- metrics ---------------------------------------------------------
    def samples(self) -> Iterable[Sample]:
        """Every metric of the appliance and its modules, read now."""
        ...
