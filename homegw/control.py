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

    # -- metrics ---------------------------------------------------------
    def samples(self) -> Iterable[Sample]:
        """Every metric of the appliance and its modules, read now."""
        ...
