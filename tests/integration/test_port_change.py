"""A restart on other ports or in another XDP mode (the first-run page swaps
WAN and LAN or picks another port): `release_nics` takes off what the old
config put where the new one does not want it. Real NICs (veths) in a
namespace, real XDP programs; what is left is read back from the kernel."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from homegw import interfaces, netns
from homegw.appliance import release_nics
from homegw.config import parse_config
from homegw.configschema import Config
from homegw.dataplane import attach
from tests.integration.xdp_nics import gateway_ns, prog_fd

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]
LAN = interfaces.ipaddress.IPv4Interface("192.168.1.1/24")
NICS = ("a0", "b0", "c0")
FIXTURES = (prog_fd,)  # xdp_nics' fixture, used here by name


def _three_veths(name: str) -> None:
    for nic in NICS:
        netns.ip("link", "add", nic, "type", "veth", "peer", "name", f"{nic[0]}1", ns=name)


@pytest.fixture
def ns(unique_tag: str) -> Iterator[str]:
    with gateway_ns(unique_tag, _three_veths) as name:
        yield name


def config(wan: str, lan: str, xdp_mode: str = "native") -> Config:
    return parse_config(
        {"wan": {"interface": wan}, "lan": {"interface": lan}, "dataplane": {"xdp_mode": xdp_mode}}
    )


def addresses(ns: str, dev: str) -> list[str]:
    shown = json.loads(netns.ip("-j", "-4", "addr", "show", "dev", dev, ns=ns))
    return [f"{a['local']}/{a['prefixlen']}" for link in shown for a in link["addr_info"]]


def xdp_modes(ns: str) -> dict[str, str | None]:
    with netns.in_netns(ns):
        return {nic: attach.attached_xdp_mode(nic) for nic in NICS}


def running(ns: str, prog_fd: int, old: Config) -> None:
    """The state the old config's appliance leaves: its roots, the LAN address."""
    with netns.in_netns(ns):
        for nic in (old.lan.interface, old.wan.interface):
            attach.attach_xdp(nic, prog_fd, old.dataplane.xdp_mode)
        interfaces.set_address(old.lan.interface, LAN)


def test_a_swap_moves_the_lan_address_off_the_new_wan_port(ns: str, prog_fd: int) -> None:
    old, new = config("b0", "a0"), config("a0", "b0")
    running(ns, prog_fd, old)
    with netns.in_netns(ns):
        release_nics(old, new)
    assert addresses(ns, "a0") == []  # the WAN port keeps no LAN address
    assert xdp_modes(ns) == {"a0": "native", "b0": "native", "c0": None}  # both in use: kept


def test_a_port_no_longer_used_loses_its_address_and_its_root(ns: str, prog_fd: int) -> None:
    old, new = config("b0", "a0"), config("b0", "c0")
    running(ns, prog_fd, old)
    with netns.in_netns(ns):
        release_nics(old, new)
    assert addresses(ns, "a0") == []
    assert xdp_modes(ns) == {"a0": None, "b0": "native", "c0": None}


def test_another_xdp_mode_takes_off_the_roots_of_the_old_one(ns: str, prog_fd: int) -> None:
    old = config("b0", "a0")
    running(ns, prog_fd, old)
    with netns.in_netns(ns):
        release_nics(old, config("b0", "a0", "auto"))  # auto replaces in place: kept
        assert xdp_modes(ns)["a0"] == "native"
        release_nics(old, config("b0", "a0", "generic"))
        assert xdp_modes(ns) == {"a0": None, "b0": None, "c0": None}
        assert attach.attach_xdp("a0", prog_fd, "generic") == "generic"  # not blocked now
    assert addresses(ns, "a0") == [str(LAN)]  # same LAN port: its address stays
