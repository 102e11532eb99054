"""The image part of tests/unit/fake_control.FakeControl: the real
SystemControl over paths a test chooses (an image made by
tests/unit/upgrade_fakes.make_image), by default a plain install whose
paths do not exist. Its reboot is only recorded, never run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homegw.upgrade.control import SystemControl, SystemService
from homegw.upgrade.slots import SlotPaths

NOWHERE = Path("/nonexistent/homegw-test")
PLAIN = SlotPaths(
    cmdline=NOWHERE / "cmdline",
    partitions=NOWHERE / "by-partlabel",
    grubenv=NOWHERE / "grubenv",
    image_release=NOWHERE / "image-release",
    keys=NOWHERE / "keys",
    data=NOWHERE / "data",
    default_config=NOWHERE / "homegw.yaml",
)


class FakeSystem(SystemControl):
    calls: list[tuple[Any, ...]]

    @property
    def system_service(self) -> SystemService:
        if self._system_service is None:
            self._system_service = SystemService(PLAIN, NOWHERE / "state", NOWHERE / "cfg.yaml")
        return self._system_service

    @system_service.setter
    def system_service(self, service: SystemService) -> None:
        self._system_service = service

    def use_paths(self, paths: SlotPaths, state_dir: Path, config_path: Path) -> None:
        self.system_service = SystemService(paths, state_dir, config_path)

    def system_reboot(self) -> None:
        self.calls.append(("system_reboot",))
