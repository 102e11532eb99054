"""First boot without namespaces: the port choice, the config text, the banner,
the probe's parsers (DHCP OFFER, rtnetlink link events) on crafted bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import yaml

from homegw import firstboot, portprobe
from homegw.config import ConfigError, load_config
from homegw.firstboot import FirstBootError, PortFacts, Request, choose_ports
from homegw.modules.dhcp import packet as dhcp
from homegw.modules.dhcp.l2 import ipv4_udp

EXAMPLE = Path(__file__).resolve().parents[2] / "homegw.example.yaml"
MAC = bytes.fromhex("020000000001")


# -- choose_ports -----------------------------------------------------------------


def test_the_port_a_dhcp_server_answered_on_is_wan_whatever_its_name() -> None:
    choice = choose_ports(
        [
            PortFacts("enp3s0", carrier=True, offer_from="10.0.0.1", offered="10.0.0.7"),
            PortFacts("enp1s0", carrier=True),
            PortFacts("enp2s0"),
        ]
    )
    assert (choice.wan, choice.lan) == ("enp3s0", "enp1s0")
    assert choice.reason == "a DHCP server (10.0.0.1) answered on enp3s0, offering 10.0.0.7"
    assert choice.ports == ("enp1s0", "enp2s0", "enp3s0")


def test_two_answering_ports_the_first_by_name_and_the_other_said() -> None:
    choice = choose_ports(
        [
            PortFacts("eth1", True, "192.168.0.1", "192.168.0.5"),
            PortFacts("eth0", True, "10.0.0.1", "10.0.0.9"),
        ]
    )
    assert (choice.wan, choice.lan) == ("eth0", "eth1")
    assert choice.reason.endswith("offering 10.0.0.9 (also on eth1)")


def test_without_dhcp_the_only_port_with_a_link() -> None:
    choice = choose_ports([PortFacts("eth0"), PortFacts("eth1", carrier=True), PortFacts("eth2")])
    assert (choice.wan, choice.lan) == ("eth1", "eth0")
    assert choice.reason == "no DHCP server answered; eth1 is the only port with a link"


@pytest.mark.parametrize(
    ("carriers", "why"),
    [
        ((False, False), "no port has a link"),
        ((True, True), "2 ports have a link"),
    ],
)
def test_otherwise_the_first_port_by_name(carriers: tuple[bool, bool], why: str) -> None:
    choice = choose_ports([PortFacts("eth1", carriers[1]), PortFacts("eth0", carriers[0])])
    assert (choice.wan, choice.lan) == ("eth0", "eth1")
    assert choice.reason == f"no DHCP server answered and {why}: eth0 is the first port by name"


@pytest.mark.parametrize("ports", [[], [PortFacts("eth0", True, "10.0.0.1", "10.0.0.2")]])
def test_fewer_than_two_ports_is_a_clear_refusal(ports: list[PortFacts]) -> None:
    with pytest.raises(FirstBootError, match=r"needs two Ethernet ports \(WAN and LAN\); found"):
        choose_ports(ports)


# -- the config text --------------------------------------------------------------


def test_the_default_file_keeps_every_line_but_the_three_set() -> None:
    text = EXAMPLE.read_text()
    settings = {
        ("wan", "interface"): "enp1s0",
        ("lan", "interface"): "enp2s0",
        ("dataplane", "xdp_mode"): "auto",
    }
    new, config = firstboot.with_settings(text, settings)
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    assert [b.split("#")[0].rstrip() for _, b in changed] == [
        "  interface: enp1s0",
        "  interface: enp2s0",
        "  xdp_mode: auto",
    ]
    assert all("#" in b for _, b in changed)  # the comments stay
    assert (config.wan.interface, config.lan.interface) == ("enp1s0", "enp2s0")
    assert config.dataplane.xdp_mode == "auto"


def test_a_file_without_the_lines_is_rewritten_from_its_data() -> None:
    text = "wan: {interface: eth0}\nlan: {interface: eth1, address: 10.1.1.1/24}\n"
    new, config = firstboot.with_settings(text, {("wan", "interface"): "eth5"})
    assert yaml.safe_load(new)["wan"]["interface"] == "eth5"
    assert yaml.safe_load(new)["lan"]["address"] == "10.1.1.1/24"
    assert str(config.lan.address) == "10.1.1.1/24"


def test_an_invalid_result_is_refused_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as refused:
        firstboot.with_settings(
            EXAMPLE.read_text(), {("wan", "interface"): "eth1", ("lan", "interface"): "eth1"}
        )
    assert any(line.startswith("lan.interface") for line in refused.value.errors)


def test_first_config_is_written_0600_and_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(firstboot, "PACKAGED_DEFAULT", tmp_path / "absent.yaml")
    path = tmp_path / "etc" / "homegw" / "homegw.yaml"
    choice = firstboot.PortChoice("enp1s0", "enp2s0", "why", ("enp1s0", "enp2s0"))
    firstboot.first_config(path, choice)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_config(path)
    assert (loaded.wan.interface, loaded.lan.interface) == ("enp1s0", "enp2s0")
    assert str(loaded.lan.address) == "192.168.1.1/24" and loaded.dhcp.enabled


def test_the_packaged_default_is_preferred(tmp_path: Path, monkeypatch) -> None:
    packaged = tmp_path / "homegw.yaml"
    packaged.write_text(EXAMPLE.read_text().replace("192.168.1.1/24", "192.168.50.1/24"))
    monkeypatch.setattr(firstboot, "PACKAGED_DEFAULT", packaged)
    assert "192.168.50.1/24" in firstboot.default_config_text()


# -- the banner and the command ---------------------------------------------------


def test_the_banner_says_what_to_plug_where_and_how_to_override() -> None:
    text = EXAMPLE.read_text()
    _, config = firstboot.with_settings(
        text, {("wan", "interface"): "enp1s0", ("lan", "interface"): "enp2s0"}
    )
    ports = ("enp1s0", "enp2s0")
    shown = firstboot.banner(config, "the reason", "the first other port", ports, "c0de")
    assert "  WAN (internet): enp1s0  (the reason)\n" in shown
    assert "  LAN address:    192.168.1.1\n" in shown
    assert "Plug the modem into enp1s0, the home switch/computer into enp2s0,\n" in shown
    assert "then open http://192.168.1.1/ to set the admin password; setup code: c0de\n" in shown
    assert "homegw firstboot --wan <port> --lan <port> && systemctl restart homegw" in shown
    once_set_up = firstboot.banner(config, "the reason", "the first other port", ports)
    assert "then open http://192.168.1.1/ to manage homegw.\n" in once_set_up


def example_in(tmp_path: Path) -> str:
    """The example config with its state_dir under tmp_path (the setup code goes there)."""
    state = tmp_path / "state"
    return EXAMPLE.read_text().replace("state_dir: /var/lib/homegw", f"state_dir: {state}", 1)


def test_a_config_present_shows_the_banner_with_the_setup_code_and_writes_the_issue_file(
    tmp_path: Path, capsys
) -> None:
    config = tmp_path / "homegw.yaml"
    config.write_text(example_in(tmp_path))
    issue = tmp_path / "run" / "issue"
    assert firstboot.run(Request(config, issue_file=issue)) == 0
    out = capsys.readouterr().out
    assert issue.read_text() == out
    assert f"WAN (internet): eth0  (from {config})" in out
    assert config.read_text() == example_in(tmp_path)
    # the code the first-run page asks for, made before the appliance's first start
    code = (tmp_path / "state" / "setup-token").read_text().strip()
    assert f"to set the admin password; setup code: {code}\n" in out
    assert firstboot.run(Request(config, issue_file=issue)) == 0  # the next boot: the same code
    assert f"setup code: {code}\n" in capsys.readouterr().out


def test_once_there_is_an_admin_the_banner_has_no_code(tmp_path: Path, capsys) -> None:
    from homegw.auth import AuthStore

    config = tmp_path / "homegw.yaml"
    config.write_text(example_in(tmp_path))
    AuthStore(tmp_path / "state").set_password("a long enough password")
    assert firstboot.run(Request(config, issue_file=None)) == 0
    out = capsys.readouterr().out
    assert "then open http://192.168.1.1/ to manage homegw.\n" in out
    assert "setup code" not in out and not (tmp_path / "state" / "setup-token").exists()


def test_banner_only_without_a_config_is_refused(tmp_path: Path, capsys) -> None:
    config = tmp_path / "homegw.yaml"
    assert firstboot.run(Request(config, banner_only=True, issue_file=None)) == 1
    assert "cannot read" in capsys.readouterr().err


def test_wan_without_lan_is_refused(tmp_path: Path, capsys) -> None:
    assert firstboot.run(Request(tmp_path / "c.yaml", wan="eth0", issue_file=None)) == 1
    assert "give both --wan and --lan" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()


def test_a_probe_of_one_port_writes_nothing_and_says_so(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    found = portprobe.ProbeResult([PortFacts("eth0", True)])
    monkeypatch.setattr(portprobe, "probe", lambda include_virtual=False: found)
    config, issue = tmp_path / "homegw.yaml", tmp_path / "issue"
    assert firstboot.run(Request(config, issue_file=issue)) == 1
    assert not config.exists()
    assert "not configured" in issue.read_text() and "found 1: eth0" in issue.read_text()
    assert "found 1: eth0" in capsys.readouterr().err


# -- the probe's parsers ----------------------------------------------------------


def asker(xid: int = 0x1234) -> portprobe._Asker:
    return portprobe._Asker("eth0", None, MAC, xid)  # type: ignore[arg-type]


def offer(xid: int = 0x1234, chaddr: bytes = MAC, kind: int = dhcp.OFFER, **over) -> bytes:
    options = {dhcp.OPT_MESSAGE_TYPE: bytes([kind]), dhcp.OPT_SERVER_ID: bytes([10, 0, 0, 1])}
    msg = dhcp.DhcpMessage(dhcp.BOOTREPLY, xid, chaddr, options, yiaddr=dhcp.ip_int("10.0.0.7"))
    payload = dhcp.encode(msg)
    return ipv4_udp(0x0A000001, 0xFFFFFFFF, over.get("sport", 67), over.get("dport", 68), payload)


def test_an_offer_to_our_discover_is_read() -> None:
    assert portprobe.offer_in(offer(), asker()) == ("10.0.0.1", "10.0.0.7")


@pytest.mark.parametrize(
    "frame",
    [
        offer(xid=0x9999),  # another client's exchange
        offer(chaddr=bytes(6)),  # another MAC
        offer(kind=dhcp.ACK),  # not an offer
        offer(dport=67),  # not to a client
        offer()[:40],  # truncated DHCP
        offer()[:20],  # truncated IP
        b"\x60" + offer()[1:],  # not IPv4
        b"",
    ],
)
def test_anything_else_is_ignored(frame: bytes) -> None:
    assert portprobe.offer_in(frame, asker()) is None


def test_the_discover_is_a_broadcast_dhcp_request_from_our_mac() -> None:
    frame = portprobe._discover(MAC, 0xABCD)
    msg = dhcp.parse(frame[28:])
    assert (msg.msg_type, msg.xid, msg.chaddr, msg.broadcast) == (dhcp.DISCOVER, 0xABCD, MAC, True)
    assert frame[16:20] == b"\xff\xff\xff\xff"


def link_message(index: int, flags: int, kind: int = portprobe.RTM_NEWLINK) -> bytes:
    body = portprobe.IFINFOMSG.pack(0, 1, index, flags, 0) + b"\0" * 4  # and an attribute
    header = portprobe.NLMSG_HEADER
    return header.pack(header.size + len(body), kind, 0, 0, 0) + body


def test_link_events_are_parsed_and_bad_lengths_stop_the_walk() -> None:
    data = link_message(3, 0x10043) + link_message(4, 0x1003, kind=17) + link_message(5, 0x1)
    assert portprobe._parse_links(data) == [(3, 0x10043), (5, 0x1)]
    broken = struct.pack("=IHHII", 4, 16, 0, 0, 0)  # a length shorter than the header
    assert portprobe._parse_links(broken + link_message(6, 0)) == []
    assert portprobe._parse_links(link_message(7, 0)[:20]) == []


def test_the_issue_file_doubles_backslashes_for_agetty(tmp_path: Path, capsys) -> None:
    issue = tmp_path / "run" / "homegw" / "issue"
    firstboot.show("port \\n4 here\n", issue)
    assert capsys.readouterr().out == "port \\n4 here\n"
    assert issue.read_text() == "port \\\\n4 here\n"
    assert issue.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["#x", "eth0#1", "on", "123", "{x}", "'a", "*b"])
def test_a_name_yaml_would_misread_is_quoted_and_reads_back_as_itself(name: str) -> None:
    new, config = firstboot.with_settings(EXAMPLE.read_text(), {("wan", "interface"): name})
    assert config.wan.interface == name
    assert yaml.safe_load(new)["wan"]["interface"] == name


def test_a_name_the_loader_refuses_is_refused_at_its_key() -> None:
    with pytest.raises(ConfigError) as refused:
        firstboot.with_settings(EXAMPLE.read_text(), {("wan", "interface"): "a: b"})
    assert refused.value.errors == [
        "wan.interface: 'a: b' is not a valid interface name (no '/', ':' or whitespace)"
    ]


def test_invalid_yaml_is_a_config_error_not_a_crash() -> None:
    with pytest.raises(ConfigError):
        firstboot.with_settings("wan: [\n", {("wan", "interface"): "eth0"})


def test_force_probes_again_and_keeps_the_rest_of_the_config(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    config = tmp_path / "homegw.yaml"
    text = example_in(tmp_path).replace("mode: dhcp", "mode: static", 1)
    text = text.replace("# address: 198.51.100.2/24", "address: 198.51.100.2/24", 1)
    text = text.replace("# gateway: 198.51.100.1", "gateway: 198.51.100.1", 1)
    config.write_text(text)
    found = portprobe.ProbeResult(
        [PortFacts("enp1s0", True), PortFacts("enp2s0", True, "10.0.0.1", "10.0.0.9")]
    )
    monkeypatch.setattr(portprobe, "probe", lambda include_virtual=False: found)
    assert firstboot.run(Request(config, force=True, issue_file=None)) == 0
    loaded = load_config(config)
    assert (loaded.wan.interface, loaded.lan.interface) == ("enp2s0", "enp1s0")
    assert loaded.wan.mode == "static" and str(loaded.wan.address) == "198.51.100.2/24"
    assert loaded.dataplane.xdp_mode == "native"  # as the owner had it
    assert "a DHCP server (10.0.0.1) answered on enp2s0" in capsys.readouterr().out


def test_an_invalid_config_replaces_the_banner_with_what_is_wrong(tmp_path: Path, capsys) -> None:
    config, issue = tmp_path / "homegw.yaml", tmp_path / "issue"
    config.write_text(example_in(tmp_path).replace("lease_time: 12h", "lease_time: 5s", 1))
    issue.write_text("an old banner\n")
    assert firstboot.run(Request(config, issue_file=issue)) == 1
    shown = issue.read_text()
    assert "not configured" in shown and "dhcp.lease_time" in shown
    assert f"homegw check-config {config}" in shown
    assert "dhcp.lease_time" in capsys.readouterr().err
