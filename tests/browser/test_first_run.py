"""First run and login in a real browser, against an appliance that has no
admin yet: the wizard sets the password and the network and sends the
browser to the new LAN address; then wrong passwords, the lockout, and the
owner's browser that a lockout does not shut out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from homegw import netns
from homegw.netns import in_netns
from tests.browser.conftest import (
    PASSWORD,
    Dialogs,
    api_call,
    built_home,
    launch,
    new_context,
    start_gateway,
    torn_down,
)
from tests.integration.appliance_proc import ApplianceProcess

pytestmark = pytest.mark.timeout(300)

NEW_LAN = "10.77.0.1"
NEW_PREFIX = 24
H1_NEW = "10.77.0.11"


@dataclass
class Fresh:
    home: object
    appliance: ApplianceProcess
    base: str = "http://192.168.1.1"

    @property
    def state_dir(self) -> Path:
        return Path(self.home.state_dir)  # type: ignore[attr-defined]

    def api(self, method: str, path: str, body: object = None) -> object:
        token = (self.state_dir / "api-token").read_text().strip()
        ns = self.home.ns("gw")  # type: ignore[attr-defined]
        return api_call(method, f"{self.base}/api/v1{path}", body, token, ns)


@pytest.fixture(scope="module")
def fresh() -> Iterator[Fresh]:
    home = built_home(n_hosts=1)  # h1 at 192.168.1.11 (static), the browser's host
    appliance = None
    try:
        appliance = start_gateway(home)
        yield Fresh(home, appliance)
    finally:
        torn_down(home, appliance)


@pytest.fixture(scope="module")
def h1_browser(fresh: Fresh) -> Iterator[Browser]:
    with in_netns(fresh.home.ns("h1")):  # type: ignore[attr-defined]
        pw = sync_playwright().start()
    try:
        browser = launch(pw)
        yield browser
        browser.close()
    finally:
        pw.stop()


def test_first_run_sets_the_password_and_the_network(
    h1_browser: Browser, fresh: Fresh, dialogs: Dialogs, shoot
) -> None:
    context = new_context(h1_browser, dialogs)
    page = context.new_page()
    page.goto(f"{fresh.base}/")
    page.wait_for_url(f"{fresh.base}/setup**")
    shoot(page, "setup")
    token = (fresh.state_dir / "setup-token").read_text().strip()
    # the ports step: the two in use, preselected (the virtual home's NICs are veths)
    expect(page.get_by_label("WAN port (to the modem)")).to_have_value("wan0")
    expect(page.get_by_label("LAN port (to your home)")).to_have_value("lan0")
    expect(page.get_by_label("Swap the two ports")).not_to_be_checked()

    fill_wizard(page, token, "short", "short")  # the browser itself refuses it
    password = page.get_by_label("Password", exact=True)
    assert password.evaluate("e => !e.validity.valid")
    fill_wizard(page, token, PASSWORD, PASSWORD + "x")  # the server refuses this one
    again = page.get_by_label("Password again")
    expect(again).to_have_attribute("aria-invalid", "true")
    expect(page.locator(f"#{again.get_attribute('aria-describedby')}")).not_to_be_empty()
    expect(page.get_by_label("First address")).to_have_value("10.77.0.100")  # input kept
    assert (fresh.state_dir / "setup-token").exists()  # nothing was created

    # the laptop gets an address in the new LAN, as its next DHCP lease would
    netns.ip("addr", "add", f"{H1_NEW}/{NEW_PREFIX}", "dev", "eth0", ns=fresh.home.ns("h1"))
    fill_wizard(page, token, PASSWORD, PASSWORD)
    new_base = f"http://{NEW_LAN}"
    page.wait_for_url(f"{new_base}/**", timeout=120_000)  # sent on by the page itself
    fresh.base = new_base
    expect(page.get_by_label("Password")).to_be_visible()  # a new origin: log in again
    shoot(page, "login")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{new_base}/")
    config = fresh.api("GET", "/config")
    assert config["lan"]["address"] == f"{NEW_LAN}/{NEW_PREFIX}"  # type: ignore[index]
    assert config["dhcp"]["range_start"] == "10.77.0.100"  # type: ignore[index]
    assert config["wan"]["mode"] == "dhcp"  # type: ignore[index]
    assert config["wan"]["interface"] == "wan0"  # type: ignore[index]
    assert config["lan"]["interface"] == "lan0"  # type: ignore[index]
    assert not (fresh.state_dir / "setup-token").exists()
    context.close()


def fill_wizard(page: Page, token: str, password: str, again: str) -> None:
    page.get_by_label("Setup code").fill(token)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(again)
    page.get_by_label("Internet connection").select_option(label="Automatic (DHCP)")
    page.get_by_label("LAN address").fill(f"{NEW_LAN}/{NEW_PREFIX}")
    page.get_by_label("First address").fill("10.77.0.100")
    page.get_by_label("Last address").fill("10.77.0.150")
    page.get_by_role("button", name="Finish setup").click()


def log_in(page: Page, base: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_wrong_passwords_lock_a_browser_out_but_not_the_owners(
    h1_browser: Browser, fresh: Fresh, dialogs: Dialogs, shoot
) -> None:
    if (fresh.state_dir / "setup-token").exists():  # no admin: the first-run test failed
        token = (fresh.state_dir / "setup-token").read_text().strip()
        api_call(
            "POST",
            f"{fresh.base}/api/v1/setup",
            {"token": token, "password": PASSWORD},
            None,
            fresh.home.ns("gw"),
        )  # type: ignore[attr-defined]
    owner = new_context(h1_browser, dialogs).new_page()
    log_in(owner, fresh.base, PASSWORD)
    owner.wait_for_url(f"{fresh.base}/")
    owner.get_by_role("button", name="Log out").click()
    owner.wait_for_url(f"{fresh.base}/login**")

    stranger = new_context(h1_browser, dialogs).new_page()  # same address, no history
    log_in(stranger, fresh.base, "not the password")
    expect(stranger.get_by_role("alert")).to_contain_text("Wrong password")
    for _ in range(10):
        log_in(stranger, fresh.base, "still not the password")
    expect(stranger.get_by_role("alert")).to_contain_text("Too many wrong passwords")
    expect(stranger.get_by_role("alert")).to_contain_text("homegw passwd")  # the way back
    shoot(stranger, "login-locked")
    log_in(stranger, fresh.base, PASSWORD)  # locked: even the right one is refused now
    expect(stranger.get_by_role("alert")).to_contain_text("Too many wrong passwords")

    log_in(owner, fresh.base, PASSWORD)  # the owner's browser is known: not locked out
    owner.wait_for_url(f"{fresh.base}/")
    expect(owner.get_by_role("button", name="Log out")).to_be_visible()
