"""The last log records of this process, in memory, for the web UI's logs page.

A logging handler on the root logger keeps the newest ``CAPACITY`` records
(a bounded ring behind a lock: any thread may log). Each record is kept as
plain text: its message (cut to ``MAX_MESSAGE`` characters, a traceback
appended), its level, its logger and the module it belongs to. The UI escapes
the text; nothing here is markup.

The module of a record comes from its logger's name:

    homegw.modules.<name>[.*]        -> <name>   (router, nat, dhcp, dns, firewall, ...)
    homegw.dataplane[.*]             -> dataplane
    homegw, homegw.<anything else>   -> appliance (appliance, management, cli, supervise, ...)
    webui[.*], waitress[.*]          -> webui
    anything else (pyroute2, asyncio) -> its first dotted part
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

CAPACITY = 2000
MAX_RECORDS = 500  # what one call of records() returns at most
MAX_MESSAGE = 4096  # characters; longer messages are cut
CUT_MARK = " [cut]"
_WEB_LOGGERS = ("webui", "waitress")


def module_of(logger: str) -> str:
    """The module a logger's records belong to (see the module docstring)."""
    parts = logger.split(".")
    top = parts[0]
    if top in _WEB_LOGGERS:
        return "webui"
    if top != "homegw":
        return top or "root"
    if len(parts) >= 3 and parts[1] == "modules":
        return parts[2]
    if len(parts) >= 2 and parts[1] == "dataplane":
        return "dataplane"
    return "appliance"


def _cut(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return text[: MAX_MESSAGE - len(CUT_MARK)] + CUT_MARK


class LogBuffer(logging.Handler):
    """A handler that keeps the last `capacity` records as dicts."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__(logging.NOTSET)
        self._records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock_records = threading.Lock()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._formatter.formatException(record.exc_info)
            entry = {
                "time": record.created,
                "level": record.levelname,
                "module": module_of(record.name),
                "logger": record.name,
                "message": _cut(message),
            }
        except Exception:  # a bad format string: logging's own report, never a crash
            self.handleError(record)
            return
        with self._lock_records:
            self._records.append(entry)

    def records(self, module: str | None = None, limit: int = MAX_RECORDS) -> list[dict[str, Any]]:
        """The newest `limit` (at most MAX_RECORDS) records, oldest first,
        only those of `module` if given."""
        limit = max(0, min(limit, MAX_RECORDS))
        with self._lock_records:
            items = list(self._records)
        if module is not None:
            items = [r for r in items if r["module"] == module]
        return [dict(r) for r in items[len(items) - limit :]] if limit else []

    def __len__(self) -> int:
        with self._lock_records:
            return len(self._records)


_installed: LogBuffer | None = None
_install_lock = threading.Lock()


def install() -> LogBuffer:
    """Put the process's LogBuffer on the root logger (once; `homegw run`
    calls this after configuring logging) and return it."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = LogBuffer()
            logging.getLogger().addHandler(_installed)
        return _installed


def installed() -> LogBuffer | None:
    """The installed LogBuffer, or None when this process keeps no logs."""
    return _installed
