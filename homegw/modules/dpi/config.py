"""Config section ``dpi:`` of the DPI IO module (per-device application
visibility and parental controls).

Profiles are people and their devices; rules block applications, categories
or the whole internet for profiles and MACs, on a weekly schedule and/or
after a daily time budget, with "always allowed" exceptions; pauses block a
profile or a device until a moment. What the rules mean at a given moment is
:mod:`homegw.modules.dpi.policy`; this module only checks them. Every problem
is reported at its key path (``dpi.rules.0.schedule.1.end``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from homegw.configtypes import (
    ChainRules,
    MacAddress,
    Problem,
    Section,
    duplicates,
    raise_problems,
    shown,
)
from homegw.modules.dpi.categories import CATEGORY_UNKNOWN, category_ids

MAX_PROFILES = 64
MAX_DEVICES = 64  # a profile's devices
MAX_RULES = 128
MAX_WHO = 64  # a rule's profiles and MACs
MAX_IDS = 256  # a rule's apps, or categories, in one list
MAX_WINDOWS = 16  # a rule's schedule
MAX_PAUSES = 256
MAX_SOURCES = 16

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_APP_ID = re.compile(r"[a-z0-9_]{1,64}")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_MAC = TypeAdapter(MacAddress)


def is_mac(text: str) -> bool:
    """True for anything the config reads as a MAC address (any of its forms)."""
    try:
        _MAC.validate_python(text)
    except ValidationError:
        return False
    return True


def mac_or_name(text: str) -> str:
    """A ``who`` entry: a MAC in its normal form, or a profile name as given."""
    return _MAC.validate_python(text) if is_mac(text) else text


def _app_id(value: str) -> str:
    if not _APP_ID.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not an app id (1-64 of a-z, 0-9 and '_', e.g. youtube)"
        )
    return value


def _category_id(value: str) -> str:
    if value == CATEGORY_UNKNOWN:
        raise ValueError(
            "'unknown' cannot be a policy category: every flow is unknown until it is "
            "classified, so its first packets would be blocked"
        )
    if value not in category_ids():
        known = ", ".join(c for c in category_ids() if c != CATEGORY_UNKNOWN)
        raise ValueError(f"{shown(value)} is not a category; the categories are: {known}")
    return value


def _clock_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1: 21:00 is 1260
        raise ValueError("must be a string: quote times in YAML ('21:00')")
    match = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{shown(value)} is not a time of day HH:MM (00:00 to 23:59)")
    return time(int(match[1]), int(match[2]))


def _yaml_mac_number(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1: 10:20:30:40:50:59
        raise ValueError("must be a string: quote MAC addresses in YAML ('aa:bb:cc:dd:ee:ff')")
    return value


def _profile_name(value: str) -> str:
    if is_mac(value):
        raise ValueError(f"{shown(value)} looks like a MAC address; a profile name must not")
    return value


def _source(value: str) -> str:
    if not value.startswith(("/", "http://", "https://")):
        raise ValueError(f"{shown(value)} must be an absolute path or an http(s):// URL")
    return value


AppId = Annotated[str, AfterValidator(_app_id)]
CategoryId = Annotated[str, AfterValidator(_category_id)]
#: A time of day written "HH:MM" (a datetime.time).
ClockTime = Annotated[
    time,
    PlainValidator(_clock_time),
    PlainSerializer(lambda t: t.strftime("%H:%M"), when_used="json"),
    WithJsonSchema({"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}),
]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=64)]
Who = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=64),
    BeforeValidator(_yaml_mac_number),
    AfterValidator(mac_or_name),
]


class Profile(Section):
    """``dpi.profiles[]`` -- a person and their devices."""

    name: Annotated[Name, AfterValidator(_profile_name)]
    devices: Annotated[tuple[MacAddress, ...], Field(max_length=MAX_DEVICES)] = ()


class Window(Section):
    """``dpi.rules[].schedule[]`` -- from ``start`` on each of ``days`` to
    ``end``; an ``end`` at or before ``start`` is on the next day."""

    days: Annotated[tuple[Day, ...], Field(min_length=1)] = DAYS
    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _check(self) -> Window:
        problems: list[Problem] = [
            (("days", i), f"duplicate day {self.days[i]}") for i in duplicates(self.days)
        ]
        if self.start == self.end:
            problems.append((("end",), "equals start: a window needs a length"))
        raise_problems("Window", problems)
        return self

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


class Rule(Section):
    """``dpi.rules[]`` -- what is blocked (and always allowed) for whom, when."""

    name: Name
    who: Annotated[tuple[Who, ...], Field(min_length=1, max_length=MAX_WHO)]
    block_apps: Annotated[tuple[AppId, ...], Field(max_length=MAX_IDS)] = ()
    block_categories: Annotated[tuple[CategoryId, ...], Field(max_length=MAX_IDS)] = ()
    block_all: StrictBool = False
    allow_apps: Annotated[tuple[AppId, ...], Field(max_length=MAX_IDS)] = ()
    allow_categories: Annotated[tuple[CategoryId, ...], Field(max_length=MAX_IDS)] = ()
    schedule: Annotated[tuple[Window, ...], Field(max_length=MAX_WINDOWS)] = ()
    budget_minutes: Annotated[int, Field(strict=True, ge=1, le=1440)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Rule:
        problems: list[Problem] = []
        for key in ("who", "block_apps", "block_categories", "allow_apps", "allow_categories"):
            values = getattr(self, key)
            problems += [((key, i), f"duplicate {values[i]}") for i in duplicates(values)]
        for kind in ("apps", "categories"):
            blocked = set(getattr(self, f"block_{kind}"))
            allowed = getattr(self, f"allow_{kind}")
            problems += [
                ((f"allow_{kind}", i), f"{x} is also in block_{kind}")
                for i, x in enumerate(allowed)
                if x in blocked
            ]
        if not self.blocks and not (self.allow_apps or self.allow_categories):
            problems.append(((), "the rule neither blocks nor allows anything"))
        if self.budget_minutes is not None and not self.blocks:
            problems.append((("budget_minutes",), "a budget needs something blocked"))
        raise_problems("Rule", problems)
        return self

    @property
    def blocks(self) -> bool:
        return bool(self.block_all or self.block_apps or self.block_categories)


class Pause(Section):
    """``dpi.pauses[]`` -- everything blocked for ``who`` until ``until``."""

    who: Who
    until: AwareDatetime


class DpiConfig(Section):
    """``dpi:`` -- deep packet inspection; off by default (it costs per-packet work)."""

    chain_rules: ClassVar[ChainRules] = ChainRules(
        lan_before=("router", "nat"),
        wan_after=("nat", "router"),
        why="DPI keys a flow by the LAN host's address and learns the device from its MAC: "
        "on the LAN before the router rewrites the MACs and NAT the source, on the WAN "
        "after NAT translated the destination back and the router chose the LAN host",
    )
    enabled: StrictBool = False
    app_sources: Annotated[
        tuple[Annotated[str, Field(strict=True), AfterValidator(_source)], ...],
        Field(max_length=MAX_SOURCES),
    ] = ()
    profiles: Annotated[tuple[Profile, ...], Field(max_length=MAX_PROFILES)] = ()
    rules: Annotated[tuple[Rule, ...], Field(max_length=MAX_RULES)] = ()
    pauses: Annotated[tuple[Pause, ...], Field(max_length=MAX_PAUSES)] = ()

    @model_validator(mode="after")
    def _check(self) -> DpiConfig:
        raise_problems("DpiConfig", self._profile_problems() + self._who_problems())
        return self

    def _profile_problems(self) -> list[Problem]:
        names = [p.name for p in self.profiles]
        problems: list[Problem] = [
            (("profiles", i, "name"), f"duplicate profile {names[i]!r}") for i in duplicates(names)
        ]
        problems += [
            (("rules", i, "name"), f"duplicate rule {self.rules[i].name!r}")
            for i in duplicates(r.name for r in self.rules)
        ]
        owner: dict[str, str] = {}
        for i, profile in enumerate(self.profiles):
            for j, mac in enumerate(profile.devices):
                if mac in owner:
                    where = ("profiles", i, "devices", j)
                    problems.append((where, f"{mac} is already a device of {owner[mac]!r}"))
                owner.setdefault(mac, profile.name)
        return problems

    def _who_problems(self) -> list[Problem]:
        known = {p.name for p in self.profiles}
        places: list[tuple[tuple[str | int, ...], str]] = [
            (("rules", i, "who", j), who)
            for i, rule in enumerate(self.rules)
            for j, who in enumerate(rule.who)
        ]
        places += [(("pauses", i, "who"), pause.who) for i, pause in enumerate(self.pauses)]
        return [
            (where, f"{who!r} is neither a MAC nor a profile name")
            for where, who in places
            if who not in known and not is_mac(who)
        ]

    def pauses_after(self, now: datetime) -> tuple[Pause, ...]:
        """The pauses still ahead of ``now`` (aware): what to keep when writing
        a new one, so that expired pauses do not pile up to MAX_PAUSES."""
        return tuple(p for p in self.pauses if p.until.astimezone(UTC) > now.astimezone(UTC))

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def profile_of(self, mac: str) -> str | None:
        """The name of the profile ``mac`` belongs to (at most one), or None."""
        return next((p.name for p in self.profiles if mac in p.devices), None)
