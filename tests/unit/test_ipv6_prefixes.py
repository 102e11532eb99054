"""The ULA /48 kept across runs, and the LAN prefix plan (renumbering, expiry)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from homegw.modules.ipv6 import ula
from homegw.modules.ipv6.prefixes import LanPrefix, PrefixPlan, SubnetError, lan_subnet

Net = ipaddress.IPv6Network
ULA48 = Net("fd12:3456:789a::/48")
T0 = 1_000_000.0


@dataclass(frozen=True)
class Delegation:  # the shape of dhcp6.client.IaPrefix
    prefix: Net
    preferred_until: float
    valid_until: float


def pd(prefix: str, preferred: float, valid: float, now: float = T0) -> Delegation:
    return Delegation(Net(prefix), now + preferred, now + valid)


# --- ULA ---------------------------------------------------------------------


def test_ula_generated_once_and_kept(tmp_path: Path) -> None:
    first = ula.ula_prefix(tmp_path, None)
    assert first.prefixlen == 48 and first.subnet_of(Net("fd00::/8"))
    assert (tmp_path / ula.STATE_FILE).read_text() == f"{first}\n"
    assert ula.ula_prefix(tmp_path, None) == first  # a second run reads it back


def test_ula_global_ids_differ() -> None:
    assert len({ula.generate_ula() for _ in range(20)}) == 20


def test_ula_configured_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert ula.ula_prefix(tmp_path, ULA48) == ULA48
    assert not (tmp_path / ula.STATE_FILE).exists()


@pytest.mark.parametrize("junk", ["garbage", "2001:db8::/48", "fd00::/64", "fc00:1::/48", ""])
def test_ula_bad_kept_file_is_replaced(tmp_path: Path, junk: str, caplog) -> None:
    (tmp_path / ula.STATE_FILE).write_text(junk)
    with caplog.at_level(logging.WARNING, logger="homegw.modules.ipv6.ula"):
        fresh = ula.ula_prefix(tmp_path, None)
    assert fresh.subnet_of(Net("fd00::/8")) and fresh.prefixlen == 48
    assert (tmp_path / ula.STATE_FILE).read_text() == f"{fresh}\n"
    assert "not a ULA /48" in caplog.text


def test_ula_state_dir_created(tmp_path: Path) -> None:
    fresh = ula.ula_prefix(tmp_path / "new" / "dir", None)
    assert ula.ula_prefix(tmp_path / "new" / "dir", None) == fresh


# --- subnets -------------------------------------------------------------------


def test_lan_subnet() -> None:
    assert lan_subnet(Net("2001:db8:100:ab00::/56"), 0) == Net("2001:db8:100:ab00::/64")
    assert lan_subnet(Net("2001:db8:100:ab00::/56"), 255) == Net("2001:db8:100:abff::/64")
    assert lan_subnet(Net("2001:db8:1:2::/64"), 0) == Net("2001:db8:1:2::/64")
    with pytest.raises(SubnetError, match="room for subnets 0-1"):
        lan_subnet(Net("2001:db8:1:2::/63"), 2)
    with pytest.raises(SubnetError, match="longer than /64"):
        lan_subnet(Net("2001:db8:1:2::/80"), 0)


# --- the plan ------------------------------------------------------------------


def test_plan_without_delegation_has_the_ula_only() -> None:
    plan = PrefixPlan(ULA48, 3)
    assert plan.advertised(T0) == [LanPrefix(Net("fd12:3456:789a:3::/64"), None, None)]
    assert plan.inside(T0) == [ULA48]


def test_plan_new_prefix() -> None:
    plan = PrefixPlan(ULA48, 1)
    assert plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600)], T0) is True
    assert plan.advertised(T0 + 5) == [
        LanPrefix(
            Net("2001:db8:100:ab01::/64"), T0 + 1800, T0 + 3600, Net("2001:db8:100:ab00::/56")
        ),
        LanPrefix(Net("fd12:3456:789a:1::/64"), None, None),
    ]
    assert plan.inside(T0) == [Net("2001:db8:100:ab00::/56"), ULA48]
    # the same delegation again: nothing to tell
    assert plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600)], T0) is False
    # renewed (lifetimes moved on): the addresses and RAs must follow
    assert plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600, now=T0 + 10)], T0 + 10) is True
    assert plan.advertised(T0 + 10)[0].valid_until == T0 + 3610


def test_plan_preferred_never_beyond_valid() -> None:
    plan = PrefixPlan(ULA48, 0)
    plan.update([pd("2001:db8:100::/56", 9000, 600)], T0)
    assert plan.advertised(T0)[0].preferred_until == T0 + 600


def test_plan_subnet_beyond_the_delegation_falls_back_to_0(caplog) -> None:
    plan = PrefixPlan(ULA48, 7)
    with caplog.at_level(logging.ERROR, logger="homegw.modules.ipv6.prefixes"):
        plan.update([pd("2001:db8:100:ab00::/62", 1800, 3600)], T0)
    assert plan.advertised(T0)[0].network == Net("2001:db8:100:ab00::/64")
    assert (
        "lan.ipv6.subnet 7 does not fit in delegated prefix 2001:db8:100:ab00::/62" in caplog.text
    )
    assert plan.advertised(T0)[1].network == Net("fd12:3456:789a:7::/64")


def test_plan_delegation_longer_than_64_is_skipped(caplog) -> None:
    plan = PrefixPlan(ULA48, 0)
    with caplog.at_level(logging.ERROR, logger="homegw.modules.ipv6.prefixes"):
        assert plan.update([pd("2001:db8:100:ab00::/80", 1800, 3600)], T0) is False
    assert [p.network for p in plan.advertised(T0)] == [Net("fd12:3456:789a::/64")]
    assert "longer than /64: skipped" in caplog.text


def test_plan_renumbering_deprecates_the_old_prefix() -> None:
    plan = PrefixPlan(ULA48, 0)
    plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600)], T0)
    t1 = T0 + 600
    assert plan.update([pd("2001:db8:200:cd00::/56", 1800, 3600, now=t1)], t1) is True
    new, ula_lan, old = plan.advertised(t1)
    assert new == LanPrefix(
        Net("2001:db8:200:cd00::/64"), t1 + 1800, t1 + 3600, Net("2001:db8:200:cd00::/56")
    )
    assert ula_lan.network == Net("fd12:3456:789a::/64")
    # preferred ends now (advertised as 0), valid keeps what the ISP had left
    assert old == LanPrefix(
        Net("2001:db8:100:ab00::/64"), t1, T0 + 3600, Net("2001:db8:100:ab00::/56")
    )
    assert old.deprecated(t1) and not new.deprecated(t1)
    # both delegations are the home's while the old one is valid
    assert plan.inside(t1) == [Net("2001:db8:100:ab00::/56"), Net("2001:db8:200:cd00::/56"), ULA48]
    # a later update keeps the old one deprecated with its valid time unchanged
    assert plan.update([pd("2001:db8:200:cd00::/56", 1800, 3600, now=t1)], t1 + 5) is False
    assert plan.advertised(t1 + 5)[2] == old


def test_plan_deprecated_prefix_leaves_when_its_valid_time_ends() -> None:
    plan = PrefixPlan(ULA48, 0)
    plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600)], T0)
    plan.update([], T0 + 100)  # the lease went
    assert [p.network for p in plan.advertised(T0 + 3599)] == [
        Net("fd12:3456:789a::/64"),
        Net("2001:db8:100:ab00::/64"),
    ]
    assert [p.network for p in plan.advertised(T0 + 3600)] == [Net("fd12:3456:789a::/64")]
    assert plan.update([], T0 + 3600) is True  # pruned
    assert plan.update([], T0 + 3601) is False
    assert plan.inside(T0 + 3600) == [ULA48]


def test_plan_current_prefix_whose_lease_ran_out_is_not_advertised() -> None:
    plan = PrefixPlan(ULA48, 0)
    plan.update([pd("2001:db8:100:ab00::/56", 100, 200)], T0)
    assert [p.network for p in plan.advertised(T0 + 200)] == [Net("fd12:3456:789a::/64")]


def test_plan_prefix_that_comes_back_is_current_again() -> None:
    plan = PrefixPlan(ULA48, 0)
    plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600)], T0)
    plan.update([pd("2001:db8:200:cd00::/56", 1800, 3600)], T0 + 1)
    plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600, now=T0 + 2)], T0 + 2)
    advertised = plan.advertised(T0 + 2)
    assert advertised[0].network == Net("2001:db8:100:ab00::/64")
    assert not advertised[0].deprecated(T0 + 2)
    assert advertised[2].network == Net("2001:db8:200:cd00::/64") and advertised[2].deprecated(
        T0 + 2
    )
    assert len(advertised) == 3


def test_plan_two_delegations() -> None:
    plan = PrefixPlan(ULA48, 0)
    plan.update([pd("2001:db8:100:ab00::/56", 1800, 3600), pd("2001:db8:300::/64", 60, 120)], T0)
    assert [p.network for p in plan.advertised(T0)] == [
        Net("2001:db8:100:ab00::/64"),
        Net("2001:db8:300::/64"),
        Net("fd12:3456:789a::/64"),
    ]


def test_plan_static_prefix_with_infinite_lifetimes() -> None:
    import math

    from homegw.modules.ipv6 import ra
    from homegw.modules.ipv6.lanaddrs import address_lifetimes

    static = Delegation(Net("2001:db8:100:ab00::/56"), math.inf, math.inf)
    plan = PrefixPlan(ULA48, 0)
    assert plan.update([static], T0) is True
    current = plan.advertised(T0)[0]
    assert current.valid_until == math.inf and not current.deprecated(T0)
    # hosts hear RFC 9096's limits; the gateway's own address is permanent
    assert ra.pio_for(current, T0) == ra.Pio(current.network, 5400, 2700)
    assert address_lifetimes(current, T0) == {}
    # replaced: deprecated, and gone once no host can still hold it (90 min)
    plan.update([pd("2001:db8:200:cd00::/56", 1800, 9000)], T0 + 10)
    old = plan.advertised(T0 + 10)[2]
    assert old == LanPrefix(current.network, T0 + 10, T0 + 10 + 5400, current.delegated)
    assert ra.pio_for(old, T0 + 10) == ra.Pio(current.network, 5400, 0)
    assert address_lifetimes(old, T0 + 10) == {"valid_lft": 5400, "preferred_lft": 0}
    assert [p.network for p in plan.advertised(T0 + 10 + 5400)] == [
        Net("2001:db8:200:cd00::/64"),
        Net("fd12:3456:789a::/64"),
    ]


def test_address_lifetimes() -> None:
    from homegw.modules.ipv6.lanaddrs import address_lifetimes

    net = Net("2001:db8:1::/64")
    assert address_lifetimes(LanPrefix(net, T0 + 100.7, T0 + 200.2), T0) == {
        "valid_lft": 200,
        "preferred_lft": 100,
    }
    assert address_lifetimes(LanPrefix(net, None, None), T0) == {}
    assert address_lifetimes(LanPrefix(net, T0 - 1, T0 + 50), T0) == {
        "valid_lft": 50,
        "preferred_lft": 0,
    }
