"""`homegw demo` end to end, with the real appliance: a LAN host reaches the
ISP's web server through the gateway, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from homegw.virtualhome import WEB_SERVER, leftovers, root_route_overlap


class DemoProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "homegw", "demo"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        self.proc.wait()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        with self._changed:
            self._changed.wait_for(
                lambda: any(text in x for x in self.lines) or self.proc.poll() is not None,
                timeout,
            )
            found = any(text in x for x in self.lines)
        assert found, f"demo never printed {text!r}:\n" + "\n".join(self.lines)

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code


def run_in(ns: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, timeout=60)


def attached_xdp_ids() -> list[int]:
    """Ids of the XDP programs on the demo gateway's NICs."""
    ids = []
    for nic in ("lan0", "wan0"):
        out = subprocess.run(
            ["ip", "-n", "hgw-demo-gw", "-d", "link", "show", nic],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ids += [int(m) for m in re.findall(r"prog/xdp id (\d+)", out)]
    return ids


def program_exists(prog_id: int) -> bool:
    return (
        subprocess.run(
            ["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.skipif(root_route_overlap() is not None, reason="192.168.1.0/24 in use here")
def test_demo_end_to_end() -> None:
    demo = DemoProcess()
    try:
        demo.wait_for("press Ctrl-C")
        demo.wait_for("router: WAN now 203.0.113.")  # the WAN lease, applied to NAT and router
        page = run_in("hgw-demo-h1", ["curl", "-sS", "--max-time", "10", f"http://{WEB_SERVER}/"])
        assert page.returncode == 0, page.stderr
        assert b"homegw virtual internet demo" in page.stdout
        answer = run_in("hgw-demo-h1", ["dig", "+short", "@192.168.1.1", "www.example.test"])
        assert answer.stdout.split() == [WEB_SERVER.encode()]  # via homegw's DNS forwarder
        big = run_in(
            "hgw-demo-h1", ["curl", "-sS", "--max-time", "30", f"http://{WEB_SERVER}/big.bin"]
        )
        assert big.returncode == 0, big.stderr
        served = list(Path("/tmp").glob("hgw-demo-*/**/big.bin"))
        assert len(served) == 1
        assert (
            hashlib.sha256(big.stdout).digest() == hashlib.sha256(served[0].read_bytes()).digest()
        )
        health = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "http://192.168.1.1/healthz"],
            capture_output=True,
            text=True,
        )
        assert '"ready":true' in health.stdout.replace(" ", ""), health.stderr
        programs = attached_xdp_ids()
        assert len(programs) == 2 and all(map(program_exists, programs))
    finally:
        code = demo.interrupt()
    output = "\n".join(demo.lines)
    assert code == 0, output
    assert leftovers("demo") == [], output
    assert not any(map(program_exists, programs))  # detached and unloaded
    assert "Traceback" not in output
