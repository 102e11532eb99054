"""The whole appliance as a home uses it: WAN address and resolvers from the
ISP's DHCP server, a LAN host's lease from homegw's DHCP server, its name
resolved by homegw's DNS forwarder, the internet reached through XDP NAT."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

from homegw.virtualhome import VirtualHome
from tests.integration.appliance_proc import ApplianceProcess
from tests.integration.dhcp_helpers import UDHCPC_HOOK, hook_script, wait_event

# the hook also sets the default route, as a real client's script does
HOOK = UDHCPC_HOOK.replace(
    'ip addr add "$ip/$mask" dev "$interface" ;;',
    'ip addr add "$ip/$mask" dev "$interface"; ip route replace default via "$router" ;;',
)


def dig(home: VirtualHome, host: str, name: str) -> list[str]:
    out = home.run(host, ["dig", "+short", "+time=2", "+tries=1", "@192.168.1.1", name])
    return out.stdout.split()


def test_lease_name_resolves_and_internet_works(
    make_virtual_home: Callable[..., VirtualHome],
) -> None:
    home = make_virtual_home(lan_hosts_static=False)
    app = ApplianceProcess(home, home.gateway_config(webui={"listen": "192.168.1.1:8080"}))
    app.start()
    try:
        app.wait_healthy(wan=True)
        app.wait_for(r"router: WAN now 203\.0\.113\.")  # the lease applied to the modules
        script, events = hook_script(home, "udhcpc-h1", HOOK)
        client = home.popen(
            "h1",
            [
                "udhcpc",
                "-i",
                "eth0",
                "-f",
                "-t",
                "5",
                "-T",
                "1",
                "-s",
                str(script),
                "-x",
                "hostname:laptop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            bound = wait_event(events, r"^EVENT bound ip=192\.168\.1\.1\d\d ")
            leased = bound.split("ip=")[1].split()[0]
            assert "router=192.168.1.1" in bound and "dns=192.168.1.1" in bound
            # the DHCP server tells the DNS forwarder before it sends the ACK
            assert dig(home, "h1", "laptop.lan") == [leased]
            # an internet name through homegw's forwarder and the ISP's resolver
            assert dig(home, "h1", "www.example.test") == [home.web_server]
            page = home.run("h1", ["curl", "-sS", "--max-time", "10", f"http://{home.web_server}/"])
            assert home.web_text in page.stdout, page.stderr

            # The ISP renumbers: the WAN client follows, and so do router and NAT, live.
            home.renumber_isp_dhcp(("203.0.113.100", "203.0.113.150"))
            app.proc.send_signal(signal.SIGUSR1)  # renew now (else at T1)
            moved = app.wait_for(r"router: WAN now 203\.0\.113\.1[0-5]\d/24")
            new_wan = moved.split("WAN now ")[1].split("/")[0]
            page = home.run("h1", ["curl", "-sS", "--max-time", "10", f"http://{home.web_server}/"])
            assert home.web_text in page.stdout, page.stderr
            web_log = (home.tmpdir / "web.out").read_text().splitlines()
            assert web_log[-1].startswith(new_wan + " "), web_log[-1]  # masqueraded anew
        finally:
            client.terminate()
            client.wait(10)
    finally:
        assert app.stop() == 0
    assert "Traceback" not in app.log
