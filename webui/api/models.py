"""The management API's request and response bodies as pydantic models: the
API validates requests with them and the OpenAPI document (openapi.py) is
generated from them, so the two cannot drift apart."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from homegw.auth import PASSWORD_MAX, PASSWORD_MIN
from homegw.configtypes import MacAddress

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Password = Annotated[str, StringConstraints(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX)]


def config_sections() -> list[str]:
    """The config's sections that are objects (``lan``, ``dns``, ...): the
    ones /config/<section> reads and replaces."""
    from homegw.configschema import Config

    return [
        name
        for name, info in Config.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    ]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    pass


# -- requests ----------------------------------------------------------------


class SetupRequest(Request):
    """The one-time setup token (``state_dir/setup-token`` or the log) and
    the admin's password."""

    token: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    password: Password


class LoginRequest(Request):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "admin"
    password: AnyPassword


class PasswordRequest(Request):
    """``current_password`` is required with a web session (not with a token)."""

    password: Password
    current_password: AnyPassword | None = None


class TokenRequest(Request):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]


class OrderRequest(Request):
    modules: Annotated[list[Name], Field(max_length=16)]


class TableQuery(Request):
    """Paging; every other query parameter filters on a column."""

    model_config = ConfigDict(extra="forbid", strict=False)
    offset: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class DeviceChange(Request):
    """PATCH /devices/{mac}: ``name`` (null forgets it) and/or ``paused``."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    paused: bool | None = None


class Query(Request):
    """Query parameters arrive as text: numbers are parsed, unknown ones refused."""

    model_config = ConfigDict(extra="forbid", strict=False)


class TrafficQuery(Query):
    hours: Annotated[int, Field(ge=1, le=168)] = 24


class DnsStatsQuery(Query):
    limit: Annotated[int, Field(ge=1, le=100)] = 10


class LogsQuery(Query):
    module: Name | None = Field(None, description="only this module's records (nat, webui, ...)")
    limit: Annotated[int, Field(ge=1, le=500)] = 500


MAX_HOURS = 720  # 30 days: the usage history DPI keeps
PAUSE_MAX_MINUTES = 7 * 24 * 60


class AppUsageQuery(Query):
    mac: MacAddress | None = Field(None, description="one device (aa:bb:cc:dd:ee:ff)")
    hours: Annotated[int, Field(ge=1, le=MAX_HOURS)] = 24
    bucket: Literal["hour", "day"] = "hour"


class TopAppsQuery(Query):
    mac: MacAddress | None = Field(None, description="one device (aa:bb:cc:dd:ee:ff)")
    hours: Annotated[int, Field(ge=1, le=MAX_HOURS)] = 24
    limit: Annotated[int, Field(ge=1, le=100)] = 10


class PauseRequest(Request):
    """POST /parental/pause: ``target`` a device's MAC or a profile's name;
    ``minutes`` null pauses until local midnight, 0 ends the pause."""

    target: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    minutes: Annotated[int, Field(ge=0, le=PAUSE_MAX_MINUTES)] | None


# -- responses ---------------------------------------------------------------


class Error(Response):
    error: str


class Problem(Response):
    loc: str = Field(description="dotted key path, e.g. nat.port_forwards.0.external_port")
    msg: str


class Rejected(Error):
    """A refused request or config: ``problems`` names every key path at fault."""

    problems: list[Problem] = []


class Status(Response):
    """What the appliance reports of itself; ``wan``, ``lan`` and ``nics``
    carry the fields named in homegw.control.Control.status."""

    ready: bool
    uptime_s: float
    version: str | None = None
    wan: dict[str, Any] | None = None
    lan: dict[str, Any] | None = None
    nics: dict[str, Any] | None = None
    kernel_path: bool | None = None


class ApplyResult(Response):
    version: int
    changed: list[str]
    applied: dict[str, str]
    dry_run: bool


class HistoryEntry(Response):
    version: int
    applied_at: float
    changed: list[str]
    current: bool


class History(Response):
    history: list[HistoryEntry]


class ChainPosition(Response):
    nic: str
    hook: str
    position: int


class Module(Response):
    name: str
    id: int | None = None
    enabled: bool
    loaded: bool
    chains: list[ChainPosition]
    counters: dict[str, int]


class Modules(Response):
    modules: list[Module]


class ModuleChange(Response):
    """What enabling, disabling or re-ordering changed, as the appliance says."""

    model_config = ConfigDict(extra="allow")


class Tables(Response):
    tables: list[str]


class Page(Response):
    total: int
    offset: int
    limit: int
    items: list[dict[str, Any]]


class Flushed(Response):
    table: str
    removed: int


class Done(Response):
    done: Literal[True] = True
    action: str


class LoggedIn(Response):
    username: str
    csrf_token: str = Field(description="send it as X-CSRFToken with every cookie request")


class CsrfToken(Response):
    csrf_token: str


class TokenInfo(Response):
    id: str
    name: str
    created_at: float


class TokenCreated(TokenInfo):
    token: str = Field(description="the secret, shown this once: Authorization: Bearer <token>")


class TokenList(Response):
    tokens: list[TokenInfo]


class Bytes(Response):
    from_bytes: int = Field(description="sent by the device (the LAN)")
    to_bytes: int


class DeviceTotal(Bytes):
    from_packets: int
    to_packets: int
    dropped: int


class Device(Response):
    """Strings are as the device sent them: escape them when shown."""

    mac: str
    name: str | None
    user_name: str | None
    hostname: str | None
    vendor: str | None
    random_mac: bool | None = Field(None, description="a locally administered (random) MAC")
    addresses: list[str] = Field(description="IPv4 addresses (leases, reservation, neighbours)")
    ipv6: list[str] = Field(
        [],
        description="IPv6 addresses seen for the MAC (global, ULA, privacy; not link-local), "
        "newest first, at most 16",
    )
    online: bool
    first_seen: float | None
    last_seen: float | None
    paused: bool
    reserved_address: str | None
    lease_expires: float | None
    today: Bytes
    total: DeviceTotal


class Devices(Response):
    devices: list[Device]


class HourBucket(Bytes):
    hour: float = Field(description="unix seconds of the hour's start")


class DeviceDetail(Device):
    history: list[HourBucket] = Field(description="24 hourly buckets, oldest first")


class Traffic(Response):
    traffic: list[HourBucket]


class Count(Response):
    name: str
    count: int


class DnsStats(Response):
    queries: int
    blocked: int
    top_domains: list[Count]
    top_blocked: list[Count]
    top_clients: list[Count]


class Blocklist(Response):
    source: str
    groups: list[str]
    entries: int | None = Field(description="null when not loaded")
    updated_at: float | None
    error: str | None


class Blocklists(Response):
    blocklists: list[Blocklist]


class BlocklistStored(Response):
    source: str = Field(description="the absolute path to put in dns.blocklists")
    entries: int


class LogRecord(Response):
    time: float
    level: str
    module: str
    logger: str
    message: str = Field(description="plain text: escape it when shown")


class Logs(Response):
    logs: list[LogRecord]


class Alert(Response):
    code: Literal["wan_down", "pool_nearly_full", "flood_drops", "module_failed"]
    severity: Literal["warning", "critical"]
    message: str
    since: float | None


class Alerts(Response):
    alerts: list[Alert]


class CategoryInfo(Response):
    id: str
    label: str


class AppInfo(Response):
    """Labels come from data files (maybe downloaded): escape them when shown."""

    id: str
    label: str
    category: str = Field(description="a category id")
    domains: list[str] = Field(description="domain patterns (suffix match)")


class Apps(Response):
    categories: list[CategoryInfo]
    apps: list[AppInfo]
    source: str = Field(description="where the database was loaded from")
    loaded_at: float = Field(description="unix seconds")
    error: str | None = Field(None, description="why an extra source was not loaded")


class UsageBucket(Response):
    start: float = Field(description="unix seconds of the bucket's start")
    mac: str
    app: str = Field(description="an app id, or an unknown name's registrable domain")
    category: str
    up_bytes: int
    down_bytes: int
    packets: int
    active_minutes: int


class AppUsage(Response):
    usage: list[UsageBucket] = Field(description="oldest first")


class TopApp(Response):
    app: str
    label: str
    category: str
    up_bytes: int
    down_bytes: int
    active_minutes: int


class TopApps(Response):
    apps: list[TopApp] = Field(description="most bytes first")


class Budget(Response):
    rule: str
    used_minutes: int
    limit_minutes: int
    exhausted: bool


class ParentalDevice(Response):
    mac: str
    profile: str | None
    blocked_apps: list[str]
    blocked_categories: list[str]
    blocked_all: bool = False
    allowed_apps: list[str] = []
    allowed_categories: list[str] = []
    paused_until: float | None
    budgets: list[Budget]
    rules: list[str] = Field(description="names of the rules in force now")
    next_change: float | None = None


class Parental(Response):
    now: float
    devices: list[ParentalDevice]
    next_change: float | None = Field(None, description="when the policies change next")
