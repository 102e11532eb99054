"""The DPI slow path's classifiers: punted frames in, a flow's verdict out.

Sans-I/O: `FlowClassifier.feed(frame, now)` takes an Ethernet frame the
datapath punted (a copy of one of a flow's first payload packets, LAN host to
the internet, maybe out of order or duplicated) and returns the flow's
verdict once it is known, else None. Per flow, in the issue's order of trust
(DNS attribution happens elsewhere, before any payload):

TCP: the stream's first bytes (`reassembly.TcpStream`) ->
  1. TLS ClientHello server name (`tls`)           source "sni"
  2. HTTP/1.x Host (`http`)                         source "host"
  3. a fixed signature (`signatures`)               source "signature"
UDP: each datagram ->
  1. QUIC v1/v2 Initials, decrypted (`quic`)        source "quic"
  2. a fixed signature                              source "signature"
then the last resort, the remote port (`ports`):  source "port", guess=True,
or nothing at all:                                 source "unknown".

When a TCP flow's first punted segment is not its first (reordered), the
lowest sequence number seen is mid-stream and nothing parses there; the
flow waits. A verdict from the fallback (port/unknown) is given only when
the start is sure to have been looked at: something recognisable starts
there (a ClientHello without a name, an HTTP request without a Host), a SYN
fixed it, or `FINAL_AFTER` payload segments (the datapath's punt limit)
have arrived, or the flow ended (FIN/RST). Otherwise the caller ends the wait
with `give_up` (e.g. for the keys `expire` returns).

Bounds: `max_flows` flows in progress (the oldest is dropped and reported by
the next `expire`), `max_bytes` per flow (stream bytes, QUIC CRYPTO bytes),
`max_segments` pieces per flow, `timeout` seconds per flow. A flow decided is
remembered (bounded, for `timeout`) so that its later punted packets are
ignored instead of starting it again mid-stream; a SYN starts a new one.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from homegw.modules.dpi.classify import http, ports, quic, signatures, tls
from homegw.modules.dpi.classify.packet import IPPROTO_TCP, FlowKey, Segment, parse_frame
from homegw.modules.dpi.classify.reassembly import TcpStream

__all__ = ["APP_IDS", "FINAL_AFTER", "SOURCE_NUMBERS", "FlowClassifier", "FlowKey", "Verdict"]

FINAL_AFTER = 4  # payload packets: DPI_PUNT_PACKETS, the most the datapath punts per flow (per CPU)
#: Every app id a signature or port verdict can carry (the app database must know them).
APP_IDS = signatures.SIGNATURE_APPS | ports.PORT_APPS


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a flow is. `name` for sni/host/quic, `app` for signature/port."""

    source: str  # "sni" | "host" | "quic" | "signature" | "port" | "unknown"
    name: str | None = None  # a validated, lower-case host name
    app: str | None = None  # an app id (APP_IDS)
    guess: bool = False  # True for port verdicts


UNKNOWN = Verdict("unknown")
#: Verdict.source -> DPI_SOURCE_* of dpi.h (struct dpi_class.source).
SOURCE_NUMBERS = {"sni": 2, "host": 3, "quic": 4, "signature": 5, "port": 6, "unknown": 7}
_WAIT = "wait"  # more bytes may decide
_NOTHING = "nothing"  # nothing recognisable at the presumed start
_FALLBACK = "fallback"  # a recognised start without a name: port guess now


@dataclass(slots=True)
class _Flow:
    first_seen: float
    tcp: TcpStream | None = None
    quic: quic.QuicHello | None = None
    datagrams: int = 0


def port_verdict(key: FlowKey) -> Verdict:
    """The last resort: the remote port's usual app, or unknown."""
    app = ports.guess(key)
    return Verdict("port", app=app, guess=True) if app else UNKNOWN


class FlowClassifier:
    """Bounded per-flow state over punted frames (see the module docstring)."""

    def __init__(
        self,
        max_flows: int = 4096,
        max_bytes: int = 8192,
        timeout: float = 10.0,
        max_segments: int = 16,
    ) -> None:
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_segments = max_segments
        self.counters: Counter[str] = Counter()  # drops by reason, verdicts by source
        self._flows: OrderedDict[FlowKey, _Flow] = OrderedDict()  # oldest first
        self._decided: OrderedDict[FlowKey, float] = OrderedDict()  # key -> when decided
        self._evicted: list[FlowKey] = []
        self._now = 0.0

    def __len__(self) -> int:
        return len(self._flows)

    def feed(self, frame: bytes, now: float) -> tuple[FlowKey, Verdict] | None:
        """A punted frame; the flow's verdict once known (its state is then dropped)."""
        self._now = now
        segment = parse_frame(frame, self.counters)
        if segment is None:
            return None
        key = segment.key
        if key in self._decided:
            if not segment.syn:
                self.counters["decided_flow_packet"] += 1
                return None
            del self._decided[key]  # a new connection on the same ports
        if not segment.payload and not segment.syn and not (segment.fin and key in self._flows):
            self.counters["no_payload"] += 1
            return None
        flow = self._flow(key, now)
        tcp = key.proto == IPPROTO_TCP
        verdict = self._tcp(flow, segment) if tcp else self._udp(flow, segment)
        if verdict is None:
            return None
        self._decide(key, verdict)
        return key, verdict

    def give_up(self, key: FlowKey) -> Verdict:
        """End a flow's wait: its port guess, or unknown (its state is dropped)."""
        verdict = port_verdict(key)
        self._flows.pop(key, None)
        self._decide(key, verdict)
        return verdict

    def expire(self, now: float) -> list[FlowKey]:
        """Flows dropped since the last call: past `timeout`, or evicted for room."""
        self._now = now
        dropped, self._evicted = self._evicted, []
        while self._flows:
            key, flow = next(iter(self._flows.items()))
            if now - flow.first_seen < self.timeout:
                break
            del self._flows[key]
            dropped.append(key)
            self.counters["expired"] += 1
        while self._decided and now - next(iter(self._decided.values())) >= self.timeout:
            self._decided.popitem(last=False)
        return dropped

    def _flow(self, key: FlowKey, now: float) -> _Flow:
        flow = self._flows.get(key)
        if flow is not None:
            return flow
        if len(self._flows) >= self.max_flows:
            oldest, _ = self._flows.popitem(last=False)
            self.counters["evicted"] += 1
            if len(self._evicted) < self.max_flows:
                self._evicted.append(oldest)
        flow = _Flow(now)
        if key.proto == IPPROTO_TCP:
            flow.tcp = TcpStream(self.max_bytes, self.max_segments)
        self._flows[key] = flow
        return flow

    def _decide(self, key: FlowKey, verdict: Verdict) -> None:
        self._flows.pop(key, None)
        self._decided[key] = self._now
        self._decided.move_to_end(key)
        if len(self._decided) > self.max_flows:
            self._decided.popitem(last=False)
        self.counters[f"verdict_{verdict.source}"] += 1

    def _tcp(self, flow: _Flow, segment: Segment) -> Verdict | None:
        stream = flow.tcp
        assert stream is not None
        conflicts = stream.conflicts
        stream.add(segment.seq, segment.payload, segment.syn)
        if stream.conflicts != conflicts:
            self.counters["tcp_overlap_conflict"] += 1
        data = stream.data()
        outcome = self._stream_verdict(data, segment.key) if data else _WAIT
        if isinstance(outcome, Verdict):
            return outcome
        final = (
            outcome == _FALLBACK
            or segment.fin
            or stream.segments >= FINAL_AFTER
            or stream.overflow
            or (outcome == _NOTHING and stream.start_known)
        )
        return port_verdict(segment.key) if final else None

    def _stream_verdict(self, data: bytes, key: FlowKey) -> Verdict | str:
        """The verdict for a stream's first bytes, or _WAIT / _NOTHING / _FALLBACK."""
        hello = tls.parse_records(data)
        if hello.status is tls.TlsStatus.SNI:
            return Verdict("sni", name=hello.sni)
        request = http.parse_request(data)
        if request.status is http.HttpStatus.HOST:
            return Verdict("host", name=request.host)
        signature = signatures.match(data, key)
        if signature.match is signatures.Match.MATCH:
            return Verdict("signature", app=signature.app)
        if hello.status is tls.TlsStatus.MALFORMED:
            self.counters["tls_malformed"] += 1
        if request.status is http.HttpStatus.MALFORMED:
            self.counters["http_malformed"] += 1
        if hello.status is tls.TlsStatus.NEED_MORE and hello.needed > self.max_bytes:
            self.counters["tls_hello_too_big"] += 1
            return _FALLBACK
        if (
            hello.status is tls.TlsStatus.NEED_MORE
            or request.status is http.HttpStatus.NEED_MORE
            or signature.match is signatures.Match.NEED_MORE
        ):
            return _WAIT
        recognised = (tls.TlsStatus.NO_SNI, tls.TlsStatus.MALFORMED)
        if hello.status in recognised or request.status is not http.HttpStatus.NOT_HTTP:
            return _FALLBACK
        return _NOTHING

    def _udp(self, flow: _Flow, segment: Segment) -> Verdict | None:
        flow.datagrams += 1
        payload = segment.payload
        if flow.quic is not None or quic.is_long_header(payload):
            if flow.quic is None:
                flow.quic = quic.QuicHello(self.max_bytes)
            result = flow.quic.feed(payload)
            if result.status is quic.QuicStatus.SNI:
                return Verdict("quic", name=result.sni)
            if result.status is quic.QuicStatus.NEED_MORE and flow.datagrams < FINAL_AFTER:
                return None
            if result.status is quic.QuicStatus.MALFORMED:
                self.counters["quic_malformed"] += 1
            return port_verdict(segment.key)
        signature = signatures.match(payload, segment.key)
        if signature.match is signatures.Match.MATCH:
            return Verdict("signature", app=signature.app)
        return port_verdict(segment.key)
