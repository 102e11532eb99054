"""Alerts: each code on and off, driven by snapshots and `now`."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest

from homegw.alerts import FLOOD_COUNTERS, AlertWatch, Snapshot, link_up, snapshot_of
from homegw.config import parse_config

QUIET = Snapshot(
    wan_interface="wan0",
    wan_mode="dhcp",
    wan_lease=True,
    wan_link_up=True,
    pool_size=100,
    pool_used=10,
    drops={"firewall": {"wan_passed": 5, "wan_to_lan": 0}, "nat": {"translated_out": 9}},
)
T0 = 10_000.0


def codes(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["code"] for a in alerts]


def one(alerts: list[dict[str, Any]], code: str) -> dict[str, Any]:
    (alert,) = [a for a in alerts if a["code"] == code]
    assert set(alert) == {"code", "severity", "message", "since"}
    return alert


def test_a_quiet_gateway_has_no_alert() -> None:
    watch = AlertWatch()
    assert watch.evaluate(QUIET, T0) == []
    assert watch.evaluate(QUIET, T0 + 30) == []


def test_wan_down_without_a_lease_in_dhcp_mode() -> None:
    watch = AlertWatch()
    assert watch.evaluate(QUIET, T0) == []
    lost = replace(QUIET, wan_lease=False)
    alert = one(watch.evaluate(lost, T0 + 5), "wan_down")
    assert alert["severity"] == "critical" and "no DHCP lease on wan0" in alert["message"]
    assert alert["since"] == T0 + 5
    assert one(watch.evaluate(lost, T0 + 9), "wan_down")["since"] == T0 + 5  # still then
    assert watch.evaluate(QUIET, T0 + 10) == []
    assert one(watch.evaluate(lost, T0 + 20), "wan_down")["since"] == T0 + 20  # a new outage
    static = replace(QUIET, wan_mode="static", wan_lease=False)
    assert watch.evaluate(static, T0 + 30) == []  # no lease to have


def test_wan_down_when_the_link_is_down_in_any_mode() -> None:
    watch = AlertWatch()
    down = replace(QUIET, wan_mode="static", wan_link_up=False)
    alert = one(watch.evaluate(down, T0), "wan_down")
    assert "link wan0 is down" in alert["message"]
    assert alert["since"] is None  # there at the first look: began before anyone looked
    assert watch.evaluate(replace(down, wan_link_up=None), T0 + 1) == []  # unknown: no alert


@pytest.mark.parametrize(
    ("used", "severity"), [(89, None), (90, "warning"), (99, "warning"), (100, "critical")]
)
def test_pool_nearly_full_at_90_percent(used: int, severity: str | None) -> None:
    alerts = AlertWatch().evaluate(replace(QUIET, pool_used=used), T0)
    if severity is None:
        assert alerts == []
    else:
        alert = one(alerts, "pool_nearly_full")
        assert alert["severity"] == severity and f"{used} of the 100" in alert["message"]


def test_no_pool_alert_without_a_dhcp_server() -> None:
    assert AlertWatch().evaluate(replace(QUIET, pool_size=0, pool_used=0), T0) == []


def flood(firewall: int = 0, nat: int = 0, dhcp: int = 0) -> Snapshot:
    return replace(
        QUIET,
        drops={
            "firewall": {"wan_passed": 10**9, "wan_to_lan": firewall, "wan_martian_source": 1},
            "nat": {"translated_in": 10**9, "inbound_budget_full": nat},
            "dhcp": {"checked": 10**9, "dropped_arp": dhcp},
        },
    )


def test_flood_drops_over_the_threshold_in_the_last_minute() -> None:
    watch = AlertWatch(threshold=1000)
    assert watch.evaluate(flood(), T0) == []  # the first look: no baseline
    assert watch.evaluate(flood(firewall=600, nat=400), T0 + 10) == []  # 1000: not more
    alert = one(watch.evaluate(flood(firewall=700, nat=400, dhcp=1), T0 + 20), "flood_drops")
    assert alert["severity"] == "warning" and alert["since"] == T0 + 20
    assert "1101 packets" in alert["message"]
    assert "dhcp 1, firewall 700, nat 400" in alert["message"]
    # the baseline moves: a minute after the last rise, the drops of then are old
    assert watch.evaluate(flood(firewall=700, nat=400, dhcp=1), T0 + 50)  # still in the minute
    assert watch.evaluate(flood(firewall=700, nat=400, dhcp=1), T0 + 85) == []


def test_only_the_flood_counters_count() -> None:
    watch = AlertWatch(threshold=10)
    watch.evaluate(flood(), T0)
    busy = flood()
    busy.drops["firewall"]["wan_passed"] += 10**6  # passed packets are no drops
    busy.drops["router"] = {"dropped_no_route": 10**6}  # not a flood counter
    assert watch.evaluate(busy, T0 + 5) == []
    assert "wan_passed" not in FLOOD_COUNTERS["firewall"]


def test_a_module_without_a_baseline_is_not_a_flood() -> None:
    watch = AlertWatch(threshold=10)
    watch.evaluate(replace(QUIET, drops={}), T0)
    assert watch.evaluate(flood(firewall=10**6), T0 + 5) == []  # loaded since: no baseline
    assert codes(watch.evaluate(flood(firewall=10**6 + 11), T0 + 6)) == []  # base is T0 still
    assert codes(watch.evaluate(flood(firewall=10**6 + 11), T0 + 70)) == []
    assert codes(watch.evaluate(flood(firewall=10**6 + 30), T0 + 71)) == ["flood_drops"]


def test_looks_further_apart_than_a_minute_average_the_rise() -> None:
    watch = AlertWatch(threshold=1000)
    watch.evaluate(flood(), T0)
    # 3000 drops over 5 minutes: 600 a minute, under the threshold
    assert watch.evaluate(flood(firewall=3000), T0 + 300) == []
    # 3000 more over the next 2 minutes: 1500 a minute
    assert codes(watch.evaluate(flood(firewall=6000), T0 + 420)) == ["flood_drops"]


def test_a_counter_that_restarts_at_zero_is_not_a_negative_rise() -> None:
    watch = AlertWatch(threshold=100)
    watch.evaluate(flood(firewall=5000), T0)
    assert watch.evaluate(flood(firewall=50), T0 + 5) == []  # the module reloaded
    assert codes(watch.evaluate(flood(firewall=50, nat=200), T0 + 6)) == ["flood_drops"]


def test_module_failed_for_a_missing_module_and_a_dead_thread() -> None:
    watch = AlertWatch()
    assert watch.evaluate(QUIET, T0) == []
    missing = replace(QUIET, missing_modules=("nat",))
    (alert,) = watch.evaluate(missing, T0 + 1)
    assert alert == {
        "code": "module_failed",
        "severity": "critical",
        "message": "module nat is enabled but not loaded (see the logs)",
        "since": T0 + 1,
    }
    assert watch.evaluate(QUIET, T0 + 2) == []  # loaded again
    watch.thread_died("thread dhcp-server stopped after a crash", now=T0 + 3)
    (dead,) = watch.evaluate(QUIET, T0 + 4)
    assert dead["code"] == "module_failed" and dead["since"] == T0 + 3
    assert "dhcp-server" in dead["message"]


def test_several_alerts_at_once_in_a_fixed_order() -> None:
    watch = AlertWatch()
    bad = replace(QUIET, wan_lease=False, pool_used=100, missing_modules=("dns", "nat"))
    found = watch.evaluate(bad, T0)
    assert codes(found) == ["wan_down", "pool_nearly_full", "module_failed", "module_failed"]
    assert all(a["since"] is None for a in found)


def test_link_state_of_real_links() -> None:
    assert link_up("lo") is True
    assert link_up("no-such-link0") is False


def test_the_snapshot_of_a_running_appliance() -> None:
    """snapshot_of reads the pool (leases and reservations inside the range),
    the flood counters of the loaded modules and what is missing."""
    config = parse_config(
        {
            "wan": {"interface": "lo", "mode": "static", "address": "10.9.9.2/24",
                    "gateway": "10.9.9.1"},
            "lan": {"interface": "lan0", "address": "192.168.7.1/24"},
            "dhcp": {
                "range_start": "192.168.7.100",
                "range_end": "192.168.7.109",
                "reservations": [
                    {"mac": "02:00:00:00:00:01", "address": "192.168.7.100"},  # also leased
                    {"mac": "02:00:00:00:00:02", "address": "192.168.7.101"},
                    {"mac": "02:00:00:00:00:03", "address": "192.168.7.20"},  # outside
                ],
            },
        }
    )  # fmt: skip
    leases = [SimpleNamespace(address=int(IPv4Address(f"192.168.7.{n}"))) for n in (100, 105)]
    settings = SimpleNamespace(range_start=config.dhcp.range_start, range_end=config.dhcp.range_end)
    firewall = SimpleNamespace(counters=lambda: {"wan_to_lan": 7, "wan_passed": 100})
    app = SimpleNamespace(
        config=config,
        dhcp=SimpleNamespace(settings=settings, leases=lambda: leases),
        dataplane=SimpleNamespace(modules={"firewall": SimpleNamespace(module=firewall)}),
        wan_client=None,
        missing_modules=lambda: ["nat"],
    )
    snap = snapshot_of(app)  # type: ignore[arg-type]
    assert (snap.pool_size, snap.pool_used) == (10, 3)
    assert snap.drops == {"firewall": {"wan_to_lan": 7, "wan_passed": 100}}
    assert snap.missing_modules == ("nat",)
    assert (snap.wan_mode, snap.wan_lease, snap.wan_link_up) == ("static", False, True)
