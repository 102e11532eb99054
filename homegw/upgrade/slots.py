"""The A/B state of an image (IMG_CONTRACT.md): which slot the kernel was
booted from (``homegw.slot=`` on /proc/cmdline), the slots' partitions
(``/dev/disk/by-partlabel/homegw-root-a|b``), GRUB's environment block on
the ESP (read and written with ``grub-editenv``), and the image's release
file. Every path is a field of SlotPaths, so tests use plain files: a file
standing in for a partition, a grubenv made by ``grub-editenv FILE create``.

GRUB's variables: ``homegw_active`` (the confirmed slot), ``homegw_trial``
(a newly written slot to boot once), ``homegw_tried`` (GRUB booted the
trial already). The upgrade adds ``homegw_version_<slot>``: the version
written into a slot, or ``bad`` from the first byte of a write until the
written image's hash matched (GRUB ignores both).
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from homegw.upgrade.manifest import UpgradeUnavailable

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
ACTIVE, TRIAL, TRIED = "homegw_active", "homegw_trial", "homegw_tried"
BAD = "bad"
RESET_FLAG = ".factory-reset"


@dataclass(frozen=True)
class SlotPaths:
    cmdline: Path = Path("/proc/cmdline")
    partitions: Path = Path("/dev/disk/by-partlabel")
    grubenv: Path = Path("/boot/efi/homegw/grubenv")
    image_release: Path = Path("/usr/lib/homegw/image-release")
    keys: Path = Path("/etc/homegw/upgrade-keys")
    data: Path = Path("/data")  # the data partition: the factory-reset flag
    default_config: Path = Path("/usr/share/homegw/homegw.yaml")
    grub_editenv: str = "grub-editenv"

    def partition(self, slot: str) -> Path:
        return self.partitions / f"homegw-root-{slot}"

    @property
    def reset_flag(self) -> Path:
        return self.data / RESET_FLAG


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def version_key(slot: str) -> str:
    return f"homegw_version_{slot}"


def read_release(paths: SlotPaths) -> dict[str, str] | None:
    """The image's release file (KEY=value lines), None on a plain install."""
    try:
        text = paths.image_release.read_text()
    except FileNotFoundError:
        return None
    release = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            release[key] = value.strip().strip("\"'")
    return release


def booted_slot(paths: SlotPaths) -> str | None:
    for word in paths.cmdline.read_text().split():
        key, _, value = word.partition("=")
        if key == "homegw.slot" and value in SLOTS:
            return value
    return None


class GrubEnv:
    """GRUB's environment block through grub-editenv (which keeps its
    fixed 1024-byte shape), fsync'd after every change."""

    def __init__(self, paths: SlotPaths) -> None:
        self.path = paths.grubenv
        self.tool = paths.grub_editenv

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [self.tool, str(self.path), *args], capture_output=True, text=True, timeout=30
            )
        except OSError as exc:
            raise UpgradeUnavailable(f"{self.tool}: {exc}") from None
        if done.returncode != 0:
            raise UpgradeUnavailable(f"{self.tool} {args[0]} {self.path}: {done.stderr.strip()}")
        return done.stdout

    def read(self) -> dict[str, str]:
        values = {}
        for line in self._run("list").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key] = value
        return values

    def set(self, **values: str) -> None:
        self._run("set", *(f"{key}={value}" for key, value in values.items()))
        self._sync()

    def unset(self, *names: str) -> None:
        self._run("unset", *names)
        self._sync()

    def _sync(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class SlotState:
    booted: str | None
    active: str | None
    trial: str | None
    tried: bool
    versions: dict[str, str | None] = field(default_factory=dict)

    @property
    def on_trial(self) -> bool:
        """Booted from the slot GRUB is trying once (not yet confirmed)."""
        return self.booted is not None and self.booted == self.trial


def read_state(paths: SlotPaths, release: dict[str, str] | None = None) -> SlotState:
    env = GrubEnv(paths).read()
    booted = booted_slot(paths)
    versions: dict[str, str | None] = {slot: env.get(version_key(slot)) for slot in SLOTS}
    if booted is not None and release and release.get("VERSION"):
        versions[booted] = release["VERSION"]  # what runs is what its release says
    return SlotState(
        booted=booted,
        active=env.get(ACTIVE) if env.get(ACTIVE) in SLOTS else None,
        trial=env.get(TRIAL) if env.get(TRIAL) in SLOTS else None,
        tried=env.get(TRIED) == "1",
        versions=versions,
    )


def describe(paths: SlotPaths, release: dict[str, str]) -> dict[str, object]:
    """The A/B state as plain data (the API's and `homegw upgrade status`'s)."""
    state = read_state(paths, release)
    return {
        "booted": state.booted,
        "active": state.active,
        "trial": state.trial,
        "tried": state.tried,
        "slots": {
            slot: {
                "partition": str(paths.partition(slot)),
                "version": state.versions[slot],
                "booted": slot == state.booted,
            }
            for slot in SLOTS
        },
    }
