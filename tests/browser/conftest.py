"""Browser tests: headless Chromium (Debian's) driven by Playwright, inside a
LAN host's namespace of a virtual home, against the real appliance.

- `gateway`: the virtual home with `homegw run` on its gateway, the admin
  created, and real DHCP clients (udhcpc) on the LAN hosts, each with its
  hostname; h1 is the laptop the browser runs on.
- `browser`: Chromium started with this thread in h1's namespace (the
  Playwright driver and Chromium are its children, so they stay there).
- `page`: a fresh browser context, logged in; any JavaScript dialog that
  opens (an injected alert) fails the test.
- `shoot(page, name)`: a screenshot at 1280 px and at 360 px into one folder
  outside the repo, printed at the end of the run.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from homegw.netns import in_netns
from homegw.virtualhome import VirtualHome, leftovers
from tests.conftest import new_tag
from tests.integration.appliance_proc import ApplianceProcess

CHROMIUM = "/usr/bin/chromium"
# DESIGN.md §5: no sandbox as root, and nothing that phones home (the machine
# has no network: Chromium's background connections would only be refused)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "correct horse battery staple"
LAN_IP = "192.168.1.1"
BASE = f"http://{LAN_IP}"
WAN_IP = "203.0.113.2"
STATIC_WAN = {"mode": "static", "address": f"{WAN_IP}/24", "gateway": "203.0.113.1"}
XSS_HOSTNAME = "<script>alert(1)</script>"
#: LAN host -> the hostname its DHCP client sends
HOSTNAMES = {"h1": "laptop", "h2": "tablet", "h3": XSS_HOSTNAME, "h4": "nas"}
WIDTHS = (1280, 360)
SHOTS = Path(tempfile.gettempdir()) / f"homegw-screenshots-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class Gateway:
    home: VirtualHome
    appliance: ApplianceProcess
    addresses: dict[str, str] = field(default_factory=dict)  # LAN host -> its leased address

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One API call with the local token, from the gateway's namespace."""
        token = (Path(self.home.state_dir) / "api-token").read_text().strip()
        return api_call(method, f"{BASE}/api/v1{path}", body, token, self.home.ns("gw"))


def api_call(method: str, url: str, body: Any, token: str | None, ns: str) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with in_netns(ns), urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def dhcp_lease(home: VirtualHome, host: str, hostname: str) -> str:
    """A real DHCP exchange by udhcpc on `host` (Debian's default script
    puts the address on eth0); returns the address."""
    argv = ["udhcpc", "-i", "eth0", "-q", "-n", "-t", "10", "-T", "1", "-x", f"hostname:{hostname}"]
    result = home.run(host, argv, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = home.run(host, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    return shown.split()[3].split("/")[0]


def start_gateway(home: VirtualHome, **config: Any) -> ApplianceProcess:
    appliance = ApplianceProcess(home, home.gateway_config(wan=STATIC_WAN, **config)).start()
    appliance.wait_healthy(timeout=120)
    return appliance


def create_admin(home: VirtualHome) -> None:
    token = (Path(home.state_dir) / "setup-token").read_text().strip()
    api_call(
        "POST", f"{BASE}/api/v1/setup", {"token": token, "password": PASSWORD}, None, home.ns("gw")
    )


def built_home(**options: Any) -> VirtualHome:
    return VirtualHome(new_tag(), **options).build()


def torn_down(home: VirtualHome, appliance: ApplianceProcess | None) -> None:
    try:
        if appliance is not None:
            appliance.stop()
    finally:
        home.teardown()  # the pins of this home's pin_dir go with it
    assert not leftovers(home.tag), leftovers(home.tag)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    home = built_home(n_hosts=len(HOSTNAMES), lan_hosts_static=False, big_file_mib=32)
    appliance = None
    try:
        appliance = start_gateway(home, dpi={"enabled": True})
        create_admin(home)
        gw = Gateway(home, appliance)
        for host, hostname in HOSTNAMES.items():
            gw.addresses[host] = dhcp_lease(home, host, hostname)
        yield gw
    finally:
        torn_down(home, appliance)


@pytest.fixture(scope="module")
def playwright_in_h1(gateway: Gateway) -> Iterator[Playwright]:
    with in_netns(gateway.home.ns("h1")):
        pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


def launch(pw: Playwright) -> Browser:
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser(playwright_in_h1: Playwright) -> Iterator[Browser]:
    b = launch(playwright_in_h1)
    try:
        yield b
    finally:
        b.close()


class Dialogs:
    """Every JavaScript dialog a page opened (an injected alert() is one)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, context: BrowserContext) -> None:
        def on_page(page: Page) -> None:
            page.on("dialog", lambda d: (self.seen.append(d.message), d.dismiss()))

        context.on("page", on_page)


def new_context(browser: Browser, dialogs: Dialogs) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=BASE)
    context.set_default_timeout(20_000)
    dialogs.watch(context)
    return context


def log_in(page: Page, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture
def dialogs() -> Iterator[Dialogs]:
    d = Dialogs()
    yield d
    assert d.seen == [], f"a page opened JavaScript dialogs: {d.seen}"


@pytest.fixture
def context(browser: Browser, dialogs: Dialogs) -> Iterator[BrowserContext]:
    c = new_context(browser, dialogs)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    p = context.new_page()
    log_in(p)
    p.wait_for_url(f"{BASE}/")
    return p


_shot_count = 0


@pytest.fixture
def shoot() -> Callable[[Page, str], None]:
    def take(page: Page, name: str) -> None:
        global _shot_count
        SHOTS.mkdir(parents=True, exist_ok=True)
        size = page.viewport_size or {"width": 1280, "height": 900}
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900 if width > 600 else 780})
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            _shot_count += 1
        page.set_viewport_size(size)

    return take


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _shot_count:
        terminalreporter.write_line(f"web UI screenshots ({_shot_count}): {SHOTS}")
