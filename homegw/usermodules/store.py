"""User modules saved under state_dir, so that they come back after a restart.

    <state_dir>/user-modules/modules.json     the confirmed modules, in order
    <state_dir>/user-modules/sources/<sha256>.bpf.c   each version's source

Only confirmed versions are in modules.json: a module on trial when the
process stops is gone at the next start (its trial ended without a confirm),
a replaced module comes back as the version confirmed before. Sources are
named by their hash, so a build's cache key (which covers the path) stays the
same across restarts and the pinned build is reused. Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from homegw.atomicfile import write_atomic
from homegw.dataplane.loader import Define

log = logging.getLogger(__name__)

DIRECTORY = "user-modules"
INDEX = "modules.json"
FIRST_ID, LAST_ID = 100, 999  # punt module ids of user modules (built-ins are < 100)


@dataclass(frozen=True)
class ModuleRecord:
    """One version of a user module: what it is and where it runs."""

    name: str
    module_id: int
    version: int
    nic: str
    hook: str
    position: str
    function: str
    source_sha256: str
    defines: dict[str, Define] = field(default_factory=dict)
    maps: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()
    trial_s: int = 60
    enabled: bool = True
    uploaded_at: float = 0.0
    confirmed_at: float | None = None

    def with_changes(self, **changes: Any) -> ModuleRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["maps"], data["counters"] = list(self.maps), list(self.counters)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["maps"] = tuple(known.get("maps", ()))
        known["counters"] = tuple(known.get("counters", ()))
        return cls(**known)


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


class ModuleStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / DIRECTORY
        self.sources = self.root / "sources"

    def source_path(self, digest: str) -> Path:
        return self.sources / f"{digest}.bpf.c"

    def put_source(self, source: str) -> Path:
        """Keep a source (by its hash); its path."""
        self.sources.mkdir(parents=True, exist_ok=True)
        path = self.source_path(source_digest(source))
        if not path.exists():
            write_atomic(path, source.encode(), 0o600)
        return path

    def source(self, record: ModuleRecord) -> str:
        return self.source_path(record.source_sha256).read_text()

    def load(self) -> list[ModuleRecord]:
        """The confirmed modules in order; an unreadable file is logged and
        read as none (the gateway starts without them rather than not at all)."""
        path = self.root / INDEX
        if not path.exists():
            return []
        try:
            entries = json.loads(path.read_text())["modules"]
            records = [ModuleRecord.from_json(entry) for entry in entries]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read %s (%s): starting without user modules", path, exc)
            return []
        present = [r for r in records if self.source_path(r.source_sha256).exists()]
        for record in records:
            if record not in present:
                log.error("user module %s: its source is missing; left out", record.name)
        return present

    def save(self, records: list[ModuleRecord], in_use: frozenset[str] = frozenset()) -> None:
        """Keep `records` (the confirmed versions, in order); `in_use`: the
        digests of the sources running now (a version on trial)."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"modules": [r.to_json() for r in records]}, indent=1, sort_keys=True)
        write_atomic(self.root / INDEX, data.encode(), 0o600)
        self._drop_unused_sources({r.source_sha256 for r in records} | in_use)

    def _drop_unused_sources(self, keep: set[str]) -> None:
        """Sources no saved or running version uses (trial versions reverted,
        old versions replaced)."""
        wanted = {f"{digest}.bpf.c" for digest in keep}
        if not self.sources.is_dir():
            return
        for path in self.sources.iterdir():
            if path.name not in wanted and path.suffix == ".c":
                path.unlink(missing_ok=True)


def free_module_id(taken: set[int]) -> int:
    for candidate in range(FIRST_ID, LAST_ID + 1):
        if candidate not in taken:
            return candidate
    raise ValueError("no free user module id")
