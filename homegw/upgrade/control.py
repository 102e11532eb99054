"""The Control methods of the image (homegw/control.py documents them),
mixed into homegw.management.Management: the version, the A/B state, an
upgrade from a stream, the factory reset and the reboot that follows them.

The reboot runs in a supervised thread, started by the API once its answer
is out (Flask's call_on_close): ``systemctl reboot`` then stops homegw,
whose web server lets answers in flight go out first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from homegw import __version__, supervise
from homegw.control import Conflict
from homegw.upgrade.apply import apply_bundle, factory_reset, reboot_now
from homegw.upgrade.manifest import UpgradeUnavailable
from homegw.upgrade.slots import SlotPaths, describe, read_release

if TYPE_CHECKING:
    from homegw.appliance import Appliance

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(os.environ.get("HOMEGW_CONFIG", "/etc/homegw/homegw.yaml"))


class SystemService:
    """The image's side of the management API over its paths."""

    def __init__(
        self,
        paths: SlotPaths,
        state_dir: Path,
        config_path: Path,
        reboot: Callable[[], None] = reboot_now,
    ) -> None:
        self.paths = paths
        self.state_dir = state_dir
        self.config_path = config_path
        self._reboot = reboot

    def describe(self) -> dict[str, Any]:
        release = read_release(self.paths)
        out: dict[str, Any] = {"version": __version__, "image": release}
        if release is None:
            reason = f"not an image install ({self.paths.image_release} is absent)"
            return out | {"upgrade_supported": False, "reason": reason, "slots": None}
        try:
            slots = describe(self.paths, release)
        except (UpgradeUnavailable, OSError) as exc:  # no grubenv, no /proc/cmdline entry
            why = exc.reason if isinstance(exc, UpgradeUnavailable) else str(exc)
            return out | {"upgrade_supported": False, "reason": why, "slots": None}
        pending = slots["trial"] is not None
        reason = f"slot {slots['trial']} is on trial" if pending else None
        return out | {"upgrade_supported": not pending, "reason": reason, "slots": slots}

    def upgrade(self, stream: BinaryIO) -> dict[str, Any]:
        try:
            applied = apply_bundle(stream, self.paths)
        except UpgradeUnavailable as exc:
            raise Conflict(exc.reason) from None
        return {"slot": applied.slot, "version": applied.version, "rebooting": True}

    def factory_reset(self) -> dict[str, Any]:
        try:
            reset = factory_reset(self.paths, self.state_dir, self.config_path)
        except UpgradeUnavailable as exc:
            raise Conflict(exc.reason) from None
        log.warning("factory reset: %s", reset.message)
        return {"image": reset.image, "rebooting": reset.reboot, "message": reset.message}

    def reboot(self) -> None:
        """Reboot from a supervised thread (the caller's answer is out)."""
        supervise.Thread(target=self._reboot, name="reboot").start()


class SystemControl:
    appliance: Appliance
    config_path: Path | None
    _system_service: SystemService | None = None

    @property
    def system_service(self) -> SystemService:
        if self._system_service is None:
            self._system_service = SystemService(
                SlotPaths(),
                Path(self.appliance.config.state_dir),
                self.config_path or DEFAULT_CONFIG,
            )
        return self._system_service

    @system_service.setter
    def system_service(self, service: SystemService) -> None:
        self._system_service = service

    def system(self) -> dict[str, Any]:
        return self.system_service.describe()

    def system_upgrade(self, stream: BinaryIO) -> dict[str, Any]:
        return self.system_service.upgrade(stream)

    def system_factory_reset(self) -> dict[str, Any]:
        return self.system_service.factory_reset()

    def system_reboot(self) -> None:
        self.system_service.reboot()
