"""Config section ``nat:`` of the NAT IO module (NAPT on the WAN address).

``port_range`` is the pool of WAN ports the NAT hands out.  The appliance sets
the kernel's own ephemeral range (net.ipv4.ip_local_port_range) to 32768-60999,
so the pool must stay outside it: the two never hand out the same port.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, model_validator

from homegw.configtypes import (
    EPHEMERAL_PORTS,
    ChainRules,
    Duration,
    IPv4Address,
    PortRange,
    Problem,
    Section,
    duration_range,
    raise_problems,
)

Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


class NatTimeouts(Section):
    """Idle timeouts of NAT sessions; the minimums are the RFCs' MUSTs."""

    tcp_established: Annotated[Duration, duration_range(7440, why="RFC 5382")] = 7440
    tcp_transitory: Annotated[Duration, duration_range(240, why="RFC 5382")] = 240
    udp: Annotated[Duration, duration_range(120, why="RFC 4787")] = 300
    icmp: Annotated[Duration, duration_range(60, why="RFC 5508")] = 60


class InboundLimits(Section):
    """Sessions that packets from outside may create (port forwards, the DMZ,
    endpoint-independent filtering): a budget of its own, so that strangers
    cannot fill the table the home's own flows need (RFC 6888 REQ-4/5).
    ``sessions`` defaults to a quarter of ``max_sessions``, ``per_port`` to
    half of ``sessions``."""

    sessions: Annotated[int, Field(strict=True, ge=64, le=2_097_152)] | None = None
    per_remote: Annotated[int, Field(strict=True, ge=1, le=2_097_152)] = 256
    per_port: Annotated[int, Field(strict=True, ge=1, le=2_097_152)] | None = None


class PortForward(Section):
    """Inbound WAN ``external_port`` (one port or a range) to a LAN host.

    ``internal_port`` is the first internal port; it defaults to the first
    external port (a range keeps its length: 8000-8010 -> 8000-8010).
    """

    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    protocol: Literal["tcp", "udp", "both"] = "both"
    external_port: PortRange
    internal_address: IPv4Address
    internal_port: Port | None = None

    @model_validator(mode="after")
    def _fill(self) -> PortForward:
        if self.internal_port is None:
            object.__setattr__(self, "internal_port", self.external_port.low)
        end = self.internal_ports.high
        if end > 65535:
            raise_problems("PortForward", [(("internal_port",), f"the range would end at {end}")])
        return self

    @property
    def internal_ports(self) -> PortRange:
        first = self.internal_port or self.external_port.low
        return PortRange(first, first + self.external_port.size - 1)

    @property
    def protocols(self) -> tuple[str, ...]:
        return ("tcp", "udp") if self.protocol == "both" else (self.protocol,)


class NatConfig(Section):
    """``nat:`` -- source NAT of LAN traffic to the WAN address, port forwards, DMZ."""

    chain_rules: ClassVar[ChainRules] = ChainRules(
        lan_after=("router",),
        wan_before=("router",),
        required_with=("router",),
        why="NAT translates what the router sends out of the WAN and what arrives for "
        "the WAN address before the router forwards it; elsewhere traffic would leave "
        "untranslated",
    )

    enabled: StrictBool = True
    filtering: Literal["address-port-dependent", "endpoint-independent"] = "address-port-dependent"
    max_sessions: Annotated[int, Field(strict=True, ge=1024, le=4_194_304)] = 65536
    port_range: PortRange = PortRange(10000, 32767)  # 22,768 ports per protocol
    timeouts: NatTimeouts = Field(default_factory=NatTimeouts)
    port_forwards: tuple[PortForward, ...] = ()
    dmz_host: IPv4Address | None = None
    inbound_limits: InboundLimits = Field(default_factory=InboundLimits)

    @model_validator(mode="after")
    def _check(self) -> NatConfig:
        problems = self._pool_problems() + self._forward_problems() + self._budget_problems()
        raise_problems("NatConfig", problems)
        return self

    @property
    def inbound_budget(self) -> tuple[int, int, int]:
        """(sessions, per remote, per port) that packets from outside may create."""
        limits = self.inbound_limits
        sessions = limits.sessions or self.max_sessions // 4
        return sessions, limits.per_remote, limits.per_port or max(1, sessions // 2)

    def _budget_problems(self) -> list[Problem]:
        sessions = self.inbound_limits.sessions
        if sessions is not None and sessions * 2 > self.max_sessions:
            reason = (
                f"{sessions} is more than half of max_sessions "
                f"({self.max_sessions}): the LAN's own flows need the rest"
            )
            return [(("inbound_limits", "sessions"), reason)]
        return []

    def _pool_problems(self) -> list[Problem]:
        pool, ephemeral = self.port_range, PortRange(*EPHEMERAL_PORTS)
        if pool.low < 1024:
            return [(("port_range",), f"{pool} must start at 1024 or above")]
        if pool.overlaps(ephemeral):
            return [
                (
                    ("port_range",),
                    f"{pool} overlaps the kernel's ephemeral port range {ephemeral}, "
                    "which the appliance keeps for its own connections",
                )
            ]
        return []

    def _forward_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        for i, forward in enumerate(self.port_forwards):
            where = ("port_forwards", i, "external_port")
            if forward.external_port.overlaps(self.port_range):
                problems.append((where, f"{forward.external_port} is inside nat.port_range"))
            for j, earlier in enumerate(self.port_forwards[:i]):
                shared = set(forward.protocols) & set(earlier.protocols)
                if shared and forward.external_port.overlaps(earlier.external_port):
                    protocol = "/".join(sorted(shared))
                    problems.append(
                        (
                            where,
                            f"{protocol} {forward.external_port} overlaps nat.port_forwards.{j}",
                        )
                    )
                    break
        return problems
