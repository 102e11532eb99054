"""Trial mode: the pure Trial with a fake clock, TrialWatch with a fake probe."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address, IPv4Interface

import pytest

from homegw.usermodules.health import CheckResult, HealthTargets
from homegw.usermodules.trial import Trial, TrialWatch

T0 = 1_000_000.0
ADMIN = IPv4Address("192.168.1.10")
TARGETS = HealthTargets(
    wan_ifname="wan0",
    wan_gateway=IPv4Address("203.0.113.1"),
    lan_ifname="lan0",
    lan_address=IPv4Interface("192.168.1.1/24"),
    dhcp_on=True,
    admin=None,
    lan_xdp_root_fd=-1,
    lan_ifindex=2,
)


def results(wan: bool | None = True, dhcp: bool | None = True, admin: bool | None = True):
    return [
        CheckResult("wan", wan, "wan detail"),
        CheckResult("dhcp", dhcp, "dhcp detail"),
        CheckResult("admin", admin, "admin detail"),
    ]


def trial(window_s: float = 60, **baseline) -> Trial:
    return Trial(T0, window_s, results(**baseline))


# -- Trial ------------------------------------------------------------------------------


def test_expires_exactly_at_the_end_of_the_window() -> None:
    t = trial()
    assert t.observe(results(), T0 + 59.999) is None
    assert t.observe(results(), T0 + 60) == "not confirmed within 60 s"
    assert t.status(T0 + 60)["remaining_s"] == 0


def test_three_failures_in_a_row_revert_with_the_checks_detail() -> None:
    t = trial()
    assert t.observe(results(dhcp=False), T0 + 1) is None
    assert t.observe(results(dhcp=False), T0 + 2) is None
    reason = t.observe(results(dhcp=False), T0 + 3)
    assert reason == "health check dhcp failed 3 times in a row: dhcp detail"


def test_intermittent_failures_never_revert() -> None:
    t = trial()
    for second in range(1, 50):
        failing = second % 3 != 0  # two failures, then one success, over and over
        assert t.observe(results(admin=not failing), T0 + second) is None


def test_failures_of_different_checks_do_not_add_up() -> None:
    t = trial()
    assert t.observe(results(wan=False), T0 + 1) is None
    assert t.observe(results(dhcp=False), T0 + 2) is None
    assert t.observe(results(admin=False), T0 + 3) is None
    assert t.observe(results(wan=False), T0 + 4) is None


def test_a_check_failing_in_the_baseline_is_not_held_against_the_module() -> None:
    t = trial(admin=False)
    for second in range(1, 10):
        assert t.observe(results(admin=False), T0 + second) is None
    checks = {c["name"]: c for c in t.status(T0 + 10)["checks"]}
    assert checks["admin"]["ok"] is None
    assert "before the module went in" in checks["admin"]["detail"]
    assert checks["wan"] == {"name": "wan", "ok": True, "detail": "wan detail"}


def test_a_check_that_did_not_apply_in_the_baseline_is_not_held() -> None:
    t = trial(wan=None)
    for second in range(1, 5):
        assert t.observe(results(wan=False), T0 + second) is None


def test_a_check_that_stops_applying_is_no_failure() -> None:
    t = trial()
    assert t.observe(results(wan=False), T0 + 1) is None
    assert t.observe(results(wan=False), T0 + 2) is None
    assert t.observe(results(wan=None), T0 + 3) is None
    assert t.observe(results(wan=False), T0 + 4) is None


def test_the_reason_comes_once() -> None:
    t = trial(window_s=10)
    assert t.observe(results(), T0 + 10) == "not confirmed within 10 s"
    assert t.observe(results(), T0 + 11) is None
    assert t.reason == "not confirmed within 10 s"


def test_status_before_any_round_shows_the_baseline() -> None:
    t = trial()
    status = t.status(T0 + 15)
    assert status["ends_at"] == T0 + 60 and status["remaining_s"] == 45
    assert [c["ok"] for c in status["checks"]] == [True, True, True]


# -- TrialWatch -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeProbe:
    def __init__(self) -> None:
        self.next = results()
        self.calls: list[HealthTargets] = []

    def __call__(self, targets: HealthTargets, timeout_s: float) -> list[CheckResult]:
        self.calls.append(targets)
        return list(self.next)


class Reverts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.arrived = threading.Event()

    def __call__(self, name: str, reason: str) -> None:
        self.calls.append((name, reason))
        self.arrived.set()


@pytest.fixture
def kit():
    clock, probe, reverts = FakeClock(), FakeProbe(), Reverts()
    watch = TrialWatch(lambda: TARGETS, reverts, clock=clock, probe=probe)
    return watch, clock, probe, reverts


def test_watch_reverts_once_at_expiry(kit) -> None:
    watch, clock, _probe, reverts = kit
    watch.begin("blk", 60, results(), ADMIN)
    clock.now = T0 + 59
    watch.check_now()
    assert reverts.calls == [] and watch.status("blk")["remaining_s"] == 1
    clock.now = T0 + 60
    watch.check_now()
    watch.check_now()
    assert reverts.calls == [("blk", "not confirmed within 60 s")]
    assert watch.status("blk") is None


def test_watch_reverts_once_after_three_failures(kit) -> None:
    watch, clock, probe, reverts = kit
    watch.begin("blk", 60, results(), ADMIN)
    probe.next = results(dhcp=False)
    for second in range(1, 7):
        clock.now = T0 + second
        watch.check_now()
    assert reverts.calls == [("blk", "health check dhcp failed 3 times in a row: dhcp detail")]


def test_watch_end_before_expiry_never_reverts(kit) -> None:
    watch, clock, probe, reverts = kit
    watch.begin("blk", 60, results(), ADMIN)
    watch.check_now()
    watch.end("blk")
    probe.calls.clear()
    clock.now = T0 + 120
    watch.check_now()
    assert reverts.calls == [] and probe.calls == []  # nothing on trial: no probe either


def test_watch_probes_with_the_trials_admin(kit) -> None:
    watch, _clock, probe, _reverts = kit
    assert watch.baseline(ADMIN) == results()
    watch.begin("a", 60, results(), ADMIN)
    watch.begin("b", 60, results(), ADMIN)
    probe.calls.clear()
    watch.check_now()
    assert [c.admin for c in probe.calls] == [ADMIN]  # one probe for both trials
    watch.begin("c", 60, results(), None)
    probe.calls.clear()
    watch.check_now()
    assert sorted(str(c.admin) for c in probe.calls) == ["192.168.1.10", "None"]


def test_watch_without_targets_holds_nothing(kit) -> None:
    _watch, clock, probe, reverts = kit
    watch = TrialWatch(lambda: None, reverts, clock=clock, probe=probe)
    assert [r.ok for r in watch.baseline(ADMIN)] == [None, None, None]
    watch.begin("blk", 60, results(), ADMIN)
    for second in range(1, 10):
        clock.now = T0 + second
        watch.check_now()
    assert reverts.calls == [] and probe.calls == []


def test_watch_survives_a_failing_revert(kit) -> None:
    watch, clock, _probe, _reverts = kit
    seen = []

    def bad_revert(name: str, reason: str) -> None:
        seen.append(name)
        raise RuntimeError("boom")

    watch = TrialWatch(lambda: TARGETS, bad_revert, clock=clock, probe=FakeProbe())
    watch.begin("blk", 1, results(), ADMIN)
    clock.now = T0 + 1
    watch.check_now()
    watch.check_now()
    assert seen == ["blk"]


def test_watch_thread_reverts_on_failures_and_stops(kit) -> None:
    _watch, clock, probe, reverts = kit
    watch = TrialWatch(lambda: TARGETS, reverts, interval_s=0.01, clock=clock, probe=probe)
    watch.start()
    try:
        probe.next = results(wan=False)
        watch.begin("blk", 60, results(), ADMIN)
        assert reverts.arrived.wait(10)
    finally:
        watch.stop()
    assert reverts.calls == [("blk", "health check wan failed 3 times in a row: wan detail")]
    assert watch._thread is None


def test_watch_thread_idle_without_trials_wakes_on_begin(kit) -> None:
    _watch, clock, probe, reverts = kit
    # an hour-long interval: only begin's Event can wake the thread for the first round
    watch = TrialWatch(lambda: TARGETS, reverts, interval_s=3600, clock=clock, probe=probe)
    watch.start()
    try:
        watch.begin("blk", 0, results(), ADMIN)  # over as soon as the thread looks
        assert reverts.arrived.wait(10)
    finally:
        watch.stop()
    assert reverts.calls == [("blk", "not confirmed within 0 s")]
