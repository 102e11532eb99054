"""Parental-control policy: what the ``dpi:`` rules and pauses mean at a moment.

:func:`evaluate` turns the config, today's usage and an aware ``now`` into
policy entries per device -- ``(mac, "app", id)``, ``(mac, "category", id)``,
``(mac, "all", "")`` -> ``"allow"`` | ``"block"`` -- which the datapath looks
up for a flow in that order (app, category, all: first found wins), plus the
moment the answer changes next and, per device, what is in force and why.

What wins over what:

- a rule is in force while one of its schedule windows is (no schedule:
  always); a window ``fri 22:00-02:00`` covers Saturday 01:00;
- a rule with ``budget_minutes`` blocks, while in force, only once today's
  active minutes (local day; its devices together; the apps/categories it
  blocks, or for ``block_all`` every app but network services) reach it;
- the ``allow_*`` exceptions of every rule in force win over every rule's
  blocks for its devices (an app whose category is allowed is not blocked);
- a pause whose ``until`` is still ahead blocks everything for its devices,
  the exceptions included ("pause" means the device is off the internet).

Times: instants are compared in UTC; wall-clock times (window starts and
ends, midnight) are read in ``now``'s time zone, so a window is 9 hours long
on the night the clocks go forward. A wall time the clocks jump over (02:30
in Berlin on the last Sunday of March) is the moment of the jump; one they
pass twice is its first occurrence. Pass ``now`` in the local zone, a
zoneinfo one (``datetime.now(local_zone())``): wall times are read in now's
zone, and a fixed UTC offset knows no DST. Instants returned
(``next_change``, ``paused_until``) are in UTC: subtracting two datetimes of
one zone is wall-clock arithmetic in Python, an hour off across DST.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from homegw.modules.dpi.config import DAYS, DpiConfig, Rule, Window, is_mac, mac_or_name

ALLOW, BLOCK = "allow", "block"
EntryKey = tuple[str, str, str]  # (mac, "app" | "category" | "all", id or "")
#: used_minutes(the rule's MACs, rule): today's active minutes that count
#: against the rule's budget (UsageDb.used_minutes_at(now) is one).
UsedMinutes = Callable[[tuple[str, ...], Rule], int]
#: devices_of(profile name): MACs of that profile beyond its config ``devices``.
DevicesOf = Callable[[str], list[str]]
_SCAN_DAYS = 9  # windows are weekly: the next boundary is at most 8 days away


class AppCatalog(Protocol):
    """What policy needs of the application database: an app's category."""

    def app(self, app_id: str) -> Any: ...  # an object with .category, or None


@dataclass(frozen=True)
class Budget:
    rule: str
    used_minutes: int
    limit_minutes: int
    exhausted: bool


@dataclass(frozen=True)
class DeviceState:
    """What is in force for one device now, and why (for Control.parental)."""

    mac: str
    profile: str | None
    rules: tuple[str, ...] = ()  # rules in force now (schedule), budget not yet spent included
    blocked_apps: tuple[str, ...] = ()
    blocked_categories: tuple[str, ...] = ()
    blocked_all: bool = False
    allowed_apps: tuple[str, ...] = ()
    allowed_categories: tuple[str, ...] = ()
    paused_until: datetime | None = None  # UTC
    budgets: tuple[Budget, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The shape of one device in Control.parental (times as unix seconds)."""
        until = self.paused_until
        return {
            "mac": self.mac,
            "profile": self.profile,
            "rules": list(self.rules),
            "blocked_apps": list(self.blocked_apps),
            "blocked_categories": list(self.blocked_categories),
            "blocked_all": self.blocked_all,
            "allowed_apps": list(self.allowed_apps),
            "allowed_categories": list(self.allowed_categories),
            "paused_until": None if until is None else int(until.timestamp()),
            "budgets": [
                {
                    "rule": b.rule,
                    "used_minutes": b.used_minutes,
                    "limit_minutes": b.limit_minutes,
                    "exhausted": b.exhausted,
                }
                for b in self.budgets
            ],
        }


@dataclass(frozen=True)
class Decision:
    entries: dict[EntryKey, str]
    #: Evaluate again at the latest then; in UTC, so ``next_change - now`` is
    #: real time (Python subtracts two datetimes of one zone on the wall clock).
    next_change: datetime | None
    devices: dict[str, DeviceState]
    #: A budget rule is in force and not spent: evaluate again after each usage fold.
    watch_usage: bool = False


# --- local time -------------------------------------------------------------------


def local_zone() -> tzinfo:
    """The machine's time zone with its DST rules: $TZ, else /etc/localtime,
    else the current fixed offset."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name:
            return ZoneInfo(name)
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def wall_instant(day: date, at: time, zone: tzinfo) -> datetime:
    """The UTC instant the clocks in ``zone`` show ``at`` on ``day``: the first
    time if they show it twice, the jump if they skip it."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    ends = sorted((int(first.timestamp()), int(wall.replace(tzinfo=zone, fold=1).timestamp())))
    low, high = ends  # local(low) < wall <= local(high): find the jump
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def day_start(now: datetime) -> datetime:
    """The last local midnight (in now's zone), as an instant in UTC."""
    return wall_instant(now.date(), time(0), _zone(now))


def next_midnight(now: datetime) -> datetime:
    """The next local midnight after ``now``, in now's zone."""
    zone = _zone(now)
    return wall_instant(now.date() + timedelta(days=1), time(0), zone).astimezone(zone)


def pause_end(now: datetime, minutes: int | None) -> datetime:
    """When a pause started at ``now`` ends: after ``minutes``, or (None) at
    the next local midnight ("until tomorrow")."""
    if minutes is None:
        return next_midnight(now)
    return (now.astimezone(UTC) + timedelta(minutes=minutes)).astimezone(_zone(now))


def _zone(now: datetime) -> tzinfo:
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return now.tzinfo


def window_spans(window: Window, around: date, zone: tzinfo) -> Iterator[tuple[datetime, datetime]]:
    """(start, end) instants of ``window`` on the days from the day before
    ``around`` to a week after it."""
    for offset in range(-1, _SCAN_DAYS):
        day = around + timedelta(days=offset)
        if DAYS[day.weekday()] in window.days:
            end_day = day + timedelta(days=1) if window.crosses_midnight else day
            yield wall_instant(day, window.start, zone), wall_instant(end_day, window.end, zone)


def in_force(rule: Rule, now: datetime) -> bool:
    """Is ``rule``'s schedule in force at ``now`` (always, without one)?"""
    instant, zone = now.astimezone(UTC), _zone(now)
    return not rule.schedule or any(
        start <= instant < end
        for window in rule.schedule
        for start, end in window_spans(window, now.date(), zone)
    )


def boundaries(rule: Rule, now: datetime) -> Iterator[datetime]:
    """Every window start and end of ``rule`` after ``now`` (within 9 days)."""
    instant, zone = now.astimezone(UTC), _zone(now)
    for window in rule.schedule:
        for span in window_spans(window, now.date(), zone):
            yield from (moment for moment in span if moment > instant)


# --- evaluation -------------------------------------------------------------------


@dataclass
class _Device:
    """What the rules in force ask of one device, before allows and pauses."""

    rules: list[str] = field(default_factory=list)
    block_apps: set[str] = field(default_factory=set)
    block_categories: set[str] = field(default_factory=set)
    block_all: bool = False
    allow_apps: set[str] = field(default_factory=set)
    allow_categories: set[str] = field(default_factory=set)
    budgets: list[Budget] = field(default_factory=list)

    def add(self, rule: Rule, blocking: bool, budget: Budget | None) -> None:
        self.rules.append(rule.name)
        self.allow_apps.update(rule.allow_apps)
        self.allow_categories.update(rule.allow_categories)
        if budget is not None:
            self.budgets.append(budget)
        if blocking:
            self.block_apps.update(rule.block_apps)
            self.block_categories.update(rule.block_categories)
            self.block_all |= rule.block_all


class _Members:
    """Resolves ``who`` entries (profile names and MACs) to MACs."""

    def __init__(self, config: DpiConfig, devices_of: DevicesOf | None) -> None:
        self._config, self._devices_of = config, devices_of

    def __call__(self, who: Sequence[str]) -> tuple[str, ...]:
        macs: set[str] = set()
        for entry in who:
            macs.update(self._profile(entry) if not is_mac(entry) else (entry,))
        return tuple(sorted(macs))

    def _profile(self, name: str) -> list[str]:
        profile = self._config.profile(name)
        extra = self._devices_of(name) if self._devices_of is not None else []
        return [*(profile.devices if profile else ()), *(mac_or_name(m) for m in extra)]


def evaluate(
    config: DpiConfig,
    devices_of: DevicesOf | None,
    used_minutes: UsedMinutes,
    db: AppCatalog | None,
    now: datetime,
) -> Decision:
    """The policy entries in force at ``now`` (aware), when they change next,
    and what each device named in the config is subject to."""
    members = _Members(config, devices_of)
    planned: dict[str, _Device] = {}
    watch_usage = False
    for rule in config.rules:
        macs = members(rule.who)
        if not macs or not in_force(rule, now):
            continue
        budget = _budget(rule, macs, used_minutes)
        watch_usage |= budget is not None and not budget.exhausted
        for mac in macs:
            planned.setdefault(mac, _Device()).add(rule, budget is None or budget.exhausted, budget)
    paused = _paused(config, members, now)
    entries: dict[EntryKey, str] = {}
    devices: dict[str, DeviceState] = {}
    for mac in _named_devices(config, members):
        state = _resolve(mac, config, planned.get(mac, _Device()), paused.get(mac), db)
        entries.update(_entries(state))
        devices[mac] = state
    return Decision(entries, _next_change(config, members, now), devices, watch_usage)


def _budget(rule: Rule, macs: tuple[str, ...], used_minutes: UsedMinutes) -> Budget | None:
    if rule.budget_minutes is None:
        return None
    used = used_minutes(macs, rule)
    return Budget(rule.name, used, rule.budget_minutes, used >= rule.budget_minutes)


def _paused(config: DpiConfig, members: _Members, now: datetime) -> dict[str, datetime]:
    """MAC -> the end (UTC) of its latest pause still ahead of ``now``."""
    paused: dict[str, datetime] = {}
    instant = now.astimezone(UTC)
    for pause in config.pauses:
        until = pause.until.astimezone(UTC)
        if until <= instant:
            continue
        for mac in members((pause.who,)):
            paused[mac] = max(paused.get(mac, until), until)
    return paused


def _named_devices(config: DpiConfig, members: _Members) -> list[str]:
    named = set(members([p.name for p in config.profiles]))
    for rule in config.rules:
        named.update(members(rule.who))
    named.update(members([p.who for p in config.pauses]))
    return sorted(named)


def _resolve(
    mac: str, config: DpiConfig, plan: _Device, paused: datetime | None, db: AppCatalog | None
) -> DeviceState:
    """Allows over blocks; a pause over everything."""
    allow_apps, allow_categories = plan.allow_apps, plan.allow_categories
    blocked_apps = sorted(
        app
        for app in plan.block_apps
        if app not in allow_apps and _category_of(db, app) not in allow_categories
    )
    blocked_categories = sorted(plan.block_categories - allow_categories)
    if paused is not None:
        allow_apps, allow_categories = set(), set()
    return DeviceState(
        mac=mac,
        profile=config.profile_of(mac),
        rules=tuple(plan.rules),
        blocked_apps=tuple(blocked_apps),
        blocked_categories=tuple(blocked_categories),
        blocked_all=plan.block_all or paused is not None,
        allowed_apps=tuple(sorted(allow_apps)),
        allowed_categories=tuple(sorted(allow_categories)),
        paused_until=paused,
        budgets=tuple(plan.budgets),
    )


def _category_of(db: AppCatalog | None, app: str) -> str | None:
    found = db.app(app) if db is not None else None
    return getattr(found, "category", None)


def _entries(state: DeviceState) -> dict[EntryKey, str]:
    """The device's datapath entries; allows only where there is a block to beat."""
    mac = state.mac
    if state.paused_until is not None:
        return {(mac, "all", ""): BLOCK}
    entries: dict[EntryKey, str] = {(mac, "app", a): BLOCK for a in state.blocked_apps}
    entries.update({(mac, "category", c): BLOCK for c in state.blocked_categories})
    if state.blocked_all:
        entries[(mac, "all", "")] = BLOCK
    if entries:
        entries.update({(mac, "app", a): ALLOW for a in state.allowed_apps})
        entries.update({(mac, "category", c): ALLOW for c in state.allowed_categories})
    return entries


def _next_change(config: DpiConfig, members: _Members, now: datetime) -> datetime | None:
    """The first window start or end, pause end, or (with budgets) local
    midnight after ``now``."""
    rules = [rule for rule in config.rules if members(rule.who)]
    moments = [moment for rule in rules for moment in boundaries(rule, now)]
    instant = now.astimezone(UTC)
    moments += [p.until.astimezone(UTC) for p in config.pauses if p.until.astimezone(UTC) > instant]
    if any(rule.budget_minutes is not None for rule in rules):
        moments.append(next_midnight(now))
    return min(m.astimezone(UTC) for m in moments) if moments else None
