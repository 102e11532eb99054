"""The Parental controls page over FakeHome (its ``dpi`` section checked by
key path): what is in force now, the pause buttons, profiles and rules as
config changes of the dpi section, errors next to their fields with the
input kept, CSRF, hostile names escaped, DPI off."""

from __future__ import annotations

import copy
import re
from html import unescape
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.unit.fake_control import HOSTILE_LABEL
from tests.unit.fake_home import (
    BEDTIME,
    HOSTILE,
    HOSTILE_PROFILE,
    LAPTOP,
    NOW,
    PHONE,
    FakeHome,
    assert_no_inline_code,
    create_admin,
    form_token,
    until_midnight,
)
from tests.unit.fake_home import text_of as text
from tests.unit.test_webui_devices import app, client, control

PAGE = "/parental/"


FIXTURES = (app, client, control)  # test_webui_devices's (a FakeHome), used here by name


def post(client: FlaskClient, action: str, data: dict[str, Any]) -> Any:
    return client.post(action, data={"csrf_token": form_token(client, PAGE), **data})


def error_of(html: str, element_id: str) -> str | None:
    """The error shown for the element with this id (the element its
    aria-describedby names, when it is marked invalid), or None."""
    found = re.search(rf'<[a-z]+[^>]*\bid="{re.escape(element_id)}"[^>]*>', html)
    assert found, f"no element {element_id}"
    described = re.search(r'aria-describedby="([^"]+)"', found.group(0))
    if described is None or 'aria-invalid="true"' not in found.group(0):
        return None
    error = re.search(
        rf'<(p|ul) class="error" id="{re.escape(described.group(1))}">(.*?)</(p|ul)>', html, re.S
    )
    return unescape(re.sub(r"<[^>]+>", " ", error.group(2))).strip() if error else None


def value_of(html: str, element_id: str) -> str:
    found = re.search(rf'<input[^>]*\bid="{re.escape(element_id)}"[^>]*>', html)
    assert found, f"no input {element_id}"
    value = re.search(r'value="([^"]*)"', found.group(0))
    return unescape(value.group(1)) if value else ""


def checked(html: str, element_id: str) -> bool:
    found = re.search(rf'<input[^>]*\bid="{re.escape(element_id)}"[^>]*>', html)
    assert found, f"no input {element_id}"
    return " checked" in found.group(0)


def rule_form(**changes: Any) -> dict[str, Any]:
    """The add-rule form filled in: Ben's games budget on school nights."""
    form: dict[str, Any] = {
        "name": "games budget",
        "who": ["Anna", PHONE],
        "block_apps": ["fortnite", "roblox"],
        "block_categories": ["social"],
        "allow_apps": ["khan_academy"],
        "allow_categories": ["education"],
        "windows": "2",
        "w0_days": ["sun", "mon", "tue", "wed", "thu"],
        "w0_start": "21:00",
        "w0_end": "07:00",
        "w1_start": "",
        "w1_end": "",
        "budget": "60",
    }
    form.update(changes)
    return form


# -- the page ---------------------------------------------------------------


def test_the_page_is_in_the_navigation_and_shows_profiles_rules_and_devices(
    client: FlaskClient,
) -> None:
    html = text(client.get(PAGE))
    assert '<a href="/parental/"' in text(client.get("/"))
    assert '<h3 id="h-profile-0">Anna</h3>' in html
    assert "<p>Devices: Anna&#39;s laptop</p>" in html
    words = re.search(r'<ul class="rule-words">(.*?)</ul>', html, re.S)
    assert words
    items = [re.sub(r"<[^>]+>", "", li).strip() for li in re.findall(r"<li>(.*?)</li>", words[1])]
    assert items == [
        "For: Anna",
        "Blocks: Games, YouTube",
        "Always allowed: Khan Academy",
        "When: Sun–Thu from 21:00 to 07:00 the next day",
    ]
    assert 'id="dpi-off"' not in html
    assert_no_inline_code(html)
    assert html.count('<div class="table-wrap">') == html.count("<table")


def test_hostile_names_are_escaped_everywhere(client: FlaskClient) -> None:
    html = text(client.get(f"{PAGE}?edit_rule=0&add_rule=1"))
    for hostile in (HOSTILE, HOSTILE_PROFILE, HOSTILE_LABEL):
        assert hostile not in html
    assert '<h3 id="h-profile-1">&lt;b&gt;x&lt;/b&gt;</h3>' in html
    assert '<td data-label="Profile">&lt;b&gt;x&lt;/b&gt;</td>' in html
    label = "&lt;script&gt;alert(&#39;app&#39;)&lt;/script&gt;</label>"
    assert html.count(label) == 4  # block and allow pickers of the edit and the add form


def test_in_force_now_with_until_when(client: FlaskClient, control: FakeHome) -> None:
    control.config["dpi"]["rules"][0]["budget_minutes"] = 30
    html = text(client.get(PAGE))
    row = re.search(r'<tr id="now-0" data-mac="02:00:00:00:00:01">(.*?)</tr>', html, re.S)
    assert row
    now = " ".join(re.sub(r"<[^>]+>", " ", row[1]).split())
    assert "Blocked: Games, YouTube" in now
    assert "bedtime: 42 of 30 min used today — used up" in now
    assert "Changes at" in now and "No limits now" not in now
    assert "Resume" not in row[1]


def test_the_whole_internet_blocked_now_with_its_exceptions(
    client: FlaskClient, control: FakeHome
) -> None:
    control.config["dpi"]["rules"][0]["block_all"] = True
    html = text(client.get(PAGE))
    row = re.search(r'<tr id="now-0".*?</tr>', html, re.S)
    assert row and "The whole internet is blocked</strong> except Khan Academy" in row[0]
    other = re.search(r'<tr id="now-1".*?</tr>', html, re.S)  # the phone: no rule
    assert other and "No limits now" in other[0] and "Changes at" not in other[0]


def test_the_pickers_group_apps_by_category_and_tick_the_rule(client: FlaskClient) -> None:
    html = text(client.get(f"{PAGE}?edit_rule=0&add_rule=1"))
    assert checked(html, "rule-0-block-app-youtube") and checked(html, "rule-0-block-cat-games")
    assert checked(html, "rule-0-allow-app-khan_academy")
    assert not checked(html, "rule-0-block-app-netflix")
    assert not checked(html, "rule-new-block-app-youtube")
    video = re.search(r"<summary>Video streaming</summary>(.*?)</details>", html, re.S)
    assert video and "YouTube" in video[1] and "Netflix" in video[1] and "Roblox" not in video[1]
    assert "<summary>Unknown</summary>" not in html
    assert 'data-search-for="rule-0-block-groups"' in html
    assert checked(html, "rule-0-w0-sun") and not checked(html, "rule-0-w0-fri")
    assert value_of(html, "rule-0-w0-start") == "21:00"
    assert value_of(html, "rule-0-w1-start") == ""  # one more, empty window


def test_with_dpi_off_the_page_says_so_and_still_edits(
    client: FlaskClient, control: FakeHome
) -> None:
    control.dpi_on = False
    html = text(client.get(PAGE))
    assert 'id="dpi-off"' in html and 'href="/modules/"' in html
    assert "No limits now" in html  # nothing in force
    answer = post(client, "/parental/profiles", {"name": "Ben", "devices": [PHONE]})
    assert answer.status_code == 302
    assert control.config["dpi"]["profiles"][-1] == {"name": "Ben", "devices": [PHONE]}
    refused = post(client, "/parental/pause", {"target": LAPTOP, "minutes": "30"})
    assert refused.status_code == 302
    assert "DPI is off: enable the dpi module" in text(client.get(PAGE))


def test_the_rule_form_is_shown_when_asked_for(client: FlaskClient) -> None:
    html = text(client.get(PAGE))
    assert 'id="rule-new-name"' not in html and 'id="rule-0-name"' not in html
    assert 'href="/parental/?add_rule=1#add-rule">Add a rule</a>' in html
    assert 'id="rule-new-name"' in text(client.get(f"{PAGE}?add_rule=1"))


def test_right_now_lists_the_devices_of_profiles_and_rules_and_pauses_the_others(
    client: FlaskClient, control: FakeHome
) -> None:
    html = text(client.get(PAGE))
    assert re.findall(r'<tr id="now-\d+" data-mac="([^"]+)">', html) == [LAPTOP, PHONE]
    other = re.search(r'<select id="pause-other-target" name="target">(.*?)</select>', html, re.S)
    assert other and re.findall(r'value="([^"]+)"', other[1]) == [
        "02:00:00:00:00:03",
        "02:00:00:00:00:04",
    ]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (02:00:00:00:00:03)" in other[1]
    post(client, "/parental/pause", {"target": "02:00:00:00:00:04", "minutes": "60"})
    html = text(client.get(PAGE))  # a paused device is listed, with its Resume button
    assert re.findall(r'<tr id="now-\d+" data-mac="([^"]+)">', html)[-1] == "02:00:00:00:00:04"
    assert 'aria-label="Resume 02:00:00:00:00:04"' in html


# -- pause --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "minutes", "said"),
    [
        ("30", 30, "is paused for 30 minutes"),
        ("60", 60, "is paused for 1 hour"),
        ("tomorrow", None, "is paused until tomorrow"),
        ("0", 0, "can use the internet again"),
    ],
)
def test_pause_buttons_of_a_device(
    client: FlaskClient, control: FakeHome, choice: str, minutes: int | None, said: str
) -> None:
    answer = post(client, "/parental/pause", {"target": LAPTOP, "minutes": choice})
    assert answer.status_code == 302
    assert ("pause", LAPTOP, minutes) in control.calls
    assert f"Anna&#39;s laptop {said}." in text(client.get(PAGE))


def test_a_paused_device_shows_until_when_and_a_resume_button(
    client: FlaskClient, control: FakeHome
) -> None:
    post(client, "/parental/pause", {"target": LAPTOP, "minutes": "tomorrow"})
    until = control.config["dpi"]["pauses"][0]
    assert until["who"] == LAPTOP
    html = text(client.get(PAGE))
    row = re.search(r'<tr id="now-0".*?</tr>', html, re.S)
    assert row and "Paused until tomorrow 00:00" in row[0]
    assert 'aria-label="Resume Anna&#39;s laptop"' in row[0]
    post(client, "/parental/pause", {"target": LAPTOP, "minutes": "0"})
    assert control.config["dpi"]["pauses"] == []
    assert "Resume Anna" not in text(client.get(PAGE))


def test_pause_of_a_profile(client: FlaskClient, control: FakeHome) -> None:
    post(client, "/parental/pause", {"target": HOSTILE_PROFILE, "minutes": "60"})
    assert control.config["dpi"]["pauses"][0]["who"] == HOSTILE_PROFILE
    html = text(client.get(PAGE))
    profile = re.search(r'<article class="group profile" id="profile-1">.*?</article>', html, re.S)
    assert profile and "Paused until" in profile[0]
    assert 'aria-label="Resume &lt;b&gt;x&lt;/b&gt;"' in profile[0]
    phone = re.search(r'<tr id="now-1".*?</tr>', html, re.S)  # the profile's phone
    assert phone and "Paused until" in phone[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"target": LAPTOP, "minutes": "45"}, "Pick how long to pause for."),
        ({"target": "", "minutes": "30"}, "Pick how long to pause for."),
        (
            {"target": "Nobody", "minutes": "30"},
            "Not paused: &#39;Nobody&#39; is no profile or device",
        ),
    ],
)
def test_a_bad_pause_changes_nothing_and_says_why(
    client: FlaskClient, control: FakeHome, data: dict[str, str], message: str
) -> None:
    assert post(client, "/parental/pause", data).status_code == 302
    assert control.config["dpi"]["pauses"] == []
    assert message in text(client.get(PAGE))


# -- profiles -----------------------------------------------------------------


def test_add_a_profile(client: FlaskClient, control: FakeHome) -> None:
    answer = post(client, "/parental/profiles", {"name": "Ben", "devices": [PHONE, LAPTOP]})
    assert answer.status_code == 302
    assert control.config["dpi"]["profiles"][2] == {"name": "Ben", "devices": [PHONE, LAPTOP]}
    assert control.calls[-1] == ("apply", "dpi", False)
    assert "Profile Ben saved." in text(client.get(PAGE))


def test_a_refused_profile_keeps_the_input_and_says_why_next_to_the_field(
    client: FlaskClient, control: FakeHome
) -> None:
    before = copy.deepcopy(control.config["dpi"])
    answer = post(client, "/parental/profiles", {"name": "Anna", "devices": [PHONE, "not-a-mac"]})
    html = text(answer)
    assert answer.status_code == 400
    assert error_of(html, "profile-new-name") == "the profile name 'Anna' is used twice"
    assert error_of(html, "profile-new-devices") == "not a MAC address"
    assert value_of(html, "profile-new-name") == "Anna" and checked(html, "profile-new-dev-1")
    assert '<details class="add" id="add-profile" open>' in html
    assert control.config["dpi"] == before


def test_rename_a_profile_renames_it_in_rules_and_pauses(
    client: FlaskClient, control: FakeHome
) -> None:
    post(client, "/parental/pause", {"target": "Anna", "minutes": "30"})
    html = text(client.get(f"{PAGE}?edit_profile=0"))
    assert value_of(html, "profile-0-name") == "Anna" and checked(html, "profile-0-dev-0")
    data = {"name": "Anna B", "devices": [LAPTOP], "original": "Anna"}
    assert post(client, "/parental/profiles/0", data).status_code == 302
    dpi = control.config["dpi"]
    assert dpi["profiles"][0] == {"name": "Anna B", "devices": [LAPTOP]}
    assert dpi["rules"][0]["who"] == ["Anna B"] and dpi["pauses"][0]["who"] == "Anna B"


def test_a_refused_rename_shows_the_edit_form_with_the_error(
    client: FlaskClient, control: FakeHome
) -> None:
    data = {"name": " ", "devices": [LAPTOP], "original": "Anna"}
    answer = post(client, "/parental/profiles/0", data)
    assert answer.status_code == 400
    assert error_of(text(answer), "profile-0-name") == "1 to 64 characters"
    assert control.config["dpi"]["profiles"][0]["name"] == "Anna"


def test_an_edit_of_a_profile_that_changed_meanwhile_changes_nothing(
    client: FlaskClient, control: FakeHome
) -> None:
    data = {"name": "Ben", "devices": [], "original": "Someone else"}
    assert post(client, "/parental/profiles/0", data).status_code == 302
    assert control.config["dpi"]["profiles"][0]["name"] == "Anna"
    assert "changed meanwhile" in text(client.get(PAGE))


def test_delete_a_profile(client: FlaskClient, control: FakeHome) -> None:
    post(client, "/parental/pause", {"target": HOSTILE_PROFILE, "minutes": "30"})
    answer = post(client, "/parental/profiles/1/delete", {"original": HOSTILE_PROFILE})
    assert answer.status_code == 302
    assert [p["name"] for p in control.config["dpi"]["profiles"]] == ["Anna"]
    assert control.config["dpi"]["pauses"] == []


def test_a_profile_a_rule_is_only_for_is_not_deleted(
    client: FlaskClient, control: FakeHome
) -> None:
    answer = post(client, "/parental/profiles/0/delete", {"original": "Anna"})
    assert answer.status_code == 302
    assert [p["name"] for p in control.config["dpi"]["profiles"]] == ["Anna", HOSTILE_PROFILE]
    assert "bedtime are only for Anna: change or delete them first" in text(client.get(PAGE))


# -- rules --------------------------------------------------------------------


def test_add_a_rule_as_the_config_holds_it(client: FlaskClient, control: FakeHome) -> None:
    answer = post(client, "/parental/rules", rule_form())
    assert answer.status_code == 302, text(answer)
    assert control.config["dpi"]["rules"] == [
        BEDTIME,
        {
            "name": "games budget",
            "who": ["Anna", PHONE],
            "block_all": False,
            "block_apps": ["fortnite", "roblox"],
            "block_categories": ["social"],
            "allow_apps": ["khan_academy"],
            "allow_categories": ["education"],
            "schedule": [
                {"days": ["sun", "mon", "tue", "wed", "thu"], "start": "21:00", "end": "07:00"}
            ],
            "budget_minutes": 60,
        },
    ]
    html = text(client.get(PAGE))
    assert "Rule games budget saved." in html
    assert "<li>Only after 60 minutes of use a day</li>" in html


def test_block_the_whole_internet_always(client: FlaskClient, control: FakeHome) -> None:
    form = rule_form(block_all="on", block_apps=[], block_categories=[], w0_days=[], w0_start="",
                     w0_end="", budget="")  # fmt: skip
    assert post(client, "/parental/rules", form).status_code == 302
    rule = control.config["dpi"]["rules"][1]
    assert rule["block_all"] is True and rule["schedule"] == [] and rule["budget_minutes"] is None
    html = text(client.get(PAGE))
    assert "<li>Blocks <strong>the whole internet</strong></li>" in html
    assert "<li>When: all the time</li>" in html


def test_a_refused_rule_keeps_the_input_and_puts_each_error_next_to_its_field(
    client: FlaskClient, control: FakeHome
) -> None:
    form = rule_form(name="bedtime", windows="3", w0_days=[], w0_start="", w0_end="",
                     w1_days=["sat"], w1_start="25:00", w1_end="07:00",
                     w2_days=["sun"], w2_start="08:00", w2_end="")  # fmt: skip
    answer = post(client, "/parental/rules", form)
    html = text(answer)
    assert answer.status_code == 400
    assert error_of(html, "rule-new-w2-end") == "Enter a time, e.g. 21:00."
    assert control.config["dpi"]["rules"] == [BEDTIME]
    form["w2_end"] = "09:00"  # the form's own check passes: the config judges the rest
    answer = post(client, "/parental/rules", form)
    html = text(answer)
    assert answer.status_code == 400
    assert error_of(html, "rule-new-name") == "the rule name 'bedtime' is used twice"
    # the config's schedule.0 is the form's window 2 (window 1 was left empty)
    assert error_of(html, "rule-new-w1-start") == "a time of day as HH:MM, 00:00 to 23:59"
    assert error_of(html, "rule-new-w0-start") is None and error_of(html, "rule-new-w2-end") is None
    assert value_of(html, "rule-new-w1-start") == "25:00" and checked(html, "rule-new-w1-sat")
    assert checked(html, "rule-new-block-app-roblox") and value_of(html, "rule-new-budget") == "60"
    assert control.config["dpi"]["rules"] == [BEDTIME]


@pytest.mark.parametrize(
    ("changes", "element", "message"),
    [
        ({"who": []}, "rule-new-who", "Pick at least one person or device."),
        (
            {"budget": "an hour"},
            "rule-new-budget",
            "A number of minutes, e.g. 60 (1 h), not 'an hour'.",
        ),
        ({"budget": "0"}, "rule-new-budget", "1 to 1440 minutes a day"),
        ({"w0_days": []}, "rule-new-w0-days", "Pick at least one day."),
        ({"block_apps": ["<script>"]}, "rule-new-block", "not an id: '<script>'"),
        ({"who": ["Nobody"]}, "rule-new-who", "no profile 'Nobody' and not a MAC address"),
    ],
)
def test_each_bad_field_of_a_rule_is_named(
    client: FlaskClient, control: FakeHome, changes: dict[str, Any], element: str, message: str
) -> None:
    answer = post(client, "/parental/rules", rule_form(**changes))
    assert answer.status_code == 400
    assert error_of(text(answer), element) == message
    assert control.config["dpi"]["rules"] == [BEDTIME]


def test_a_rule_that_does_nothing_is_refused_above_its_form(
    client: FlaskClient, control: FakeHome
) -> None:
    form = rule_form(block_apps=[], block_categories=[], allow_apps=[], allow_categories=[])
    answer = post(client, "/parental/rules", form)
    html = text(answer)
    assert answer.status_code == 400
    said = "the rule neither blocks nor allows anything"
    assert f'<p class="error" id="rule-new-e" role="alert">{said}</p>' in html
    assert value_of(html, "rule-new-name") == "games budget"
    assert control.config["dpi"]["rules"] == [BEDTIME]


def test_times_with_seconds_are_shown_as_hours_and_minutes(
    client: FlaskClient, control: FakeHome
) -> None:
    control.config["dpi"]["rules"][0]["schedule"][0].update(start="21:00:00", end="07:00:00")
    html = text(client.get(f"{PAGE}?edit_rule=0"))
    assert (
        value_of(html, "rule-0-w0-start") == "21:00" and value_of(html, "rule-0-w0-end") == "07:00"
    )
    words = text(client.get(PAGE))
    assert "When: Sun–Thu from 21:00 to 07:00 the next day" in words


def test_edit_a_rule(client: FlaskClient, control: FakeHome) -> None:
    form = rule_form(name="bedtime", original="bedtime", windows="2", w1_days=["fri", "sat"],
                     w1_start="22:30", w1_end="08:00")  # fmt: skip
    assert post(client, "/parental/rules/0", form).status_code == 302
    rules = control.config["dpi"]["rules"]
    assert len(rules) == 1 and rules[0]["schedule"][1] == {
        "days": ["fri", "sat"],
        "start": "22:30",
        "end": "08:00",
    }
    assert "When: Fri, Sat from 22:30 to 08:00 the next day" in text(client.get(PAGE))


def test_a_refused_edit_shows_the_rule_form_with_its_errors(
    client: FlaskClient, control: FakeHome
) -> None:
    form = rule_form(name="bedtime", original="bedtime", budget="9999")
    answer = post(client, "/parental/rules/0", form)
    assert answer.status_code == 400
    assert error_of(text(answer), "rule-0-budget") == "1 to 1440 minutes a day"
    assert control.config["dpi"]["rules"] == [BEDTIME]


def test_delete_a_rule_and_a_stale_delete(client: FlaskClient, control: FakeHome) -> None:
    assert post(client, "/parental/rules/0/delete", {"original": "other"}).status_code == 302
    assert control.config["dpi"]["rules"] == [BEDTIME]
    assert post(client, "/parental/rules/0/delete", {"original": "bedtime"}).status_code == 302
    assert control.config["dpi"]["rules"] == []
    assert "Rule bedtime deleted." in text(client.get(PAGE))


@pytest.mark.parametrize(
    "action",
    [
        "/parental/pause",
        "/parental/profiles",
        "/parental/profiles/0",
        "/parental/profiles/0/delete",
        "/parental/rules",
        "/parental/rules/0",
        "/parental/rules/0/delete",
    ],
)
def test_every_form_needs_the_csrf_token(
    client: FlaskClient, control: FakeHome, action: str
) -> None:
    before = copy.deepcopy(control.config)
    data = {**rule_form(), "original": "Anna", "target": LAPTOP, "minutes": "30"}
    answer = client.post(action, data=data)
    assert answer.status_code == 400 and "Reload the page" in text(answer)
    forged = client.post(action, data={**data, "csrf_token": "forged"})
    assert forged.status_code == 400
    assert control.config == before and not [c for c in control.calls if c[0] == "pause"]


def test_the_page_needs_a_login(app: Flask) -> None:
    create_admin(app)
    answer = app.test_client().get(PAGE)
    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


def test_until_tomorrow_is_local_midnight() -> None:
    midnight = until_midnight(NOW)
    assert 0 < midnight - NOW <= 86400
    assert midnight % 60 == 0
