"""IPv6 at the virtual home's ISP: `VirtualHome(tag, ipv6=True)` builds `IspIpv6(home)`.

Addressing (documentation prefixes, see notes V6_CONTRACT)::

    isp0  2001:db8:ffff:1::1/64   radvd: 2001:db8:ffff:1::/64 autonomous, M and O flags
          Kea DHCPv6: IA_NA 2001:db8:ffff:1::1000-1fff, IA_PD /56s of 2001:db8:100::/40
          (after renumber(): of 2001:db8:200::/40), DNS 2001:db8:ffff:53::53,
          T1 10 s, T2 16 s, preferred 30 s, valid 40 s (renewals are testable)
    inet0 2001:db8:ffff:80::80  web (the IPv4 web server's files)
          2001:db8:ffff:53::53  DNS (dnsmasq): AAAA 2001:db8:ffff:80::80 (and the
                                IPv4 A) for every name of home.dns_records

The PD pools are routed to the gateway's WAN link-local address (as an ISP's
router does for delegated prefixes). Kea keeps its leases in a memfile CSV in
the home's tmpdir (`kea_leases`), appended on every renewal (lfc-interval 0),
so a test reads the new expiry there. Every process is started through
`home._spawn`, so the home's teardown stops it.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from homegw import netns

log = logging.getLogger(__name__)

ISP6_ADDRESS = "2001:db8:ffff:1::1"
ISP6_LINK = "2001:db8:ffff:1::/64"
NA_POOL = ("2001:db8:ffff:1::1000", "2001:db8:ffff:1::1fff")
PD_POOL = "2001:db8:100::/40"
PD_POOL_RENUMBERED = "2001:db8:200::/40"
PD_LENGTH = 56
DNS6_SERVER = "2001:db8:ffff:53::53"
WEB6_SERVER = "2001:db8:ffff:80::80"
TIMERS = {"renew-timer": 10, "rebind-timer": 16, "preferred-lifetime": 30, "valid-lifetime": 40}
LINK_LOCAL_WAIT = 10.0
KEA = "/usr/sbin/kea-dhcp6"
RADVD = "/usr/sbin/radvd"
SERVER_ID = {
    "type": "EN",
    "enterprise-id": 2495,
    "identifier": "686f6d65677769737036",
    "persist": False,
}


@dataclass(frozen=True)
class KeaLease:
    """One line of Kea's lease CSV."""

    address: str  # an address, or a prefix's first address
    prefix_len: int  # 128 for IA_NA
    expire: int
    valid: int
    duid: str
    lease_type: int  # 0 IA_NA, 2 IA_PD


class IspIpv6:
    """Kea DHCPv6 with prefix delegation, radvd, an IPv6 web and DNS server."""

    def __init__(self, home: Any) -> None:
        self.home = home
        self.isp = home.ns("isp")
        self.pd_pool = PD_POOL
        self.isp_address = ISP6_ADDRESS
        self.dns_server = DNS6_SERVER
        self.web_server = WEB6_SERVER
        self.na_pool = NA_POOL

    @property
    def kea_leases(self) -> Path:
        return self.home._path("kea-leases6.csv")

    @property
    def kea_log(self) -> Path:
        return self.home._path("kea.log")

    def start(self) -> None:
        self._addresses()
        self._route_pool(PD_POOL)
        self._start_radvd()
        self._wait_link_local()  # Kea binds to it: not while DAD runs
        self._start_kea()
        self._start_web_dns()

    # ------------------------------------------------------------ addresses, routes

    def _addresses(self) -> None:
        netns.run_cmd(
            netns.exec_argv(self.isp, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        )
        netns.ip("-6", "addr", "add", f"{ISP6_ADDRESS}/64", "dev", "isp0", "nodad", ns=self.isp)
        for addr in (DNS6_SERVER, WEB6_SERVER):
            netns.ip("-6", "addr", "add", f"{addr}/128", "dev", "inet0", "nodad", ns=self.isp)

    def gateway_link_local(self) -> str:
        """The gateway's WAN link-local address (exists as soon as wan0 is up)."""
        out = netns.ip(
            "-6", "-o", "addr", "show", "dev", "wan0", "scope", "link", ns=self.home.ns("gw")
        )
        for line in out.splitlines():
            fields = line.split()
            return fields[fields.index("inet6") + 1].split("/")[0]
        raise netns.NetnsError(f"no link-local address on wan0 in {self.home.ns('gw')}")

    def _wait_link_local(self) -> None:
        def usable() -> bool:
            argv = ["-6", "-o", "addr", "show", "dev", "isp0", "scope", "link", "-tentative"]
            return bool(netns.ip(*argv, ns=self.isp).strip())

        if not netns.wait_for(usable, LINK_LOCAL_WAIT):
            raise netns.NetnsError(f"isp0 in {self.isp} has no usable link-local address")

    def _route_pool(self, pool: str) -> None:
        via = self.gateway_link_local()
        netns.ip("-6", "route", "replace", pool, "via", via, "dev", "isp0", ns=self.isp)

    # ------------------------------------------------------------ daemons

    def _start_radvd(self) -> None:
        conf = self.home._path("radvd.conf")
        conf.write_text(
            "interface isp0 {\n"
            "  AdvSendAdvert on;\n  AdvManagedFlag on;\n  AdvOtherConfigFlag on;\n"
            "  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 10;\n  AdvDefaultLifetime 1800;\n"
            f"  prefix {ISP6_LINK} {{ AdvOnLink on; AdvAutonomous on; }};\n"
            "};\n"
        )
        conf.chmod(0o644)
        pid = self.home._path("radvd.pid")
        argv = [RADVD, "-n", "-C", str(conf), "-p", str(pid), "-m", "stderr"]
        self.home._spawn("radvd", "isp", argv)
        self.home._wait_ready("radvd", pid.exists)

    def kea_config(self, pd_pool: str) -> dict[str, Any]:
        network = IPv6Network(pd_pool)
        return {
            "Dhcp6": {
                "interfaces-config": {"interfaces": ["isp0"]},
                "lease-database": {
                    "type": "memfile",
                    "persist": True,
                    "name": str(self.kea_leases),
                    "lfc-interval": 0,
                },
                "server-id": SERVER_ID,  # nothing written to Kea's data directory
                **TIMERS,
                "option-data": [{"name": "dns-servers", "data": DNS6_SERVER}],
                "subnet6": [
                    {
                        "id": 1,
                        "subnet": ISP6_LINK,
                        "interface": "isp0",
                        "pools": [{"pool": f"{NA_POOL[0]}-{NA_POOL[1]}"}],
                        "pd-pools": [
                            {
                                "prefix": str(network.network_address),
                                "prefix-len": network.prefixlen,
                                "delegated-len": PD_LENGTH,
                            }
                        ],
                    }
                ],
                "loggers": [
                    {
                        "name": "kea-dhcp6",
                        "output_options": [{"output": str(self.kea_log)}],
                        "severity": "DEBUG",
                        "debuglevel": 10,
                    }
                ],
            }
        }

    def _start_kea(self) -> None:
        conf = self.home._path("kea-dhcp6.json")
        conf.write_text(json.dumps(self.kea_config(self.pd_pool), indent=2))
        tmp = str(self.home.tmpdir)
        env = ["env", f"KEA_PIDFILE_DIR={tmp}", f"KEA_LOCKFILE_DIR={tmp}"]
        self.home._spawn("kea", "isp", [*env, KEA, "-c", str(conf)])
        self.home._wait_ready("kea", lambda: netns.listening(self.isp, "udp", "*", 547))

    def _start_web_dns(self) -> None:
        www = self.home._path("www")
        web = [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            WEB6_SERVER,
            "80",
            "--directory",
            str(www),
        ]
        self.home._spawn("web6", "isp", web)
        records = [
            f"--host-record={name},{v4},{WEB6_SERVER}" for name, v4 in self.home.dns_records.items()
        ]
        dns = [
            *self.home._dnsmasq_common("dns6"),
            "--port=53",
            f"--listen-address={DNS6_SERVER}",
            "--address=/#/",
            "--local-ttl=300",
            "--log-queries",
            *records,
        ]
        self.home._spawn("dns6", "isp", dns)
        self.home._wait_ready(
            "web6", lambda: netns.listening(self.isp, "tcp", f"[{WEB6_SERVER}]", 80)
        )
        self.home._wait_ready(
            "dns6", lambda: netns.listening(self.isp, "udp", f"[{DNS6_SERVER}]", 53)
        )

    # ------------------------------------------------------------ changes, inspection

    def renumber(self) -> None:
        """Restart Kea with the 2001:db8:200::/40 PD pool and no lease memory:
        the next RENEW gets the old prefix at lifetime 0 and a new one."""
        proc = self.home._procs["kea"]
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for path in self.kea_leases.parent.glob(self.kea_leases.name + "*"):
            path.unlink()
        self.pd_pool = PD_POOL_RENUMBERED
        self._route_pool(PD_POOL_RENUMBERED)
        self._start_kea()

    def leases(self) -> list[KeaLease]:
        """Kea's lease file, oldest line first (a renewal appends a line)."""
        if not self.kea_leases.exists():
            return []
        with open(self.kea_leases, newline="") as stream:
            return [
                KeaLease(
                    row["address"],
                    int(row["prefix_len"]),
                    int(row["expire"]),
                    int(row["valid_lifetime"]),
                    row["duid"],
                    int(row["lease_type"]),
                )
                for row in csv.DictReader(stream)
            ]

    def lease_expiry(self, item: IPv6Address | IPv6Network) -> int | None:
        """The latest expiry Kea has written for an address or a prefix."""
        if isinstance(item, IPv6Network):
            address, length = str(item.network_address), item.prefixlen
        else:
            address, length = str(item), 128
        found = [
            lease.expire
            for lease in self.leases()
            if IPv6Address(lease.address) == IPv6Address(address) and lease.prefix_len == length
        ]
        return max(found) if found else None
