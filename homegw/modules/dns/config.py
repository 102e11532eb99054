"""Config section ``dns:`` of the DNS module (caching forwarder on the LAN address)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool

from homegw.configtypes import Duration, Section, duration_range


def _null_is_text(value: object) -> object:
    # YAML reads an unquoted `block_response: null` as None; it means the string.
    return "null" if value is None else value


def _blocklist_source(source: str) -> str:
    if not source.startswith(("/", "http://", "https://")):
        raise ValueError(f"{source!r} must be an absolute path or an http(s):// URL")
    return source


class DnsConfig(Section):
    """``dns:`` -- the forwarder the LAN uses (the gateway's LAN address, port 53)."""

    enabled: StrictBool = True
    cache_size: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 10_000
    upstream_timeout: Annotated[Duration, duration_range(1, 60)] = 2
    rebind_protection: StrictBool = True
    blocklists: tuple[Annotated[str, AfterValidator(_blocklist_source)], ...] = ()
    block_response: Annotated[Literal["null", "nxdomain"], BeforeValidator(_null_is_text)] = "null"
