"""Counter names come from the datapath's own enums."""

from __future__ import annotations

from pathlib import Path

import pytest

from homegw.dataplane.cenum import counter_names
from homegw.modules.dhcp.module import GUARD_COUNTERS
from homegw.modules.dns.fastpath import STAT_NAMES
from homegw.modules.firewall.maps import COUNTERS as FIREWALL
from homegw.modules.nat.maps import COUNTERS as NAT
from homegw.modules.router.maps import COUNTERS as ROUTER


def test_names_without_prefix_or_count_and_comments_ignored(tmp_path: Path) -> None:
    source = tmp_path / "x.bpf.c"
    source.write_text(
        "/* enum decoy { D_A, D_COUNT }; */\n"
        "enum x_counter {\n\tX_STAT_ONE, /* first */\n\tX_STAT_TWO_WORDS, // second\n"
        "\tX_STAT_COUNT,\n};\n"
    )
    assert counter_names(source, "x_counter") == ("one", "two_words")


@pytest.mark.parametrize(
    "body", ["A_X = 1, A_COUNT", "A_X, B_Y, COUNT", "A_ONLY"], ids=["value", "prefix", "short"]
)
def test_enums_it_cannot_read_safely_are_refused(tmp_path: Path, body: str) -> None:
    source = tmp_path / "y.bpf.c"
    source.write_text(f"enum y {{ {body} }};")
    with pytest.raises(ValueError):
        counter_names(source, "y")


def test_every_module_reads_its_counters() -> None:
    assert ROUTER[:3] == ("forwarded", "to_kernel", "neigh_miss")
    assert NAT[:2] == ("translated_out", "translated_in")
    assert "wan_to_lan" in FIREWALL and GUARD_COUNTERS[0] == "checked"
    assert STAT_NAMES == ("hits", "misses", "expired", "passed", "no_room")
    for names in (ROUTER, NAT, FIREWALL, GUARD_COUNTERS, STAT_NAMES):
        assert len(set(names)) == len(names)
