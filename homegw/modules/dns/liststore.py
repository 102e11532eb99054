"""Block lists uploaded from the web UI: kept as
``state_dir/blocklists/<name>.txt`` once they parse, so that the path can go
into ``dns.blocklists`` like any other list file.

Refused (ConfigRejected, loc ``blocklist``): a name that is not 1-32 of
a-z, 0-9, ``_`` and ``-`` (starting with a letter or digit: it becomes a file
name), a file over MAX_UPLOAD bytes, and a file in which the list parser
(homegw.modules.dns.blocklists.parse_list: hosts, domain-per-line or adblock
domain rules) finds no domain at all.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from homegw.atomicfile import write_atomic
from homegw.control import ConfigRejected, Problem
from homegw.modules.dns.blocklists import parse_list
from homegw.modules.dns.config import DnsConfig

log = logging.getLogger(__name__)

UPLOAD_DIR = "blocklists"  # under state_dir
MAX_UPLOAD = 16 * 1024 * 1024
LIST_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def _refuse(message: str) -> ConfigRejected:
    return ConfigRejected([Problem("blocklist", message)])


def store_blocklist(state_dir: Path, name: str, content: bytes) -> dict[str, Any]:
    """Check and keep an uploaded list; {source (absolute path), entries}."""
    if not isinstance(name, str) or not LIST_NAME.match(name):
        raise _refuse(f"name {name!r} must be 1-32 of a-z, 0-9, '_' and '-', e.g. ads")
    if len(content) > MAX_UPLOAD:
        raise _refuse(f"the file is {len(content)} bytes, more than {MAX_UPLOAD} (16 MiB)")
    parsed = parse_list(content.decode("utf-8", errors="replace"))
    if not parsed.domains:
        raise _refuse(
            f"no domain found in the file ({parsed.skipped} lines skipped): one domain a "
            "line, hosts format (0.0.0.0 ads.example.com) or ||ads.example.com^"
        )
    folder = Path(state_dir).absolute() / UPLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.txt"
    write_atomic(target, content, mode=0o644)
    log.info(
        "block list %s stored: %d domains, %d lines skipped",
        target,
        len(parsed.domains),
        parsed.skipped,
    )
    return {"source": str(target), "entries": len(parsed.domains)}


def list_sources(dns: DnsConfig) -> dict[str, list[str]]:
    """Every list source of the ``dns`` section -> the groups using it
    ("default" for the top-level lists), sources sorted."""
    users: dict[str, list[str]] = {}
    for source in dns.blocklists:
        users.setdefault(source, []).append("default")
    for group in dns.groups:
        for source in group.blocklists:
            users.setdefault(source, []).append(group.name)
    return {source: users[source] for source in sorted(users)}


def unloaded_status(dns: DnsConfig, why: str) -> list[dict[str, Any]]:
    """blocklists() rows while no DNS service runs: nothing loaded, `why`."""
    return [
        {"source": source, "groups": groups, "entries": None, "updated_at": None, "error": why}
        for source, groups in list_sources(dns).items()
    ]
