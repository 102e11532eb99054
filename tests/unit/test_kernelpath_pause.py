"""The kernel path's share of pausing: its forward chain drops a paused
device's traffic both ways before anything accepts it (established flows
included), and names nothing when no device is paused."""

from __future__ import annotations

from homegw import kernelpath
from homegw.config import parse_config

MAC, ADDRESS = "02:48:47:00:00:01", "192.168.1.11"


def forward_rules(path: kernelpath.KernelPath) -> list[str]:
    text = kernelpath.ruleset(path)
    chain = text[text.index("chain forward") :]
    return [line.strip() for line in chain.splitlines()[2:] if line.strip() and line.strip() != "}"]


def test_paused_rules_come_first_both_directions() -> None:
    path = kernelpath.KernelPath(
        "lan0", "wan0", True, True, paused_macs=(MAC,), paused_addresses=(ADDRESS,)
    )
    rules = forward_rules(path)
    assert rules[0] == f'ether saddr {{ {MAC} }} counter drop comment "device paused: from"'
    assert rules[1] == (
        f'oifname "lan0" ip daddr {{ {ADDRESS} }} counter drop comment "device paused: to"'
    )
    assert rules[2] == "ct state established,related accept"


def test_nothing_paused_nothing_added() -> None:
    rules = forward_rules(kernelpath.KernelPath("lan0", "wan0", False, True))
    assert not any("paused" in rule for rule in rules)


def test_paused_devices_from_config_and_leases(monkeypatch) -> None:
    class Lease:
        mac, ip = MAC, "192.168.1.100"

    config = parse_config(
        {
            "wan": {"interface": "wan0"},
            "lan": {"interface": "lan0"},
            "dhcp": {"reservations": [{"mac": MAC, "address": "192.168.1.50"}]},
            "devices": [{"mac": MAC, "paused": True}, {"mac": "02:00:00:00:00:09", "name": "tv"}],
        }
    )
    monkeypatch.setattr(
        kernelpath,
        "lan_neighbours",
        lambda _: [(MAC, ADDRESS), ("02:00:00:00:00:09", "192.168.1.9")],
    )
    assert kernelpath.paused_devices(config, [Lease()]) == {
        "paused_macs": (MAC,),
        "paused_addresses": ("192.168.1.100", ADDRESS, "192.168.1.50"),
    }
