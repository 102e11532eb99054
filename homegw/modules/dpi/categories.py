"""The DPI categories: a fixed list, numbered forever (a u8 in the datapath).

Number 0 is "unknown" (DPI_CATEGORY_UNKNOWN in dpi.h). Never renumber or
reuse a number: pinned flows, policy entries and the usage history hold them.
Append new categories at the end with the next number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    id: str
    number: int
    label: str


CATEGORIES: tuple[Category, ...] = (
    Category("unknown", 0, "Unknown"),
    Category("video", 1, "Video streaming"),
    Category("social", 2, "Social networks"),
    Category("games", 3, "Games"),
    Category("messaging", 4, "Messaging & calls"),
    Category("music", 5, "Music & audio"),
    Category("adult", 6, "Adult"),
    Category("gambling", 7, "Gambling"),
    Category("ads", 8, "Ads & trackers"),
    Category("vpn", 9, "VPN & proxy"),
    Category("updates", 10, "Software updates"),
    Category("shopping", 11, "Shopping"),
    Category("news", 12, "News"),
    Category("education", 13, "Education"),
    Category("productivity", 14, "Productivity"),
    Category("cloud", 15, "Cloud storage"),
    Category("doh", 16, "Encrypted DNS"),
    Category("system", 17, "Network services"),
    Category("other", 18, "Other"),
    Category("web", 19, "Web browsing"),
    Category("search", 20, "Search"),
    Category("remote", 21, "Remote access"),
    Category("email", 22, "Email"),
    Category("p2p", 23, "File sharing (P2P)"),
    Category("ai", 24, "AI assistants"),
    Category("iot", 25, "Smart home & IoT"),
)

CATEGORY_UNKNOWN = "unknown"

_BY_ID: dict[str, Category] = {c.id: c for c in CATEGORIES}
_BY_NUMBER: dict[int, Category] = {c.number: c for c in CATEGORIES}


def category(category_id: str) -> Category | None:
    """The category with this id, None if there is none."""
    return _BY_ID.get(category_id)


def category_number(category_id: str) -> int:
    """The datapath number of a category id; 0 (unknown) for an unknown id."""
    found = _BY_ID.get(category_id)
    return found.number if found is not None else 0


def category_id(number: int) -> str:
    """The id of a datapath category number; "unknown" for an unknown number."""
    found = _BY_NUMBER.get(number)
    return found.id if found is not None else CATEGORY_UNKNOWN


def category_ids() -> tuple[str, ...]:
    """Every category id, in number order."""
    return tuple(c.id for c in CATEGORIES)
