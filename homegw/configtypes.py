"""Shared building blocks of the homegw configuration schema.

Every config section (root sections in :mod:`homegw.config`, module sections in
``homegw/modules/<name>/config.py``) is built from the annotated types here, so a
value such as a MAC address or a duration is parsed and reported the same way
everywhere.  This module imports nothing from homegw, so any module's config can
import it without import cycles.

Parsed values are plain Python objects (``int`` seconds, ``ipaddress`` objects,
small NamedTuples); ``model_dump(mode="json")`` turns them back into the text the
YAML file uses, so a dump loads back to an equal config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

#: The kernel's ephemeral (local) port range.  The appliance sets
#: net.ipv4.ip_local_port_range to this, so the NAT pool must stay out of it.
EPHEMERAL_PORTS = (32768, 60999)


@dataclass(frozen=True)
class ChainRules:
    """Where a module may sit in ``dataplane.order``: declared by the module's
    config section (``chain_rules`` class attribute), checked by the config.

    ``*_after`` / ``*_before``: when both modules are in that NIC's chain, this
    one must come after / before the other. ``required_with``: when this
    module is enabled and one of these is in a NIC's chain, this one must be in
    that chain too (NAT without the router's partner would leak untranslated).
    """

    lan_after: tuple[str, ...] = ()
    lan_before: tuple[str, ...] = ()
    wan_after: tuple[str, ...] = ()
    wan_before: tuple[str, ...] = ()
    required_with: tuple[str, ...] = ()
    why: str = ""

    def after(self, side: str) -> tuple[str, ...]:
        return self.lan_after if side == "lan" else self.wan_after

    def before(self, side: str) -> tuple[str, ...]:
        return self.lan_before if side == "lan" else self.wan_before


_TEXT = WithJsonSchema({"type": "string"})
_INT_OR_TEXT = WithJsonSchema({"type": ["integer", "string"]})


class Section(BaseModel):
    """Base of every config model: unknown keys rejected, instances immutable.

    An empty YAML section (``dns:`` with every child commented out) reads as
    ``None``; it is taken as an empty mapping, i.e. all defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        return {} if data is None else data


def raise_problems(title: str, problems: Sequence[Problem], kind: str = "homegw") -> None:
    """Raise one ValidationError carrying every problem at its own key path.

    For model validators: pydantic keeps each entry's location (relative to the
    model being validated), so all of them are reported at once.  ``kind``
    becomes the error's ``type`` in ``ValidationError.errors()``.
    """
    if problems:
        details = [
            InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=None)
            for loc, message in problems
        ]
        raise ValidationError.from_exception_data(title, details)


def shown(value: Any) -> str:
    """``repr(value)`` cut to a length that fits in an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _need_str(value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string like {example!r}, not {shown(value)}")
    return value.strip()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- durations ----------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(value: Any) -> int:
    """Seconds from an int or a string like ``"90s"``, ``"12h"``, ``"1h30m"``."""
    text = value.strip() if isinstance(value, str) else ""
    match = _DURATION_RE.fullmatch(text)
    if _is_int(value):
        seconds = value
    elif text.isdigit():
        seconds = int(text)
    elif match and any(match.groups()):
        seconds = sum(
            int(n or 0) * unit for n, (_, unit) in zip(match.groups(), _UNITS, strict=True)
        )
    else:
        raise ValueError(
            f"{shown(value)} is not a duration (use seconds, or e.g. 90s, 30m, 12h, 1h30m)"
        )
    if seconds < 0:
        raise ValueError(f"{shown(value)} is negative; a duration is 0 or more seconds")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest ``1d2h3m4s`` form of ``seconds`` (``"0s"`` for zero)."""
    parts = []
    for suffix, unit in _UNITS:
        count, seconds = divmod(seconds, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts) or "0s"


#: Seconds; written as an int or as "90s", "30m", "12h", "1d", "1h30m".
Duration = Annotated[
    int,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, when_used="json"),
    _INT_OR_TEXT,
]


def duration_range(minimum: int = 0, maximum: int | None = None, why: str = "") -> AfterValidator:
    """Bounds for a Duration: ``Annotated[Duration, duration_range(120, why="RFC 4787")]``."""

    def check(seconds: int) -> int:
        reason = f" ({why})" if why else ""
        if seconds < minimum:
            raise ValueError(f"must be at least {format_duration(minimum)}{reason}")
        if maximum is not None and seconds > maximum:
            raise ValueError(f"must be at most {format_duration(maximum)}{reason}")
        return seconds

    return AfterValidator(check)


# --- IPv4 -----------------------------------------------------------------------


def _parse_ipv4_address(value: Any) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    try:
        return ipaddress.IPv4Address(_need_str(value, "192.168.1.10"))
    except ipaddress.AddressValueError:
        raise ValueError(f"{shown(value)} is not a valid IPv4 address") from None


def _parse_ipv4_interface(value: Any) -> ipaddress.IPv4Interface:
    if isinstance(value, ipaddress.IPv4Interface):
        return value
    text = _need_str(value, "192.168.1.1/24")
    try:
        parsed = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a valid IPv4 address with prefix (CIDR)") from None
    if "/" not in text:
        raise ValueError(f"{shown(value)} needs a prefix length (CIDR), e.g. {text}/24")
    return parsed


def _parse_ipv4_network(value: Any) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    text = _need_str(value, "10.0.0.0/8")
    try:
        parsed = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a valid IPv4 network (CIDR)") from None
    if "/" not in text:
        raise ValueError(f"{shown(value)} needs a prefix length (CIDR), e.g. {text}/32")
    return parsed


#: An IPv4 address such as "192.168.1.10" (an ipaddress.IPv4Address).
IPv4Address = Annotated[
    ipaddress.IPv4Address,
    PlainValidator(_parse_ipv4_address),
    PlainSerializer(str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "ipv4"}),
]
#: An address with its prefix length, "192.168.1.1/24" (an ipaddress.IPv4Interface).
IPv4Interface = Annotated[
    ipaddress.IPv4Interface,
    PlainValidator(_parse_ipv4_interface),
    PlainSerializer(str, when_used="json"),
    _TEXT,
]
#: A network, "10.0.0.0/8"; host bits are cleared ("10.1.2.3/8" -> 10.0.0.0/8).
IPv4Network = Annotated[
    ipaddress.IPv4Network,
    PlainValidator(_parse_ipv4_network),
    PlainSerializer(str, when_used="json"),
    _TEXT,
]


# --- IPv6 -----------------------------------------------------------------------


def _parse_ipv6_address(value: Any) -> ipaddress.IPv6Address:
    if isinstance(value, ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.IPv6Address(_need_str(value, "2001:db8::10"))
    except ipaddress.AddressValueError:
        raise ValueError(f"{shown(value)} is not a valid IPv6 address") from None


def _parse_ipv6_interface(value: Any) -> ipaddress.IPv6Interface:
    if isinstance(value, ipaddress.IPv6Interface):
        return value
    text = _need_str(value, "2001:db8::2/64")
    try:
        parsed = ipaddress.IPv6Interface(text)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a valid IPv6 address with prefix") from None
    if "/" not in text:
        raise ValueError(f"{shown(value)} needs a prefix length, e.g. {text}/64")
    return parsed


def _parse_ipv6_network(value: Any) -> ipaddress.IPv6Network:
    if isinstance(value, ipaddress.IPv6Network):
        return value
    text = _need_str(value, "2001:db8:1::/48")
    try:
        parsed = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a valid IPv6 prefix") from None
    if "/" not in text:
        raise ValueError(f"{shown(value)} needs a prefix length, e.g. {text}/48")
    return parsed


#: An IPv6 address such as "2001:db8::10" (an ipaddress.IPv6Address).
IPv6Address = Annotated[
    ipaddress.IPv6Address,
    PlainValidator(_parse_ipv6_address),
    PlainSerializer(str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "ipv6"}),
]
#: An IPv6 address with its prefix length, "2001:db8::2/64".
IPv6Interface = Annotated[
    ipaddress.IPv6Interface,
    PlainValidator(_parse_ipv6_interface),
    PlainSerializer(str, when_used="json"),
    _TEXT,
]
#: An IPv6 prefix, "2001:db8:1::/48"; host bits are cleared.
IPv6Network = Annotated[
    ipaddress.IPv6Network,
    PlainValidator(_parse_ipv6_network),
    PlainSerializer(str, when_used="json"),
    _TEXT,
]


# --- MAC, names -----------------------------------------------------------------

_MAC_RE = re.compile(
    r"[0-9a-f]{2}([:-]?)(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}|([0-9a-f]{4}\.){2}[0-9a-f]{4}"
)


def _parse_mac(value: Any) -> str:
    if _is_int(value):  # YAML 1.1 reads an unquoted 10:20:30:40:50:59 as a number
        raise ValueError("must be a string: quote MAC addresses in YAML ('aa:bb:cc:dd:ee:ff')")
    text = _need_str(value, "aa:bb:cc:dd:ee:ff").lower()
    if not _MAC_RE.fullmatch(text):
        raise ValueError(f"{shown(value)} is not a valid MAC address, e.g. aa:bb:cc:dd:ee:ff")
    digits = re.sub(r"[^0-9a-f]", "", text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


#: A MAC address, normalised to lower-case colon form "aa:bb:cc:dd:ee:ff".
MacAddress = Annotated[str, PlainValidator(_parse_mac), _TEXT]

_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _parse_hostname(value: Any) -> str:
    text = _need_str(value, "homegw").lower()
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in text.split(".")):
        raise ValueError(
            f"{shown(value)} is not a valid host name (RFC 1123: labels of letters, digits "
            "and '-', 1-63 long, separated by dots, not starting or ending with '-')"
        )
    return text


#: An RFC 1123 host name (one or more dot-separated labels), lower-cased.
Hostname = Annotated[str, PlainValidator(_parse_hostname), _TEXT]


def _parse_ifname(value: Any) -> str:
    text = _need_str(value, "eth0")
    if not 1 <= len(text) <= 15:
        raise ValueError(f"{shown(value)} is not a valid interface name (1 to 15 characters)")
    if text in (".", "..") or re.search(r"[/:\s]", text):
        raise ValueError(
            f"{shown(value)} is not a valid interface name (no '/', ':' or whitespace)"
        )
    return text


#: A Linux network interface name: 1-15 characters, no '/', ':' or whitespace.
IfName = Annotated[str, PlainValidator(_parse_ifname), _TEXT]


# --- ports ----------------------------------------------------------------------


def _port(text: str, original: Any) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{shown(original)}: a port is a number from 1 to 65535")
    return int(text)


def _text_schema(parse: Callable[[Any], Any], dump: Callable[[Any], Any]) -> CoreSchema:
    return core_schema.no_info_plain_validator_function(
        parse,
        serialization=core_schema.plain_serializer_function_ser_schema(dump, when_used="json"),
    )


class HostPort(NamedTuple):
    """An IPv4 address and a TCP port, written ``"192.168.1.1:80"``."""

    host: ipaddress.IPv4Address
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: Any) -> HostPort:
        if isinstance(value, HostPort):
            return value
        host, sep, port = _need_str(value, "192.168.1.1:80").rpartition(":")
        if not sep:
            raise ValueError(f"{shown(value)} is not host:port, e.g. 192.168.1.1:80")
        return cls(_parse_ipv4_address(host), _port(port, value))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _text_schema(cls.parse, str)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string"}


class PortRange(NamedTuple):
    """An inclusive range of ports, written ``"LOW-HIGH"`` or as one number."""

    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def overlaps(self, other: PortRange) -> bool:
        return self.low <= other.high and other.low <= self.high

    @classmethod
    def parse(cls, value: Any) -> PortRange:
        if isinstance(value, PortRange):
            return value
        text = str(value) if _is_int(value) else _need_str(value, "20000-32767")
        low, sep, high = text.partition("-")
        result = cls(_port(low.strip(), value), _port((high if sep else low).strip(), value))
        if result.low > result.high:
            raise ValueError(f"{shown(value)}: write the range LOW-HIGH, with LOW <= HIGH")
        return result

    def dump(self) -> int | str:
        return self.low if self.low == self.high else str(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _text_schema(cls.parse, cls.dump)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": ["integer", "string"]}


# --- helpers for validators ---------------------------------------------------


def duplicates(values: Iterable[Any]) -> list[int]:
    """Indices of the values already seen earlier in ``values`` (None is ignored)."""
    seen: set[Any] = set()
    repeated = []
    for index, value in enumerate(values):
        if value is not None and value in seen:
            repeated.append(index)
        seen.add(value)
    return repeated
