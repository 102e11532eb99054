"""Block lists, allow/deny, per-group policies, and the names the resolver
answers itself (never upstream): local hosts, private PTR, single labels,
rebinding protection. The resolver runs for real, with no upstream at all:
anything that tried to go upstream would come back SERVFAIL."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from homegw.modules.dns import wire
from homegw.modules.dns.blocklists import (
    GroupSpec,
    ListLoader,
    Policy,
    build_policies,
    cached_path,
    parse_list,
)
from homegw.modules.dns.cache import DnsCache
from homegw.modules.dns.localnames import LocalNames
from homegw.modules.dns.querylog import QueryLog
from homegw.modules.dns.rebind import RebindGuard, is_private
from homegw.modules.dns.resolver import Resolver
from homegw.modules.dns.upstream import UpstreamClient

LIST_TEXT = """\
# a hosts file
0.0.0.0 ads.example.test tracker.example.test   # two names on one line
127.0.0.1 localhost
::1 ip6-localhost
0.0.0.0 Metrics.Example.Test.
plain.example.test
||adblock.example.test^
||example.test/path^
192.0.2.1 not-a-sink.example.test
! adblock comment
not a domain!
single
"""


def test_parse_mixed_formats() -> None:
    parsed = parse_list(LIST_TEXT)
    assert parsed.domains == {
        "ads.example.test",
        "tracker.example.test",
        "metrics.example.test",
        "plain.example.test",
        "adblock.example.test",
    }
    # localhost, ip6-localhost, the path rule, the non-sink address, "not a domain!"
    # (three fields), and the single label
    assert parsed.skipped == 6


def policy(blocked=(), allow=(), deny=()) -> Policy:
    return Policy("p", frozenset(blocked), frozenset(allow), frozenset(deny))


def test_entry_blocks_name_and_everything_under_it() -> None:
    p = policy(blocked={"ads.example.test"})
    assert p.is_blocked("ads.example.test")
    assert p.is_blocked("x.y.ads.example.test")
    assert not p.is_blocked("example.test")
    assert not p.is_blocked("badads.example.test")


def test_user_allow_beats_lists_and_most_specific_user_entry_wins() -> None:
    p = policy(
        blocked={"ads.example.test", "example.org"}, allow={"example.org"}, deny={"bad.example.org"}
    )
    assert not p.is_blocked("cdn.example.org")  # allow beats the list
    assert p.is_blocked("x.bad.example.org")  # deny more specific than allow
    assert p.is_blocked("ads.example.test")
    tie = policy(allow={"example.net"}, deny={"example.net"})
    assert tie.is_blocked("www.example.net")  # deny wins a tie


def test_allow_under_a_listed_domain_unblocks_only_that_part() -> None:
    p = policy(blocked={"example.com"}, allow={"good.example.com"})
    assert not p.is_blocked("a.good.example.com")
    assert p.is_blocked("other.example.com")


def write_lists(tmp_path: Path) -> tuple[str, str]:
    default = tmp_path / "default.hosts"
    default.write_text("0.0.0.0 ads.example.test\n")
    kids = tmp_path / "kids.list"
    kids.write_text("games.example.test\n")
    return str(default), str(kids)


def test_groups_get_their_own_policy(tmp_path: Path) -> None:
    default, kids = write_lists(tmp_path)
    loader = ListLoader(tmp_path / "cache")
    groups = [
        GroupSpec("kids", ("192.168.1.50",), (kids,), deny=("video.example.test",)),
        GroupSpec("admin", ("192.168.1.2",), use_default=False),
    ]
    policies = build_policies(loader, (default,), (), (), groups)
    kid, adult, admin = (
        policies.for_client(c) for c in ("192.168.1.50", "192.168.1.9", "192.168.1.2")
    )
    assert [kid.name, adult.name, admin.name] == ["kids", "default", "admin"]
    assert kid.is_blocked("ads.example.test") and kid.is_blocked("games.example.test")
    assert kid.is_blocked("video.example.test")
    assert adult.is_blocked("ads.example.test") and not adult.is_blocked("games.example.test")
    assert not admin.is_blocked("ads.example.test") and admin.empty
    assert policies.blocked_anywhere("games.example.test")
    assert not policies.blocked_anywhere("www.example.test")


def test_missing_sources_are_reported_not_fatal(tmp_path: Path) -> None:
    loader = ListLoader(tmp_path / "cache")
    url = "https://lists.example.test/ads.txt"
    assert loader.domains(str(tmp_path / "absent.txt")) == frozenset()
    assert loader.domains(url) == frozenset()
    assert loader.problems == {
        str(tmp_path / "absent.txt"): f"{tmp_path / 'absent.txt'}: No such file or directory",
        url: f"{url}: not downloaded yet",
    }


def test_downloaded_url_list_is_read_from_its_cached_copy(tmp_path: Path) -> None:
    url = "https://lists.example.test/ads.txt"
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cached_path(cache_dir, url).write_text("||fetched.example.test^\n")
    assert ListLoader(cache_dir).domains(url) == frozenset({"fetched.example.test"})


# --- the resolver's own answers ------------------------------------------------------

LAN = ipaddress.IPv4Interface("192.168.1.1/24")


def make_resolver(tmp_path: Path, nxdomain: bool = False) -> Resolver:
    default, kids = write_lists(tmp_path)
    groups = [GroupSpec("kids", ("192.168.1.50",), (kids,))]
    local = LocalNames("lan", "homegw", LAN)
    local.set_reservations({"printer": "192.168.1.20"})
    local.set_hosts(
        {
            "laptop": "192.168.1.11",
            "Phone.lan": "192.168.1.12",
            "bad name": "1.2.3.4",
            "printer": "192.168.1.99",
        }
    )
    return Resolver(
        cache=DnsCache(100),
        local=local,
        policies=build_policies(ListLoader(tmp_path), (default,), (), (), groups),
        upstream=UpstreamClient(lambda: [], 1.0),
        rebind=RebindGuard(True),
        querylog=QueryLog(10),
        block_nxdomain=nxdomain,
    )


def ask(resolver: Resolver, name: str, qtype: str = "A", client: str = "192.168.1.9") -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    reply = asyncio.run(resolver.resolve(query.pack(), client))
    assert reply is not None
    record = DNSRecord.parse(reply)
    assert record.header.id == query.header.id
    return record


def answers(record: DNSRecord) -> list[str]:
    return [f"{QTYPE[rr.rtype]} {rr.rdata}" for rr in record.rr]


def test_blocked_name_gets_null_address(tmp_path: Path) -> None:
    r = make_resolver(tmp_path)
    assert answers(ask(r, "ads.example.test")) == ["A 0.0.0.0"]
    assert answers(ask(r, "x.ads.example.test", "AAAA")) == ["AAAA ::"]
    mx = ask(r, "ads.example.test", "MX")
    assert (mx.header.rcode, answers(mx)) == (0, [])
    assert r.stats.blocked == 3 and r.upstream.stats.queries == 0
    entry = r.querylog.entries()[0]
    assert (entry.client, entry.name, entry.qtype, entry.blocked, entry.source) == (
        "192.168.1.9",
        "ads.example.test",
        "A",
        True,
        "blocked",
    )


def test_blocked_name_gets_nxdomain_when_configured(tmp_path: Path) -> None:
    reply = ask(make_resolver(tmp_path, nxdomain=True), "ads.example.test")
    assert (reply.header.rcode, answers(reply)) == (3, [])


def test_group_policy_applies_per_client(tmp_path: Path) -> None:
    r = make_resolver(tmp_path)
    assert answers(ask(r, "games.example.test", client="192.168.1.50")) == ["A 0.0.0.0"]
    # another client is not blocked: it goes upstream, and there is none here
    assert ask(r, "games.example.test", client="192.168.1.9").header.rcode == 2


def test_group_policy_follows_the_device_over_ipv6(tmp_path: Path) -> None:
    """The kids' device asking over IPv6 (its privacy address) is still a kid:
    the alias maps it to its IPv4 address, which the group lists."""
    r = make_resolver(tmp_path)
    aliases = {"2001:db8:100:1:aaaa::50": "192.168.1.50"}
    r.client_alias = aliases.get
    kid6 = ask(r, "games.example.test", client="2001:db8:100:1:aaaa::50")
    assert answers(kid6) == ["A 0.0.0.0"]
    assert ask(r, "games.example.test", client="2001:db8:100:1::9").header.rcode == 2
    logged = {entry.client for entry in r.querylog.entries()}
    assert logged == {"2001:db8:100:1:aaaa::50", "2001:db8:100:1::9"}  # as they came


def test_local_hosts_reservations_and_gateway(tmp_path: Path) -> None:
    r = make_resolver(tmp_path)
    assert answers(ask(r, "laptop.lan")) == ["A 192.168.1.11"]
    assert answers(ask(r, "PHONE.LAN")) == ["A 192.168.1.12"]
    assert answers(ask(r, "printer.lan")) == ["A 192.168.1.20"]  # the reservation wins
    assert answers(ask(r, "homegw.lan")) == ["A 192.168.1.1"]
    assert answers(ask(r, "laptop")) == ["A 192.168.1.11"]  # single label
    assert ask(r, "laptop.lan", "AAAA").header.rcode == 0 and not ask(r, "laptop.lan", "AAAA").rr
    assert ask(r, "ghost.lan").header.rcode == 3
    assert ask(r, "ghost").header.rcode == 3
    assert ask(r, "bad name.lan").header.rcode == 3
    reply = ask(r, "laptop.lan")
    assert reply.header.aa == 1 and reply.rr[0].ttl == 0
    assert r.upstream.stats.queries == 0


def test_ptr_for_lan_and_private_ranges_never_forwarded(tmp_path: Path) -> None:
    r = make_resolver(tmp_path)
    assert answers(ask(r, "11.1.168.192.in-addr.arpa", "PTR")) == ["PTR laptop.lan."]
    assert answers(ask(r, "1.1.168.192.in-addr.arpa", "PTR")) == ["PTR homegw.lan."]
    for name in (
        "77.1.168.192.in-addr.arpa",
        "4.3.2.10.in-addr.arpa",
        "1.0.16.172.in-addr.arpa",
        "168.192.in-addr.arpa",
        "b._dns-sd._udp.0.1.168.192.in-addr.arpa",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa",
        "d.f.ip6.arpa",
    ):
        assert ask(r, name, "PTR").header.rcode == 3, name
    assert r.upstream.stats.queries == 0
    # public reverse space goes upstream (SERVFAIL here: there is no upstream)
    assert ask(r, "80.100.51.198.in-addr.arpa", "PTR").header.rcode == 2
    assert ask(r, "1.0.32.172.in-addr.arpa", "PTR").header.rcode == 2  # 172.32/16 is public
    assert r.upstream.stats.queries == 2


def test_localhost_names(tmp_path: Path) -> None:
    r = make_resolver(tmp_path)
    assert answers(ask(r, "localhost")) == ["A 127.0.0.1"]
    assert answers(ask(r, "app.localhost", "AAAA")) == ["AAAA ::1"]


def test_private_address_ranges() -> None:
    private = [
        "10.1.2.3",
        "192.168.1.50",
        "172.31.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:192.168.0.1",
    ]
    public = ["198.51.100.80", "203.0.113.5", "172.32.0.1", "8.8.8.8", "2001:db8::1", "junk"]
    assert [a for a in private if not is_private(a)] == []
    assert [a for a in public if is_private(a)] == []


def test_rebind_guard_with_allowed_domain() -> None:
    guard = RebindGuard(True, ["plex.direct"])
    assert guard.violates("evil.example.test", ["198.51.100.1", "192.168.1.10"])
    assert not guard.violates("evil.example.test", ["198.51.100.1"])
    assert not guard.violates("x.plex.direct", ["192.168.1.10"])
    assert not RebindGuard(False).violates("evil.example.test", ["10.0.0.1"])


@pytest.mark.parametrize("name", ["a.lan", "A.Lan."])
def test_question_is_echoed_in_the_clients_case(tmp_path: Path, name: str) -> None:
    r = make_resolver(tmp_path)
    r.local.set_hosts({"a": "192.168.1.30"})
    query = DNSRecord.question(name).pack()
    reply = asyncio.run(r.resolve(query, "192.168.1.9"))
    assert reply is not None
    qlen = len(query) - wire.HEADER_LEN
    assert reply[wire.HEADER_LEN : wire.HEADER_LEN + qlen] == query[wire.HEADER_LEN :]
    assert struct.unpack_from(">H", reply, 6)[0] == 1


def test_query_filter_blocks_per_client_and_a_failing_filter_blocks_nothing(
    tmp_path: Path,
) -> None:
    r = make_resolver(tmp_path)
    r.query_filter = lambda client, name: client == "192.168.1.50" and name.endswith("video.test")
    assert answers(ask(r, "www.video.test", client="192.168.1.50")) == ["A 0.0.0.0"]
    assert r.querylog.entries()[0].source == "blocked"
    # another client goes upstream (none here: SERVFAIL), the filter said no
    assert ask(r, "www.video.test", client="192.168.1.9").header.rcode == 2

    def broken(client: str, name: str) -> bool:
        raise RuntimeError("boom")

    r.query_filter = broken
    assert ask(r, "www.video.test", client="192.168.1.50").header.rcode == 2
    assert r.stats.hook_errors == 1
