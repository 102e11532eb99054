"""Trial mode of a user module ("commit confirmed"): revert unless confirmed.

`Trial` is the pure state of one trial (times passed in as `now`): the
window, the baseline the health checks had just before the module went in,
and the run of failures of each check since. A check that failed (or could
not run) in the baseline is not held against the module: it shows ok=None.
`observe()` answers the reason to revert once a held check failed
FAILURES_TO_REVERT times in a row (one success in between starts the count
again), or once the window is over, and only once per trial.

`TrialWatch` runs every trial in one supervised thread: it sleeps on an
Event (set by begin, end and stop) with the probe interval as its only
timer, and with no trial running it waits for the Event alone. Each round
probes the home once per distinct admin address (usually one round, one
probe for every trial), then calls `revert(name, reason)` for each trial
that must go, outside its lock, once per trial. A revert can cross a
confirm that arrived while the round was probing: the callee checks that
the module is still on trial (a Conflict there is the confirm winning).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from homegw import supervise
from homegw.usermodules import health
from homegw.usermodules.health import CheckResult, HealthTargets

log = logging.getLogger(__name__)

FAILURES_TO_REVERT = 3
CHECK_NAMES = ("wan", "dhcp", "admin")
# each probe's bound: the DHCP server probes an address by ARP for 0.5 s
# before it offers it, so 1 s left a loaded machine half a second; three
# rounds in a row must fail before a revert either way
PROBE_TIMEOUT_S = 2.0

Probe = Callable[[HealthTargets, float], list[CheckResult]]


def _unheld(result: CheckResult) -> CheckResult:
    if result.ok is False:
        detail = f"failing before the module went in ({result.detail}): not held against it"
        return CheckResult(result.name, None, detail)
    return result


@dataclass
class Trial:
    """One module's trial; every time is a unix second passed in."""

    started_at: float
    window_s: float
    baseline: list[CheckResult]
    failures_to_revert: int = FAILURES_TO_REVERT
    reason: str | None = None  # why it reverted, once it did
    _held: frozenset[str] = field(init=False)
    _streaks: dict[str, int] = field(init=False)
    _last: list[CheckResult] = field(init=False)

    def __post_init__(self) -> None:
        self._held = frozenset(r.name for r in self.baseline if r.ok is True)
        self._streaks = dict.fromkeys(self._held, 0)
        self._last = [_unheld(r) for r in self.baseline]

    @property
    def ends_at(self) -> float:
        return self.started_at + self.window_s

    def expired(self, now: float) -> bool:
        return now >= self.ends_at

    def observe(self, results: list[CheckResult], now: float) -> str | None:
        """Take one round of check results; the reason to revert, the first
        time there is one, else None."""
        if self.reason is not None:
            return None
        self._last = [r if r.name in self._held else _unheld(r) for r in results]
        for result in results:
            if result.name not in self._held:
                continue
            streak = self._streaks[result.name] + 1 if result.ok is False else 0
            self._streaks[result.name] = streak
            if streak >= self.failures_to_revert and self.reason is None:
                self.reason = (
                    f"health check {result.name} failed {streak} times in a row: {result.detail}"
                )
        if self.reason is None and self.expired(now):
            self.reason = f"not confirmed within {self.window_s:g} s"
        return self.reason

    def status(self, now: float) -> dict:
        return {
            "ends_at": self.ends_at,
            "remaining_s": max(0.0, self.ends_at - now),
            "checks": [r.as_dict() for r in self._last],
        }


@dataclass
class _Running:
    trial: Trial
    admin: IPv4Address | None


def _not_ready() -> list[CheckResult]:
    return [CheckResult(n, None, "the appliance is not ready") for n in CHECK_NAMES]  # type: ignore[arg-type]


class TrialWatch:
    """Every running trial, probed by one supervised thread (module doc)."""

    def __init__(
        self,
        targets: Callable[[], HealthTargets | None],
        revert: Callable[[str, str], None],
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        probe: Probe = health.probe,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._targets = targets
        self._revert = revert
        self.interval_s = interval_s
        self._clock = clock
        self._probe = probe
        self._probe_timeout_s = probe_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._trials: dict[str, _Running] = {}
        self._thread: supervise.Thread | None = None

    # -- the control side -----------------------------------------------------------

    def baseline(self, admin: IPv4Address | None) -> list[CheckResult]:
        """The checks now, before the module goes in (probes once, here)."""
        targets = self._targets()
        if targets is None:
            return _not_ready()
        return self._probe(dataclasses.replace(targets, admin=admin), self._probe_timeout_s)

    def begin(
        self, name: str, window_s: float, baseline: list[CheckResult], admin: IPv4Address | None
    ) -> None:
        """Start the trial of `name` now (a running one of that name is replaced)."""
        trial = Trial(self._clock(), window_s, list(baseline))
        with self._lock:
            self._trials[name] = _Running(trial, admin)
        log.info("user module %s on trial for %g s", name, window_s)
        self._wake.set()

    def end(self, name: str) -> None:
        """Forget the trial of `name` (confirmed, reverted or deleted)."""
        with self._lock:
            self._trials.pop(name, None)
        self._wake.set()

    def status(self, name: str) -> dict | None:
        with self._lock:
            running = self._trials.get(name)
            return running.trial.status(self._clock()) if running else None

    def start(self) -> None:
        self._stopping = False
        self._thread = supervise.Thread(self._serve, "usermodule-trials", restart=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._probe_timeout_s + 5)
            self._thread = None

    # -- the thread -------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            with self._lock:
                busy = bool(self._trials)
            self._wake.wait(self.interval_s if busy else None)
            self._wake.clear()
            if not self._stopping:
                self.check_now()

    def check_now(self) -> None:
        """One round: probe, observe every trial, revert those that must go."""
        with self._lock:
            running = dict(self._trials)
        if not running:
            return
        rounds: dict[IPv4Address | None, list[CheckResult]] = {}
        targets = self._targets()
        for entry in running.values():
            if entry.admin not in rounds:
                rounds[entry.admin] = self._results(targets, entry.admin)
        now = self._clock()
        due = []
        with self._lock:
            for name, entry in running.items():
                reason = entry.trial.observe(rounds[entry.admin], now)
                if reason is not None and self._trials.get(name) is entry:
                    del self._trials[name]
                    due.append((name, reason))
        for name, reason in due:
            self._revert_one(name, reason)

    def _results(
        self, targets: HealthTargets | None, admin: IPv4Address | None
    ) -> list[CheckResult]:
        if targets is None:
            return _not_ready()
        try:
            return self._probe(dataclasses.replace(targets, admin=admin), self._probe_timeout_s)
        except Exception as exc:  # a broken probe fails no module: it is logged
            log.exception("health probe failed")
            return [CheckResult(n, None, f"probe error: {exc}") for n in CHECK_NAMES]  # type: ignore[arg-type]

    def _revert_one(self, name: str, reason: str) -> None:
        log.warning("reverting user module %s: %s", name, reason)
        try:
            self._revert(name, reason)
        except Exception:
            log.exception("reverting user module %s failed", name)
