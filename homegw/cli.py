"""homegw command line: run | demo | check-config | cleanup."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("homegw")


def _setup_logging(level: str = "info") -> None:
    # Log to a duplicate of stderr: the BPF loader briefly points fd 2 at a file
    # to catch clang's and the verifier's messages, and other threads' log
    # lines must not vanish into it meanwhile.
    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream,
    )
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))


def cmd_check_config(args: argparse.Namespace) -> int:
    from homegw.config import check_config_main

    return check_config_main(args.file)


def _load(path: str):  # homegw.config.Config | None
    from homegw.config import load_or_report

    return load_or_report(path)


def cmd_run(args: argparse.Namespace) -> int:
    from homegw.appliance import Appliance, ApplianceError

    config = _load(args.config)
    if config is None:
        return 1
    _setup_logging(config.log_level)
    from homegw import supervise

    stop = threading.Event()
    fatal: list[str] = []
    supervise.on_fatal(lambda reason: (fatal.append(reason), stop.set()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from homegw.management import Management

    appliance = Appliance(config)
    appliance.control = Management(appliance, Path(args.config))
    # SIGUSR1 renews the WAN lease now, as udhcpc does (a "renew" button)
    signal.signal(signal.SIGUSR1, lambda *_: appliance.renew_wan_lease())
    try:
        appliance.start()
    except (ApplianceError, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    stop.wait()
    log.info("stopping%s", f" ({fatal[0]})" if fatal else "")
    appliance.stop()
    return 1 if fatal else 0


def cmd_demo(_args: argparse.Namespace) -> int:
    from homegw.demo import run_demo

    _setup_logging()
    return run_demo()


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Detach the roots, remove the kernel-path table and every pin (maps
    and cached builds): a stop leaves them all for the next start."""
    from homegw import kernelpath
    from homegw.dataplane import attach
    from homegw.dataplane.dataplane import purge_pins

    _setup_logging()
    config = _load(args.config)
    if config is None:
        return 1
    for ifname in (config.lan.interface, config.wan.interface):
        attach.detach_xdp(ifname, config.dataplane.xdp_mode)
        attach.detach_tc_egress(ifname)
    kernelpath.disable()
    purge_pins(config.dataplane.pin_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homegw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the appliance on the configured interfaces")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="build a virtual home in namespaces and run homegw in it")
    demo.set_defaults(func=cmd_demo)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)
    cleanup = sub.add_parser(
        "cleanup", help="detach programs, remove pinned state (a stop leaves it for a restart)"
    )
    cleanup.add_argument("-c", "--config", required=True)
    cleanup.set_defaults(func=cmd_cleanup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
