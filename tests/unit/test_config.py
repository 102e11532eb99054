"""Unit tests of the configuration layer: schema, messages, derivation, load/save, diff."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from homegw.config import (
    Config,
    ConfigError,
    check_config_main,
    config_diff,
    load_config,
    parse_config,
    save_config,
)
from homegw.configtypes import HostPort, PortRange, format_duration, parse_duration

ROOT = Path(__file__).resolve().parents[2]
IP = ipaddress.IPv4Address
IPNet = ipaddress.IPv4Network


def minimal(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"wan": {"interface": "eth0"}, "lan": {"interface": "eth1"}}
    data.update(sections)
    return data


def errors_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.errors


STATIC_WAN = {
    "interface": "eth0",
    "mode": "static",
    "address": "203.0.113.5/24",
    "gateway": "203.0.113.1",
}


# --- acceptance ---------------------------------------------------------------------


def test_check_config_reports_unknown_key_and_bad_address(tmp_path, capsys):
    path = tmp_path / "homegw.yaml"
    path.write_text(
        "lan: {interface: lan0, colour: blue}\n"
        "wan: {interface: wan0, mode: static, address: 198.51.100.300/24, gateway: 198.51.100.1}\n"
    )
    assert check_config_main(str(path)) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"{path}: lan.colour: unknown key" in err
    assert (
        f"{path}: wan.address: '198.51.100.300/24' is not a valid IPv4 address with prefix (CIDR)"
        in err
    )
    assert len(err) == 2


def test_check_config_ok(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text("wan: {interface: eth0}\nlan: {interface: eth1}\n")
    assert check_config_main(str(path)) == 0
    assert capsys.readouterr().out == f"{path}: OK\n"


# --- defaults -----------------------------------------------------------------------


DEFAULTS = {
    "state_dir": "/var/lib/homegw",
    "log_level": "info",
    "wan": {"interface": "eth0", "mode": "dhcp", "address": None, "gateway": None, "dns": [],
            "mtu": None,
            "ipv6": {"mode": "auto", "request_address": True, "request_prefix": True,
                     "prefix_hint": 56, "address": None, "gateway": None, "prefix": None,
                     "dns": []}},
    "lan": {"interface": "eth1", "address": "192.168.1.1/24", "domain": "lan",
            "hostname": "homegw",
            "ipv6": {"mode": "auto", "ula": "auto", "subnet": 0, "dhcpv6": "stateless",
                     "pool_start": "::1000", "pool_end": "::1fff", "ra_interval": 200,
                     "dns_domain": None}},
    "dhcp": {"enabled": True, "range_start": "192.168.1.100", "range_end": "192.168.1.249",
             "lease_time": "12h", "reservations": [], "source_guard": False},
    "firewall": {"wan_ping": True, "forward_wan_to_lan": False, "ipv6_ping_lan": True,
                 "ipv6_pinholes": []},
    "router": {"enabled": True, "routes": [], "neighbour_timeout": "5m"},
    "nat": {"enabled": True, "filtering": "address-port-dependent", "max_sessions": 65536,
            "port_range": "10000-32767", "port_forwards": [], "dmz_host": None,
            "inbound_limits": {"sessions": None, "per_remote": 256, "per_port": None},
            "timeouts": {"tcp_established": "2h4m", "tcp_transitory": "4m", "udp": "5m",
                         "icmp": "1m"}},
    "dns": {"enabled": True, "cache_size": 10000, "upstream_timeout": "2s",
            "rebind_protection": True, "blocklists": [], "block_response": "null",
            "rebind_allow": [], "allow": [], "deny": [], "groups": [], "query_log_size": 1000,
            "fast_path": True},
    "dpi": {"enabled": False, "app_sources": [], "profiles": [], "rules": [], "pauses": []},
    "webui": {"listen": "192.168.1.1:80", "metrics_public": True},
    "dataplane": {"pin_dir": "/sys/fs/bpf/homegw", "xdp_mode": "native", "fastpath": True,
                  "order": {"lan": ["dpi", "dhcp", "dns", "firewall", "router", "nat"],
                            "wan": ["firewall", "nat", "router", "dpi"]}},
    "devices": [],
}  # fmt: skip


def test_minimal_config_has_every_default():
    config = parse_config(minimal())
    assert config.model_dump(mode="json") == DEFAULTS
    assert config.dhcp.lease_time == 43200 and config.nat.timeouts.tcp_established == 7440
    assert (config.webui.listen.host, config.webui.listen.port) == (IP("192.168.1.1"), 80)
    assert (config.lan.ip, config.lan.network) == (IP("192.168.1.1"), IPNet("192.168.1.0/24"))
    assert config.dhcp.range_start == IP("192.168.1.100")
    assert config.nat.port_range == PortRange(10000, 32767)
    assert set(config.modules) == {"dhcp", "firewall", "router", "nat", "dns", "dpi"}


def test_example_file_shows_the_defaults():
    assert load_config(ROOT / "homegw.example.yaml") == parse_config(minimal())


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        inner = getattr(field.annotation, "__args__", (field.annotation,))
        for arg in inner:
            arg = getattr(arg, "__args__", (arg,))[0]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys += _keys(arg, f"{prefix}{name}.")
    return keys


def test_every_key_is_in_the_example_and_the_docs():
    example = (ROOT / "homegw.example.yaml").read_text()
    docs = (ROOT / "README.md").read_text()
    for key in _keys(Config):
        assert re.search(rf"^\s*#?\s*-?\s*{key.split('.')[-1]}:", example, re.M), key
        # list items are documented as `section.list.N.key` (nested: `a.b.N.c.N.d`)
        doc_key = r"(?:\.N)?\.".join(map(re.escape, key.split(".")))
        assert re.search(f"`{doc_key}`", docs), key


@pytest.mark.parametrize(
    ("lan", "start", "end"),
    [
        ("192.168.1.1/24", "192.168.1.100", "192.168.1.249"),
        ("10.0.0.1/16", "10.0.0.100", "10.0.0.249"),
        ("192.168.1.150/24", "192.168.1.151", "192.168.1.249"),
        ("192.168.1.129/25", "192.168.1.192", "192.168.1.254"),
        ("192.168.1.1/30", "192.168.1.2", "192.168.1.2"),
        ("192.168.1.2/30", "192.168.1.1", "192.168.1.1"),
    ],
)
def test_dhcp_range_is_derived_from_lan(lan, start, end):
    config = parse_config(minimal(lan={"interface": "eth1", "address": lan}))
    assert (str(config.dhcp.range_start), str(config.dhcp.range_end)) == (start, end)
    assert config.webui.listen == HostPort(IP(lan.split("/")[0]), 80)


def test_empty_section_means_defaults():
    assert parse_config(minimal(dns=None, nat={"timeouts": None})) == parse_config(minimal())


# --- value types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("1d", 86400),
     ("1h30m", 5400), ("2h4m", 7440), (" 1d1s ", 86401)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1.5h", "30m1h", "h", True, -5, None])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (0, 60, 7440, 90061)] == ["0s", "1m", "2h4m", "1d1h1m1s"]


def test_duration_field_messages():
    assert errors_of(minimal(dhcp={"lease_time": "forever"}, nat={"timeouts": {"udp": 60}})) == [
        "dhcp.lease_time: 'forever' is not a duration (use seconds, or e.g. 90s, 30m, 12h, 1h30m)",
        "nat.timeouts.udp: must be at least 2m (RFC 4787)",
    ]
    assert parse_config(minimal(dhcp={"lease_time": "1h30m"})).dhcp.lease_time == 5400


def test_mac_and_hostname_normalised():
    reservation = {"mac": "AA-BB-CC-DD-EE-0F", "address": "192.168.1.10", "hostname": "Printer"}
    config = parse_config(minimal(dhcp={"reservations": [reservation]}))
    assert config.dhcp.reservations[0].mac == "aa:bb:cc:dd:ee:0f"
    assert config.dhcp.reservations[0].hostname == "printer"


def test_type_messages():
    data = minimal(
        wan={"interface": "eth0/1", "mode": "pppoe", "mtu": True, "dns": ["1.1.1.1", "x"]},
        lan={"interface": "eth1", "address": "10.0.0.1", "domain": "-bad-"},
        dhcp={"reservations": [{"mac": 102030405059, "address": "192.168.1.9"}]},
        dns={"cache_size": "many", "block_response": None, "blocklists": ["lists/ads.txt"]},
        nat={"port_range": "40000-30000", "max_sessions": 10},
        router=[],
        dataplane={"pin_dir": "/tmp/bpf", "order": {"lan": ["dpi", "qos"], "wan": ["nat", "nat"]}},
    )
    assert errors_of(data) == [
        "wan.interface: 'eth0/1' is not a valid interface name (no '/', ':' or whitespace)",
        "wan.mode: must be one of: dhcp, static (not 'pppoe')",
        "wan.dns.1: 'x' is not a valid IPv4 address",
        "wan.mtu: must be an integer, not True",
        "lan.address: '10.0.0.1' needs a prefix length (CIDR), e.g. 10.0.0.1/24",
        "lan.domain: '-bad-' is not a valid host name (RFC 1123: labels of letters, digits and "
        "'-', 1-63 long, separated by dots, not starting or ending with '-')",
        "dhcp.reservations.0.mac: must be a string: quote MAC addresses in YAML "
        "('aa:bb:cc:dd:ee:ff')",
        "router: must be a mapping (key: value), not []",
        "nat.max_sessions: must be at least 1024, not 10",
        "nat.port_range: '40000-30000': write the range LOW-HIGH, with LOW <= HIGH",
        "dns.cache_size: must be an integer, not 'many'",
        "dns.blocklists.0: 'lists/ads.txt' must be an absolute path or an http(s):// URL",
        "dataplane.pin_dir: '/tmp/bpf' must be a directory under /sys/fs/bpf/, e.g. "
        "/sys/fs/bpf/homegw",
        "dataplane.order.lan.1: must be one of: dhcp, router, nat, dns, dpi, firewall (not 'qos')",
    ]


def test_chain_order_duplicates():
    order = {"lan": ["dpi", "nat", "dpi"], "wan": ["nat", "nat"]}
    assert errors_of(minimal(dataplane={"order": order})) == [
        "dataplane.order.lan.2: dpi is listed twice",
        "dataplane.order.wan.1: nat is listed twice",
    ]


def test_chain_order_that_would_leak_is_rejected():
    """NAT before the router on the LAN, or missing where the router is, would
    let routed traffic leave untranslated; the firewall must come first on the WAN."""
    why_nat = (
        "NAT translates what the router sends out of the WAN and what arrives for the WAN "
        "address before the router forwards it; elsewhere traffic would leave untranslated"
    )
    why_fw = (
        "the firewall must see WAN packets before NAT admits them and LAN packets before "
        "the router forwards them"
    )
    order = {"lan": ["dhcp", "firewall", "nat", "router"], "wan": ["nat", "firewall", "router"]}
    assert errors_of(minimal(dataplane={"order": order})) == [
        f"dataplane.order.lan.2: nat must come after router: {why_nat}",
        f"dataplane.order.wan.1: firewall must come before nat: {why_fw}",
    ]
    order = {"lan": ["router"], "wan": ["firewall", "router", "nat"]}
    assert errors_of(minimal(dataplane={"order": order})) == [
        f"dataplane.order.lan: nat is missing while router is in the chain: {why_nat}",
        f"dataplane.order.lan: firewall is missing while router is in the chain: {why_fw}",
        f"dataplane.order.wan.2: nat must come before router: {why_nat}",
    ]
    # without NAT the router may run alone on the LAN side of the firewall
    order = {"lan": ["firewall", "router"], "wan": ["firewall", "router"]}
    parse_config(minimal(nat={"enabled": False}, dataplane={"order": order}))
    assert errors_of(minimal(firewall={"forward_wan_to_lan": True})) == [
        "firewall.forward_wan_to_lan: only with nat.enabled: false; with NAT, port forwards "
        "and nat.dmz_host let traffic in"
    ]


def test_missing_and_unknown_keys():
    assert errors_of({"wan": None, "lan": {}, "extra": 1, "dpi": {"enabled": True, "mode": 2}}) == [
        "wan.interface: required",
        "lan.interface: required",
        "dpi.mode: unknown key",
        "extra: unknown key",
    ]


# --- cross-checks -------------------------------------------------------------------


def test_wan_mode_rules():
    assert errors_of(minimal(wan={"interface": "eth0", "mode": "static"})) == [
        "wan.address: required when wan.mode is static",
        "wan.gateway: required when wan.mode is static",
    ]
    dhcp_with_address = {"interface": "eth0", "address": "203.0.113.5/24"}
    assert errors_of(minimal(wan=dhcp_with_address)) == [
        "wan.address: only allowed when wan.mode is static (with dhcp the ISP assigns it)"
    ]
    assert errors_of(minimal(wan=STATIC_WAN | {"gateway": "198.51.100.1"})) == [
        "wan.gateway: 198.51.100.1 is outside the WAN subnet 203.0.113.0/24"
    ]
    config = parse_config(minimal(wan=STATIC_WAN))
    assert config.wan.gateway == IP("203.0.113.1")


def test_lan_rules():
    lan = {"interface": "eth1", "address": "203.0.113.200/16"}
    assert errors_of({"wan": STATIC_WAN | {"interface": "eth1"}, "lan": lan}) == [
        "lan.interface: must differ from wan.interface (eth1)",
        "lan.address: the LAN subnet 203.0.0.0/16 overlaps the WAN subnet 203.0.113.0/24",
    ]
    assert errors_of(minimal(lan={"interface": "eth1", "address": "192.168.1.0/24"})) == [
        "lan.address: 192.168.1.0 is the network or broadcast address of 192.168.1.0/24"
    ]
    assert errors_of(minimal(lan={"interface": "eth1", "address": "192.168.1.1/31"})) == [
        "lan.address: 192.168.1.1/31: a LAN needs room for hosts, use a /30 or shorter prefix"
    ]


def test_dhcp_range_checks():
    def range_errors(start: str, end: str) -> list[str]:
        return errors_of(minimal(dhcp={"range_start": start, "range_end": end}))

    assert range_errors("192.168.1.50", "192.168.2.10") == [
        "dhcp.range_end: 192.168.2.10 is outside the LAN subnet 192.168.1.0/24"
    ]
    assert range_errors("192.168.1.200", "192.168.1.150") == [
        "dhcp.range_end: 192.168.1.150 is before dhcp.range_start 192.168.1.200"
    ]
    assert range_errors("192.168.1.1", "192.168.1.50") == [
        "dhcp.range_start: 192.168.1.1 is the gateway's own address (lan.address)"
    ]
    lan = {"interface": "eth1", "address": "192.168.1.60/24"}
    dhcp = {"range_start": "192.168.1.50", "range_end": "192.168.1.70"}
    assert errors_of(minimal(lan=lan, dhcp=dhcp)) == [
        "dhcp.range_start: the range 192.168.1.50-192.168.1.70 contains the gateway's own address "
        "192.168.1.60"
    ]
    assert errors_of(minimal(dhcp={"range_start": "192.168.1.50"})) == [
        "dhcp.range_end: required when dhcp.range_start is set"
    ]


def test_reservation_checks():
    reservations = [
        {"mac": "aa:bb:cc:dd:ee:01", "address": "192.168.1.10", "hostname": "tv"},
        {"mac": "AA:BB:CC:DD:EE:01", "address": "192.168.1.10", "hostname": "TV"},
    ]
    assert errors_of(minimal(dhcp={"reservations": reservations})) == [
        "dhcp.reservations.1.mac: duplicate mac aa:bb:cc:dd:ee:01",
        "dhcp.reservations.1.address: duplicate address 192.168.1.10",
        "dhcp.reservations.1.hostname: duplicate hostname tv",
    ]
    outside = [{"mac": "aa:bb:cc:dd:ee:01", "address": "10.0.0.5"}]
    assert errors_of(minimal(dhcp={"reservations": outside})) == [
        "dhcp.reservations.0.address: 10.0.0.5 is outside the LAN subnet 192.168.1.0/24"
    ]


def test_nat_checks():
    forwards = [
        {"external_port": 443, "internal_address": "192.168.1.10"},
        {"external_port": "400-500", "protocol": "tcp", "internal_address": "192.168.1.11"},
        {"external_port": 443, "protocol": "udp", "internal_address": "192.168.1.12"},
        {"external_port": 25000, "internal_address": "192.168.1.12"},
    ]
    assert errors_of(minimal(nat={"port_forwards": forwards, "port_range": "30000-40000"})) == [
        "nat.port_range: 30000-40000 overlaps the kernel's ephemeral port range 32768-60999, "
        "which the appliance keeps for its own connections",
        "nat.port_forwards.1.external_port: tcp 400-500 overlaps nat.port_forwards.0",
        "nat.port_forwards.2.external_port: udp 443 overlaps nat.port_forwards.0",
    ]
    assert errors_of(minimal(nat={"port_forwards": forwards[3:]})) == [
        "nat.port_forwards.0.external_port: 25000 is inside nat.port_range"
    ]
    lan_side = {"port_forwards": [{"external_port": 88, "internal_address": "192.168.1.1"}],
                "dmz_host": "10.1.1.1"}  # fmt: skip
    assert errors_of(minimal(nat=lan_side)) == [
        "nat.port_forwards.0.internal_address: 192.168.1.1 is the gateway's own address "
        "(lan.address)",
        "nat.dmz_host: 10.1.1.1 is outside the LAN subnet 192.168.1.0/24",
    ]


def test_port_forward_internal_port_defaults_to_external():
    forwards = [
        {"external_port": "8000-8010", "internal_address": "192.168.1.10"},
        {"external_port": 2222, "internal_address": "192.168.1.10", "internal_port": 22},
    ]
    first, second = parse_config(minimal(nat={"port_forwards": forwards})).nat.port_forwards
    assert (first.external_port, first.internal_port) == (PortRange(8000, 8010), 8000)
    assert first.internal_ports == PortRange(8000, 8010) and first.protocols == ("tcp", "udp")
    assert (second.internal_ports, second.protocol) == (PortRange(22, 22), "both")


def test_webui_listen_checks():
    assert errors_of(minimal(wan=STATIC_WAN, webui={"listen": "203.0.113.5:443"})) == [
        "webui.listen: the admin surface must not listen on the WAN address"
    ]
    assert errors_of(minimal(webui={"listen": "10.9.9.9:80"})) == [
        "webui.listen: 10.9.9.9 must be the LAN address (192.168.1.1), 127.0.0.1 or 0.0.0.0"
    ]
    assert errors_of(minimal(webui={"listen": "127.0.0.1:99999"})) == [
        "webui.listen: '127.0.0.1:99999': a port is a number from 1 to 65535"
    ]


def test_route_checks():
    routes = [
        {"destination": "10.1.2.3/16", "via": "192.168.1.2"},
        {"destination": "10.1.0.0/16", "via": "192.168.1.3"},
        {"destination": "172.16.0.0/12", "via": "192.168.1.1"},
    ]
    assert errors_of(minimal(router={"routes": routes})) == [
        "router.routes.1.destination: duplicate route to 10.1.0.0/16"
    ]
    assert errors_of(minimal(wan=STATIC_WAN, router={"routes": routes[2:] + [
        {"destination": "10.0.0.0/8", "via": "172.16.0.1"}]})) == [
        "router.routes.0.via: 192.168.1.1 is one of the gateway's own addresses",
        "router.routes.1.via: 172.16.0.1 is not on a directly connected network "
        "(LAN 192.168.1.0/24, WAN 203.0.113.0/24)",
    ]  # fmt: skip


def test_all_errors_at_once_across_sections():
    """A field error in one section does not hide a cross-check error in another."""
    data = minimal(dns={"cache_sise": 5}, webui={"listen": "8.8.8.8:80"})
    assert errors_of(data) == [
        "dns.cache_sise: unknown key",
        "webui.listen: 8.8.8.8 must be the LAN address (192.168.1.1), 127.0.0.1 or 0.0.0.0",
    ]


# --- top level, YAML, files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "top level: the file is empty; it needs at least wan and lan"),
        (["wan"], "top level: must be a mapping of sections, not a list"),
        ("wan", "top level: must be a mapping of sections, not a string"),
    ],
)
def test_top_level_must_be_a_mapping(data, message):
    assert errors_of(data) == [message]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wan:\n  interface: eth0\n lan: [\n",
         "line 3, column 2: expected <block end>, but found '<block mapping start>'"),
        ("wan: {interface: eth0}\nlan:\n  interface: eth1\n  interface: eth2\n",
         "line 4, column 3: duplicate key 'interface'"),
    ],
)  # fmt: skip
def test_bad_yaml_reports_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.errors, caught.value.file) == ([message], str(path))
    assert str(caught.value) == f"{path}: {message}"


def test_unreadable_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.errors == [f"{missing}: cannot read: No such file or directory"]
    assert check_config_main(str(missing)) == 1
    assert capsys.readouterr().err == f"{missing}: cannot read: No such file or directory\n"


def test_save_load_round_trip(tmp_path):
    config = parse_config(
        minimal(
            wan=STATIC_WAN | {"dns": ["9.9.9.9"], "mtu": 1492},
            lan={"interface": "eth1", "address": "10.10.0.1/24", "domain": "home"},
            dhcp={"lease_time": "1d", "reservations": [
                {"mac": "aa:bb:cc:dd:ee:ff", "address": "10.10.0.5", "hostname": "nas"}]},
            router={"routes": [{"destination": "10.20.0.0/16", "via": "10.10.0.2"}]},
            nat={"port_forwards": [{"name": "web", "external_port": "8080-8081",
                                    "internal_address": "10.10.0.5", "internal_port": 80}],
                 "dmz_host": "10.10.0.6", "timeouts": {"udp": "10m"}},
            dns={"blocklists": ["https://example.org/hosts"], "block_response": "nxdomain"},
            dataplane={"xdp_mode": "generic", "order": {"wan": ["firewall", "nat", "router"]}},
        )
    )  # fmt: skip
    path = tmp_path / "homegw.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert sorted(os.listdir(tmp_path)) == ["homegw.yaml"]
    text = path.read_text()
    assert "lease_time: 1d\n" in text and "range_start" not in text and "listen" not in text
    save_config(config.model_copy(update={"log_level": "debug"}), path)
    assert load_config(path).log_level == "debug"
    assert sorted(os.listdir(tmp_path)) == ["homegw.yaml"]


def test_explicit_derivable_values_are_kept_and_saved(tmp_path):
    dhcp = {"range_start": "192.168.1.10", "range_end": "192.168.1.20"}
    config = parse_config(minimal(dhcp=dhcp, webui={"listen": "0.0.0.0:8080"}))
    assert (config.dhcp.range_start, config.dhcp.range_end) == (
        IP(dhcp["range_start"]),
        IP(dhcp["range_end"]),
    )
    assert config.webui.listen == HostPort(IP("0.0.0.0"), 8080)
    path = tmp_path / "c.yaml"
    save_config(config, path)
    assert "range_start: 192.168.1.10\n" in path.read_text()
    assert "listen: 0.0.0.0:8080\n" in path.read_text()
    assert load_config(path) == config


def test_save_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "homegw.yaml"
    path.write_text("old\n")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_config(parse_config(minimal()), path)
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["homegw.yaml"]


def test_config_diff():
    old = parse_config(minimal())
    assert config_diff(old, parse_config(minimal())) == set()
    new = parse_config(minimal(nat={"enabled": False}, dns={"cache_size": 0}, log_level="debug"))
    assert config_diff(old, new) == {"nat", "dns", "log_level"}
    moved = parse_config(minimal(lan={"interface": "eth1", "address": "10.0.0.1/24"}))
    assert config_diff(old, moved) == {"lan", "dhcp", "webui"}


def test_config_is_frozen():
    config = parse_config(minimal())
    with pytest.raises(ValueError, match="frozen"):
        config.wan.interface = "eth9"  # type: ignore[misc]
    assert hash(config) == hash(parse_config(minimal()))


def test_port_forwards_never_take_the_gateways_own_ports():
    def forward(port: object, protocol: str = "both") -> dict:
        return {"external_port": port, "protocol": protocol, "internal_address": "192.168.1.10"}

    forwards = [
        forward(53, "udp"),
        forward("60-70", "udp"),
        forward(68, "tcp"),  # the DHCP client is UDP only: fine
        forward("8440-8450", "tcp"),
        forward(8443, "udp"),  # the web UI is TCP only: fine
        forward("60990-61010"),
    ]
    data = minimal(nat={"port_forwards": forwards}, webui={"listen": "192.168.1.1:8443"})
    assert errors_of(data) == [
        "nat.port_forwards.0.external_port: 53 overlaps 53, the gateway's DNS",
        "nat.port_forwards.1.external_port: 60-70 overlaps 68, the gateway's DHCP client",
        "nat.port_forwards.3.external_port: 8440-8450 overlaps 8443, the web UI (webui.listen)",
        "nat.port_forwards.5.external_port: 60990-61010 overlaps 32768-60999, the kernel's "
        "ephemeral port range",
    ]
    # without webui.listen the web UI is on port 80
    assert errors_of(minimal(nat={"port_forwards": [forward(80, "tcp")]})) == [
        "nat.port_forwards.0.external_port: 80 overlaps 80, the web UI (webui.listen)"
    ]


def test_nat_inbound_limits():
    config = parse_config(minimal())
    assert config.nat.inbound_budget == (16384, 256, 8192)
    small = parse_config(minimal(nat={"max_sessions": 2048, "inbound_limits": {"per_remote": 8}}))
    assert small.nat.inbound_budget == (512, 8, 256)
    too_many = minimal(nat={"max_sessions": 4096, "inbound_limits": {"sessions": 4000}})
    assert errors_of(too_many) == [
        "nat.inbound_limits.sessions: 4000 is more than half of max_sessions (4096): the LAN's "
        "own flows need the rest"
    ]
