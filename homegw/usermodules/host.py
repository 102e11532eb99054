"""The appliance's side of user modules: the Host the manager works through
(the dataplane, the control thread, the chains, what the health checks
probe), made from a running Appliance."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from homegw.dataplane.abi import Hook, Nic
from homegw.usermodules.health import HealthTargets
from homegw.usermodules.manager import Host, UserModules

if TYPE_CHECKING:
    from homegw.appliance import Appliance


def start_user_modules(appliance: Appliance) -> UserModules:
    """The manager of this start, its confirmed modules loaded (before the
    appliance installs its chains)."""
    dataplane = appliance.dataplane
    assert dataplane is not None
    cfg = appliance.config
    host = Host(
        dataplane=dataplane,
        interfaces={"lan": cfg.lan.interface, "wan": cfg.wan.interface},
        submit=appliance.submit,
        install_chains=appliance.install_chains,
        health_targets=lambda: health_targets(appliance),
    )
    manager = UserModules(Path(cfg.state_dir), host)
    manager.restore()
    return manager


def health_targets(appliance: Appliance) -> HealthTargets | None:
    """What a trial's health checks probe now; None while the appliance has
    no dataplane (restarting)."""
    dataplane = appliance.dataplane
    if dataplane is None:
        return None
    cfg = appliance.config
    lease = appliance.wan_client.lease if appliance.wan_client else None
    gateway = lease.router if lease else cfg.wan.gateway
    return HealthTargets(
        wan_ifname=cfg.wan.interface,
        wan_gateway=ipaddress.IPv4Address(str(gateway)) if gateway else None,
        lan_ifname=cfg.lan.interface,
        lan_address=ipaddress.IPv4Interface(str(cfg.lan.address)),
        dhcp_on=appliance.dhcp is not None,
        admin=None,  # the trial watch sets each trial's
        lan_xdp_root_fd=dataplane.root_fd(Nic.LAN, Hook.XDP),
        lan_ifindex=socket.if_nametoindex(cfg.lan.interface),
    )
