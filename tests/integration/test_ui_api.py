"""What the web UI's System, DNS and Overview pages ask of the real appliance
in the virtual home, over HTTP from a LAN host: a restart through the API
(a ping through the gateway keeps going, the API answers again after), the
log of this process by module, alerts that follow the WAN link, DNS stats of
real queries, and an uploaded block list that blocks once it is configured."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from homegw.virtualhome import LAN_GATEWAY, WEB_SERVER, VirtualHome
from tests.integration.appliance_proc import ApplianceProcess
from tests.integration.test_management_api import bearer, http

pytestmark = pytest.mark.netns

BASE = f"http://{LAN_GATEWAY}"
API = f"{BASE}/api/v1"
FLOOD_INTERVAL_S = 0.002
MAX_LOSS = 0.001  # as across a process restart (test_restart.py)
POLL_S = 0.05


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # polling a state (an HTTP answer), not a fixed wait


@pytest.fixture
def appliance(virtual_home: VirtualHome) -> Iterator[ApplianceProcess]:
    app = ApplianceProcess(virtual_home, virtual_home.gateway_config()).start()
    app.wait_healthy(timeout=120, wan=True)
    yield app
    assert app.stop() == 0
    assert "Traceback" not in app.log


def get(app: ApplianceProcess, path: str) -> Any:
    status, answer = http(app.home, "GET", f"{API}{path}", headers=(bearer(app.home),))
    assert status == 200, (path, answer)
    return answer


def ping_flood(home: VirtualHome, seconds: float) -> subprocess.Popen[str]:
    count = str(int(seconds / FLOOD_INTERVAL_S))
    argv = ["ping", "-q", "-n", "-i", str(FLOOD_INTERVAL_S), "-W", "2", "-c", count, WEB_SERVER]
    return home.popen("h1", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_restart_through_the_api_keeps_forwarding(appliance: ApplianceProcess) -> None:
    home = appliance.home
    flood = ping_flood(home, 15)
    status, answer = http(home, "POST", f"{API}/actions/restart", headers=(bearer(home),))
    assert status == 200 and answer == {"done": True, "action": "restart"}
    appliance.wait_for_count(r"homegw ready", 2, timeout=90)
    # the API answers again (the local token is written anew at the start)
    wait_until(lambda: http(home, "GET", f"{API}/status", headers=(bearer(home),))[0] == 200,
               60, "the API after the restart")  # fmt: skip
    assert appliance.proc is not None and appliance.proc.poll() is None  # the same process
    assert flood.poll() is None, "the restart outlasted the ping flood"
    out, _ = flood.communicate(timeout=120)
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert found, out
    sent, received = int(found.group(1)), int(found.group(2))
    assert sent - received <= sent * MAX_LOSS, f"{sent - received} of {sent} pings lost"
    assert "restarting the appliance" in appliance.log


def test_logs_by_module(appliance: ApplianceProcess) -> None:
    logs = get(appliance, "/logs?module=appliance&limit=500")["logs"]
    assert any(r["message"].startswith("homegw ready") for r in logs), logs[-5:]
    assert {r["module"] for r in logs} == {"appliance"}
    router = get(appliance, "/logs?module=router")["logs"]
    assert router and all(r["logger"].startswith("homegw.modules.router") for r in router)
    newest = get(appliance, "/logs?limit=3")["logs"]
    assert len(newest) == 3 and newest == sorted(newest, key=lambda r: r["time"])


def test_alerts_follow_the_wan_link(appliance: ApplianceProcess) -> None:
    home = appliance.home
    assert get(appliance, "/alerts")["alerts"] == []
    home.run("gw", ["ip", "link", "set", "wan0", "down"])
    try:
        (alert,) = get(appliance, "/alerts")["alerts"]
        assert alert["code"] == "wan_down" and "link wan0 is down" in alert["message"]
        assert alert["severity"] == "critical" and alert["since"] > 0
    finally:
        home.run("gw", ["ip", "link", "set", "wan0", "up"])
    wait_until(lambda: get(appliance, "/alerts")["alerts"] == [], 30, "the link up again")


def dig(home: VirtualHome, name: str) -> str:
    argv = ["dig", f"@{LAN_GATEWAY}", "+tries=1", "+timeout=4", "+short", name]
    result = home.run("h1", argv)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_dns_stats_and_an_uploaded_blocklist(appliance: ApplianceProcess, tmp_path: Path) -> None:
    home = appliance.home
    auth = bearer(home)
    for _ in range(3):
        assert dig(home, "www.example.test") == WEB_SERVER
    assert dig(home, "ads.example.test") != "0.0.0.0"
    stats = get(appliance, "/dns/stats?limit=5")
    assert {"name": "www.example.test", "count": 3} in stats["top_domains"]
    assert stats["blocked"] == 0 and stats["top_clients"][0]["count"] >= 4

    listed = tmp_path / "list.txt"
    listed.write_text("# mine\n0.0.0.0 ads.example.test\n")
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", auth]
    argv += ["-F", "name=mine", "-F", f"file=@{listed}", f"{API}/dns/blocklists"]
    result = home.run("h1", argv)
    assert result.stdout.endswith("\n201"), result.stdout
    source = str(Path(home.state_dir) / "blocklists" / "mine.txt")
    assert f'"source":"{source}"' in result.stdout.replace(" ", "")

    status, answer = http(home, "PUT", f"{API}/config/dns", {"blocklists": [source]}, (auth,))
    assert status == 200, answer
    (row,) = get(appliance, "/dns/blocklists")["blocklists"]
    assert (row["source"], row["entries"], row["error"]) == (source, 1, None)
    assert row["groups"] == ["default"] and row["updated_at"] > 0
    assert dig(home, "ads.example.test") == "0.0.0.0"
    assert get(appliance, "/dns/stats")["top_blocked"] == [{"name": "ads.example.test", "count": 1}]

    listed.write_text("ads.example.test\nmore.example.test\n")
    Path(source).write_text(listed.read_text())  # the file changed: a refresh reloads it
    status, _ = http(home, "POST", f"{API}/actions/dns/blocklists/refresh", headers=(auth,))
    assert status == 200
    assert get(appliance, "/dns/blocklists")["blocklists"][0]["entries"] == 2
    assert dig(home, "more.example.test") == "0.0.0.0"
