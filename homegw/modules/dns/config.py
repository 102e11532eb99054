"""Config section ``dns:`` of the DNS module (caching forwarder on the LAN address)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, model_validator

from homegw.configtypes import (
    Duration,
    IPv4Address,
    Problem,
    Section,
    duplicates,
    duration_range,
    raise_problems,
)

_DOMAIN_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def _null_is_text(value: object) -> object:
    # YAML reads an unquoted `block_response: null` as None; it means the string.
    return "null" if value is None else value


def _blocklist_source(source: str) -> str:
    if not source.startswith(("/", "http://", "https://")):
        raise ValueError(f"{source!r} must be an absolute path or an http(s):// URL")
    return source


def _domain(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(_DOMAIN_LABEL.match(x) for x in name.split(".")):
        raise ValueError(f"{value!r} is not a domain name, e.g. ads.example.com")
    return name


def _group_name(value: str) -> str:
    if not _GROUP_NAME.match(value):
        raise ValueError(f"{value!r} must be 1-32 of a-z, 0-9, '_' and '-', e.g. kids")
    return value


BlocklistSource = Annotated[str, AfterValidator(_blocklist_source)]
Domain = Annotated[str, AfterValidator(_domain)]


class DnsGroup(Section):
    """``dns.groups[]`` -- a device group with its own block policy."""

    name: Annotated[str, AfterValidator(_group_name)]
    clients: tuple[IPv4Address, ...] = ()
    blocklists: tuple[BlocklistSource, ...] = ()
    allow: tuple[Domain, ...] = ()
    deny: tuple[Domain, ...] = ()
    use_default: StrictBool = True


class DnsConfig(Section):
    """``dns:`` -- the forwarder the LAN uses (the gateway's LAN address, port 53)."""

    enabled: StrictBool = True
    cache_size: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 10_000
    upstream_timeout: Annotated[Duration, duration_range(1, 60)] = 2
    rebind_protection: StrictBool = True
    rebind_allow: tuple[Domain, ...] = ()
    blocklists: tuple[BlocklistSource, ...] = ()
    block_response: Annotated[Literal["null", "nxdomain"], BeforeValidator(_null_is_text)] = "null"
    allow: tuple[Domain, ...] = ()
    deny: tuple[Domain, ...] = ()
    groups: tuple[DnsGroup, ...] = ()
    query_log_size: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 1000
    fast_path: StrictBool = True

    @model_validator(mode="after")
    def _check(self) -> DnsConfig:
        problems: list[Problem] = [
            (("groups", i, "name"), f"duplicate group name {self.groups[i].name}")
            for i in duplicates(g.name for g in self.groups)
        ]
        seen: dict[object, str] = {}
        for i, group in enumerate(self.groups):
            for j, client in enumerate(group.clients):
                if client in seen and seen[client] != group.name:
                    reason = f"{client} is already in group {seen[client]}"
                    problems.append((("groups", i, "clients", j), reason))
                seen.setdefault(client, group.name)
        raise_problems("DnsConfig", problems)
        return self
