"""The ``dpi:`` config section: the contract's example loads, and every bad
value is refused at its key path (through the root config, as
``homegw check-config`` reports it)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import yaml

from homegw.config import ConfigError, parse_config
from homegw.modules.dpi.config import DpiConfig

EXAMPLE = """
dpi:
  enabled: true
  app_sources: [/etc/homegw/apps.yaml, "https://example.com/apps.yaml"]
  profiles:
    - name: Alice
      devices: ["02:48:47:00:00:01", "02:48:47:00:00:02"]
  rules:
    - name: bedtime
      who: [Alice, "02:48:47:00:00:03"]
      block_apps: [youtube]
      block_categories: [video, games]
      block_all: false
      allow_apps: [khan_academy]
      allow_categories: [education]
      schedule:
        - days: [sun, mon, tue, wed, thu]
          start: "21:00"
          end: "07:00"
      budget_minutes: null
    - name: games an hour a day
      who: ["02-48-47-00-00-04"]
      block_categories: [games]
      budget_minutes: 60
  pauses:
    - who: Alice
      until: "2026-12-01T21:30:00+01:00"
"""


def parse(dpi: dict[str, Any]) -> DpiConfig:
    return parse_config(
        {"wan": {"interface": "eth0"}, "lan": {"interface": "eth1"}, "dpi": dpi}
    ).dpi


def errors(dpi: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(dpi)
    return caught.value.errors


def rule(**fields: Any) -> dict[str, Any]:
    return {"name": "r", "who": ["02:48:47:00:00:01"], "block_apps": ["youtube"], **fields}


def window(**fields: Any) -> dict[str, Any]:
    return {"days": ["mon"], "start": "21:00", "end": "07:00", **fields}


def test_the_contract_example_loads_and_dumps_back():
    dpi = parse(yaml.safe_load(EXAMPLE)["dpi"])
    bedtime, games = dpi.rules
    assert bedtime.who == ("Alice", "02:48:47:00:00:03")
    assert games.who == ("02:48:47:00:00:04",)  # normalised like every MAC
    assert bedtime.schedule[0].start == time(21) and bedtime.schedule[0].crosses_midnight
    assert games.budget_minutes == 60 and games.schedule == ()
    assert dpi.pauses[0].until.utcoffset().total_seconds() == 3600
    assert dpi.profile_of("02:48:47:00:00:02") == "Alice"
    assert parse(dpi.model_dump(mode="json")) == dpi
    assert dpi.model_dump(mode="json")["rules"][0]["schedule"][0]["end"] == "07:00"


def test_disabled_and_empty_by_default():
    assert parse({}) == DpiConfig() and not DpiConfig().enabled
    assert DpiConfig().rules == () and DpiConfig().pauses == ()


BAD = [
    ({"rules": [rule(), rule()]}, "dpi.rules.1.name: duplicate rule 'r'"),
    (
        {"profiles": [{"name": "Al"}, {"name": "Al"}]},
        "dpi.profiles.1.name: duplicate profile 'Al'",
    ),
    ({"profiles": [{"name": "aabbccddeeff"}]}, "dpi.profiles.0.name: 'aabbccddeeff' looks like"),
    (
        {
            "profiles": [
                {"name": "A", "devices": ["02:48:47:00:00:01"]},
                {"name": "B", "devices": ["02:48:47:00:00:01"]},
            ]
        },
        "dpi.profiles.1.devices.0: 02:48:47:00:00:01 is already a device of 'A'",
    ),
    ({"rules": [rule(who=["Bob"])]}, "dpi.rules.0.who.0: 'Bob' is neither a MAC nor a profile"),
    ({"rules": [rule(who=[])]}, "dpi.rules.0.who: Tuple should have at least 1 item"),
    ({"pauses": [{"who": "Bob", "until": "2026-12-01T21:30:00Z"}]}, "dpi.pauses.0.who: 'Bob' is"),
    ({"pauses": [{"who": "02:48:47:00:00:01", "until": "2026-12-01T21:30"}]}, "timezone info"),
    (
        {"rules": [rule(block_categories=["cartoons"])]},
        "dpi.rules.0.block_categories.0: 'cartoons'",
    ),
    ({"rules": [rule(allow_categories=["unknown"])]}, "dpi.rules.0.allow_categories.0: 'unknown'"),
    (
        {"rules": [rule(block_apps=["You Tube"])]},
        "dpi.rules.0.block_apps.0: 'You Tube' is not an app",
    ),
    ({"rules": [rule(schedule=[window(), window(end="21:00")])]}, "schedule.1.end: equals start"),
    ({"rules": [rule(schedule=[window(days=["mon", "funday"])])]}, "days.1: must be one of"),
    ({"rules": [rule(schedule=[window(days=["mon", "mon"])])]}, "days.1: duplicate day mon"),
    ({"rules": [rule(schedule=[window(days=[])])]}, "schedule.0.days: Tuple should have at least"),
    ({"rules": [rule(schedule=[window(start="24:00")])]}, "schedule.0.start: '24:00' is not a"),
    ({"rules": [rule(schedule=[window(start="9:5")])]}, "schedule.0.start: '9:5' is not a time"),
    ({"rules": [rule(schedule=[window(start=1260)])]}, "quote times in YAML"),
    ({"rules": [rule(budget_minutes=0)]}, "dpi.rules.0.budget_minutes: must be at least 1"),
    ({"rules": [rule(budget_minutes=1441)]}, "budget_minutes: must be at most 1440"),
    ({"rules": [rule(block_apps=[], budget_minutes=30, allow_apps=["x"])]}, "a budget needs"),
    ({"rules": [rule(block_apps=[])]}, "dpi.rules.0: the rule neither blocks nor allows"),
    ({"rules": [rule(allow_apps=["youtube"])]}, "dpi.rules.0.allow_apps.0: youtube is also in"),
    ({"rules": [rule(block_apps=["a", "b", "a"])]}, "dpi.rules.0.block_apps.2: duplicate a"),
    ({"rules": [rule(colour="red")]}, "dpi.rules.0.colour: unknown key"),
    ({"app_sources": ["apps.yaml"]}, "dpi.app_sources.0: 'apps.yaml' must be an absolute path"),
    (
        {"rules": [rule(name=f"r{i}") for i in range(129)]},
        "dpi.rules: Tuple should have at most 128",
    ),
    ({"rules": [rule(schedule=[window()] * 17)]}, "schedule: Tuple should have at most 16"),
    (
        {"profiles": [{"name": f"p{i}"} for i in range(65)]},
        "profiles: Tuple should have at most 64",
    ),
    ({"enabled": "yes"}, "dpi.enabled: must be true or false"),
]


@pytest.mark.parametrize(("dpi", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_config_is_refused_at_its_key_path(dpi, expected):
    found = errors(dpi)
    assert any(expected in line for line in found), found


def test_every_problem_is_reported_at_once():
    found = errors(
        {
            "profiles": [{"name": "Al"}, {"name": "Al"}],
            "rules": [rule(who=["Bob"], schedule=[window(end="21:00")])],
        }
    )
    paths = sorted(line.split(":")[0] for line in found)
    # pydantic checks a model across its fields only once its fields are valid
    assert paths == ["dpi.rules.0.schedule.0.end"], found
    found = errors({"profiles": [{"name": "Al"}, {"name": "Al"}], "rules": [rule(who=["Bob"])]})
    assert sorted(line.split(":")[0] for line in found) == [
        "dpi.profiles.1.name",
        "dpi.rules.0.who.0",
    ]


def test_expired_pauses_are_accepted_and_left_out_by_pauses_after():
    dpi = parse(
        {
            "pauses": [
                {"who": "02:48:47:00:00:01", "until": "2001-01-01T00:00:00Z"},
                {"who": "02:48:47:00:00:02", "until": "2026-12-01T21:30:00+01:00"},
            ]
        }
    )
    assert dpi.pauses[0].until.year == 2001
    now = datetime(2026, 12, 1, 20, 29, 59, tzinfo=UTC)
    assert [p.who for p in dpi.pauses_after(now)] == ["02:48:47:00:00:02"]
    assert dpi.pauses_after(now + timedelta(seconds=1)) == ()


def test_unquoted_yaml_times_and_macs_are_explained():
    data = yaml.safe_load(
        "rules: [{name: r, who: ['02:48:47:00:00:01'], block_all: true,"
        " schedule: [{start: 21:00, end: '07:00'}]}]"
    )
    assert any("quote times" in line for line in errors(data))
    data = yaml.safe_load("rules: [{name: r, who: [10:20:30:40:50:59], block_all: true}]")
    assert any("rules.0.who.0: must be a string: quote MAC" in line for line in errors(data))
    dpi = parse(
        yaml.safe_load(
            "rules: [{name: r, who: ['02:48:47:00:00:01'], block_all: true,"
            " schedule: [{start: '21:00', end: '07:00'}]}]"
        )
    )
    assert dpi.rules[0].schedule[0].days == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
