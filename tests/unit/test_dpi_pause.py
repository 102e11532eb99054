"""Control.pause's change of dpi.pauses (homegw.dpipause): a device (its MAC
in any form) or a profile, for minutes, until local midnight or ended; the
target's old pause replaced, expired pauses dropped, bad targets and
durations refused at dpi.pauses."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from homegw.control import ConfigRejected
from homegw.dpipause import MAX_MINUTES, next_midnight, with_pause

NOW = datetime(2026, 12, 1, 20, 15, tzinfo=datetime.now().astimezone().tzinfo)
MAC = "02:48:47:00:00:01"
KNOWN = {MAC, "02:48:47:00:00:02"}


def section(**pauses: str) -> dict[str, Any]:
    return {
        "enabled": True,
        "profiles": [{"name": "Alice", "devices": [MAC]}],
        "pauses": [{"who": who, "until": until} for who, until in pauses.items()],
    }


def test_a_device_for_30_minutes() -> None:
    out = with_pause(section(), "02-48-47-00-00-01", 30, KNOWN, NOW)
    assert out["pauses"] == [{"who": MAC, "until": (NOW + timedelta(minutes=30)).isoformat()}]
    assert out["profiles"] == section()["profiles"] and out["enabled"] is True


def test_a_profile_until_local_midnight() -> None:
    (pause,) = with_pause(section(), "Alice", None, KNOWN, NOW)["pauses"]
    until = datetime.fromisoformat(pause["until"])
    assert pause["who"] == "Alice"
    assert until.astimezone().timetuple()[3:6] == (0, 0, 0)
    assert until.astimezone().date() == NOW.date() + timedelta(days=1)
    assert until == next_midnight(NOW)


def test_a_new_pause_replaces_the_old_and_zero_ends_it() -> None:
    later = (NOW + timedelta(hours=2)).isoformat()
    other = (NOW + timedelta(hours=1)).isoformat()
    dpi = {**section(), "pauses": [{"who": "Alice", "until": later}, {"who": MAC, "until": other}]}
    out = with_pause(dpi, "Alice", 60, KNOWN, NOW)
    assert out["pauses"] == [
        {"who": MAC, "until": other},
        {"who": "Alice", "until": (NOW + timedelta(hours=1)).isoformat()},
    ]
    assert with_pause(out, "Alice", 0, KNOWN, NOW)["pauses"] == [{"who": MAC, "until": other}]


def test_expired_pauses_are_dropped() -> None:
    gone = (NOW - timedelta(minutes=1)).isoformat()
    dpi = {**section(), "pauses": [{"who": "02:48:47:00:00:02", "until": gone}]}
    assert with_pause(dpi, "Alice", 0, KNOWN, NOW)["pauses"] == []


@pytest.mark.parametrize("target", ["Bob", "02:48:47:00:00:99", "", "<b>x</b>"])
def test_an_unknown_target_is_refused(target: str) -> None:
    with pytest.raises(ConfigRejected) as refused:
        with_pause(section(), target, 30, KNOWN, NOW)
    assert [p.loc for p in refused.value.problems] == ["dpi.pauses"]


@pytest.mark.parametrize("minutes", [-1, MAX_MINUTES + 1, True, 1.5])
def test_a_bad_duration_is_refused(minutes: Any) -> None:
    with pytest.raises(ConfigRejected) as refused:
        with_pause(section(), MAC, minutes, KNOWN, NOW)
    assert "minutes" in refused.value.problems[0].msg
