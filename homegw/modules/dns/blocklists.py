"""Block lists, allow/deny exceptions and per-group policies.

List files are hosts-format (``0.0.0.0 ads.example.com``), plain domain lists
(``ads.example.com``) or adblock-style domain rules (``||ads.example.com^``),
mixed freely, one entry a line; ``#`` and ``!`` start comments. Anything else
on a line (other adblock syntax, addresses, junk) is skipped and counted.

An entry blocks the name and every name under it. The user's own ``allow`` and
``deny`` entries beat the lists: among them the most specific match decides
(``deny`` wins a tie), so ``allow: [example.com]`` with ``deny:
[ads.example.com]`` blocks only ``ads.example.com`` and below.

A :class:`PolicySet` maps a client address to its group's :class:`Policy`
(clients in no group get the default policy). URL lists are downloaded by
:func:`fetch_list` into a cache directory; loading reads the cached copy.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from homegw.atomicfile import write_atomic

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_SINK_ADDRESSES = {"0.0.0.0", "127.0.0.1", "::", "::1", "0:0:0:0:0:0:0:0"}
_NOT_DOMAINS = {"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost"}
FETCH_TIMEOUT = 30.0
MAX_LIST_BYTES = 64 * 1024 * 1024
DECISION_MEMORY = 100_000  # names whose verdict a policy remembers


def normalise(name: str, min_labels: int = 2) -> str | None:
    """A domain in canonical form (lower case, no trailing dot), or None if invalid.

    List entries need two labels (a list naming a whole TLD is a broken list);
    the user's own allow/deny entries may name one (``min_labels=1``).
    """
    name = name.strip().lower().rstrip(".")
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if len(labels) < min_labels or not all(_LABEL.match(label) for label in labels):
        return None
    return name


@dataclass
class ParsedList:
    domains: set[str]
    skipped: int


def _line_domains(line: str) -> list[str] | None:
    """Domains named by one line; [] for blank/comment lines, None if unusable."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("!"):
        return []
    if line.startswith("||"):
        rule = line[2:]
        return [rule[:-1]] if rule.endswith("^") and "/" not in rule else None
    fields = line.split()
    if len(fields) > 1:
        return fields[1:] if fields[0] in _SINK_ADDRESSES else None
    return fields


def parse_list(text: str) -> ParsedList:
    """Domains of a hosts-format, domain-list or adblock-domain list."""
    domains: set[str] = set()
    skipped = 0
    for line in text.splitlines():
        names = _line_domains(line)
        if names is None:
            skipped += 1
            continue
        for raw in names:
            name = normalise(raw)
            if name is None or name in _NOT_DOMAINS:
                skipped += 1
            else:
                domains.add(name)
    return ParsedList(domains, skipped)


def suffixes(name: str) -> Iterable[str]:
    """name, then each parent: a.b.c -> a.b.c, b.c, c."""
    while True:
        yield name
        dot = name.find(".")
        if dot < 0:
            return
        name = name[dot + 1 :]


@dataclass
class Policy:
    """What one group of clients may resolve."""

    name: str
    blocked: frozenset[str] = frozenset()
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    _decisions: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        return not (self.blocked or self.deny)

    def is_blocked(self, name: str) -> bool:
        """Whether name (canonical text form) is blocked for this group."""
        if self.empty:
            return False
        verdict = self._decisions.get(name)
        if verdict is None:
            verdict = self._decide(name)
            if len(self._decisions) >= DECISION_MEMORY:
                self._decisions.clear()
            self._decisions[name] = verdict
        return verdict

    def _decide(self, name: str) -> bool:
        for suffix in suffixes(name):
            if suffix in self.deny:
                return True
            if suffix in self.allow:
                return False
        return any(suffix in self.blocked for suffix in suffixes(name))


@dataclass(frozen=True)
class GroupSpec:
    """A device group as configured: its clients and its own lists."""

    name: str
    clients: tuple[str, ...]
    lists: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    use_default: bool = True


class PolicySet:
    """Client address -> policy; the default policy for clients in no group."""

    def __init__(self, default: Policy, groups: dict[str, Policy], members: dict[str, str]):
        self.default = default
        self.groups = groups
        self._by_client = {client: groups[group] for client, group in members.items()}

    def for_client(self, client: str) -> Policy:
        return self._by_client.get(client, self.default)

    def blocked_anywhere(self, name: str) -> bool:
        """Blocked for some group: such names never go to the XDP fast path,
        which answers every client alike."""
        return self.default.is_blocked(name) or any(
            p.is_blocked(name) for p in self.groups.values()
        )

    def group_of(self, client: str) -> str:
        return self._by_client.get(client, self.default).name


@dataclass(frozen=True)
class ListStatus:
    """How loading one source went: its domains (None: unreadable), when its
    file was last written (for a URL: downloaded), unix seconds, and why it
    could not be read."""

    entries: int | None
    updated_at: float | None
    error: str | None = None


@dataclass
class ListLoader:
    """Reads list sources (paths, or URLs through their cached download)."""

    cache_dir: Path
    loaded: dict[str, frozenset[str]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    status: dict[str, ListStatus] = field(default_factory=dict)

    def domains(self, source: str) -> frozenset[str]:
        if source not in self.loaded:
            self.loaded[source] = self._read(source)
        return self.loaded[source]

    def _read(self, source: str) -> frozenset[str]:
        path = cached_path(self.cache_dir, source) if is_url(source) else Path(source)
        try:
            updated_at = path.stat().st_mtime
            text = path.read_bytes()[:MAX_LIST_BYTES].decode("utf-8", errors="replace")
        except OSError as exc:
            what = "not downloaded yet" if is_url(source) else exc.strerror
            self.problems[source] = f"{source}: {what}"
            self.status[source] = ListStatus(None, None, what)
            log.warning("block list %s unavailable: %s", source, what)
            return frozenset()
        parsed = parse_list(text)
        self.status[source] = ListStatus(len(parsed.domains), updated_at)
        log.info(
            "block list %s: %d domains, %d lines skipped",
            source,
            len(parsed.domains),
            parsed.skipped,
        )
        return frozenset(parsed.domains)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _canonical_set(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n for n in (normalise(x, min_labels=1) for x in names) if n)


def build_policy(
    name: str, loader: ListLoader, lists: Iterable[str], allow: Iterable[str], deny: Iterable[str]
) -> Policy:
    blocked: set[str] = set()
    for source in lists:
        blocked |= loader.domains(source)
    return Policy(name, frozenset(blocked), _canonical_set(allow), _canonical_set(deny))


def build_policies(
    loader: ListLoader,
    lists: tuple[str, ...],
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    groups: Iterable[GroupSpec],
) -> PolicySet:
    default = build_policy("default", loader, lists, allow, deny)
    policies: dict[str, Policy] = {}
    members: dict[str, str] = {}
    for group in groups:
        base = (lists, allow, deny) if group.use_default else ((), (), ())
        policies[group.name] = build_policy(
            group.name,
            loader,
            base[0] + group.lists,
            base[1] + group.allow,
            base[2] + group.deny,
        )
        for client in group.clients:
            members[str(ipaddress.ip_address(client))] = group.name
    return PolicySet(default, policies, members)


# --- downloading URL lists -------------------------------------------------------


def cached_path(cache_dir: Path, url: str) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / f"{digest}.list"


def fetch_list(url: str, cache_dir: Path, timeout: float = FETCH_TIMEOUT) -> Path:
    """Download url into cache_dir (write-temp-fsync-rename); return the file."""
    if not is_url(url):
        raise ValueError(f"{url!r} is not an http(s) URL")
    cache_dir.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "homegw"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(MAX_LIST_BYTES + 1)
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(f"{url}: list larger than {MAX_LIST_BYTES} bytes")
    target = cached_path(cache_dir, url)
    write_atomic(target, data, mode=0o644)
    log.info("fetched block list %s (%d bytes)", url, len(data))
    return target
