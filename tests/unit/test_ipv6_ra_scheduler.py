"""The RA schedule (RFC 4861 6.2.4/6.2.6) on a fake clock."""

from __future__ import annotations

import random

import pytest

from homegw.modules.ipv6.ra import RaScheduler, min_interval


class FixedRng(random.Random):
    """uniform(a, b) gives the point `fraction` of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def run(scheduler: RaScheduler, until: float) -> list[float]:
    """Send every RA that falls due before `until`; the send times."""
    times = []
    while scheduler.due < until:
        times.append(scheduler.due)
        scheduler.sent(scheduler.due)
    return times


def test_min_interval_defaults() -> None:
    assert min_interval(200) == pytest.approx(66)
    assert min_interval(8) == 6


def test_first_ra_at_once_then_three_at_most_16_s_apart() -> None:
    scheduler = RaScheduler(200, now=100.0, rng=FixedRng(1.0))
    assert scheduler.is_due(100.0)
    times = run(scheduler, 100.0 + 500)
    assert times[:5] == [100.0, 116.0, 132.0, 148.0, 348.0]


def test_unsolicited_intervals_stay_within_min_and_max() -> None:
    scheduler = RaScheduler(30, now=0.0, rng=random.Random(7))
    times = run(scheduler, 5000.0)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g <= 16 for g in gaps[:3])
    assert all(0.33 * 30 <= g <= 30 for g in gaps[3:])
    assert max(gaps[3:]) > 25 and min(gaps[3:]) < 14  # random, not fixed


def test_rs_answered_within_half_a_second() -> None:
    scheduler = RaScheduler(200, now=0.0, rng=FixedRng(1.0))
    run(scheduler, 200)  # initial ones done; next one far away
    assert scheduler.due == 248.0
    scheduler.solicited(210.0)
    assert scheduler.due == 210.5
    scheduler.sent(210.5)
    assert scheduler.due == 210.5 + 200


def test_rs_right_after_an_ra_waits_for_min_delay_between_ras() -> None:
    scheduler = RaScheduler(200, now=0.0, rng=FixedRng(0.5))
    scheduler.sent(50.0)
    scheduler.solicited(51.0)
    assert scheduler.due == 50.0 + 3 + 0.25
    # more solicitations in between do not move it
    scheduler.solicited(51.5)
    scheduler.solicited(52.0)
    assert scheduler.due == 53.25


def test_rs_when_an_ra_is_due_sooner_changes_nothing() -> None:
    scheduler = RaScheduler(200, now=0.0, rng=FixedRng(1.0))
    scheduler.sent(10.0)  # next at 26 (initial)
    scheduler._due = 20.1  # an RA already due in 0.1 s
    scheduler.solicited(20.0)
    assert scheduler.due == 20.1


def test_change_sends_soon_rate_limited_then_like_start_up() -> None:
    scheduler = RaScheduler(200, now=0.0, rng=FixedRng(1.0))
    run(scheduler, 200)
    assert scheduler.due == 248.0
    scheduler.changed(220.0)
    assert scheduler.due == 220.0
    assert run(scheduler, 300.0) == [220.0, 236.0, 252.0, 268.0]
    assert scheduler.due == 468.0
    # a change 1 s after an RA waits until 3 s after it
    scheduler.sent(2000.0)
    scheduler.changed(2001.0)
    assert scheduler.due == 2003.0
