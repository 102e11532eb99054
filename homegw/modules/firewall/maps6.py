"""The firewall's IPv6 maps (firewall6.h structs) and the one adapter that
writes and reads them with bcc."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
from collections.abc import Iterator

from homegw.modules.firewall.sessions6 import (
    FW6_PINHOLE_IID,
    PinholeRule,
    Session6,
    Settings6,
)

FW6_TIMEOUTS = 5
In6 = ctypes.c_ubyte * 16


class Settings6Value(ctypes.Structure):
    """struct fw6_settings."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("pinholes", ctypes.c_uint32),
        ("timeout_ns", ctypes.c_uint64 * FW6_TIMEOUTS),
    ]


class PrefixKey(ctypes.Structure):
    """struct fw6_prefix_key."""

    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", In6)]


class PinholeValue(ctypes.Structure):
    """struct fw6_pinhole."""

    _fields_ = [
        ("proto", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("port_low", ctypes.c_uint16),
        ("port_high", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
        ("host", In6),
    ]


class SessionKey(ctypes.Structure):
    """struct fw6_session_key (ports in network order)."""

    _fields_ = [
        ("lan", In6),
        ("remote", In6),
        ("lan_port", ctypes.c_uint16),
        ("remote_port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class SessionValue(ctypes.Structure):
    """struct fw6_session."""

    _fields_ = [
        ("last_seen_ns", ctypes.c_uint64),
        ("tcp_seen", ctypes.c_uint64),
    ]


def in6(address: ipaddress.IPv6Address) -> ctypes.Array:
    return In6.from_buffer_copy(address.packed)


def address(raw: ctypes.Array) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(bytes(raw))


def port(network_order: int) -> int:
    return int.from_bytes(network_order.to_bytes(2, "little"), "big")


def settings_value(settings: Settings6) -> Settings6Value:
    timeouts = (ctypes.c_uint64 * FW6_TIMEOUTS)(*settings.timeouts.as_ns())
    return Settings6Value(settings.flags, len(settings.pinholes), timeouts)


def pinhole_value(rule: PinholeRule) -> PinholeValue:
    flags = FW6_PINHOLE_IID if rule.by_interface_id else 0
    return PinholeValue(rule.proto, flags, rule.port_low, rule.port_high, 0, in6(rule.host))


def session_key(session: Session6) -> SessionKey:
    """The key of a session (ports given in host order)."""
    return SessionKey(
        in6(session.lan),
        in6(session.remote),
        port(session.lan_port),
        port(session.remote_port),
        session.proto,
    )


class Firewall6Maps:
    """All bcc access to the IPv6 maps goes through here."""

    def __init__(self, bpf) -> None:  # bcc.BPF
        self._settings = bpf["firewall6_settings"]
        self._inside = bpf["firewall6_inside"]
        self._own = bpf["firewall6_own"]
        self._pinholes = bpf["firewall6_pinholes"]
        self._sessions = bpf["firewall6_sessions"]

    def write(self, settings: Settings6) -> None:
        """Additions first, then the settings that use them, then removals:
        nothing in between lets in more than the old or the new rules."""
        for i, rule in enumerate(settings.pinholes):
            self._pinholes[ctypes.c_int(i)] = pinhole_value(rule)
        inside = {(n.prefixlen, n.network_address.packed) for n in settings.inside}
        for prefixlen, packed in inside:
            self._inside[PrefixKey(prefixlen, In6.from_buffer_copy(packed))] = ctypes.c_uint32(1)
        own = {a.packed for a in settings.own}
        for packed in own:
            self._own[In6.from_buffer_copy(packed)] = ctypes.c_uint32(1)
        self._settings[ctypes.c_int(0)] = settings_value(settings)
        for key in list(self._inside.keys()):
            if (key.prefixlen, bytes(key.addr)) not in inside:
                del self._inside[key]
        for key in list(self._own.keys()):
            if bytes(key) not in own:
                del self._own[key]

    def sessions(self) -> Iterator[Session6]:
        for key, value in list(self._sessions.items()):
            yield Session6(
                address(key.lan),
                address(key.remote),
                port(key.lan_port),
                port(key.remote_port),
                key.proto,
                value.last_seen_ns,
                value.tcp_seen,
            )

    def session_count(self) -> int:
        return sum(1 for _ in self._sessions)

    def remove(self, sessions: list[Session6]) -> None:
        """Delete expired sessions, unless the datapath used one since it was read."""
        for session in sessions:
            key = session_key(session)
            with contextlib.suppress(KeyError):  # gone already
                if self._sessions[key].last_seen_ns == session.last_seen_ns:
                    del self._sessions[key]

    def put_session(self, session: Session6) -> None:
        """Write one session as it is (tests: an idle one)."""
        value = SessionValue(session.last_seen_ns, session.tcp_seen)
        self._sessions[session_key(session)] = value
