"""The audit log of user modules: every upload, replace, confirm, revert,
delete (and refusal, enable, disable, move, map write) with when, who (the
caller's address) and what, one JSON object per line in
``<state_dir>/user-modules/audit.jsonl``, fsynced. Bounded: past MAX_BYTES
the older half goes."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from homegw.atomicfile import write_atomic

log = logging.getLogger(__name__)

MAX_BYTES = 1 << 20


class AuditLog:
    def __init__(self, path: Path, clock=time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()

    def record(
        self, action: str, module: str, version: int | None, caller: str | None, detail: str = ""
    ) -> dict[str, Any]:
        entry = {
            "time": round(self.clock(), 3),
            "action": action,
            "module": module,
            "version": version,
            "caller": caller,
            "detail": detail[:2000],
        }
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(line)
                stream.flush()
                os.fsync(stream.fileno())
            if self.path.stat().st_size > MAX_BYTES:
                self._trim()
        log.info("audit: %s %s v%s by %s %s", action, module, version, caller or "-", detail[:200])
        return entry

    def _trim(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        write_atomic(self.path, "".join(lines[len(lines) // 2 :]).encode(), 0o600)

    def entries(self, limit: int = 100, module: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` entries, newest first (a damaged line is skipped)."""
        if not self.path.exists():
            return []
        out = []
        with self._lock:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if module is None or entry.get("module") == module:
                out.append(entry)
            if len(out) >= limit:
                break
        return out
