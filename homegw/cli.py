"""homegw command line: run | demo | check-config | cleanup, and the
management commands that talk to the running appliance through its API:
status | modules | config get|set|apply | passwd; upgrade status|apply|confirm
and factory-reset (homegw/upgrade/cli.py); firstboot (the image's first start:
ports, default config, console banner)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

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
    from homegw import logbuffer, supervise

    logbuffer.install()  # the last records, for the logs page (GET /api/v1/logs)

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
    watchdog = _tell_systemd_ready(appliance)
    stop.wait()
    log.info("stopping%s", f" ({fatal[0]})" if fatal else "")
    _tell_systemd_stopping(watchdog)
    appliance.stop()
    return 1 if fatal else 0


def _tell_systemd_ready(appliance: Any) -> Any:  # -> homegw.sdnotify.Watchdog | None
    """READY=1 to systemd (Type=notify) and WATCHDOG=1 pings while the
    appliance answers its own status as ready."""
    from homegw import sdnotify

    return sdnotify.ready(lambda: bool(appliance.status().get("ready")), "ready")


def _tell_systemd_stopping(watchdog: Any) -> None:
    from homegw import sdnotify

    if watchdog is not None:
        watchdog.stop()
    sdnotify.notify("STOPPING=1")


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


def cmd_firstboot(args: argparse.Namespace) -> int:
    from homegw import firstboot

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("homegw.auth").setLevel(logging.ERROR)  # the banner shows the setup code
    request = firstboot.Request(
        Path(args.config),
        args.wan,
        args.lan,
        args.force,
        args.include_virtual,
        args.banner_only,
        Path(args.issue_file) if args.issue_file else None,
        Path(args.default_config) if args.default_config else None,
    )
    return firstboot.run(request)


def _add_firstboot_command(sub: Any) -> None:
    fb = sub.add_parser(
        "firstboot", help="pick WAN/LAN and write the default config if absent; console banner"
    )
    fb.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file to write or read")
    fb.add_argument("--wan", help="the WAN port (with --lan): set both in the config")
    fb.add_argument("--lan", help="the LAN port (with --wan)")
    fb.add_argument("--force", action="store_true", help="probe and choose even if configured")
    fb.add_argument("--include-virtual", action="store_true", help="veths count as ports (tests)")
    fb.add_argument("--banner-only", action="store_true", help="only print the banner")
    fb.add_argument(
        "--issue-file", default="/run/homegw/issue", help="banner copy for agetty ('' for none)"
    )
    fb.add_argument("--default-config", help="the config to start from (default: the packaged one)")
    fb.set_defaults(func=cmd_firstboot)


# -- management commands (through the API, with the local token) -----------------

DEFAULT_CONFIG = os.environ.get("HOMEGW_CONFIG", "/etc/homegw/homegw.yaml")


def _client(args: argparse.Namespace) -> Any:  # -> homegw.apiclient.ApiClient
    from homegw.apiclient import ApiClient

    return ApiClient.for_config(args.config)


def _api_command(func: Any) -> Any:
    """Print a refusal's every problem (with its key path) on stderr: exit 1;
    an unreachable appliance: exit 2."""

    def run(args: argparse.Namespace) -> int:
        from homegw.apiclient import ApiError
        from homegw.config import ConfigError

        try:
            func(args)
        except ApiError as exc:
            for line in exc.lines():
                print(f"homegw: {line}", file=sys.stderr)
            return 1 if exc.status else 2
        except ConfigError as exc:
            for line in exc.lines():
                print(f"homegw: {line}", file=sys.stderr)
            return 2
        return 0

    return run


@_api_command
def cmd_status(args: argparse.Namespace) -> None:
    from homegw.apiclient import as_yaml

    print(as_yaml(_client(args).call("GET", "/status")))


@_api_command
def cmd_modules(args: argparse.Namespace) -> None:
    from homegw.apiclient import modules_table

    print(modules_table(_client(args).call("GET", "/modules")["modules"]))


@_api_command
def cmd_config_get(args: argparse.Namespace) -> None:
    from homegw.apiclient import as_yaml

    path = f"/config/{args.section}" if args.section else "/config"
    print(as_yaml(_client(args).call("GET", path)))


@_api_command
def cmd_config_set(args: argparse.Namespace) -> None:
    import yaml

    from homegw.apiclient import ApiError, applied, set_dotted

    client = _client(args)
    value = yaml.safe_load(args.value)
    config = client.call("GET", "/config")
    try:
        set_dotted(config, args.key, value)
    except KeyError as exc:
        raise ApiError(1, f"{args.key}: no such place in the config ({exc.args[0]!r})") from None
    print(applied(client.call("PUT", "/config", config)))


@_api_command
def cmd_config_apply(args: argparse.Namespace) -> None:
    import yaml

    from homegw.apiclient import ApiError, applied

    try:
        document = yaml.safe_load(Path(args.file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ApiError(1, f"{args.file}: {exc}") from None
    path = "/config/validate" if args.dry_run else "/config"
    print(applied(_client(args).call("POST" if args.dry_run else "PUT", path, document)))


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("new admin password: ")
    if getpass.getpass("again: ") != first:
        from homegw.apiclient import ApiError

        raise ApiError(1, "the two passwords differ")
    return first


@_api_command
def cmd_passwd(args: argparse.Namespace) -> None:
    """Set the admin's password: through the running appliance, or (when
    none answers) in state_dir directly, for its next start."""
    from homegw.apiclient import ApiError
    from homegw.auth import AuthError, AuthStore, check_password_rules
    from homegw.config import load_config

    password = _new_password(args)
    try:
        check_password_rules(password)
        _client(args).call("PUT", "/auth/password", {"password": password})
    except AuthError as exc:
        raise ApiError(1, str(exc)) from None
    except ApiError as exc:
        if exc.status:
            raise
        AuthStore(Path(load_config(args.config).state_dir)).set_password(password)
        print("the appliance is not running: password stored for its next start")
        return
    print("admin password changed (web sessions ended)")


def _add_management_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )
    sub.add_parser("status", parents=[common], help="the running appliance's status").set_defaults(
        func=cmd_status
    )
    sub.add_parser("modules", parents=[common], help="modules, chains, counters").set_defaults(
        func=cmd_modules
    )
    config = sub.add_parser("config", help="read or change the running config")
    verbs = config.add_subparsers(dest="verb", required=True)
    get = verbs.add_parser("get", parents=[common], help="print the config or one section")
    get.add_argument("section", nargs="?")
    get.set_defaults(func=cmd_config_get)
    set_ = verbs.add_parser("set", parents=[common], help="set one key: a.b.c <YAML value>")
    set_.add_argument("key")
    set_.add_argument("value")
    set_.set_defaults(func=cmd_config_set)
    apply = verbs.add_parser("apply", parents=[common], help="replace the config with a file")
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true", help="validate and diff only")
    apply.set_defaults(func=cmd_config_apply)
    passwd = sub.add_parser("passwd", parents=[common], help="set the admin's password")
    passwd.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    passwd.set_defaults(func=cmd_passwd)


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
    _add_management_commands(sub)
    from homegw.upgrade.cli import add_commands as add_upgrade_commands

    add_upgrade_commands(sub)  # upgrade status|apply|confirm, factory-reset
    _add_firstboot_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
