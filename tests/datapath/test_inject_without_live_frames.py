"""testrun.inject_xdp where the kernel refuses live frames (some sandboxes
do: EPERM): the frame runs through the program once and its verdict is
carried out by packet socket. XDP_TX leaves by the ingress, XDP_REDIRECT by
the interface whose MAC is the frame's source, XDP_PASS and XDP_DROP send
nothing. Captured on the veth peers in a namespace of the test's own."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from bcc import BPF

from homegw import netns
from homegw.dataplane import testrun

pytestmark = pytest.mark.netns

PROGRAMS = """
int tx(struct xdp_md *ctx) { return XDP_TX; }
int redirect(struct xdp_md *ctx) { return bpf_redirect(0, 0); }
int pass(struct xdp_md *ctx) { return XDP_PASS; }
int drop(struct xdp_md *ctx) { return XDP_DROP; }
"""
MAC_A, MAC_B = "02:00:00:00:0a:01", "02:00:00:00:0b:01"


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"hgw-inj-{os.getpid()}"
    netns.add_netns(name)
    try:
        for here, peer, mac in (("ia", "pa", MAC_A), ("ib", "pb", MAC_B)):
            netns.ip(
                "link", "add", "name", here, "address", mac, "type", "veth", "peer", peer, ns=name
            )
            netns.ip("link", "set", here, "up", ns=name)
            netns.ip("link", "set", peer, "up", ns=name)
        with netns.in_netns(name):
            yield name
    finally:
        netns.delete_netns(name)


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testrun, "_live_frames", False)


def _listen(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
    sock.bind((ifname, 0))
    sock.settimeout(5)
    return sock


def _frame(source: str) -> bytes:
    return b"\xff" * 6 + bytes.fromhex(source.replace(":", "")) + b"\x88\xb5" + b"homegw" * 10


def _run(name: str, frame: bytes, ingress: str) -> None:
    program = BPF(text=PROGRAMS).load_func(name, BPF.XDP)
    testrun.inject_xdp(program.fd, frame, socket.if_nametoindex(ingress))


def test_tx_leaves_by_the_ingress(namespace: str, refused: None) -> None:
    with _listen("pa") as peer:
        _run("tx", _frame(MAC_B), "ia")
        assert peer.recv(2048) == _frame(MAC_B)


def test_redirect_leaves_by_the_interface_with_the_frames_source_mac(
    namespace: str, refused: None
) -> None:
    with _listen("pa") as peer_a, _listen("pb") as peer_b:
        _run("redirect", _frame(MAC_B), "ia")
        _run("tx", _frame(MAC_A) + b"end", "ia")  # a marker after it, out of ia
        assert peer_b.recv(2048) == _frame(MAC_B)
        assert peer_a.recv(2048) == _frame(MAC_A) + b"end"  # nothing before it


@pytest.mark.parametrize("verdict", ["pass", "drop"])
def test_pass_and_drop_send_nothing(namespace: str, refused: None, verdict: str) -> None:
    with _listen("pa") as peer_a:
        _run(verdict, _frame(MAC_A), "ia")  # XDP_TX or a redirect would send it out of ia
        _run("tx", _frame(MAC_A) + b"end", "ia")  # a marker after it
        assert peer_a.recv(2048) == _frame(MAC_A) + b"end"  # nothing before it
