"""The application database: which app (and category) a server name belongs to.

The shipped database is the YAML files in ``apps/`` next to this module (one
per category); ``dpi.app_sources`` adds files (absolute paths) or http(s)
URLs, merged over it: a later source replaces an earlier app with the same id
whole. A file is a mapping::

    category: video          # optional: the category of its apps without one
    apps:
      - id: youtube          # [a-z0-9_]+, stable (usage history keeps it)
        label: YouTube
        category: video      # one of categories.CATEGORIES (not "unknown")
        domains: [youtube.com, "*.googlevideo.com"]

Patterns: ``example.com`` is the name and every name below it (suffix match
on label boundaries); ``*.example.com`` only the names below it. A name
matches its most specific pattern: the longest, and for a name below
``example.com`` the ``*.`` pattern before the plain one. A pattern in two
apps is a load error (naming both places), and so is a pattern that is a bare
public suffix (``com``, ``co.uk``: it would swallow a whole registry).

``match`` walks a dict of labels from the top-level domain down (a few dict
lookups per name, whatever the number of patterns). Loading never touches
the network: a URL source is read through the ``fetch`` callable the caller
gives (it downloads in the background); a failed load raises
:class:`AppDbError` and :meth:`AppDb.reloaded` keeps the previous database.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from publicsuffixlist import PublicSuffixList

from homegw.modules.dpi.categories import CATEGORIES, CATEGORY_UNKNOWN

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "apps"
SHIPPED = "shipped"
MAX_SOURCE_BYTES = 4 << 20  # one source file or download
MAX_APPS = 20000  # in all sources together
MAX_DOMAINS_PER_APP = 1000

APP_ID = re.compile(r"[a-z0-9_]{1,64}")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_CATEGORY_IDS = frozenset(c.id for c in CATEGORIES if c.id != CATEGORY_UNKNOWN)
_APP = ""  # trie node keys that no DNS label can be: the plain pattern's app,
_BELOW = "*"  # and the "*." pattern's app (names strictly below this node)


class AppDbError(ValueError):
    """A source that cannot be loaded: ``origin: key.path: reason``."""


@dataclass(frozen=True)
class App:
    id: str
    label: str
    category: str
    domains: tuple[str, ...]


# -- names -----------------------------------------------------------------
def normalize_name(name: object) -> str | None:
    """A server name in its lookup form (lower-case, no trailing dot, IDNA
    A-labels), or None when it is not a valid host name (empty labels, bad
    characters, a label over 63 or a name over 253 characters)."""
    if not isinstance(name, str) or not name or len(name) > 254:
        return None
    text = name.lower().removesuffix(".")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if len(text) > 253:
        return None
    if not all(_LABEL.fullmatch(label) for label in text.split(".")):
        return None
    return text


_psl_lock = threading.Lock()
_psl: PublicSuffixList | None = None


def _public_suffixes() -> PublicSuffixList:
    """The public suffix list the package ships, ICANN section only: a CDN's
    private suffixes (cloudfront.net, github.io) would otherwise make every
    customer host a registrable domain of its own (unbounded, meaningless)."""
    global _psl
    with _psl_lock:
        if _psl is None:
            _psl = PublicSuffixList(only_icann=True)
        return _psl


def _ip_literal(name: str) -> str | None:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return None


def registrable_domain(name: str) -> str:
    """The registrable domain of a server name: "a.b.example.co.uk" ->
    "example.co.uk". A bare public suffix or a single label ("co.uk",
    "localhost") is itself; an IP literal is its canonical address text;
    anything else (empty, bad characters, empty labels, over-long, not a
    string) is "". Never raises."""
    if isinstance(name, str):
        address = _ip_literal(name)
        if address is not None:
            return address
    normal = normalize_name(name)
    if normal is None:
        return ""
    return _public_suffixes().privatesuffix(normal) or normal


def is_public_suffix(name: str) -> bool:
    """Whether a (normalized) name is a public suffix or a single label."""
    return "." not in name or _public_suffixes().privatesuffix(name) is None


def parse_pattern(pattern: object) -> tuple[str, bool] | None:
    """(the base name, below only) of a domain pattern, None if invalid."""
    if not isinstance(pattern, str):
        return None
    below = pattern.startswith("*.")
    base = normalize_name(pattern[2:] if below else pattern)
    if base is None or _ip_literal(base) is not None:
        return None
    return base, below


# -- loading -----------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    app: App
    where: str  # "origin: apps[3]"


def _where(origin: str, path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return f"{origin}: {text}" if text else origin


def _fail(origin: str, path: Sequence[str | int], reason: str) -> AppDbError:
    return AppDbError(f"{_where(origin, path)}: {reason}")


def _text(value: object, origin: str, path: list[str | int], max_len: int = 100) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > max_len
        or not value.isprintable()
    ):
        raise _fail(
            origin, path, f"must be a non-empty, printable string of at most {max_len} characters"
        )
    return value


def _category(value: object, origin: str, path: list[str | int]) -> str:
    if not isinstance(value, str) or value not in _CATEGORY_IDS:
        shown = repr(value)[:60]
        raise _fail(
            origin, path, f"unknown category {shown} (one of {', '.join(sorted(_CATEGORY_IDS))})"
        )
    return str(value)


def _domains(value: object, origin: str, path: list[str | int]) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_DOMAINS_PER_APP:
        raise _fail(
            origin, path, f"must be a list of at most {MAX_DOMAINS_PER_APP} domain patterns"
        )
    patterns: dict[str, None] = {}
    for index, item in enumerate(value):
        parsed = parse_pattern(item)
        if parsed is None:
            shown = repr(item)[:80]
            raise _fail(
                origin,
                [*path, index],
                f"{shown} is not a domain pattern (example.com or *.example.com)",
            )
        base, below = parsed
        if is_public_suffix(base):
            raise _fail(
                origin,
                [*path, index],
                f"{item!r} is a public suffix: it would match a whole registry",
            )
        patterns[f"*.{base}" if below else base] = None
    return tuple(patterns)


_APP_KEYS = frozenset({"id", "label", "category", "domains"})


def _app(item: object, default_category: object, origin: str, path: list[str | int]) -> App:
    if not isinstance(item, dict):
        raise _fail(origin, path, "must be a mapping with id, label, category, domains")
    unknown = sorted(str(key) for key in item if key not in _APP_KEYS)
    if unknown:
        raise _fail(origin, [*path, unknown[0]], "unknown key")
    app_id = item.get("id")
    if not isinstance(app_id, str) or not APP_ID.fullmatch(app_id):
        raise _fail(
            origin, [*path, "id"], f"{repr(app_id)[:60]} is not an app id ([a-z0-9_]+, 1-64)"
        )
    category = item.get("category", default_category)
    return App(
        id=app_id,
        label=_text(item.get("label"), origin, [*path, "label"]),
        category=_category(category, origin, [*path, "category"]),
        domains=_domains(item.get("domains", []), origin, [*path, "domains"]),
    )


def parse_source(data: bytes | str, origin: str) -> list[_Entry]:
    """The apps of one source's text, checked; AppDbError on the first problem."""
    if len(data) > MAX_SOURCE_BYTES:
        raise _fail(origin, [], f"larger than {MAX_SOURCE_BYTES} bytes")
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _fail(origin, [], f"not valid YAML{at}") from None
    except (UnicodeDecodeError, ValueError):
        raise _fail(origin, [], "not valid YAML (not UTF-8 text)") from None
    except RecursionError:
        raise _fail(origin, [], "not valid YAML (nested too deeply)") from None
    if not isinstance(document, dict):
        raise _fail(origin, [], "must be a mapping with an 'apps' list")
    unknown = sorted(str(key) for key in document if key not in ("apps", "category"))
    if unknown:
        raise _fail(origin, [unknown[0]], "unknown key")
    default = document.get("category")
    if default is not None:
        _category(default, origin, ["category"])
    apps = document.get("apps")
    if not isinstance(apps, list):
        raise _fail(origin, ["apps"], "must be a list of apps")
    return [
        _Entry(_app(item, default, origin, ["apps", i]), _where(origin, ["apps", i]))
        for i, item in enumerate(apps)
    ]


def _read_source(source: str | Path, fetch: Callable[[str], bytes] | None) -> list[_Entry]:
    text = str(source)
    if text.startswith(("http://", "https://")):
        if fetch is None:
            raise AppDbError(f"{text}: a URL source needs a fetch function (none given)")
        try:
            data = fetch(text)
        except Exception as error:  # the downloader's failure, whatever it is
            raise AppDbError(f"{text}: download failed: {error}") from None
        if not isinstance(data, bytes | bytearray):
            raise AppDbError(f"{text}: download gave {type(data).__name__}, not bytes")
        return parse_source(bytes(data), text)
    path = Path(text)
    if not path.is_absolute():
        raise AppDbError(f"{text}: a source must be an absolute path or an http(s) URL")
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    entries: list[_Entry] = []
    for file in files:
        try:
            with file.open("rb") as handle:
                data = handle.read(MAX_SOURCE_BYTES + 1)
        except OSError as error:
            raise AppDbError(f"{file}: cannot read: {error.strerror or error}") from None
        entries += parse_source(data, str(file))
    return entries


def _merge(layers: Iterable[list[_Entry]]) -> dict[str, _Entry]:
    """Apps by id; a later layer replaces an earlier one's app of the same id.
    An id twice in one layer is an error."""
    merged: dict[str, _Entry] = {}
    for layer in layers:
        seen: dict[str, str] = {}
        for entry in layer:
            if entry.app.id in seen:
                first = seen[entry.app.id]
                raise AppDbError(
                    f"{entry.where}.id: app {entry.app.id!r} is already defined at {first}"
                )
            seen[entry.app.id] = entry.where
            merged[entry.app.id] = entry
        if len(merged) > MAX_APPS:
            raise AppDbError(f"more than {MAX_APPS} apps in all sources")
    return merged


def _build_trie(entries: Iterable[_Entry]) -> dict[str, Any]:
    """Nested dicts of labels from the top-level domain down; a node's
    _APP / _BELOW keys hold the app of its plain / "*." pattern."""
    root: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for entry in entries:
        for index, pattern in enumerate(entry.app.domains):
            where = f"{entry.where}.domains[{index}]"
            if pattern in owner:
                raise AppDbError(
                    f"{where}: {pattern!r} is already a pattern of another app at {owner[pattern]}"
                )
            owner[pattern] = where
            below = pattern.startswith("*.")
            node = root
            for label in reversed((pattern[2:] if below else pattern).split(".")):
                node = node.setdefault(label, {})
            node[_BELOW if below else _APP] = entry.app
    return root


class AppDb:
    """An immutable, loaded application database (see the module's docstring)."""

    def __init__(self, entries: dict[str, _Entry], source: str, loaded_at: float) -> None:
        self._trie = _build_trie(entries.values())
        self.apps: tuple[App, ...] = tuple(entry.app for entry in entries.values())
        self._by_id = {app.id: app for app in self.apps}
        self.source = source
        self.loaded_at = loaded_at

    @classmethod
    def of(cls, apps: Iterable[App], source: str = "given") -> AppDb:
        """A database of these apps (tests, fakes); checked like a loaded one:
        AppDbError for an id twice or a pattern in two apps."""
        entries = [_Entry(app, f"{source}: {app.id}") for app in apps]
        return cls(_merge([entries]), source, time.time())

    @classmethod
    def load(
        cls,
        sources: Sequence[str | Path] = (),
        fetch: Callable[[str], bytes] | None = None,
        shipped: str | Path = SHIPPED_DIR,
    ) -> AppDb:
        """The shipped files, then every source in order over them.
        AppDbError (``origin: key.path: reason``) on any problem."""
        layers = [_read_source(Path(shipped).resolve(), None)]
        layers += [_read_source(source, fetch) for source in sources]
        db = cls(_merge(layers), " + ".join([SHIPPED, *map(str, sources)]), time.time())
        log.info("app database: %d apps from %s", len(db.apps), db.source)
        return db

    def reloaded(
        self, sources: Sequence[str | Path] = (), fetch: Callable[[str], bytes] | None = None
    ) -> tuple[AppDb, str | None]:
        """(a new database, None), or (this one, why) when loading fails."""
        try:
            return AppDb.load(sources, fetch), None
        except AppDbError as error:
            log.warning("app database not reloaded, keeping the previous one: %s", error)
            return self, str(error)

    def app(self, app_id: str) -> App | None:
        return self._by_id.get(app_id)

    def category_of(self, app_id: str) -> str:
        """The category id of an app id; "unknown" for anything else."""
        found = self._by_id.get(app_id)
        return found.category if found is not None else CATEGORY_UNKNOWN

    def match(self, name: str) -> App | None:
        """The app of a server name's most specific pattern, None if none."""
        if not isinstance(name, str):
            return None
        labels = name.lower().removesuffix(".").split(".")
        if "" in labels:
            return None
        node = self._trie
        found: App | None = None
        for depth in range(len(labels) - 1, -1, -1):
            node = node.get(labels[depth])
            if node is None:
                break
            if depth and _BELOW in node:  # a label is left: the name is below this node
                found = node[_BELOW]
            elif _APP in node:
                found = node[_APP]
        return found

    def label_of(self, name: str) -> tuple[str, str]:
        """(app id, its category) for a name the database knows, else
        (its registrable domain, "unknown"); ("", "unknown") for junk."""
        found = self.match(name)
        if found is not None:
            return found.id, found.category
        return registrable_domain(name), CATEGORY_UNKNOWN

    def describe(self) -> dict[str, Any]:
        """The Control.apps() shape: categories, apps, source, loaded_at."""
        return {
            "categories": [{"id": c.id, "label": c.label} for c in CATEGORIES],
            "apps": [
                {"id": a.id, "label": a.label, "category": a.category, "domains": list(a.domains)}
                for a in self.apps
            ],
            "source": self.source,
            "loaded_at": self.loaded_at,
        }
