"""`homegw demo`: build a virtual home and run the appliance as its gateway.

The home (see homegw.virtualhome) gets a management veth from this machine into
the LAN, so the web UI answers at http://192.168.1.1/ from here. The appliance
runs as `python -m homegw run -c <config>` in the namespace hgw-demo-gw, like
`ip netns exec` would run it but with the machine's bpffs kept at /sys/fs/bpf
(`ip netns exec` hides it, and pins must outlive the process). It runs in its own
session, so Ctrl-C reaches only the demo, which then stops the appliance with
SIGTERM and removes the home, whatever happened before.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import yaml

from homegw.virtualhome import LAN_GATEWAY, WEB_SERVER, VirtualHome, cleanup_leftovers
from homegw.virtualhome6 import WEB6_SERVER

DEMO_TAG = "demo"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
POLL = 0.2
READY_RE = re.compile(r"\bready\b", re.IGNORECASE)
NOT_READY_RE = re.compile(r"\bnot[ _-]ready\b", re.IGNORECASE)
APPLIANCE_ARGV = (sys.executable, "-m", "homegw", "run", "-c")


class ChildOutput:
    """Copies the appliance's output to our stdout, keeps its tail, notices `ready`."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.ready = threading.Event()
        self.tail: deque[str] = deque(maxlen=40)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            print(f"gw | {line}", flush=True)
            if READY_RE.search(line) and not NOT_READY_RE.search(line):
                self.ready.set()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the remaining output after the child exited."""
        self._thread.join(timeout)


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _write_config(home: VirtualHome) -> Path:
    # DPI on: the web UI shows each device's apps (off by default elsewhere)
    cfg = home.gateway_config(webui={"listen": f"{LAN_GATEWAY}:80"}, dpi={"enabled": True})
    path = home.state_dir / "homegw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _start_appliance(home: VirtualHome, argv: Sequence[str], cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    print(f"demo: starting the appliance in {home.ns('gw')}: {' '.join([*argv, str(cfg)])}")
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    return home.popen("gw", [*argv, str(cfg)], env=env, **out)


def _stop_appliance(child: subprocess.Popen) -> None:
    if child.poll() is None:
        print("demo: stopping the appliance (SIGTERM)", flush=True)
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"demo: appliance still running after {STOP_TIMEOUT:.0f} s, killing it")
            child.kill()
            child.wait(STOP_TIMEOUT)


def _wait_ready(child: subprocess.Popen, out: ChildOutput, stopping: Callable[[], bool]) -> str:
    """ "ready", "stopped" (asked to stop first), "exited" or "timeout"."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not out.ready.wait(POLL):
        if stopping():
            return "stopped"
        if child.poll() is not None:
            out.join()
            return "ready" if out.ready.is_set() else "exited"
        if time.monotonic() > deadline:
            return "timeout"
    return "ready"


def _print_hints(home: VirtualHome) -> None:
    h1 = f"ip netns exec {home.ns('h1')}"
    healthz = f"http://{LAN_GATEWAY}/healthz"
    if home.mgmt_dev:
        webui = f"curl {healthz}      (web UI, from this machine via {home.mgmt_dev})"
    else:
        webui = f"{h1} curl {healthz}      (web UI; no management link, see the warning)"
    print(
        "\n".join(
            [
                "",
                "demo: the gateway is ready. Things to try, in another terminal:",
                f"  {h1} curl http://{WEB_SERVER}/",
                f"  {h1} curl -H 'Host: www.youtube.com' http://{WEB_SERVER}/   (DPI: an app)",
                f"  {h1} ping -c 3 {WEB_SERVER}",
                f"  {h1} dig @{LAN_GATEWAY} www.example.test   (homegw's DNS forwarder)",
                f"  {webui}",
                f"  ip netns exec {home.ns('gw')} ip -d link show      (the gateway's NICs, XDP)",
                f"  ip netns exec {home.ns('h1')} traceroute -n {WEB_SERVER}   (the gateway's hop)",
                f"  ip netns exec {home.ns('h2')} udhcpc -i eth0 -n -q -f   (a lease from homegw)",
                f"  {h1} curl -6 http://[{WEB6_SERVER}]/   (IPv6 from the delegated prefix)",
                f"  {h1} rdisc6 eth0   (homegw's router advertisement: prefixes, DNS)",
                "demo: LAN<->WAN traffic is forwarded and NATed in XDP by the router and NAT",
                "      IO modules (the appliance logs which modules are in each chain).",
                "demo: press Ctrl-C to stop; the virtual home is removed on exit.",
                "",
            ]
        ),
        flush=True,
    )


def _keep_going(stop: threading.Event, event: threading.Event | None) -> bool:
    return not stop.is_set() and (event is None or event.is_set())


def run_demo(
    keep_going_event: threading.Event | None = None,
    *,
    tag: str = DEMO_TAG,
    appliance_argv: Sequence[str] = APPLIANCE_ARGV,
) -> int:
    """Run the demo until Ctrl-C/SIGTERM, the appliance exiting, or `keep_going_event`
    being cleared (when given). Returns 0 after a requested stop, 1 on failure.

    `appliance_argv` gets the config path appended (tests pass a stand-in appliance).
    """
    stop = threading.Event()
    cleanup_leftovers(tag)
    home = VirtualHome(tag, mgmt=True, ipv6=True)
    child: subprocess.Popen | None = None
    config = Path()
    with _signals_set(stop):
        try:
            home.build()
            print(f"demo: virtual home {tag!r} built (namespaces {home.ns('isp')} ...)")
            config = _write_config(home)
            child = _start_appliance(home, appliance_argv, config)
            out = ChildOutput(child.stdout)  # type: ignore[arg-type]
            state = _wait_ready(child, out, lambda: not _keep_going(stop, keep_going_event))
            if state == "stopped":
                return 0
            if state != "ready":
                _report_failure(child, out, state)
                return 1
            _print_hints(home)
            while _keep_going(stop, keep_going_event) and child.poll() is None:
                stop.wait(POLL)
            if child.poll() is not None:
                out.join()
                print(f"demo: the appliance exited on its own (code {child.returncode})")
                return 1
            return 0
        finally:
            if child is not None:
                _stop_appliance(child)
                # a stop leaves the datapath for a restart; the demo is over
                home.run("gw", [sys.executable, "-m", "homegw", "cleanup", "-c", str(config)])
            print("demo: removing the virtual home", flush=True)
            home.teardown()


def _report_failure(child: subprocess.Popen, out: ChildOutput, state: str) -> None:
    if state == "timeout":
        print(f"demo: the appliance did not log 'ready' within {READY_TIMEOUT:.0f} s")
    else:
        print(f"demo: the appliance exited with code {child.returncode} before it was ready")
    print("demo: its last output lines:\n" + "\n".join(f"  {line}" for line in out.tail))
