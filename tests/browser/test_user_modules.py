"""User IO modules in a real browser against the real appliance: the MAC
blocklist example uploaded from the IO modules page runs on trial (its
countdown counts down), Confirm keeps it ("confirmed" in its chain), an
entry set in its map on its page drops a LAN host's frames and deleting the
entry lets them through again; a broken source is refused with the
compiler's message and line, the form keeps what was typed, and markup in
the source stays text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from homegw import netns
from tests.browser.conftest import LAN_IP, Gateway
from tests.browser.test_webui import post_forms_without_csrf, unlabelled_controls

pytestmark = pytest.mark.timeout(300)

EXAMPLE = "mac_blocklist"
WAIT_S = 10.0
BROKEN_SOURCE = """#include "homegw_user.h"
// <script>alert(1)</script> stays text
int broken(struct xdp_md *ctx) {
    return no_such_thing + XDP_PASS;
}
"""


def pings(gateway: Gateway, host: str) -> bool:
    argv = ["ping", "-n", "-q", "-c", "1", "-W", "1", LAN_IP]
    return gateway.home.run(host, argv).returncode == 0


def mac_key(mac: str) -> str:
    """hgw_mac_key(mac) as hex: the 6 bytes, then 2 zero bytes."""
    return mac.replace(":", "").lower() + "0000"


def assert_fits_and_is_labelled(page: Page, what: str) -> None:
    """As every page of the navigation: no sideways scrolling at 360 px, a
    label on every control, a CSRF token in every POST form."""
    for width in (1280, 360):
        page.set_viewport_size({"width": width, "height": 800})
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width + 1, f"{what} is {overflow} px wide at {width} px"
    page.set_viewport_size({"width": 1280, "height": 900})
    assert unlabelled_controls(page) == [], what
    assert post_forms_without_csrf(page) == [], what


def user_card(page: Page, name: str):
    return page.locator(f'section.user-module[data-user-module="{name}"]')


def chain_badge(page: Page, name: str):
    return page.locator(f'ol.pipeline[data-nic="lan"] li[data-user-module="{name}"] .user-state')


def test_upload_the_blocklist_example_confirm_it_and_block_a_device(
    page: Page, gateway: Gateway, shoot
) -> None:
    page.goto("/modules/")
    page.get_by_label("Example").select_option(EXAMPLE)
    page.get_by_role("button", name="Load example").click()
    expect(page.get_by_label("Name", exact=True)).to_have_value(EXAMPLE)
    expect(page.locator("#f-source")).to_have_value(re.compile(r'#include "homegw_user\.h"'))
    page.get_by_label("Trial (seconds)").fill("300")
    page.get_by_role("button", name="Upload and start the trial").click()

    expect(page.get_by_text(f"{EXAMPLE} is loaded and on trial")).to_be_visible()
    expect(chain_badge(page, EXAMPLE)).to_have_text("trial")
    countdown = user_card(page, EXAMPLE).locator(".countdown")
    expect(countdown).to_have_text(re.compile(r"^\d+ s left$"))
    first = countdown.text_content()
    expect(countdown).not_to_have_text(first or "")  # it counts down, live
    shoot(page, "user-module-trial")
    assert_fits_and_is_labelled(page, "the IO modules page with a module on trial")

    user_card(page, EXAMPLE).get_by_role("button", name=f"Confirm {EXAMPLE}").click()
    expect(page.get_by_text(f"{EXAMPLE} confirmed.")).to_be_visible()
    expect(chain_badge(page, EXAMPLE)).to_have_text("confirmed")
    expect(user_card(page, EXAMPLE).locator(".countdown")).to_have_count(0)
    shoot(page, "user-module-confirmed")

    # its map, on its page: block h2's MAC, then let it through again
    assert pings(gateway, "h2") and pings(gateway, "h1")
    page.get_by_role("link", name=EXAMPLE).first.click()
    blocked = page.locator('section.map[data-map="blocked"]')
    key = mac_key(gateway.home.host("h2").mac)
    blocked.get_by_label("Key (hex)").fill(key)
    blocked.get_by_label("Value (hex)").fill("01")
    blocked.get_by_role("button", name="Set the entry").click()
    expect(page.locator('section.map[data-map="blocked"]').get_by_text(key)).to_be_visible()
    assert not pings(gateway, "h2")
    assert pings(gateway, "h1")
    shoot(page, "user-module-page")
    assert_fits_and_is_labelled(page, "a user module's page")
    page.get_by_role("button", name=f"Delete the entry {key}").click()
    expect(
        page.locator('section.map[data-map="blocked"]').get_by_text("No entries.")
    ).to_be_visible()
    assert netns.wait_for(lambda: pings(gateway, "h2"), WAIT_S)

    page.get_by_role("link", name="Delete…").first.click()
    assert_fits_and_is_labelled(page, "the delete confirmation")
    page.get_by_role("button", name=f"Delete {EXAMPLE}").click()
    expect(page.get_by_text(f"{EXAMPLE} deleted.")).to_be_visible()
    expect(user_card(page, EXAMPLE)).to_have_count(0)


def test_a_broken_source_shows_the_compilers_message_and_line(
    page: Page, gateway: Gateway, shoot
) -> None:
    page.goto("/modules/")
    page.get_by_label("Name", exact=True).fill("broken")
    page.locator("#f-source").fill(BROKEN_SOURCE)
    page.get_by_label("Counter names").fill("seen")
    page.get_by_role("button", name="Upload and start the trial").click()

    refusal = page.locator("#upload-refusal")
    expect(refusal).to_contain_text("Refused at the compile stage, line 4:")
    expect(refusal.locator(".refusal-message")).to_contain_text("no_such_thing")
    expect(refusal.locator("li.refused-line")).to_have_text("    return no_such_thing + XDP_PASS;")
    expect(refusal).to_contain_text("// <script>alert(1)</script> stays text")
    # the form keeps what was typed
    expect(page.get_by_label("Name", exact=True)).to_have_value("broken")
    expect(page.get_by_label("Counter names")).to_have_value("seen")
    assert page.locator("#f-source").input_value() == BROKEN_SOURCE
    # the refused line is selected in the source
    selected = page.locator("#f-source").evaluate(
        "el => el.value.substring(el.selectionStart, el.selectionEnd)"
    )
    assert selected == "    return no_such_thing + XDP_PASS;"
    shoot(page, "user-module-refused")
    assert_fits_and_is_labelled(page, "a refused upload")
    assert page.locator('section.user-module[data-user-module="broken"]').count() == 0
