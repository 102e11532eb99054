"""``homegw upgrade status | apply FILE [--no-reboot] | confirm [--deadline S]``
and ``homegw factory-reset --yes``.

These work on the machine's files directly, not through the running
appliance's API (the web UI and ``POST /api/v1/system/upgrade`` are the way
through the API): run them as root on the gateway. ``confirm`` is what the
image's homegw-confirm.service runs at every boot.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from homegw.upgrade.apply import (
    CONFIRM_DEADLINE_S,
    apply_bundle,
    confirm,
    factory_reset,
    reboot_now,
)
from homegw.upgrade.manifest import UpgradeError
from homegw.upgrade.slots import SlotPaths, describe, read_release

DEFAULT_CONFIG = os.environ.get("HOMEGW_CONFIG", "/etc/homegw/homegw.yaml")
DEFAULT_STATE_DIR = "/var/lib/homegw"


def status_lines(paths: SlotPaths) -> list[str]:
    from homegw import __version__

    lines = [f"version: {__version__}"]
    release = read_release(paths)
    if release is None:
        lines.append(f"image: none ({paths.image_release} is absent: a plain install, no slots)")
        return lines
    lines.append(
        f"image: {release.get('VERSION', '?')} build {release.get('BUILD', '?')} "
        f"({release.get('COMPATIBLE', '?')})"
    )
    state: dict[str, Any] = describe(paths, release)
    lines.append(
        f"booted: {state['booted'] or '?'}  active: {state['active'] or '?'}  "
        f"trial: {state['trial'] or 'none'}" + ("  (tried once)" if state["tried"] else "")
    )
    for slot, info in state["slots"].items():
        version = info["version"] or "unknown"
        if version == "bad":
            version = "bad (its last write did not complete)"
        booted = "  (booted)" if info["booted"] else ""
        lines.append(f"slot {slot}: {version}{booted}  {info['partition']}")
    return lines


def _failing(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UpgradeError as exc:
            print(f"homegw: {exc.reason}", file=sys.stderr)
            return 1

    return run


@_failing
def cmd_status(_args: argparse.Namespace) -> int:
    print("\n".join(status_lines(SlotPaths())))
    return 0


@_failing
def cmd_apply(args: argparse.Namespace) -> int:
    try:
        stream = open(args.file, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        print(f"homegw: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with stream:
        applied = apply_bundle(stream, SlotPaths())
    print(f"slot {applied.slot} now holds homegw {applied.version}: it boots once at the next boot")
    if args.no_reboot:
        print("not rebooting (--no-reboot): reboot when you are ready")
    else:
        reboot_now()
    return 0


@_failing
def cmd_confirm(args: argparse.Namespace) -> int:
    print(confirm(SlotPaths(), deadline_s=args.deadline))
    return 0


def _state_dir(config: str) -> Path:
    from homegw.config import ConfigError, load_config

    try:
        return Path(load_config(config).state_dir)
    except ConfigError:
        return Path(DEFAULT_STATE_DIR)


@_failing
def cmd_factory_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        print("homegw: a factory reset erases the config and all state: add --yes", file=sys.stderr)
        return 2
    reset = factory_reset(SlotPaths(), _state_dir(args.config), Path(args.config))
    print(reset.message)
    if reset.reboot:
        reboot_now()
    return 0


def add_commands(sub: Any) -> None:
    upgrade = sub.add_parser("upgrade", help="image upgrades: status, apply, confirm")
    verbs = upgrade.add_subparsers(dest="verb", required=True)
    verbs.add_parser("status", help="version, slots, trial").set_defaults(func=cmd_status)
    apply = verbs.add_parser("apply", help="write a .hgwup bundle into the inactive slot")
    apply.add_argument("file")
    apply.add_argument("--no-reboot", action="store_true", help="write only; boot it later")
    apply.set_defaults(func=cmd_apply)
    confirm_ = verbs.add_parser("confirm", help="at boot: confirm a trial, or reboot to fall back")
    confirm_.add_argument(
        "--deadline", type=float, default=CONFIRM_DEADLINE_S, help="seconds to wait for ready"
    )
    confirm_.set_defaults(func=cmd_confirm)
    reset = sub.add_parser("factory-reset", help="erase config and state: back to first boot")
    reset.add_argument("--yes", action="store_true", help="yes, erase everything")
    reset.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    reset.set_defaults(func=cmd_factory_reset)
