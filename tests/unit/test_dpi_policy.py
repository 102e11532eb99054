"""Parental-control policy on a fake clock (aware datetimes in Europe/Berlin):
schedules (midnight crossing, several windows, DST), budgets, pauses, allow
exceptions, and the exact moment of the next change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from homegw.modules.dpi.config import DpiConfig, Rule
from homegw.modules.dpi.policy import (
    ALLOW,
    BLOCK,
    Decision,
    evaluate,
    in_force,
    local_zone,
    next_midnight,
    pause_end,
)

BERLIN = ZoneInfo("Europe/Berlin")
PHONE, TABLET, CONSOLE = "02:48:47:00:00:01", "02:48:47:00:00:02", "02:48:47:00:00:03"
ALICE = {"name": "Alice", "devices": [PHONE, TABLET]}


def at(day: str, clock: str = "00:00", fold: int = 0) -> datetime:
    """2026-12-01 is a Tuesday."""
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=BERLIN, fold=fold)


def config(*rules: dict[str, Any], pauses: tuple[dict[str, Any], ...] = ()) -> DpiConfig:
    return DpiConfig.model_validate({"profiles": [ALICE], "rules": rules, "pauses": pauses})


def rule(**fields: Any) -> dict[str, Any]:
    return {"name": "r", "who": ["Alice"], **fields}


def window(days: list[str], start: str, end: str) -> dict[str, Any]:
    return {"days": days, "start": start, "end": end}


class Catalog:
    CATEGORY = {"youtube": "video", "khan_academy": "education", "fortnite": "games"}

    def app(self, app_id: str) -> Any:
        category = self.CATEGORY.get(app_id)
        return SimpleNamespace(id=app_id, category=category) if category else None


def no_use(macs: tuple[str, ...], rule: Rule) -> int:
    return 0


def decide(cfg: DpiConfig, now: datetime, used: Any = no_use, devices_of: Any = None) -> Decision:
    return evaluate(cfg, devices_of, used, Catalog(), now)


def blocked(decision: Decision, mac: str = PHONE) -> dict[tuple[str, str], str]:
    return {
        (kind, ident): action for (m, kind, ident), action in decision.entries.items() if m == mac
    }


BEDTIME = rule(
    block_all=True, schedule=[window(["sun", "mon", "tue", "wed", "thu"], "21:00", "07:00")]
)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at("2026-12-01", "20:59"), False),  # Tuesday evening, before
        (at("2026-12-01", "21:00"), True),
        (at("2026-12-02", "06:59"), True),  # Wednesday morning: Tuesday's window
        (at("2026-12-02", "07:00"), False),
        (at("2026-12-04", "23:00"), False),  # Friday: not a school night
        (at("2026-12-05", "01:00"), False),  # Saturday: Friday's night is free
        (at("2026-12-07", "01:00"), True),  # Monday 01:00: Sunday's window
    ],
)
def test_school_nights_cross_midnight(now, expected):
    decision = decide(config(BEDTIME), now)
    assert (blocked(decision) == {("all", ""): BLOCK}) is expected
    assert (blocked(decision, TABLET) == {("all", ""): BLOCK}) is expected
    assert decision.devices[PHONE].rules == (("r",) if expected else ())


def test_a_friday_night_window_is_in_force_on_saturday_morning():
    late = Rule.model_validate(
        rule(block_categories=["games"], schedule=[window(["fri"], "22:00", "02:00")])
    )
    assert not in_force(late, at("2026-12-04", "21:59"))
    assert in_force(late, at("2026-12-04", "22:00"))
    assert in_force(late, at("2026-12-05", "01:00"))
    assert not in_force(late, at("2026-12-05", "02:00"))
    assert not in_force(late, at("2026-12-06", "01:00"))


def test_several_windows_a_day_and_the_next_change_is_the_next_boundary():
    cfg = config(
        rule(
            block_categories=["games"],
            schedule=[window(["tue"], "07:00", "08:00"), window(["tue", "wed"], "15:00", "17:00")],
        )
    )
    morning = decide(cfg, at("2026-12-01", "07:30"))
    assert blocked(morning) == {("category", "games"): BLOCK}
    assert morning.next_change == at("2026-12-01", "08:00")
    noon = decide(cfg, at("2026-12-01", "12:00"))
    assert blocked(noon) == {} and noon.next_change == at("2026-12-01", "15:00")
    assert blocked(decide(cfg, at("2026-12-01", "16:59"))) == {("category", "games"): BLOCK}
    evening = decide(cfg, at("2026-12-01", "17:00"))
    assert blocked(evening) == {} and evening.next_change == at("2026-12-02", "15:00")
    thursday = decide(cfg, at("2026-12-03", "18:00"))  # next: Tuesday's 07:00
    assert thursday.next_change == at("2026-12-08", "07:00")


def test_next_change_is_exact_for_a_night_window():
    assert decide(config(BEDTIME), at("2026-12-01", "20:00")).next_change == at(
        "2026-12-01", "21:00"
    )
    inside = decide(config(BEDTIME), at("2026-12-01", "22:17:31"))
    assert inside.next_change == at("2026-12-02", "07:00")
    assert inside.next_change.tzinfo is UTC  # so that next_change - now is real time


def test_a_rule_without_schedule_is_always_in_force_and_never_changes():
    decision = decide(config(rule(block_apps=["youtube"])), at("2026-12-01", "12:00"))
    assert blocked(decision) == {("app", "youtube"): BLOCK}
    assert decision.next_change is None and not decision.watch_usage


def test_a_rule_for_nobody_blocks_nothing_and_sets_no_timer():
    cfg = DpiConfig.model_validate(
        {"profiles": [{"name": "Bob"}], "rules": [{**BEDTIME, "who": ["Bob"]}]}
    )
    decision = decide(cfg, at("2026-12-01", "22:00"))
    assert decision.entries == {} and decision.next_change is None


def test_macs_and_profiles_mix_and_devices_of_adds_a_profiles_devices():
    cfg = config({**BEDTIME, "who": ["Alice", "02-48-47-00-00-03"]})
    decision = decide(cfg, at("2026-12-01", "22:00"), devices_of=lambda name: ["02:48:47:00:00:0A"])
    assert {mac for mac, _, _ in decision.entries} == {PHONE, TABLET, CONSOLE, "02:48:47:00:00:0a"}
    assert decision.devices[PHONE].profile == "Alice" and decision.devices[CONSOLE].profile is None


# --- budgets -------------------------------------------------------------------------

GAMES_HOUR = rule(
    name="games", block_categories=["games"], allow_apps=["khan_academy"], budget_minutes=60
)


def test_a_budget_blocks_once_used_up_and_reports_its_use():
    asked: list[tuple[tuple[str, ...], str]] = []

    def used(minutes: int) -> Any:
        def count(macs: tuple[str, ...], rule: Rule) -> int:
            asked.append((macs, rule.name))
            return minutes

        return count

    now = at("2026-12-01", "16:00")
    before = decide(config(GAMES_HOUR), now, used(59))
    assert blocked(before) == {} and before.watch_usage
    assert asked == [((PHONE, TABLET), "games")]  # the profile's devices together
    assert before.devices[PHONE].budgets[0].exhausted is False
    assert before.next_change == at("2026-12-02")  # midnight: budgets reset
    spent = decide(config(GAMES_HOUR), now, used(60))
    assert blocked(spent) == {("category", "games"): BLOCK, ("app", "khan_academy"): ALLOW}
    assert not spent.watch_usage
    assert spent.devices[TABLET].to_json()["budgets"] == [
        {"rule": "games", "used_minutes": 60, "limit_minutes": 60, "exhausted": True}
    ]


def test_a_budget_with_a_schedule_blocks_only_inside_it():
    cfg = config({**GAMES_HOUR, "schedule": [window(["tue"], "18:00", "20:00")]})
    spent = lambda macs, rule: 90  # noqa: E731
    assert blocked(decide(cfg, at("2026-12-01", "17:00"), spent)) == {}
    assert blocked(decide(cfg, at("2026-12-01", "18:00"), spent))[("category", "games")] == BLOCK


# --- pauses --------------------------------------------------------------------------


def test_pause_for_30_minutes_blocks_everything_then_ends_on_time():
    now = at("2026-12-01", "17:10")
    until = pause_end(now, 30)
    assert until == at("2026-12-01", "17:40")
    cfg = config(
        rule(block_categories=["games"], allow_apps=["khan_academy"]),
        pauses=({"who": "Alice", "until": until.isoformat()},),
    )
    paused = decide(cfg, now)
    assert blocked(paused) == {("all", ""): BLOCK}  # the exception does not beat a pause
    assert paused.next_change == until
    assert paused.devices[PHONE].paused_until == until
    assert paused.devices[PHONE].to_json()["paused_until"] == int(until.timestamp())
    after = decide(cfg, until)
    assert blocked(after) == {("category", "games"): BLOCK, ("app", "khan_academy"): ALLOW}
    assert after.devices[PHONE].paused_until is None and after.next_change is None


def test_pause_until_tomorrow_ends_at_local_midnight_for_one_device():
    now = at("2026-12-01", "19:45")
    until = pause_end(now, None)
    assert until == at("2026-12-02") == next_midnight(now)
    cfg = config(pauses=({"who": TABLET, "until": until.astimezone(UTC).isoformat()},))
    decision = decide(cfg, now)
    assert blocked(decision, TABLET) == {("all", ""): BLOCK} and blocked(decision) == {}
    assert decision.next_change == until
    assert blocked(decide(cfg, at("2026-12-02", "00:00"))) == {}


def test_the_latest_of_two_pauses_counts_and_expired_ones_are_inert():
    cfg = config(
        pauses=(
            {"who": "Alice", "until": at("2026-12-01", "18:00").isoformat()},
            {"who": PHONE, "until": at("2026-12-01", "19:00").isoformat()},
            {"who": TABLET, "until": at("2026-12-01", "09:00").isoformat()},
        )
    )
    decision = decide(cfg, at("2026-12-01", "17:00"))
    assert decision.devices[PHONE].paused_until == at("2026-12-01", "19:00")
    assert decision.devices[TABLET].paused_until == at("2026-12-01", "18:00")
    assert decision.next_change == at("2026-12-01", "18:00")


# --- allow exceptions ----------------------------------------------------------------


def test_an_allowed_app_beats_its_blocked_category_and_a_block_all():
    cfg = config(
        {**BEDTIME, "allow_apps": ["khan_academy"], "allow_categories": ["education"]},
        rule(name="no video", block_apps=["youtube"], block_categories=["education"]),
    )
    night = blocked(decide(cfg, at("2026-12-01", "22:00")))
    assert night == {
        ("all", ""): BLOCK,
        ("app", "youtube"): BLOCK,
        ("app", "khan_academy"): ALLOW,
        ("category", "education"): ALLOW,
    }
    day = decide(cfg, at("2026-12-01", "12:00"))  # bedtime's exceptions are not in force
    assert blocked(day) == {("app", "youtube"): BLOCK, ("category", "education"): BLOCK}
    assert day.devices[PHONE].blocked_categories == ("education",)


def test_an_allowed_category_unblocks_an_app_of_it():
    cfg = config(
        rule(name="a", block_apps=["khan_academy", "fortnite"]),
        rule(name="b", allow_categories=["education"]),
    )
    decision = decide(cfg, at("2026-12-01", "12:00"))
    assert blocked(decision) == {("app", "fortnite"): BLOCK, ("category", "education"): ALLOW}
    assert decision.devices[PHONE].blocked_apps == ("fortnite",)


def test_allows_alone_write_no_entries():
    decision = decide(config(rule(allow_apps=["khan_academy"])), at("2026-12-01", "12:00"))
    assert decision.entries == {}
    assert decision.devices[PHONE].allowed_apps == ("khan_academy",)


# --- DST (Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) -------


def test_a_night_window_is_nine_hours_when_clocks_go_forward():
    cfg = config(rule(block_all=True, schedule=[window(["sat"], "21:00", "07:00")]))
    start = decide(cfg, at("2026-03-28", "20:00")).next_change
    assert start == datetime(2026, 3, 28, 20, tzinfo=UTC)
    end = decide(cfg, start.astimezone(BERLIN)).next_change
    assert end == datetime(2026, 3, 29, 5, tzinfo=UTC) and end - start == timedelta(hours=9)
    assert end.astimezone(BERLIN).hour == 7
    assert blocked(decide(cfg, (end - timedelta(seconds=1)).astimezone(BERLIN))) == {
        ("all", ""): BLOCK
    }
    assert blocked(decide(cfg, end.astimezone(BERLIN))) == {}


def test_a_night_window_is_eleven_hours_when_clocks_go_back():
    cfg = config(rule(block_all=True, schedule=[window(["sat"], "21:00", "07:00")]))
    start = decide(cfg, at("2026-10-24", "12:00")).next_change
    end = decide(cfg, start.astimezone(BERLIN)).next_change
    assert end - start == timedelta(hours=11)
    second_two_thirty = at("2026-10-25", "02:30", fold=1)  # the repeated hour
    assert blocked(decide(cfg, second_two_thirty)) == {("all", ""): BLOCK}


def test_a_window_starting_in_the_skipped_hour_starts_at_the_jump():
    cfg = config(rule(block_all=True, schedule=[window(["sun"], "02:30", "04:00")]))
    start = decide(cfg, at("2026-03-29", "01:00")).next_change
    assert start == datetime(2026, 3, 29, 1, tzinfo=UTC)  # 03:00 CEST, the jump
    jump = start.astimezone(BERLIN)
    assert blocked(decide(cfg, jump)) == {("all", ""): BLOCK}
    just_before = (start - timedelta(seconds=1)).astimezone(BERLIN)  # 01:59:59 CET
    assert blocked(decide(cfg, just_before)) == {}
    assert decide(cfg, jump).next_change == datetime(2026, 3, 29, 2, tzinfo=UTC)


def test_midnight_and_pause_ends_across_dst():
    assert next_midnight(at("2026-03-28", "23:59")) == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert next_midnight(at("2026-03-29", "12:00")) == datetime(2026, 3, 29, 22, tzinfo=UTC)
    one_hour = pause_end(at("2026-10-25", "01:30"), 60)  # an hour of real time, not wall time
    # (an instant in the repeated hour never equals one in another zone: compare in UTC)
    assert one_hour.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert one_hour.astimezone(BERLIN).fold == 0 and one_hour.astimezone(BERLIN).hour == 2


def test_now_must_be_aware():
    with pytest.raises(ValueError, match="aware"):
        decide(config(BEDTIME), datetime(2026, 12, 1, 22))


def test_local_zone_follows_tz_and_knows_dst(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    zone = local_zone()
    assert datetime(2026, 7, 1, tzinfo=zone).utcoffset() == timedelta(hours=2)
    assert datetime(2026, 12, 1, tzinfo=zone).utcoffset() == timedelta(hours=1)
    monkeypatch.setenv("TZ", ":America/New_York")
    assert datetime(2026, 7, 1, tzinfo=local_zone()).utcoffset() == timedelta(hours=-4)
