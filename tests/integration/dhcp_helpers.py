"""Helpers of the LAN DHCP server tests: a codec-built client in a LAN host's
namespace, hook scripts for the real clients, and the server as a process."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml

from homegw import netns
from homegw.modules.dhcp import packet as p
from homegw.modules.dhcp.service import DB_NAME
from homegw.netns import in_netns
from homegw.virtualhome import VirtualHome

SERVER_IP = "192.168.1.1"
WAIT = 20.0  # seconds any single wait may take


def wait_event(path: Path, pattern: str, timeout: float = WAIT) -> str:
    """The first line of the hook script's event file matching `pattern`."""
    regex = re.compile(pattern)

    def found() -> str | None:
        text = path.read_text() if path.exists() else ""
        return next((line for line in text.splitlines() if regex.search(line)), None)

    if not netns.wait_for(lambda: found() is not None, timeout):
        text = path.read_text() if path.exists() else "(no events)"
        raise AssertionError(f"no event /{pattern}/ in {path}:\n{text}")
    return found() or ""


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


class CodecClient:
    """A DHCP client built from homegw's codec on a UDP socket (port 68) in a
    LAN host's namespace: it crafts what the real clients never send."""

    def __init__(self, home: VirtualHome, host: str) -> None:
        with in_netns(home.ns(host)):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
            self.sock.bind(("0.0.0.0", 68))
        self._xid = 0x5000
        self.stray: list[p.DhcpMessage] = []

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes, dest: str = "255.255.255.255") -> None:
        self.sock.sendto(data, (dest, 67))

    def message(self, kind: int, chaddr: bytes, **fields: Any) -> p.DhcpMessage:
        self._xid += 1
        options = {p.OPT_MESSAGE_TYPE: bytes((kind,))}
        options.update(fields.pop("options", {}))
        fields.setdefault("flags", p.BROADCAST_FLAG)
        return p.DhcpMessage(p.BOOTREQUEST, self._xid, chaddr, options, **fields)

    def exchange(
        self, msg: p.DhcpMessage, dest: str = "255.255.255.255", timeout: float = 5.0
    ) -> p.DhcpMessage | None:
        """Send `msg`, return the reply with its xid (None if none came in time)."""
        self.send_raw(p.encode(msg), dest)
        return self.receive(msg.xid, timeout)

    def receive(self, xid: int, timeout: float = 5.0) -> p.DhcpMessage | None:
        """The next reply with `xid`; replies to other xids go to `self.stray`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)  # (not select(): the fd may be above 1023)
            try:
                reply = p.parse(self.sock.recv(4096), expect_op=p.BOOTREPLY)
            except TimeoutError:
                break
            except p.MalformedPacket:
                continue
            if reply.xid == xid:
                return reply
            self.stray.append(reply)
        return None

    def dora(self, chaddr: bytes, **options: bytes) -> int:
        """DISCOVER, OFFER, REQUEST, ACK; the leased address."""
        offer = self.exchange(self.message(p.DISCOVER, chaddr))
        assert offer is not None and offer.msg_type == p.OFFER, offer
        request = self.message(p.REQUEST, chaddr)
        request.options[p.OPT_SERVER_ID] = socket.inet_aton(SERVER_IP)
        request.options[p.OPT_REQUESTED_IP] = offer.yiaddr.to_bytes(4, "big")
        request.options.update({int(k[1:]): v for k, v in options.items()})
        ack = self.exchange(request)
        assert ack is not None and ack.msg_type == p.ACK, ack
        return ack.yiaddr


UDHCPC_HOOK = """#!/bin/sh
echo "EVENT $1 ip=$ip router=$router dns=$dns domain=$domain" >> {events}
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
"""

DHCLIENT_HOOK = """#!/bin/sh
echo "EVENT $reason ip=$new_ip_address router=$new_routers dns=$new_domain_name_servers \
domain=$new_domain_name" >> {events}
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    ip addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  RELEASE|EXPIRE|STOP) ip addr flush dev "$interface" ;;
esac
exit 0
"""

DHCPCD_HOOK = """#!/bin/sh
echo "EVENT $reason ip=$new_ip_address router=$new_routers dns=$new_domain_name_servers \
domain=$new_domain_name" >> {events}
"""


def hook_script(home: VirtualHome, name: str, template: str) -> tuple[Path, Path]:
    """(script, events file) for one client run."""
    assert home.tmpdir is not None
    events = home.tmpdir / f"{name}.events"
    script = home.tmpdir / f"{name}.sh"
    script.write_text(template.format(events=events))
    os.chmod(script, 0o755)
    return script, events


def lease_rows(home: VirtualHome) -> dict[str, tuple[str, str]]:
    """mac -> (address, state) straight from the database file; checks integrity."""
    db = sqlite3.connect(home.state_dir / DB_NAME)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT mac, address, state FROM leases").fetchall()
    finally:
        db.close()
    return {mac: (str(IPv4Address(address)), state) for mac, address, state in rows}


class ServerProcess:
    """`python -m homegw.standalone dhcp` in the gateway namespace."""

    def __init__(self, home: VirtualHome, config: dict[str, Any]) -> None:
        assert home.tmpdir is not None
        self.home = home
        self.config_path = home.tmpdir / "dhcp-server.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ServerProcess:
        argv = [sys.executable, "-m", "homegw.standalone", "dhcp", "--config"]
        argv += [str(self.config_path), "--probe-timeout", "0"]
        self.lines.clear()
        self.proc = self.home.popen(
            "gw", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        gw = self.home.ns("gw")
        serving = netns.wait_for(
            lambda: netns.listening(gw, "udp", "*", 67) or self.proc.poll() is not None, WAIT
        )
        if not serving or self.proc.poll() is not None:
            raise AssertionError("the DHCP server did not start; log:\n" + "\n".join(self.lines))
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        proc.wait()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> str:
        regex = re.compile(pattern)
        with self._cond:
            self._cond.wait_for(
                lambda: any(regex.search(x) for x in self.lines) or self.proc.poll() is not None,
                timeout,
            )
            match = next((x for x in self.lines if regex.search(x)), None)
        if match is None:
            raise AssertionError(f"no log line /{pattern}/; log:\n" + "\n".join(self.lines))
        return match

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(WAIT)
