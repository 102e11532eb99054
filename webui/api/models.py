"""The management API's request and response bodies as pydantic models: the
API validates requests with them and the OpenAPI document (openapi.py) is
generated from them, so the two cannot drift apart."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from homegw.auth import PASSWORD_MAX, PASSWORD_MIN
from homegw.configtypes import MacAddress
from homegw.usermodules.spec import MapEntry, ModuleUpload, Position

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
    user_modules: list[UserModule] = Field(
        [], description="the uploaded modules (homegw/usermodules), in upload order"
    )


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


# -- user IO modules (homegw/usermodules) ------------------------------------

#: the request bodies homegw.usermodules.spec defines, in the document too
SHARED_MODELS: tuple[type[BaseModel], ...] = (ModuleUpload, MapEntry)
MIN_FRAME, MAX_FRAME = 14, 1514  # an Ethernet frame without its FCS
BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"


class PositionRequest(Request):
    position: Position = Field(description="first, last, before:<module> or after:<module>")


class PacketOut(Request):
    """One Ethernet frame (destination MAC first, no FCS) to send out of
    ``nic`` through its TC egress chain."""

    nic: Literal["lan", "wan"]
    frame: Annotated[
        str,
        StringConstraints(
            min_length=4 * -(-MIN_FRAME // 3), max_length=4 * -(-MAX_FRAME // 3), pattern=BASE64
        ),
    ] = Field(description=f"base64 of {MIN_FRAME} to {MAX_FRAME} bytes")

    @field_validator("frame")
    @classmethod
    def _frame_bytes(cls, text: str) -> str:
        try:
            frame = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {exc}") from None
        if not MIN_FRAME <= len(frame) <= MAX_FRAME:
            raise ValueError(f"a frame is {MIN_FRAME} to {MAX_FRAME} bytes, not {len(frame)}")
        return text

    def frame_bytes(self) -> bytes:
        return base64.b64decode(self.frame, validate=True)


class AuditQuery(Query):
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class TrialCheck(Response):
    name: Literal["wan", "dhcp", "admin"]
    ok: bool | None = Field(description="null: not checked (failed before the trial too)")
    detail: str


class TrialStatus(Response):
    ends_at: float = Field(description="unix seconds: reverted then unless confirmed")
    remaining_s: float
    checks: list[TrialCheck]


class PuntStats(Response):
    subscribers: int
    delivered: int
    dropped: int = Field(description="events lost to a full subscriber queue")


class UserModule(Response):
    """An uploaded module as it runs now."""

    name: str
    kind: Literal["user"] = "user"
    id: int | None
    nic: Literal["lan", "wan"]
    hook: Literal["xdp", "tc"]
    position: str = Field(description="as asked: first, last, before:<m> or after:<m>")
    function: str | None
    defines: dict[str, int | str]
    maps: list[str] = Field(description="the exposed maps (GET .../maps/{map_name})")
    counters: dict[str, int]
    enabled: bool
    loaded: bool | None = Field(None, description="its program is in the dataplane")
    state: Literal["trial", "confirmed", "disabled", "failed"] = Field(
        description="failed: a saved module that did not load at start (see error)"
    )
    error: str | None = Field(None, description="why it failed to load")
    trial: TrialStatus | None
    trial_s: int | None = Field(None, description="the trial window of its uploads, seconds")
    version: int = Field(description="1 for the first upload, one more for each replace")
    source_sha256: str
    uploaded_at: float
    confirmed_at: float | None
    chains: list[ChainPosition] = Field(description="where it runs now")
    punts: PuntStats


class UserModuleDetail(UserModule):
    source: str


class Reverted(Response):
    name: str
    removed: bool = Field(description="a new module is gone; a replaced one runs as before")
    module: UserModule | None = Field(description="the version that runs again")


class MapValue(Response):
    """Hex of the bytes; a per-CPU map gives ``value`` (one integer summed
    over the CPUs) or ``values`` (one hex per CPU)."""

    key: str
    value: str | None = None
    values: list[str] | None = None


class MapEntries(Response):
    entries: list[MapValue]


class AuditRecord(Response):
    time: float
    action: Literal["upload", "replace", "confirm", "revert", "delete", "enable", "disable",
                    "move", "map_set", "map_delete", "refused"]  # fmt: skip
    module: str
    version: int | None
    caller: str | None = Field(description="the address the request came from")
    detail: str


class Audit(Response):
    entries: list[AuditRecord] = Field(description="newest first")


class Example(Response):
    name: str
    description: str
    upload: ModuleUpload = Field(description="POST it to /api/v1/modules as it is")


class Examples(Response):
    examples: list[Example]


class ModuleRefusal(Rejected):
    """A 400 of an upload: bad fields (``problems``) or a module the source
    check, the compiler or the verifier refused (``stage``, ``line`` of the
    uploaded source, ``message`` in their own words, ``log`` its tail)."""

    stage: Literal["check", "compile", "verifier", "limit"] | None = None
    line: int | None = None
    message: str | None = None
    log: str | None = None


Modules.model_rebuild()  # user_modules names UserModule, defined below it
