"""Counter names read from the C enum that indexes a module's stats map, so
that the datapath and Python share one list (the enum in the .bpf.c)."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


@cache
def counter_names(source: Path, enum: str) -> tuple[str, ...]:
    """The members of `enum <enum> { P_A, P_B, ..., P_COUNT }` in source,
    without their common prefix (up to an underscore), lower-case, without the last member (the
    count that sizes the map): ("a", "b", ...). Members must not be given
    values: the names are the map's indices in order."""
    text = _COMMENTS.sub("", source.read_text())
    found = re.search(rf"\benum\s+{re.escape(enum)}\s*\{{(.*?)\}}", text, re.S)
    if found is None:
        raise ValueError(f"no enum {enum} in {source}")
    members = [m.strip() for m in found.group(1).split(",") if m.strip()]
    if len(members) < 2 or any(not re.fullmatch(r"[A-Z][A-Z0-9_]*", m) for m in members):
        raise ValueError(f"enum {enum} in {source}: plain upper-case members only, got {members}")
    common = os.path.commonprefix(members)
    prefix = common[: common.rfind("_") + 1]
    if not prefix:
        raise ValueError(f"enum {enum} in {source}: the members share no prefix")
    return tuple(m[len(prefix) :].lower() for m in members[:-1])
