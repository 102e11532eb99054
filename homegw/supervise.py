"""Supervision of every thread and event loop of the appliance.

A thread that dies with an exception never stops silently: it is logged and
counted, then either started again (``restart=True``: loops whose body can
simply run again, with a growing pause, at most MAX_RESTARTS times a
RESTART_WINDOW) or reported as fatal, after which `homegw run` stops and
exits non-zero so that systemd starts it again (the dataplane stays attached
meanwhile). An asyncio loop gets an exception handler that logs and counts
what its callbacks raise instead of asyncio's default print.

    supervise.Thread(target=self._run, name="dhcp-server")   # fatal on a crash
    supervise.Thread(target=self._age_loop, name="router-aging", restart=True)
    supervise.watch_loop(loop, "dns-loop")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0  # seconds
FIRST_PAUSE = 0.5  # seconds before the first restart, doubled each time, at most
MAX_PAUSE = 10.0

#: crashes per thread or loop name (thread exceptions and loop callback errors)
failures: Counter[str] = Counter()
#: restarts per thread name
restarts: Counter[str] = Counter()
_fatal_listeners: list[Callable[[str], None]] = []
_lock = threading.Lock()


def on_fatal(listener: Callable[[str], None]) -> None:
    """Call listener(reason) when a supervised thread dies for good."""
    with _lock:
        _fatal_listeners.append(listener)


def _fatal(reason: str) -> None:
    log.critical("%s: the appliance cannot go on without it", reason)
    with _lock:
        listeners = list(_fatal_listeners)
    for listener in listeners:
        try:
            listener(reason)
        except Exception:
            log.exception("a fatal-error listener failed")


class Thread(threading.Thread):
    """A daemon thread under supervision (see the module docstring)."""

    def __init__(
        self,
        target: Callable[..., Any],
        name: str,
        args: tuple = (),
        restart: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._body = target
        self._body_args = args
        self._restart = restart
        self._clock = clock
        self._crashes: list[float] = []

    def run(self) -> None:
        pause = FIRST_PAUSE
        while True:
            try:
                self._body(*self._body_args)
                return
            except Exception:
                failures[self.name] += 1
                log.exception("thread %s crashed", self.name)
            if not self._restart or not self._may_restart():
                _fatal(f"thread {self.name} stopped after a crash")
                return
            restarts[self.name] += 1
            log.warning("restarting thread %s in %.1f s", self.name, pause)
            time.sleep(pause)  # a back-off, not a synchronisation
            pause = min(pause * 2, MAX_PAUSE)

    def _may_restart(self) -> bool:
        now = self._clock()
        self._crashes = [t for t in self._crashes if now - t < RESTART_WINDOW] + [now]
        return len(self._crashes) <= MAX_RESTARTS


def watch_loop(loop: asyncio.AbstractEventLoop, name: str) -> None:
    """Log and count what the loop's callbacks and tasks raise."""

    def handle(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        failures[name] += 1
        error = context.get("exception")
        log.error(
            "%s: %s", name, context.get("message", "error"), exc_info=error if error else None
        )

    loop.set_exception_handler(handle)


class LoopThread:
    """A supervised thread running one asyncio coroutine, `serve()`, until
    stop(); start() returns once serve() called `self.ready()`. The base of
    the netlink watchers (subclasses define serve)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        self._thread = Thread(self._run, name)

    async def serve(self) -> None:
        raise NotImplementedError

    def ready(self) -> None:
        self._started.set()

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self._loop and self._task:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        watch_loop(self._loop, self.name)
        self._task = asyncio.current_task()
        await self.serve()
