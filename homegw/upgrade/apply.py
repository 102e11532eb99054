"""Apply a bundle to the inactive slot, confirm (or give up) a trial boot,
and the factory reset: the decisions of IMG_CONTRACT.md, with the systemd
query, the reboot, the clock and the pause injectable for tests.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from homegw.atomicfile import write_atomic
from homegw.upgrade.bundle import read_bundle
from homegw.upgrade.manifest import COMPATIBLE, Manifest, UpgradeUnavailable, load_keys
from homegw.upgrade.slots import (
    ACTIVE,
    BAD,
    TRIAL,
    TRIED,
    GrubEnv,
    SlotPaths,
    SlotState,
    other,
    read_release,
    read_state,
    version_key,
)

log = logging.getLogger(__name__)

NOT_AN_IMAGE = "not an image install (no {path}): there are no slots to upgrade"
CONFIRM_DEADLINE_S = 180.0
CONFIRM_POLL_S = 2.0
SERVICE = "homegw.service"


@dataclass(frozen=True)
class Applied:
    slot: str
    version: str


def reboot_now() -> None:
    log.warning("rebooting")
    subprocess.run(["systemctl", "reboot"], check=True, timeout=60)


def service_state(unit: str = SERVICE) -> str:
    """``systemctl is-active``'s word: active, activating, failed, inactive…"""
    done = subprocess.run(
        ["systemctl", "is-active", unit], capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip() or "unknown"


def image_release(paths: SlotPaths) -> dict[str, str]:
    release = read_release(paths)
    if release is None:
        raise UpgradeUnavailable(NOT_AN_IMAGE.format(path=paths.image_release))
    return release


def target_slot(state: SlotState) -> str:
    """The slot an upgrade may write now, else UpgradeUnavailable."""
    if state.booted is None:
        raise UpgradeUnavailable("the kernel command line names no homegw.slot")
    if state.trial is not None:
        raise UpgradeUnavailable(
            f"slot {state.trial} is on trial (waiting for its boot or its confirm): "
            "an upgrade can follow once it is confirmed or rolled back"
        )
    if state.active != state.booted:
        raise UpgradeUnavailable(
            f"booted from slot {state.booted} but slot {state.active} is the active one: "
            "writing the other slot would overwrite the one to fall back to"
        )
    return other(state.booted)


def apply_bundle(stream: BinaryIO, paths: SlotPaths) -> Applied:
    """Write the bundle on `stream` into the inactive slot, then mark that
    slot for one trial boot. The slot's partition is locked meanwhile, so
    two uploads never write it at once. BundleRejected: the trial is not set."""
    release = image_release(paths)
    target = target_slot(read_state(paths, release))
    keys = load_keys(paths.keys)
    env = GrubEnv(paths)
    device = paths.partition(target)
    try:
        sink = open(device, "r+b", buffering=0)  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UpgradeUnavailable(f"cannot open slot {target}'s partition: {exc}") from None
    with sink:
        try:
            fcntl.flock(sink.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpgradeUnavailable("another upgrade is being written right now") from None
        target_slot(read_state(paths, release))  # not changed while we waited for the lock
        capacity = sink.seek(0, os.SEEK_END)
        sink.seek(0)

        def mark_bad(manifest: Manifest) -> None:
            log.info("writing %s into slot %s (%s)", manifest.version, target, device)
            env.set(**{version_key(target): BAD})

        manifest = read_bundle(
            stream, sink, keys, capacity, release.get("COMPATIBLE", COMPATIBLE), mark_bad
        )
        os.fsync(sink.fileno())
        env.set(**{TRIAL: target, TRIED: "0", version_key(target): manifest.version})
    log.warning("slot %s holds %s and boots once at the next reboot", target, manifest.version)
    return Applied(target, manifest.version)


def confirm(
    paths: SlotPaths,
    reboot: Callable[[], None] = reboot_now,
    state_of_service: Callable[[], str] = service_state,
    deadline_s: float = CONFIRM_DEADLINE_S,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> str:
    """At boot (homegw-confirm.service): on a trial, confirm it once the
    appliance is active (READY=1), reboot (GRUB falls back) when it failed
    or is not active by the deadline; not on a trial: nothing. Returns what
    it did: "confirmed", "rebooted" or "nothing"."""
    if read_release(paths) is None:
        log.info("not an image install: nothing to confirm")
        return "nothing"
    state = read_state(paths)
    if not state.on_trial:
        log.info("booted slot %s is not on trial: nothing to confirm", state.booted)
        return "nothing"
    assert state.booted is not None
    end = clock() + deadline_s
    while True:
        word = state_of_service()
        if word == "active":
            env = GrubEnv(paths)
            env.set(**{ACTIVE: state.booted, TRIED: "0"})  # active first: a crash now is safe
            env.unset(TRIAL)
            log.warning("slot %s confirmed: it is the active slot now", state.booted)
            return "confirmed"
        if word == "failed" or clock() >= end:
            why = "failed" if word == "failed" else f"not active after {deadline_s:.0f} s: {word}"
            log.error(
                "slot %s on trial: %s is %s: rebooting to fall back", state.booted, SERVICE, why
            )
            reboot()
            return "rebooted"
        pause(CONFIRM_POLL_S)  # polls the service's state until the deadline


@dataclass(frozen=True)
class Reset:
    image: bool
    reboot: bool
    message: str


def factory_reset(paths: SlotPaths, state_dir: Path, config_path: Path) -> Reset:
    """On an image: flag /data for emptying at the next boot (the caller
    reboots). On a plain install: empty state_dir and put the packaged
    default config back (the running appliance is not stopped)."""
    if read_release(paths) is not None:
        write_atomic(paths.reset_flag, f"requested at {time.time():.0f}\n".encode(), 0o600)
        return Reset(True, True, "factory reset at the next boot: rebooting now")
    if not paths.default_config.is_file():
        raise UpgradeUnavailable(f"{paths.default_config} is missing: nothing was removed")
    state_dir = state_dir.resolve()
    if state_dir == Path("/") or not state_dir.is_absolute():
        raise UpgradeUnavailable(f"state_dir {state_dir} is not a directory to empty")
    removed = _empty(state_dir)
    write_atomic(config_path, paths.default_config.read_bytes())
    return Reset(
        False,
        False,
        f"removed {removed} entries of {state_dir} and put {paths.default_config} back as "
        f"{config_path}: restart homegw to start from it (systemctl restart homegw)",
    )


def _empty(directory: Path) -> int:
    count = 0
    for child in directory.iterdir() if directory.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        count += 1
    return count
