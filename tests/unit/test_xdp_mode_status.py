"""`dataplane.xdp_mode: auto` in the config and in the status: the schema takes
it, and the status says per NIC which mode its XDP root runs in."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from homegw.config import ConfigError, parse_config
from homegw.dataplane.abi import Nic
from homegw.dataplane.dataplane import Counter
from homegw.management import Management

BASE = {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0"}}


def test_the_schema_takes_auto_and_still_defaults_to_native() -> None:
    assert parse_config(BASE).dataplane.xdp_mode == "native"
    assert parse_config({**BASE, "dataplane": {"xdp_mode": "auto"}}).dataplane.xdp_mode == "auto"
    with pytest.raises(ConfigError) as refused:
        parse_config({**BASE, "dataplane": {"xdp_mode": "fast"}})
    assert refused.value.errors == [
        "dataplane.xdp_mode: must be one of: native, generic, auto (not 'fast')"
    ]


def management(dataplane: object) -> Management:
    out = Management.__new__(Management)
    out.appliance = SimpleNamespace(  # type: ignore[assignment]
        config=parse_config({**BASE, "dataplane": {"xdp_mode": "auto"}}),
        dataplane=dataplane,
        wan_client=None,
        ready=threading.Event(),
        started_at=0.0,
        kernel_path=False,
    )
    out.history = SimpleNamespace(current_version=lambda: 1)  # type: ignore[assignment]
    return out


def test_the_status_reports_the_mode_each_nic_runs_in() -> None:
    dataplane = SimpleNamespace(
        xdp_in_use={Nic.LAN: "native", Nic.WAN: "generic"},
        chain_stats=lambda nic, hook: Counter(0, 0),
    )
    status = management(dataplane).status()
    assert status["lan"]["xdp_mode"] == "native"
    assert status["wan"]["xdp_mode"] == "generic"


def test_before_the_dataplane_runs_the_mode_is_none() -> None:
    status = management(None).status()
    assert status["lan"]["xdp_mode"] is None and status["wan"]["xdp_mode"] is None
