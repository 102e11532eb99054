"""Keeps the URL block lists downloaded while the DNS service runs: a
supervised thread that refreshes them (DnsService.refresh_blocklists:
download, reload, swap the policy in) when the oldest copy is a day old or
missing, and again RETRY_S after a failed download (at a start the WAN often
has no address yet), doubled after each failure in a row up to an hour. It
never delays a start or a stop: it waits on an event that stop() sets, and a
download in flight (at most FETCH_TIMEOUT) ends on its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from homegw import supervise

log = logging.getLogger(__name__)

EVERY_S = 24 * 3600.0
RETRY_S = 60.0  # after a failed download, doubled each time up to MAX_RETRY_S
MAX_RETRY_S = 3600.0


class ListRefresher:
    def __init__(
        self,
        refresh: Callable[[], dict[str, str]],
        urls: list[str],
        first_delay: float,
        every_s: float = EVERY_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._refresh = refresh
        self.urls = urls
        self.first_delay = max(0.0, first_delay)
        self.every_s = every_s
        self.retry_s = retry_s
        self._stop = threading.Event()
        self.runs = 0

    def start(self) -> None:
        supervise.Thread(target=self._run, name="dns-lists", restart=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        if self._stop.wait(self.first_delay):
            return
        retry = self.retry_s
        while True:
            try:
                problems = self._refresh()
            except Exception:  # a bug, not the network: log it, keep the old lists
                log.exception("refreshing the block lists failed")
                problems = dict.fromkeys(self.urls, "refresh failed")
            self.runs += 1
            failed = [url for url in self.urls if url in problems]
            if failed:
                log.info("block lists: retrying %s in %.0f s", ", ".join(failed), retry)
                wait, retry = retry, min(retry * 2, MAX_RETRY_S)
            else:
                wait, retry = self.every_s, self.retry_s
            if self._stop.wait(wait):
                return


def first_delay(updated: list[float | None], every_s: float = EVERY_S) -> float:
    """Seconds until the oldest of the copies (download times; None: none
    yet) is `every_s` old: 0 when one is missing."""
    if not updated or any(t is None for t in updated):
        return 0.0
    oldest = min(t for t in updated if t is not None)
    return max(0.0, oldest + every_s - time.time())
