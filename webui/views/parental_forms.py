"""The Parental controls page's forms and words: a profile or a rule as the
form shows it (``values``) and as the ``dpi`` config section holds it
(``document``), the form's own shape checks (errors by the key path the
config would name), and a rule, a schedule window or a time said in words a
parent reads ("Sun–Thu from 21:00 to 07:00 the next day")."""

from __future__ import annotations

import time
from typing import Any

from flask import request

Errors = dict[str, str]
Values = dict[str, Any]
DAYS = (
    ("mon", "Mon"),
    ("tue", "Tue"),
    ("wed", "Wed"),
    ("thu", "Thu"),
    ("fri", "Fri"),
    ("sat", "Sat"),
    ("sun", "Sun"),
)
DAY_IDS = tuple(day for day, _ in DAYS)
MAX_WINDOWS = 8
#: the pause buttons: form value -> minutes for Control.pause (None: until midnight)
PAUSES = {"30": 30, "60": 60, "tomorrow": None, "0": 0}
BUDGET_MAX = 24 * 60


def _field(name: str) -> str:
    return request.form.get(name, "").strip()


def _ticked(name: str, limit: int = 1000) -> list[str]:
    """The values of a group of checkboxes, in form order, once each."""
    seen: dict[str, None] = {}
    for value in request.form.getlist(name)[:limit]:
        seen.setdefault(value.strip(), None)
    return [value for value in seen if value]


# -- profiles -------------------------------------------------------------


def profile_form() -> Values:
    return {"name": _field("name"), "devices": _ticked("devices")}


def profile_document(values: Values) -> dict[str, Any]:
    return {"name": values["name"], "devices": list(values["devices"])}


def renamed(dpi: dict[str, Any], old: str, new: str) -> None:
    """A profile's new name in the rules and pauses that name it."""
    if old == new:
        return
    for rule in dpi.get("rules") or []:
        rule["who"] = [new if who == old else who for who in rule.get("who") or []]
    for pause in dpi.get("pauses") or []:
        if pause.get("who") == old:
            pause["who"] = new


def only_for(dpi: dict[str, Any], name: str) -> list[str]:
    """The rules that are for this profile alone (deleting it leaves them for no one)."""
    return [rule.get("name", "") for rule in dpi.get("rules") or [] if rule.get("who") == [name]]


def forget(dpi: dict[str, Any], name: str) -> None:
    """A deleted profile out of the rules and pauses."""
    for rule in dpi.get("rules") or []:
        rule["who"] = [who for who in rule.get("who") or [] if who != name]
    dpi["pauses"] = [p for p in dpi.get("pauses") or [] if p.get("who") != name]


# -- rules ----------------------------------------------------------------


def rule_values(rule: dict[str, Any]) -> Values:
    """A rule of the config as its form shows it."""
    budget = rule.get("budget_minutes")
    return {
        "name": rule.get("name", ""),
        "who": list(rule.get("who") or []),
        "block_apps": list(rule.get("block_apps") or []),
        "block_categories": list(rule.get("block_categories") or []),
        "block_all": bool(rule.get("block_all")),
        "allow_apps": list(rule.get("allow_apps") or []),
        "allow_categories": list(rule.get("allow_categories") or []),
        "windows": [
            {**w, "start": clock(w.get("start")), "end": clock(w.get("end"))}
            for w in rule.get("schedule") or []
        ],
        "budget": "" if budget is None else str(budget),
    }


def clock(value: Any) -> str:
    """A time of day as the form shows it: "21:00" (also from "21:00:00")."""
    text = str(value or "")
    return text[:5] if len(text) == 8 and text[2] == ":" and text[5] == ":" else text


def empty_rule() -> Values:
    return rule_values({})


def rule_form() -> Values:
    """The rule form's input (kept as typed, to show it again on a refusal)."""
    count = min(int(_field("windows")) if _field("windows").isdigit() else 0, MAX_WINDOWS)
    windows = [
        {
            "days": [d for d in _ticked(f"w{k}_days") if d in DAY_IDS],
            "start": _field(f"w{k}_start"),
            "end": _field(f"w{k}_end"),
        }
        for k in range(count)
    ]
    return {
        "name": _field("name"),
        "who": _ticked("who"),
        "block_apps": _ticked("block_apps"),
        "block_categories": _ticked("block_categories"),
        "block_all": request.form.get("block_all") == "on",
        "allow_apps": _ticked("allow_apps"),
        "allow_categories": _ticked("allow_categories"),
        "windows": windows,
        "budget": _field("budget"),
    }


def _blank(window: dict[str, Any]) -> bool:
    return not window["days"] and not window["start"] and not window["end"]


def rule_document(values: Values, loc: str) -> tuple[dict[str, Any], Errors, list[int]]:
    """The rule for the config, the form's shape errors (by key path under
    `loc`, e.g. ``dpi.rules.2``) and which form window each schedule entry
    came from (blank windows are left out)."""
    errors: Errors = {}
    schedule, slots = [], []
    for k, window in enumerate(values["windows"]):
        if _blank(window):
            continue
        where = f"{loc}.schedule.{len(schedule)}"
        if not window["days"]:
            errors[f"{where}.days"] = "Pick at least one day."
        for end in ("start", "end"):
            if not window[end]:
                errors[f"{where}.{end}"] = "Enter a time, e.g. 21:00."
        schedule.append({"days": window["days"], "start": window["start"], "end": window["end"]})
        slots.append(k)
    document = {key: values[key] for key in ("name", "who", "block_all")}
    for key in ("block_apps", "block_categories", "allow_apps", "allow_categories"):
        document[key] = list(values[key])
    document["schedule"] = schedule
    budget = values["budget"]
    document["budget_minutes"] = int(budget) if budget.isdigit() else None
    if budget and not budget.isdigit():
        errors[f"{loc}.budget_minutes"] = f"A number of minutes, e.g. 60 (1 h), not {budget!r}."
    if not values["who"]:
        errors[f"{loc}.who"] = "Pick at least one person or device."
    return document, errors, slots


def window_errors(errors: Errors, loc: str, slots: list[int]) -> Errors:
    """The config's errors of schedule entry n moved to the form window it came from."""
    prefix = f"{loc}.schedule."
    out: Errors = {}
    for key, message in errors.items():
        index, _, rest = key.removeprefix(prefix).partition(".")
        if key.startswith(prefix) and index.isdigit() and int(index) < len(slots):
            key = f"{prefix}{slots[int(index)]}" + (f".{rest}" if rest else "")
        out.setdefault(key, message)
    return out


def form_windows(values: Values, extra: int) -> list[dict[str, Any]]:
    """The windows the form shows: the rule's and `extra` blank ones."""
    blank = {"days": [], "start": "", "end": ""}
    return (list(values["windows"]) + [dict(blank) for _ in range(extra)])[:MAX_WINDOWS]


# -- words ----------------------------------------------------------------


def days_in_words(days: list[str]) -> str:
    """["mon", ..., "fri"] -> "Mon–Fri", ["sun", ..., "thu"] -> "Sun–Thu"
    (a run of three or more, round the week), all seven -> "every day"."""
    picked = [i for i, day in enumerate(DAY_IDS) if day in days]
    names = [name for _, name in DAYS]
    if len(picked) == 7:
        return "every day"
    if picked == [5, 6]:
        return "weekends"
    starts = [i for i in picked if (i - 1) % 7 not in picked]
    if len(picked) >= 3 and len(starts) == 1:
        first = starts[0]
        return f"{names[first]}–{names[(first + len(picked) - 1) % 7]}"
    return ", ".join(names[i] for i in picked)


def window_in_words(window: dict[str, Any]) -> str:
    """In words, e.g. "Sun–Thu from 21:00 to 07:00 the next day" (an end before its start)."""
    start, end = clock(window.get("start")), clock(window.get("end"))
    days = days_in_words(list(window.get("days") or []))
    when = days[:1].upper() + days[1:]
    if start == end:
        return f"{when} from {start}, for 24 hours"
    tail = " the next day" if end < start else ""
    return f"{when} from {start} to {end}{tail}"


def until_words(seconds: float | None, now: float) -> str:
    """A time soon as a parent says it: "21:30", "tomorrow 07:00", "Mon 3 Dec 07:00"."""
    if not seconds:
        return ""
    moment, today = time.localtime(seconds), time.localtime(now)
    clock = time.strftime("%H:%M", moment)
    midnight = time.mktime((*moment[:3], 0, 0, 0, 0, 0, -1))
    days = round((midnight - time.mktime((*today[:3], 0, 0, 0, 0, 0, -1))) / 86400)
    if days == 0:
        return clock
    if days == 1:
        return f"tomorrow {clock}"
    return time.strftime("%a %d %b %H:%M", moment)


def names_of(ids: list[str], labels: dict[str, str]) -> list[str]:
    return [labels.get(i, i) for i in ids]
