"""The bodies of /api/v1/system (webui/api/system_routes.py) as pydantic
models, in the OpenAPI document too (openapi.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from webui.api.models import Request, Response


class FactoryResetRequest(Request):
    confirm: Literal["factory-reset"] = Field(description='exactly "factory-reset"')


class SlotInfo(Response):
    partition: str
    version: str | None = Field(description='what was written there; "bad": a write that failed')
    booted: bool


class Slots(Response):
    booted: str | None
    active: str | None
    trial: str | None = Field(description="a slot written and not yet confirmed")
    tried: bool = Field(description="GRUB booted the trial once already")
    slots: dict[Literal["a", "b"], SlotInfo]


class SystemInfo(Response):
    version: str
    image: dict[str, str] | None = Field(description="the image's release file; null: no image")
    upgrade_supported: bool
    reason: str | None = Field(description="why an upgrade cannot be done now")
    slots: Slots | None


class UpgradeStarted(Response):
    slot: Literal["a", "b"]
    version: str
    rebooting: bool


class FactoryReset(Response):
    image: bool
    rebooting: bool
    message: str


MODELS: tuple[type[BaseModel], ...] = (
    FactoryResetRequest,
    SlotInfo,
    Slots,
    SystemInfo,
    UpgradeStarted,
    FactoryReset,
)
