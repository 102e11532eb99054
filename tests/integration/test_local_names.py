"""Lease names in DNS at once, through the running appliance (`homegw run`):
a real DHCP client (udhcpc -x hostname:NAME) gets a lease and, the moment it
reports it, another LAN host's `dig` (one query, no retry) gets the name's
address; a second device asking for the same name does not take it; when
the holder releases (udhcpc on SIGUSR2) the name passes to the waiting
device, and after its release the name is NXDOMAIN. A reserved name resolves
with no lease at all.

Waits are on the hook script's events and the appliance's log lines: the
server publishes a name change before it logs (and before it sends) the
DHCP message that caused it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from homegw import netns
from homegw.virtualhome import VirtualHome
from tests.integration.appliance_proc import ApplianceProcess
from tests.integration.dhcp_helpers import UDHCPC_HOOK, hook_script, wait_event

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not shutil.which("udhcpc"), reason="needs udhcpc (scripts/setup.sh)"),
]

ASKER = "192.168.1.60/24"  # h2's static address, outside the DHCP pool
PRINTER = {"mac": "02:48:47:00:00:99", "address": "192.168.1.20", "hostname": "printer"}


def dig(home: VirtualHome, name: str, qtype: str = "A") -> tuple[str, list[str]]:
    """(status, answer data) of one query from h2 to the gateway: one try."""
    argv = ["dig", "@192.168.1.1", "+tries=1", "+time=3", "+noall", "+comments", "+answer"]
    out = home.run("h2", [*argv, name, qtype]).stdout
    status = re.search(r"status: (\w+)", out)
    assert status, out
    answers = [line.split()[-1] for line in out.splitlines() if line and not line.startswith(";")]
    return status.group(1), answers


@contextmanager
def udhcpc(home: VirtualHome, host: str, hostname: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """udhcpc on `host` asking for `hostname`: (process, the address it reported)."""
    script, events = hook_script(home, f"udhcpc-{host}", UDHCPC_HOOK)
    argv = ["udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-s", str(script)]
    proc = home.popen(
        host,
        [*argv, "-x", f"hostname:{hostname}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        bound = wait_event(events, r"^EVENT bound ip=192\.168\.1\.\d+ ")
        yield proc, bound.split("ip=")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(10)


def release(app: ApplianceProcess, proc: subprocess.Popen, address: str) -> None:
    """udhcpc releases; wait until the server has handled it (its log line)."""
    proc.send_signal(signal.SIGUSR2)
    app.wait_for(rf"DHCPRELEASE {re.escape(address)} from ", timeout=20)


def test_lease_names_resolve_at_once_and_go_with_the_release(
    make_virtual_home: Callable[..., VirtualHome],
) -> None:
    home = make_virtual_home(lan_hosts_static=False)
    app = ApplianceProcess(home, home.gateway_config(dhcp={"reservations": [PRINTER]}))
    app.start()
    try:
        app.wait_healthy()
        netns.ip("addr", "add", ASKER, "dev", "eth0", ns=home.ns("h2"))
        assert dig(home, "printer.lan") == ("NOERROR", ["192.168.1.20"])  # no lease needed
        assert dig(home, "laptop.lan") == ("NXDOMAIN", [])

        with udhcpc(home, "h1", "laptop") as (laptop, first):
            assert dig(home, "laptop.lan") == ("NOERROR", [first])
            reverse = ".".join(reversed(first.split("."))) + ".in-addr.arpa"
            assert dig(home, reverse, "PTR") == ("NOERROR", ["laptop.lan."])

            with udhcpc(home, "h3", "laptop") as (impostor, second):
                # h3 wants the same name: the first device keeps it
                assert dig(home, "laptop.lan") == ("NOERROR", [first])
                release(app, laptop, first)
                assert dig(home, "laptop.lan") == ("NOERROR", [second])  # the waiting claim
                release(app, impostor, second)
                assert dig(home, "laptop.lan") == ("NXDOMAIN", [])
                assert dig(home, reverse, "PTR")[0] == "NXDOMAIN"
        assert dig(home, "printer.lan") == ("NOERROR", ["192.168.1.20"])
    finally:
        assert app.stop() == 0
    assert "Traceback" not in app.log
    assert "local name laptop.lan stays with" in app.log
