"""Hitless restart in the virtual home, with the appliance started in the
gateway's namespace as the demo starts it: a long TCP download through the
NAT survives 5 SIGTERM + start restarts, one kill -9 + start and one restart
with a changed compile-time module option (intact by sha256), a ping flood
through the gateway loses under 0.1 % of its packets across each restart, and
the appliance process never has bcc (libbcc, LLVM) mapped."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from homegw.dataplane.attach import xdp_prog_id
from homegw.netns import in_netns
from homegw.virtualhome import WEB_SERVER, VirtualHome
from tests.integration.appliance_proc import ApplianceProcess

BIG_MIB = 50
RATE = "300K"  # bytes/s: the download outlasts every restart below
FLOOD_INTERVAL_S = 0.002
MAX_LOSS = 0.001
POLL_S = 0.05
# how: "term" (SIGTERM, then start) or "kill" (kill -9, then start); the
# config change that goes with the restart (a compile-time NAT option)
RESTARTS: list[tuple[str, dict]] = [("term", {})] * 5 + [
    ("kill", {}),
    ("term", {"nat": {"max_sessions": 131072}}),
]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # polling a state (file size, process), not a fixed wait


def assert_no_bcc(app: ApplianceProcess) -> None:
    mapped = app.mapped_files()
    heavy = sorted(f for f in mapped if re.search(r"libbcc|libLLVM|libclang", f))
    assert heavy == [], f"the appliance process maps {heavy}"


def start_flood(home: VirtualHome, seconds: float) -> subprocess.Popen[str]:
    """A ping flood from h1 through the gateway (NAT) to the ISP's web server:
    a fixed count, so that ping waits for the last replies before it reports."""
    count = str(int(seconds / FLOOD_INTERVAL_S))
    argv = ["ping", "-q", "-n", "-i", str(FLOOD_INTERVAL_S), "-W", "2", "-c", count, WEB_SERVER]
    return home.popen("h1", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def flood_result(flood: subprocess.Popen[str]) -> tuple[int, int]:
    out, _ = flood.communicate(timeout=120)
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def xdp_roots(home: VirtualHome) -> tuple[int | None, int | None]:
    """Ids of the XDP programs attached to the gateway's NICs."""
    with in_netns(home.ns("gw")):
        return xdp_prog_id("lan0"), xdp_prog_id("wan0")


def restart(app: ApplianceProcess, how: str, change: dict) -> ApplianceProcess:
    if how == "kill":
        app.kill()
    else:
        assert app.stop() == 0, app.log
    if change:
        config = {**app.config, **change}
        return ApplianceProcess(app.home, config, name="changed").start()
    return app.start()


@pytest.mark.parametrize("virtual_home", [{"big_file_mib": BIG_MIB, "n_hosts": 1}], indirect=True)
def test_download_and_flood_survive_restarts(virtual_home: VirtualHome) -> None:
    home = virtual_home
    assert home.tmpdir is not None
    app = ApplianceProcess(home, home.gateway_config()).start()
    app.wait_healthy(timeout=120, wan=True)
    assert_no_bcc(app)
    roots = xdp_roots(home)
    assert None not in roots

    target = Path(home.tmpdir) / "download.bin"
    url = f"http://{WEB_SERVER}/big.bin"
    download = home.popen(
        "h1",
        ["curl", "-sS", "--limit-rate", RATE, "--max-time", "900", "-o", str(target), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: target.exists() and target.stat().st_size > 1 << 20, 60, "the download")
    try:
        for number, (how, change) in enumerate(RESTARTS, 1):
            flood = start_flood(home, 25 if change else 8)
            app = restart(app, how, change)
            app.wait_healthy(timeout=60, wan=True)
            assert flood.poll() is None, f"restart {number} outlasted the ping flood"
            assert_no_bcc(app)
            sent, received = flood_result(flood)
            assert sent - received <= sent * MAX_LOSS, (
                f"restart {number} ({how}, {change}): {sent - received} of {sent} pings lost"
            )
            assert download.poll() is None, f"the download ended by restart {number}"
            # the roots' builds never changed: the very programs stayed attached
            assert xdp_roots(home) == roots, f"restart {number} re-attached the roots"
        _, err = download.communicate(timeout=900)
        assert download.returncode == 0, err
    finally:
        if download.poll() is None:
            download.kill()
        app.stop()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == home.web_file_sha256
