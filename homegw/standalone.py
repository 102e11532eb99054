"""One service of the appliance run alone, for tests and benchmarks:

    python -m homegw.standalone dhcp --config FILE [--probe-timeout S]
    python -m homegw.standalone dns --config FILE [--port N] [--xdp]
    python -m homegw.standalone wan-client IFACE --state-dir DIR [--release]

Each runs until SIGTERM or SIGINT, logs "ready" once serving, and exits 0
after a clean stop (1 for a config with errors, printed with key paths).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("homegw.standalone")

Stop = Callable[[], None]


def _config(path: str):  # homegw.config.Config | None
    from homegw.config import load_or_report

    return load_or_report(path)


def _dhcp(args: argparse.Namespace) -> Stop | None:
    from homegw.modules.dhcp.service import DhcpService

    config = _config(args.config)
    if config is None:
        return None
    service = DhcpService(config, probe_timeout=args.probe_timeout)
    service.start()
    return service.stop


def _dns(args: argparse.Namespace) -> Stop | None:
    from homegw.modules.dns.service import DnsService

    config = _config(args.config)
    if config is None:
        return None
    service = DnsService(config, lambda: [], port=args.port)
    dataplane = _dns_fast_path(config, service) if args.xdp else None
    service.start()

    def stop() -> None:
        service.stop()
        if dataplane is not None:
            dataplane.close()
        log.info("stats: %s", service.stats())

    return stop


def _dns_fast_path(config, service):  # (Config, DnsService) -> Dataplane
    from homegw.dataplane.abi import Nic
    from homegw.dataplane.dataplane import Dataplane
    from homegw.modules.dns.module import DnsModule

    dataplane = Dataplane(
        config.dataplane.pin_dir, {Nic.LAN: config.lan.interface}, config.dataplane.xdp_mode
    )
    dataplane.load()
    module = DnsModule(config)
    dataplane.add_module(module)
    dataplane.set_order(Nic.LAN, [module.name])
    dataplane.attach()
    service.set_fast_path(module.fast_path())
    return dataplane


def _wan_client(args: argparse.Namespace) -> Stop | None:
    from homegw.modules.dhcp.wan_client import WanDhcpClient

    client = WanDhcpClient(
        args.interface, lambda lease: None, args.state_dir, hostname=args.hostname
    )
    client.start()
    return lambda: client.stop(release=args.release)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m homegw.standalone", description=__doc__)
    parser.add_argument("--log-level", default="info")
    sub = parser.add_subparsers(dest="service", required=True)
    dhcp = sub.add_parser("dhcp", help="the LAN DHCP server")
    dhcp.add_argument("--config", "-c", required=True)
    dhcp.add_argument("--probe-timeout", type=float, default=0.5, help="ARP probe wait, 0: none")
    dhcp.set_defaults(start=_dhcp)
    dns = sub.add_parser("dns", help="the DNS forwarder")
    dns.add_argument("--config", "-c", required=True)
    dns.add_argument("--port", type=int, default=53)
    dns.add_argument("--xdp", action="store_true", help="also attach the XDP answer cache")
    dns.set_defaults(start=_dns)
    wan = sub.add_parser("wan-client", help="the WAN DHCP client")
    wan.add_argument("interface")
    wan.add_argument("--state-dir", type=Path, required=True)
    wan.add_argument("--hostname", default="homegw")
    wan.add_argument("--release", action="store_true", help="release the lease on exit")
    wan.set_defaults(start=_wan_client)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    stop = args.start(args)
    if stop is None:
        return 1
    log.info("%s ready", args.service)
    done.wait()
    stop()
    log.info("%s stopped", args.service)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
