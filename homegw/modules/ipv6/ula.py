"""The home's ULA /48 (RFC 4193): generated once, kept in the state dir.

RFC 4193 3.2: fd00::/8 plus a 40-bit pseudo-random Global ID. The Global ID
comes from `secrets` (the RFC's SHA-1 recipe only serves to get randomness;
the kernel's CSPRNG gives it directly). The prefix is written atomically at
the first start and read back at every later one, so the LAN's ULA
addresses, and the local names pointing at them, survive restarts. A
configured `lan.ipv6.ula` wins and nothing is written.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from pathlib import Path

from homegw.atomicfile import write_atomic

log = logging.getLogger(__name__)

IPv6Network = ipaddress.IPv6Network

STATE_FILE = "ipv6-ula-prefix"
LOCAL_ULA = IPv6Network("fd00::/8")  # L=1: locally assigned
GLOBAL_ID_BITS = 40


def generate_ula() -> IPv6Network:
    """A fresh fdXX:XXXX:XXXX::/48 with a random 40-bit Global ID."""
    global_id = secrets.randbits(GLOBAL_ID_BITS)
    return IPv6Network((int(LOCAL_ULA.network_address) | global_id << 80, 48))


def _read_kept(path: Path) -> IPv6Network | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        kept = IPv6Network(text)
    except ValueError:
        kept = None
    if kept is None or kept.prefixlen != 48 or not kept.subnet_of(LOCAL_ULA):
        log.warning("%s holds %r, not a ULA /48: generating a new one", path, text[:60])
        return None
    return kept


def ula_prefix(state_dir: Path, configured: IPv6Network | None) -> IPv6Network:
    """The configured ULA /48, else the kept one, else a new one (then kept)."""
    if configured is not None:
        return configured
    path = state_dir / STATE_FILE
    kept = _read_kept(path)
    if kept is not None:
        return kept
    fresh = generate_ula()
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, f"{fresh}\n".encode(), mode=0o644)
    log.info("generated the ULA prefix %s (kept in %s)", fresh, path)
    return fresh
