"""The first bytes of a stream, rebuilt from pieces that arrive in any order.

`Reassembler` keeps disjoint pieces by offset: a byte already held wins over a
later copy (duplicates and overlaps: first wins, so a retransmission cannot
rewrite what a parser may already have read; a copy that disagrees is
counted in `conflicts`: an evasion attempt or a broken stack), a gap stops `prefix()` (the
parser waits), and everything is bounded: bytes from the start
(`max_bytes`; a piece past the window is cut, and `overflow` says so) and
the number of pieces (`max_pieces`; beyond it new pieces are refused).

`TcpStream` maps TCP sequence numbers to offsets. The datapath punts only
payload packets, so a flow's SYN is normally never seen and the stream's
first byte is not known for sure. The rule: the start is the SYN's seq + 1
when a SYN is seen (TCP Fast Open data); otherwise the lowest sequence
number seen so far (serial arithmetic, RFC 1982: offsets are signed 32-bit
distances from the first seq seen, so a wrap of the sequence space is
harmless). The datapath punts a flow's first payload packets, so the lowest
of them is the stream's first byte once the first packet has arrived; until
then (the first segment was reordered behind a later one) the "start" is
mid-stream. Nothing here can tell: the caller treats a start as certain only
when something parses there (a TLS record header, an HTTP method, a
signature) or when a SYN fixed it, and otherwise waits for more segments --
when a lower segment arrives the start moves back and the parsers run again
from there. Bytes past `max_bytes` from a start that moved back are dropped.
"""

from __future__ import annotations

import bisect

SEQ_SPACE = 1 << 32
HALF_SEQ_SPACE = 1 << 31


class Reassembler:
    """Disjoint pieces of a byte stream by offset, first copy of a byte wins."""

    def __init__(self, max_bytes: int = 8192, max_pieces: int = 32, start: int | None = None):
        self.max_bytes = max_bytes
        self.max_pieces = max_pieces
        self.start = start  # None until the first piece when not given
        self.fixed = start is not None  # a known start: pieces below it are dropped
        self.overflow = False  # some bytes fell past the window (or pieces past the bound)
        self.conflicts = 0  # copies of bytes already held that said something else
        self._offsets: list[int] = []  # sorted; _data[i] starts at _offsets[i]
        self._data: list[bytes] = []

    def add(self, offset: int, data: bytes) -> None:
        """Add the bytes at offset (those already held are kept as they are)."""
        if not data:
            return
        if self.start is None or (not self.fixed and offset < self.start):
            self.start = offset
            self._trim()
        begin = max(offset, self.start)
        end = min(offset + len(data), self.start + self.max_bytes)
        if offset + len(data) > end:
            self.overflow = True
        if begin >= end:
            return
        if self._differs(begin, data[begin - offset : end - offset]):
            self.conflicts += 1
        for piece_start, piece in self._uncovered(begin, end):
            self._insert(piece_start, data[piece_start - offset : piece_start - offset + piece])

    def fix_start(self, offset: int) -> None:
        """The stream starts at offset for sure: bytes below it are dropped."""
        self.start, self.fixed = offset, True
        self._trim()

    def prefix(self) -> bytes:
        """The contiguous bytes from the start (empty while the first is missing)."""
        if self.start is None:
            return b""
        out: list[bytes] = []
        position = self.start
        for offset, data in zip(self._offsets, self._data, strict=True):
            if offset != position:
                break
            out.append(data)
            position += len(data)
        return b"".join(out)

    @property
    def pieces(self) -> int:
        return len(self._offsets)

    def _differs(self, begin: int, data: bytes) -> bool:
        """data (at begin) disagrees with a byte already held."""
        end = begin + len(data)
        i = max(bisect.bisect_right(self._offsets, begin) - 1, 0)
        for offset, held in zip(self._offsets[i:], self._data[i:], strict=True):
            if offset >= end:
                break
            low, high = max(begin, offset), min(end, offset + len(held))
            if (
                low < high
                and held[low - offset : high - offset] != data[low - begin : high - begin]
            ):
                return True
        return False

    def _uncovered(self, begin: int, end: int) -> list[tuple[int, int]]:
        """(offset, length) runs of [begin, end) that no piece holds yet."""
        runs: list[tuple[int, int]] = []
        position = begin
        i = max(bisect.bisect_right(self._offsets, begin) - 1, 0)
        while i < len(self._offsets) and position < end:
            piece_start = self._offsets[i]
            piece_end = piece_start + len(self._data[i])
            if piece_end <= position:
                i += 1
                continue
            if piece_start >= end:
                break
            if piece_start > position:
                runs.append((position, piece_start - position))
            position = max(position, piece_end)
            i += 1
        if position < end:
            runs.append((position, end - position))
        return runs

    def _insert(self, offset: int, data: bytes) -> None:
        if len(self._offsets) >= self.max_pieces:
            self.overflow = True
            return
        i = bisect.bisect_left(self._offsets, offset)
        self._offsets.insert(i, offset)
        self._data.insert(i, data)

    def _trim(self) -> None:
        """Drop what lies outside [start, start + max_bytes) after the start moved."""
        assert self.start is not None
        low, high = self.start, self.start + self.max_bytes
        offsets: list[int] = []
        datas: list[bytes] = []
        for offset, data in zip(self._offsets, self._data, strict=True):
            begin, end = max(offset, low), min(offset + len(data), high)
            if end < offset + len(data):
                self.overflow = True
            if begin < end:
                offsets.append(begin)
                datas.append(data[begin - offset : end - offset])
        self._offsets, self._data = offsets, datas


def seq_distance(seq: int, reference: int) -> int:
    """seq - reference as a signed 32-bit serial-number distance."""
    return (seq - reference + HALF_SEQ_SPACE) % SEQ_SPACE - HALF_SEQ_SPACE


class TcpStream:
    """A TCP flow's first bytes from its segments (see the module docstring)."""

    def __init__(self, max_bytes: int = 8192, max_segments: int = 32) -> None:
        self._reference: int | None = None  # the first seq seen: offsets are relative to it
        self._bytes = Reassembler(max_bytes, max_segments)
        self.segments = 0  # payload segments added, duplicates included

    @property
    def start_known(self) -> bool:
        """A SYN fixed the start (else it is the lowest seq seen, maybe mid-stream)."""
        return self._bytes.fixed

    @property
    def overflow(self) -> bool:
        return self._bytes.overflow

    @property
    def conflicts(self) -> int:
        return self._bytes.conflicts

    def add(self, seq: int, payload: bytes, syn: bool = False) -> None:
        """One segment; a SYN's data starts at seq + 1 (and fixes the start there)."""
        if syn:
            seq = (seq + 1) % SEQ_SPACE
        if self._reference is None:
            self._reference = seq
        offset = seq_distance(seq, self._reference)
        if syn and not self._bytes.fixed:
            self._bytes.fix_start(offset)
        if payload:
            self.segments += 1
            self._bytes.add(offset, payload)

    def data(self) -> bytes:
        """The contiguous bytes from the (presumed) start of the stream."""
        return self._bytes.prefix()
