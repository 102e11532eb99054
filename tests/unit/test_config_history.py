"""The config history and the dotted diff the apply pipeline reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from homegw.config import changed_keys, parse_config
from homegw.confighistory import KEEP, ConfigHistory
from homegw.control import NotFound

BASE = {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0", "address": "192.168.1.1/24"}}


def config(**sections: dict) -> object:
    return parse_config({**BASE, **sections})


def test_changed_keys_names_leaves_and_lists_whole() -> None:
    old = config()
    forward = {"external_port": 8080, "internal_address": "192.168.1.10"}
    new = config(nat={"port_forwards": [forward], "timeouts": {"udp": 600}})
    assert changed_keys(old, new) == ["nat.port_forwards", "nat.timeouts.udp"]
    assert changed_keys(new, new) == []
    assert changed_keys(
        old, config(dhcp={"range_start": "192.168.1.50", "range_end": "192.168.1.60"})
    ) == [
        "dhcp.range_end",
        "dhcp.range_start",
    ]


def test_history_keeps_the_last_ten_newest_first(tmp_path: Path) -> None:
    history = ConfigHistory(tmp_path / "h")
    versions = []
    for lease in range(KEEP + 3):
        cfg = config(dhcp={"lease_time": 3600 + lease})
        versions.append(history.record(cfg, ["dhcp.lease_time"], 1000.0 + lease))
    assert versions == list(range(1, KEEP + 4))
    entries = history.entries()
    assert [e["version"] for e in entries] == list(range(KEEP + 3, 3, -1))
    assert entries[0]["current"] and not any(e["current"] for e in entries[1:])
    assert history.load(KEEP + 3).dhcp.lease_time == 3600 + KEEP + 2
    assert sorted(p.name for p in (tmp_path / "h").glob("*.yaml")) == sorted(
        f"{v}.yaml" for v in range(4, KEEP + 4)
    )
    with pytest.raises(NotFound):
        history.load(3)  # dropped with its file


def test_versions_keep_growing_after_a_restart_and_a_broken_index(tmp_path: Path) -> None:
    history = ConfigHistory(tmp_path)
    history.record(config(), [], 1.0)
    assert ConfigHistory(tmp_path).record(config(), [], 2.0) == 2
    (tmp_path / "index.json").write_text("{not json")
    again = ConfigHistory(tmp_path)
    assert again.entries() == [] and again.record(config(), [], 3.0) == 3  # from the files
