"""HTTP/1.x request -> Host (RFC 9112 3, RFC 9110 7.2).

The request line must be `METHOD SP target SP HTTP/1.x` with a known method;
header lines follow, each ended by CRLF (a bare LF is accepted). The first
`Host:` line wins (name case-insensitive, no space before the colon, value
trimmed, `:port` stripped); it is returned as soon as its line is whole. The
header block is read up to `MAX_HEADER_BLOCK` bytes; past that, or at the
empty line without a Host, there is none. An IP literal is no name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from homegw.modules.dpi.classify.names import hostname

MAX_HEADER_BLOCK = 8192
METHODS = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
)
_LONGEST_METHOD = max(len(m) for m in METHODS)


class HttpStatus(Enum):
    NEED_MORE = "need_more"
    HOST = "host"
    NOT_HTTP = "not_http"
    NO_HOST = "no_host"  # a request without a usable Host (none, empty, an IP literal)
    MALFORMED = "malformed"  # a request line, then something that is not HTTP


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: HttpStatus
    host: str | None = None


NEED_MORE = HttpResult(HttpStatus.NEED_MORE)
NOT_HTTP = HttpResult(HttpStatus.NOT_HTTP)
NO_HOST = HttpResult(HttpStatus.NO_HOST)
MALFORMED = HttpResult(HttpStatus.MALFORMED)


def parse_request(data: bytes) -> HttpResult:
    """The Host of the HTTP/1.x request at the start of data."""
    block = data[:MAX_HEADER_BLOCK]
    line_end = block.find(b"\n")
    if line_end < 0:
        if _could_be_request_line(block) and len(block) < MAX_HEADER_BLOCK:
            return NEED_MORE
        return NOT_HTTP
    if not _is_request_line(block[:line_end].rstrip(b"\r")):
        return NOT_HTTP
    return _find_host(block, line_end + 1, complete=len(data) > MAX_HEADER_BLOCK)


def _could_be_request_line(partial: bytes) -> bool:
    """partial is the beginning of a request line (method first)."""
    method, space, _rest = partial.partition(b" ")
    if not space:
        return any(m.startswith(method) for m in METHODS) and len(method) <= _LONGEST_METHOD
    return method in METHODS


def _is_request_line(line: bytes) -> bool:
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in METHODS or not parts[1]:
        return False
    version = parts[2]
    return len(version) == 8 and version.startswith(b"HTTP/1.") and version[7:8].isdigit()


def _find_host(block: bytes, pos: int, complete: bool) -> HttpResult:
    """The first Host header in the lines from pos (complete: no more bytes will count)."""
    while True:
        end = block.find(b"\n", pos)
        if end < 0:
            return NO_HOST if complete else NEED_MORE
        line = block[pos:end].rstrip(b"\r")
        if not line:
            return NO_HOST
        name, colon, value = line.partition(b":")
        if not colon and line[:1] not in (b" ", b"\t"):
            return MALFORMED
        if name.lower() == b"host":
            return _host_value(value.strip(b" \t"))
        pos = end + 1


def _host_value(value: bytes) -> HttpResult:
    if value.startswith(b"["):  # an IPv6 literal
        return NO_HOST
    host, _colon, port = value.partition(b":")
    if port and not port.isdigit():
        return NO_HOST
    name = hostname(host[:-1] if host.endswith(b".") else host)  # a FQDN's root dot
    return HttpResult(HttpStatus.HOST, name) if name else NO_HOST
