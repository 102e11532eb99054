"""Shared by the XDP-mode and port-change tests: a namespace with the NICs a
test asks for, and an XDP_PASS program to attach to them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from homegw import netns
from homegw.virtualhome import leftovers


@contextmanager
def gateway_ns(tag: str, make_nics: Callable[[str], None]) -> Iterator[str]:
    """Namespace hgw-<tag>-gw with the NICs `make_nics(name)` adds; gone after."""
    name = f"hgw-{tag}-gw"
    netns.add_netns(name)
    try:
        make_nics(name)
        yield name
    finally:
        netns.delete_netns(name)
    assert not leftovers(tag)


@pytest.fixture(scope="module")
def prog_fd() -> Iterator[int]:
    """An XDP program that passes every frame (bcc: Debian's python3-bpfcc)."""
    from bcc import BPF

    bpf = BPF(text="int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
    try:
        yield bpf.load_func("xdp_pass", BPF.XDP).fd
    finally:
        bpf.cleanup()
