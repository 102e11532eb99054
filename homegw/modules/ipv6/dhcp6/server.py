"""The LAN's DHCPv6 server logic (RFC 8415 18.3), pure: time passed in.

    logic = ServerLogic(server_duid, BindingTable(on_change=db.save))
    reply = logic.handle(message, source, options, now)   # a wire.Message or None

INFORMATION-REQUEST -> REPLY with DNS_SERVERS, DOMAIN_LIST and
INFORMATION_REFRESH_TIME (stateless DHCPv6, next to SLAAC). With pools
(stateful): SOLICIT -> ADVERTISE (addresses held HOLD seconds for the client)
or REPLY when the client asks for rapid commit; REQUEST / RENEW / REBIND ->
REPLY binding one address per pool (one per LAN /64) to each IA_NA; RELEASE
frees, DECLINE quarantines (QUARANTINE s). Without pools SOLICIT gets an
ADVERTISE with NoAddrsAvail (RFC 8415 18.3.9); IA_PD (a downstream router
asking for a prefix) gets NoPrefixAvail in its IA.

A client is its DUID; a binding is (DUID, IAID, address). RENEW/REBIND of an
address this client does not hold: adopted if it is free and in a pool (a
lease store that lost its last writes heals), otherwise returned with
lifetimes 0 (foreign, out of the pools after a renumbering) and a fresh one
added. Allocation: a stable hash of (DUID, IAID) picks the first candidate,
then at most MAX_PROBES neighbours are tried: bounded work per message.

Hostile LAN devices: per source address a token bucket (RATE, BURST; the
table of sources is bounded) and one for all sources together (RATE_ALL,
against forged sources), at most MAX_IA_NA IA_NAs served per message, at most
MAX_PER_SOURCE live bindings per source address and MAX_BINDINGS in all;
every refusal or drop is counted in `counters` by reason.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv6Address

from homegw.modules.dhcp.packet import sanitize_label
from homegw.modules.ipv6.dhcp6 import wire
from homegw.modules.ipv6.dhcp6.wire import IaAddr, IaNa, Message, MsgType, Status, StatusCode

HOLD = 30.0  # seconds an advertised address stays reserved for its client
QUARANTINE = 600.0  # seconds a declined address is not handed out
INFO_REFRESH = 3600  # seconds between a stateless client's INFORMATION-REQUESTs
MAX_PROBES = 64
MAX_IA_NA = 4
MAX_PER_SOURCE = 16
MAX_BINDINGS = 8192
MAX_HOLDS = 4096
RATE = 5.0  # messages per second per source, sustained
BURST = 20.0
MAX_SOURCES = 1024  # rate-limit buckets kept (least recently seen dropped)
RATE_ALL = 200.0  # messages per second from all sources (forged sources included)
BURST_ALL = 400.0


@dataclass(frozen=True)
class ServerOptions:
    """What the server hands out now (a callable gives it: prefixes change)."""

    dns_servers: tuple[IPv6Address, ...]
    domains: tuple[str, ...]
    pools: tuple[tuple[IPv6Address, IPv6Address], ...] = ()  # stateful: (first, last) per LAN /64
    preferred: int = 3600  # lifetimes of stateful leases (the caller caps them by the prefix's)
    valid: int = 7200


class State(enum.StrEnum):
    BOUND = "bound"
    RELEASED = "released"
    DECLINED = "declined"


@dataclass(frozen=True)
class Binding:
    address: IPv6Address
    client: str  # the client's DUID, hex
    iaid: int
    mac: str | None
    hostname: str | None
    source: str  # the address the client sent from (per-source limits)
    expires: float
    state: State

    def live(self, now: float) -> bool:
        return self.state is not State.RELEASED and self.expires > now


class BindingTable:
    """Bindings by address and by (client, IAID); every change goes to `on_change`."""

    def __init__(
        self,
        on_change: Callable[[Binding], None] = lambda b: None,
        on_delete: Callable[[IPv6Address], None] = lambda a: None,
    ) -> None:
        self._by_address: dict[IPv6Address, Binding] = {}
        self._by_ia: dict[tuple[str, int], set[IPv6Address]] = {}
        self._holds: dict[IPv6Address, tuple[str, float]] = {}
        self._on_change = on_change
        self._on_delete = on_delete

    def load(self, records: Iterable[Binding]) -> None:
        for binding in records:
            self._put(binding, persist=False)

    def _put(self, binding: Binding, persist: bool = True) -> None:
        old = self._by_address.get(binding.address)
        if old is not None:
            self._by_ia.get((old.client, old.iaid), set()).discard(old.address)
        self._by_address[binding.address] = binding
        self._by_ia.setdefault((binding.client, binding.iaid), set()).add(binding.address)
        if persist:
            self._on_change(binding)

    def get(self, address: IPv6Address) -> Binding | None:
        return self._by_address.get(address)

    def of_ia(self, client: str, iaid: int, now: float) -> list[Binding]:
        found = (self._by_address[a] for a in self._by_ia.get((client, iaid), ()))
        return [b for b in found if b.state is State.BOUND and b.expires > now]

    def active(self, now: float) -> list[Binding]:
        return [b for b in self._by_address.values() if b.state is State.BOUND and b.expires > now]

    def count_live(self, now: float, source: str | None = None) -> int:
        return sum(
            1
            for b in self._by_address.values()
            if b.live(now) and (source is None or b.source == source)
        )

    def free_for(self, address: IPv6Address, client: str, now: float) -> bool:
        """Nobody else holds, binds or quarantines `address`."""
        hold = self._holds.get(address)
        if hold is not None and hold[1] > now and hold[0] != client:
            return False
        binding = self._by_address.get(address)
        if binding is None or not binding.live(now):
            return True
        return binding.client == client and binding.state is State.BOUND

    def hold(self, address: IPv6Address, client: str, now: float) -> bool:
        """Reserve `address` for an ADVERTISE; False when MAX_HOLDS are taken."""
        if len(self._holds) >= MAX_HOLDS and address not in self._holds:
            return False
        self._holds[address] = (client, now + HOLD)
        return True

    def bind(self, binding: Binding) -> None:
        self._holds.pop(binding.address, None)
        self._put(binding)

    def end(self, address: IPv6Address, state: State, expires: float) -> None:
        old = self._by_address.get(address)
        if old is not None:
            self._put(replace(old, state=state, expires=expires))

    def reclaim(self, now: float) -> int:
        """Forget bindings no longer live (released, expired, quarantine over):
        the hash gives a returning client the same address anyway."""
        gone = [b for b in self._by_address.values() if not b.live(now)]
        for binding in gone:
            del self._by_address[binding.address]
            self._by_ia.get((binding.client, binding.iaid), set()).discard(binding.address)
            if not self._by_ia.get((binding.client, binding.iaid)):
                self._by_ia.pop((binding.client, binding.iaid), None)
            self._on_delete(binding.address)
        return len(gone)

    def next_expiry(self) -> float | None:
        """When the next live binding ends (the server's timer)."""
        live = [b.expires for b in self._by_address.values() if b.state is not State.RELEASED]
        return min(live) if live else None

    def prune_holds(self, now: float) -> None:
        for address in [a for a, (_, until) in self._holds.items() if until <= now]:
            del self._holds[address]


class RateLimiter:
    """A token bucket per key, in a bounded table."""

    def __init__(self, rate: float = RATE, burst: float = BURST, size: int = MAX_SOURCES) -> None:
        self.rate, self.burst, self.size = rate, burst, size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return allowed


def mac_from_link_local(source: IPv6Address) -> str | None:
    """The MAC inside a modified EUI-64 link-local address (fe80::xxff:fexx:xxxx)."""
    raw = source.packed
    if not source.is_link_local or raw[11:13] != b"\xff\xfe":
        return None
    return _mac_text(bytes((raw[8] ^ 0x02,)) + raw[9:11] + raw[13:16])


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def client_mac(duid: bytes, source: IPv6Address) -> str | None:
    """The client's MAC: from its DUID-LL/LLT, else from an EUI-64 link-local source."""
    mac = wire.duid_mac(duid)
    return _mac_text(mac) if mac is not None else mac_from_link_local(source)


def client_hostname(msg: Message) -> str | None:
    """The first label of the CLIENT_FQDN option, sanitised like DHCPv4 names."""
    label = wire.fqdn_first_label(msg.fqdn) if msg.fqdn else None
    return sanitize_label(label) if label else None


_NEEDS_OUR_ID = (MsgType.REQUEST, MsgType.RENEW, MsgType.RELEASE, MsgType.DECLINE)
_NO_SERVER_ID = (MsgType.SOLICIT, MsgType.REBIND)


class ServerLogic:
    """See the module docstring; `counters` holds every outcome by reason."""

    def __init__(self, server_duid: bytes, table: BindingTable) -> None:
        self.server_duid = server_duid
        self.table = table
        self.rate = RateLimiter()
        self.rate_all = RateLimiter(RATE_ALL, BURST_ALL, size=1)
        self.counters: Counter[str] = Counter()

    def handle(
        self, msg: Message, source: IPv6Address, options: ServerOptions, now: float
    ) -> Message | None:
        reason = self._refuse(msg, source, now)
        if reason:
            self.counters[f"drop_{reason}"] += 1
            return None
        self.counters[f"rx_{MsgType(msg.msg_type).name.lower()}"] += 1
        self.table.prune_holds(now)
        if msg.msg_type == MsgType.INFORMATION_REQUEST:
            return self._reply(msg, MsgType.REPLY, options, info=True)
        if msg.msg_type == MsgType.RELEASE:
            return self._release(msg, State.RELEASED, now, options)
        if msg.msg_type == MsgType.DECLINE:
            return self._release(msg, State.DECLINED, now + QUARANTINE, options)
        commit = msg.msg_type != MsgType.SOLICIT or msg.rapid_commit
        kind = MsgType.ADVERTISE if not commit else MsgType.REPLY
        if not options.pools and msg.msg_type == MsgType.SOLICIT:
            return self._reply(msg, kind, options, status=StatusCode(Status.NO_ADDRS_AVAIL))
        ias = tuple(
            self._serve_ia(ia, msg, source, options, commit, now) for ia in msg.ia_na[:MAX_IA_NA]
        )
        if len(msg.ia_na) > MAX_IA_NA:
            self.counters["drop_ia_over_limit"] += len(msg.ia_na) - MAX_IA_NA
        return self._reply(msg, kind, options, ia_na=ias, rapid=commit and msg.rapid_commit)

    # ------------------------------------------------------------ checks

    def _refuse(self, msg: Message, source: IPv6Address, now: float) -> str | None:
        kind = msg.msg_type
        if kind in (MsgType.ADVERTISE, MsgType.REPLY, MsgType.RECONFIGURE, MsgType.CONFIRM):
            return "not_a_request" if kind != MsgType.CONFIRM else "confirm"
        if msg.client_id is None and kind != MsgType.INFORMATION_REQUEST:
            return "no_client_id"
        if kind in _NEEDS_OUR_ID and msg.server_id != self.server_duid:
            return "not_for_us"
        if kind in _NO_SERVER_ID and msg.server_id is not None:
            return "unexpected_server_id"
        if kind == MsgType.INFORMATION_REQUEST:
            if msg.server_id not in (None, self.server_duid):
                return "not_for_us"
            if msg.ia_na or msg.ia_pd:
                return "ia_in_information_request"
        if not self.rate.allow(str(source), now):
            return "rate_limited"
        if not self.rate_all.allow("all", now):
            return "rate_limited_all"
        return None

    # ------------------------------------------------------------ addresses

    def _serve_ia(
        self,
        ia: IaNa,
        msg: Message,
        source: IPv6Address,
        options: ServerOptions,
        commit: bool,
        now: float,
    ) -> IaNa:
        assert msg.client_id is not None
        client = msg.client_id.hex()
        held = {b.address: b for b in self.table.of_ia(client, ia.iaid, now)}
        out: list[IaAddr] = []
        renewal = msg.msg_type in (MsgType.RENEW, MsgType.REBIND)
        for asked in ia.addresses[:MAX_PROBES] if renewal else ():  # else only hints
            if asked.address in held or self._adoptable(asked.address, client, options, now):
                continue  # renewed (or adopted) below
            self.counters["foreign_address"] += 1
            out.append(IaAddr(asked.address, 0, 0))  # not yours (or not here any more)
        for first, last in options.pools:
            address = self._pick(client, ia, held, first, last, options, now)
            if address is None:
                continue
            if not commit:
                if not self.table.hold(address, client, now):
                    self.counters["drop_holds_full"] += 1
                    continue
            elif not self._bind(address, client, ia.iaid, msg, source, options, now):
                continue
            out.append(IaAddr(address, options.preferred, options.valid))
        for address in held:  # bound before but outside every pool now
            if not _in_pools(address, options):
                out.append(IaAddr(address, 0, 0))
                if commit:
                    self.table.end(address, State.RELEASED, now)
        if not any(a.valid for a in out):
            self.counters["no_address"] += 1
            return IaNa(ia.iaid, addresses=tuple(out), status=StatusCode(Status.NO_ADDRS_AVAIL))
        t1, t2 = options.preferred // 2, options.preferred * 4 // 5
        return IaNa(ia.iaid, t1, t2, tuple(out))

    def _adoptable(
        self, address: IPv6Address, client: str, options: ServerOptions, now: float
    ) -> bool:
        """`address` may be this client's: in a pool and nobody else's."""
        return _in_pools(address, options) and self.table.free_for(address, client, now)

    def _pick(
        self,
        client: str,
        ia: IaNa,
        held: dict[IPv6Address, Binding],
        first: IPv6Address,
        last: IPv6Address,
        options: ServerOptions,
        now: float,
    ) -> IPv6Address | None:
        """This IA's address in the pool first..last: the one it holds or asks
        for, else a free one near the hash of (client, IAID)."""
        in_pool = [a for a in held if first <= a <= last]
        if in_pool:
            return in_pool[0]
        for asked in ia.addresses[:MAX_PROBES]:
            if first <= asked.address <= last and self.table.free_for(asked.address, client, now):
                return asked.address
        size = int(last) - int(first) + 1
        if size <= 0:
            return None
        digest = hashlib.sha256(f"{client}/{ia.iaid}".encode()).digest()
        start = int.from_bytes(digest[:8], "big") % size
        for step in range(min(MAX_PROBES, size)):
            candidate = IPv6Address(int(first) + (start + step) % size)
            if self.table.free_for(candidate, client, now):
                return candidate
        self.counters["pool_exhausted"] += 1
        return None

    def _bind(
        self,
        address: IPv6Address,
        client: str,
        iaid: int,
        msg: Message,
        source: IPv6Address,
        options: ServerOptions,
        now: float,
    ) -> bool:
        known = self.table.get(address)
        renewing = known is not None and known.client == client and known.live(now)
        if not renewing:
            if self.table.count_live(now, str(source)) >= MAX_PER_SOURCE:
                self.counters["drop_source_limit"] += 1
                return False
            if self.table.count_live(now) >= MAX_BINDINGS:
                self.counters["drop_table_full"] += 1
                return False
        assert msg.client_id is not None
        hostname = client_hostname(msg) or (known.hostname if renewing and known else None)
        self.table.bind(
            Binding(
                address,
                client,
                iaid,
                client_mac(msg.client_id, source),
                hostname,
                str(source),
                now + options.valid,
                State.BOUND,
            )
        )
        return True

    def _release(
        self, msg: Message, state: State, expires: float, options: ServerOptions
    ) -> Message:
        assert msg.client_id is not None
        client = msg.client_id.hex()
        for ia in msg.ia_na[:MAX_IA_NA]:
            for item in ia.addresses:
                binding = self.table.get(item.address)
                if binding is not None and binding.client == client:
                    self.table.end(item.address, state, expires)
                    self.counters[state.value] += 1
        return self._reply(msg, MsgType.REPLY, options, status=StatusCode(Status.SUCCESS))

    # ------------------------------------------------------------ replies

    def _reply(
        self,
        msg: Message,
        kind: MsgType,
        options: ServerOptions,
        *,
        ia_na: tuple[IaNa, ...] = (),
        status: StatusCode | None = None,
        rapid: bool = False,
        info: bool = False,
    ) -> Message:
        no_prefix = StatusCode(Status.NO_PREFIX_AVAIL, "no prefix delegation on the LAN")
        self.counters[f"tx_{kind.name.lower()}"] += 1
        return Message(
            kind,
            msg.transaction_id,
            client_id=msg.client_id,
            server_id=self.server_duid,
            ia_na=ia_na,
            ia_pd=tuple(wire.IaPd(ia.iaid, status=no_prefix) for ia in msg.ia_pd[:MAX_IA_NA]),
            status=status,
            rapid_commit=rapid,
            dns_servers=options.dns_servers,
            domains=options.domains,
            info_refresh=INFO_REFRESH if info else None,
        )


def _in_pools(address: IPv6Address, options: ServerOptions) -> bool:
    return any(first <= address <= last for first, last in options.pools)
