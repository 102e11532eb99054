"""systemd's notify protocol (sd_notify(3)) in the few lines it takes: one
datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a
leading "@" is the abstract namespace). Without $NOTIFY_SOCKET (not started
by systemd with Type=notify) every call does nothing.

The watchdog pings WATCHDOG=1 at half of $WATCHDOG_USEC while a health
check passes; when the check fails (or raises) it stops pinging, so systemd
kills and restarts a process that is alive but no longer working.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

from homegw import supervise

log = logging.getLogger(__name__)


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=...");
    False when there is no socket to send to or the send failed."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify %s to %r failed: %s", message.split("=")[0], address, exc)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when systemd
    wants none for this process."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number: no watchdog pings", usec)
        return None


class Watchdog:
    def __init__(
        self,
        healthy: Callable[[], bool],
        interval_s: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._healthy = healthy
        self._interval = interval_s
        self._env = env
        self._stop = threading.Event()
        self._thread = supervise.Thread(self._run, "sd-watchdog")

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _check(self) -> bool:
        try:
            return bool(self._healthy())
        except Exception:
            log.exception("watchdog health check raised")
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._check():
                notify("WATCHDOG=1", self._env)
            else:
                log.error("unhealthy: no watchdog ping (systemd restarts us at its timeout)")
            self._stop.wait(self._interval)


def ready(healthy: Callable[[], bool], status: str = "") -> Watchdog | None:
    """Tell systemd the service is up and start the watchdog it asked for."""
    notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
    interval = watchdog_interval()
    return Watchdog(healthy, interval).start() if interval else None
