"""The DPI slow path (DpiService) driving the real datapath on a fake clock:
a bedtime schedule blocks an established flow at 21:00 and lets it go at
07:00; a daily budget runs out and resets at midnight; a pause ends on time.
Each verdict is the datapath's, through BPF_PROG_TEST_RUN."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from homegw.modules.dpi import categories
from homegw.modules.dpi.config import DpiConfig
from homegw.modules.dpi.service import DpiService
from tests.datapath.dpi_kit import DpiGateway, key, rst_answer, tcp_up
from tests.datapath.router_kit import HOST_MAC

BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def gateway(dataplane) -> DpiGateway:
    return DpiGateway(dataplane)


def service_for(gateway: DpiGateway, tmp_path: Path, clock: Clock, **section) -> DpiService:
    config = DpiConfig.model_validate({"enabled": True, **section})
    service = DpiService(
        config,
        tmp_path,
        gateway.maps,
        local_now=clock,
        on_policy_change=lambda: gateway.dpi.invalidate_fastpath("dpi policy changed"),
    )  # wired as DpiModule wires it: a classified flow is on the fast path
    service.tick()
    return service


def blocked(gateway: DpiGateway, sport: int) -> bool:
    """Whether the datapath answers the flow's next client segment with a RST."""
    frame = tcp_up(sport, b"data")
    result = gateway.lan(frame)
    if result.data == rst_answer(frame):
        return True
    assert result.verdict == "XDP_REDIRECT" and result.data != frame  # routed on
    return False


def test_a_bedtime_schedule_blocks_at_its_start_and_releases_at_its_end(
    gateway: DpiGateway, tmp_path: Path
) -> None:
    clock = Clock(datetime(2026, 12, 1, 20, 59, 50, tzinfo=BERLIN))  # a Tuesday
    bedtime = {
        "name": "bedtime",
        "who": [HOST_MAC],
        "block_all": True,
        "schedule": [
            {"days": ["mon", "tue", "wed", "thu", "sun"], "start": "21:00", "end": "07:00"}
        ],
    }
    service = service_for(gateway, tmp_path, clock, rules=[bedtime])
    assert not blocked(gateway, 40001)  # an established flow before bedtime
    assert service.decision is not None
    assert service.decision.next_change == datetime(2026, 12, 1, 21, 0, tzinfo=BERLIN)
    assert service.tick() == pytest.approx(10.0)  # the timer wakes at 21:00 exactly
    clock.now = datetime(2026, 12, 1, 21, 0, tzinfo=BERLIN)
    service.tick()
    assert blocked(gateway, 40001)  # the same flow, cut at its next segment
    assert blocked(gateway, 40002)  # and a new one
    clock.now = datetime(2026, 12, 2, 6, 59, 59, tzinfo=BERLIN)
    service.tick()
    assert blocked(gateway, 40001)
    clock.now = datetime(2026, 12, 2, 7, 0, tzinfo=BERLIN)
    service.tick()
    assert not blocked(gateway, 40001)


def test_a_daily_budget_runs_out_and_resets_at_midnight(
    gateway: DpiGateway, tmp_path: Path
) -> None:
    clock = Clock(datetime(2026, 12, 1, 10, 0, 5, tzinfo=BERLIN))
    games = {"name": "games", "who": [HOST_MAC], "block_categories": ["games"], "budget_minutes": 2}
    service = service_for(gateway, tmp_path, clock, rules=[games])
    roblox = service.ids.number("roblox")
    gateway.lan(tcp_up(40010, b"hello"))  # the flow starts, then the slow path classifies it
    gateway.maps.classify(key(40010), roblox, categories.category_number("games"), "sni")
    for minute in range(2):  # two minutes of play
        clock.now = datetime(2026, 12, 1, 10, minute, 30, tzinfo=BERLIN)
        assert not blocked(gateway, 40010)
        service.tick()
    assert blocked(gateway, 40010)  # the budget is spent
    state = service.parental()["devices"][0]
    assert state["budgets"] == [
        {"rule": "games", "used_minutes": 2, "limit_minutes": 2, "exhausted": True}
    ]
    clock.now = datetime(2026, 12, 1, 23, 59, 50, tzinfo=BERLIN)
    service.tick()
    assert blocked(gateway, 40010)
    clock.now = datetime(2026, 12, 2, 0, 0, 1, tzinfo=BERLIN)
    service.tick()
    assert not blocked(gateway, 40010)  # a new day, a new budget


def test_a_pause_ends_on_time(gateway: DpiGateway, tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 15, 0, tzinfo=BERLIN))
    until = clock.now + timedelta(minutes=30)
    service = service_for(gateway, tmp_path, clock, pauses=[{"who": HOST_MAC, "until": until}])
    assert blocked(gateway, 40020)
    assert service.decision is not None and service.decision.next_change == until
    clock.now = until - timedelta(seconds=1)
    service.tick()
    assert blocked(gateway, 40020)
    clock.now = until
    service.tick()
    assert not blocked(gateway, 40020)
