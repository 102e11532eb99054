"""Config section ``dpi:`` of the DPI IO module (per-device application visibility)."""

from __future__ import annotations

from pydantic import StrictBool

from homegw.configtypes import Section


class DpiConfig(Section):
    """``dpi:`` -- deep packet inspection; off by default (it costs per-packet work)."""

    enabled: StrictBool = False
