"""Pausing a device or a profile (Control.pause) as a change of the ``dpi``
section's ``pauses``: the pause of that target replaced (or ended), expired
pauses dropped so they do not pile up, "until tomorrow" as the next local
midnight. Pure: the caller gives the section, the known devices and `now`."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from homegw.configtypes import MacAddress
from homegw.control import ConfigRejected, Problem

MAX_MINUTES = 7 * 24 * 60
LOC = "dpi.pauses"
_MAC = TypeAdapter(MacAddress)


def next_midnight(now: datetime) -> datetime:
    """The local midnight after `now` (aware), in the machine's zone."""
    return datetime.combine(now.astimezone().date() + timedelta(days=1), time()).astimezone()


def _mac(text: str) -> str | None:
    try:
        return _MAC.validate_python(text)
    except ValidationError:
        return None


def _ends(pause: dict[str, Any]) -> datetime | None:
    try:
        until = datetime.fromisoformat(str(pause.get("until")))
    except ValueError:
        return None
    return until if until.tzinfo is not None else None


def pause_target(dpi: dict[str, Any], target: str, known_macs: set[str]) -> str:
    """A profile's name as given, or a known device's MAC in its normal form;
    anything else is refused at ``dpi.pauses``."""
    if target in {p.get("name") for p in dpi.get("profiles") or []}:
        return target
    mac = _mac(target)
    if mac is None or mac not in known_macs:
        raise ConfigRejected(
            [Problem(LOC, f"{target!r} is neither a profile nor a device this gateway knows")]
        )
    return mac


def with_pause(
    dpi: dict[str, Any], target: str, minutes: int | None, known_macs: set[str], now: datetime
) -> dict[str, Any]:
    """The section with `target` paused for `minutes` (None: until local
    midnight; 0: its pause ended)."""
    if minutes is not None and not (
        isinstance(minutes, int) and not isinstance(minutes, bool) and 0 <= minutes <= MAX_MINUTES
    ):
        raise ConfigRejected(
            [Problem(LOC, f"minutes: 0 (resume) to {MAX_MINUTES}, or null (until midnight)")]
        )
    who = pause_target(dpi, target, known_macs)
    kept = []
    for pause in dpi.get("pauses") or []:
        ends = _ends(pause)
        if pause.get("who") != who and (ends is None or ends > now):
            kept.append(pause)
    if minutes != 0:
        until = next_midnight(now) if minutes is None else now + timedelta(minutes=minutes)
        kept.append({"who": who, "until": until.isoformat(timespec="seconds")})
    return {**dpi, "pauses": kept}
