"""One entry of the navigation bar."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    label: str  # as the navigation shows it
    endpoint: str  # Flask endpoint of the page, e.g. "devices.index"
    icon: str = ""  # a name of webui/static/icons.svg, or ""
