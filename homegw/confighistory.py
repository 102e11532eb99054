"""The last applied configs, kept under ``<state_dir>/config-history/``.

Each applied config is written as ``<version>.yaml`` next to ``index.json``
(version, when, which keys changed), both atomically; the oldest beyond
KEEP are removed. Versions only grow, also across restarts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from homegw.atomicfile import write_atomic
from homegw.config import Config, ConfigError, load_config, save_config
from homegw.control import NotFound

log = logging.getLogger(__name__)

KEEP = 10


class ConfigHistory:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.index_path = directory / "index.json"

    def _index(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("config history %s unreadable (%s): starting anew", self.index_path, exc)
            return []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("version"), int)]

    def record(self, config: Config, changed: list[str], applied_at: float) -> int:
        """Keep `config` as the newest entry; returns its version."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        entries = self._index()
        on_disk = [int(p.stem) for p in self.directory.glob("*.yaml") if p.stem.isdigit()]
        version = max([e["version"] for e in entries] + on_disk, default=0) + 1
        save_config(config, self.directory / f"{version}.yaml")
        entries.append({"version": version, "applied_at": applied_at, "changed": changed})
        kept, dropped = entries[-KEEP:], entries[:-KEEP]
        write_atomic(self.index_path, json.dumps(kept, indent=1).encode())
        for entry in dropped:
            (self.directory / f"{entry['version']}.yaml").unlink(missing_ok=True)
        return version

    def entries(self) -> list[dict[str, Any]]:
        """Newest first; the newest is the running config."""
        entries = list(reversed(self._index()))
        return [{**e, "current": i == 0} for i, e in enumerate(entries)]

    def current_version(self) -> int:
        entries = self._index()
        return entries[-1]["version"] if entries else 0

    def load(self, version: int) -> Config:
        if not any(e["version"] == version for e in self._index()):
            raise NotFound(f"config version {version} is not kept (the last {KEEP} are)")
        try:
            return load_config(self.directory / f"{version}.yaml")
        except (OSError, ConfigError) as exc:
            raise NotFound(f"config version {version} cannot be read: {exc}") from exc
