"""The homegw disk image booted in qemu, its two NICs wired into a virtual home.

    VirtualHome (homegw/virtualhome.py)       the gateway namespace hgw-T-gw
    hgw-T-isp: DHCP, DNS, web  ── wan0 ┐      ┌ lan0 ── switch ── hgw-T-h1 (DHCP client)
                                   br-wan    br-lan
                                  tap-wan    tap-lan
                                      └─ qemu ─┘  (the image: virtio NICs, LAN first)

The image's LAN NIC is the first PCI device, so a first boot that took "the
first port" as WAN would be wrong: it must find the WAN by the ISP's DHCP offer.

The serial console is a unix socket the test logs in through (root, no
password, as on the box's own console) to run commands; SerialLine records
every boot on it into console.log, which failures print. KVM is used when it
really runs a guest (a kernel booted with it must reach its panic); /dev/kvm
alone is not enough: nested hosts may offer it and fail on the first
instruction they cannot emulate. Otherwise TCG.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from homegw import netns
from homegw.virtualhome import VirtualHome

log = logging.getLogger(__name__)

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
WAN_MAC = "52:54:00:48:47:01"
LAN_MAC = "52:54:00:48:47:02"
MEMORY_MIB = 2048
DISK_SIZE = "12G"  # larger than the image, as a real stick is: the data partition grows
KVM_PROBE_S = 20.0


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@functools.cache
def accelerator(kernel: Path) -> str:
    """ "kvm" when KVM boots `kernel` to its (expected) panic, else "tcg"."""
    if not Path("/dev/kvm").exists():
        return "tcg"
    argv = [
        "qemu-system-x86_64",
        "-machine",
        "q35,accel=kvm",
        "-m",
        "256",
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 root=/dev/nonexistent",
    ]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=KVM_PROBE_S).stdout
    except subprocess.TimeoutExpired:
        out = ""
    accel = "kvm" if "Kernel panic" in out else "tcg"
    log.info("qemu accelerator: %s", accel)
    return accel


class SerialLine:
    """Everything the VM writes on its serial port, from qemu's start to its end.

    qemu's socket chardev drops what it writes while no client is connected
    (its logfile= too), so one reader stays connected for the VM's lifetime:
    a thread owned by ImageVM (started with qemu, joined in stop) that appends
    every byte to console.log and wakes Console's waits. qemu waits for this
    connection before it starts the guest, so no boot's output is missed.
    """

    def __init__(self, path: Path, log_path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.log_path = log_path
        self.data = bytearray()
        self.chunk_ends: list[int] = []  # where each recv ended: a prompt is "at the end" there
        self.closed = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._record, name="vm-serial", daemon=True)
        self.thread.start()

    def _record(self) -> None:
        with open(self.log_path, "ab") as out:
            try:
                while chunk := self.sock.recv(65536):
                    out.write(chunk)
                    out.flush()
                    with self.changed:
                        self.data += chunk
                        self.chunk_ends.append(len(self.data))
                        self.changed.notify_all()
            except OSError as exc:  # closed by stop()
                log.debug("serial line: %s", exc)
            finally:
                with self.changed:
                    self.closed = True
                    self.changed.notify_all()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_for(self, pattern: re.Pattern[bytes], start: int, timeout: float) -> re.Match[bytes]:
        """The first match of `pattern` in what arrived after `start`, tried
        at every chunk's end, as a reader of the socket would have seen it."""
        deadline = time.monotonic() + timeout
        tried = 0
        with self.changed:
            while True:
                for end in self.chunk_ends[tried:]:
                    if end > start and (match := pattern.search(self.data, start, end)):
                        return match
                tried = len(self.chunk_ends)
                if self.closed:
                    raise AssertionError("console: the VM closed its serial port")
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = bytes(self.data[max(start, len(self.data) - 400) :])
                    raise AssertionError(
                        f"console: no {pattern.pattern!r} in {timeout:.0f} s: "
                        f"{tail.decode(errors='replace')!r}"
                    )
                self.changed.wait(left)

    def end(self) -> int:
        with self.changed:
            return len(self.data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.sock.close()


class Console:
    """A root shell on the VM's serial console, read from its SerialLine."""

    PROMPT = re.compile(rb"root@homegw:[^\n]*# $")

    def __init__(self) -> None:
        self.line: SerialLine | None = None
        self.position = 0  # what the shell has been read up to

    def _line(self) -> SerialLine:
        if self.line is None:
            raise AssertionError("console: the VM is not running")
        return self.line

    def _read_until(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        match = self._line().wait_for(pattern, self.position, timeout)
        self.position = match.end()
        return match

    def login(self, timeout: float = 600) -> None:
        """A root shell at the getty (after a boot), or the one still logged in."""
        line = self._line()
        self.position = line.end()  # what came before (earlier boots) is not an answer
        either = re.compile(rb"homegw login: $|" + self.PROMPT.pattern)
        deadline = time.monotonic() + timeout
        while True:  # the getty prints its prompt again on a newline
            line.send(b"\r")
            try:
                match = self._read_until(either, 15)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        if match.group(0).startswith(b"homegw login:"):
            line.send(b"root\r")
            self._read_until(self.PROMPT, 60)
        self.run("stty -echo; export TERM=dumb PAGER=cat SYSTEMD_PAGER=")

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """Run one shell command on the VM; (exit status, output)."""
        marker = f"@@{time.monotonic_ns()}@@"
        self._line().send(f"{command}; echo {marker}$?{marker}\r".encode())
        match = self._read_until(re.compile(rf"(.*?){marker}(\d+){marker}".encode(), re.S), timeout)
        self._read_until(self.PROMPT, 30)
        output = match.group(1).decode(errors="replace").replace("\r", "")
        return int(match.group(2)), output.strip()


class ImageVM:
    """One boot disk (a qcow2 overlay of the built image) in qemu, wired into `home`."""

    def __init__(
        self,
        home: VirtualHome,
        image: Path,
        workdir: Path,
        firmware: str = "bios",
        kernel: Path | None = None,
    ) -> None:
        self.home = home
        self.image = image
        self.workdir = workdir
        self.firmware = firmware
        self.kernel = kernel
        self.disk = workdir / "disk.qcow2"
        self.console_log = workdir / "console.log"
        self.serial_socket = workdir / "console.sock"
        self.console = Console()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ImageVM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wire(self) -> None:
        gw = self.home.ns("gw")
        for side in ("wan", "lan"):
            netns.ip("link", "add", f"br-{side}", "type", "bridge", "stp_state", "0", ns=gw)
            netns.ip("tuntap", "add", "dev", f"tap-{side}", "mode", "tap", ns=gw)
            for port in (f"{side}0", f"tap-{side}"):
                netns.ip("link", "set", port, "master", f"br-{side}", "up", ns=gw)
            netns.ip("link", "set", f"br-{side}", "up", ns=gw)

    def argv(self) -> list[str]:
        accel = accelerator(self.kernel) if self.kernel else "tcg"
        argv = [
            "qemu-system-x86_64",
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi" if accel == "tcg" else accel,
            "-m",
            str(MEMORY_MIB),
            "-smp",
            "2",
            "-display",
            "none",
            "-monitor",
            "none",
            "-drive",
            f"file={self.disk},format=qcow2,if=virtio",
            "-chardev",
            # waits for SerialLine, which records every boot's output
            f"socket,id=ser0,path={self.serial_socket},server=on,wait=on",
            "-serial",
            "chardev:ser0",
            # LAN first: the first port is not the WAN here
            "-netdev",
            "tap,id=lan,ifname=tap-lan,script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=lan,mac={LAN_MAC},addr=0x3",
            "-netdev",
            "tap,id=wan,ifname=tap-wan,script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=wan,mac={WAN_MAC},addr=0x4",
            "-device",
            "i6300esb",
            "-action",
            "watchdog=reset",
        ]
        if self.firmware == "uefi":
            vars_ = self.workdir / "OVMF_VARS.fd"
            if not vars_.exists():
                vars_.write_bytes(OVMF_VARS.read_bytes())
            argv += [
                "-drive",
                f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive",
                f"if=pflash,format=raw,file={vars_}",
            ]
        return argv

    def start(self) -> None:
        if not self.disk.exists():
            fmt = "raw" if self.image.suffix == ".raw" else "qcow2"
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    fmt,
                    "-b",
                    str(self.image),
                    str(self.disk),
                    DISK_SIZE,
                ],
                check=True,
            )
            self._wire()
        with open(self.workdir / "qemu.out", "ab") as out:
            self.proc = self.home.popen(
                "gw", self.argv(), track=False, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: self.serial_socket.exists() or self.proc.poll() is not None,
            30,
            "qemu's serial socket",
            every=0.2,
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"qemu exited: {(self.workdir / 'qemu.out').read_text()}")
        self.console.line = SerialLine(self.serial_socket, self.console_log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self.console.line is not None:  # after qemu: its last words are recorded
            self.console.line.close()
            self.console.line = None
        with contextlib.suppress(FileNotFoundError):
            self.serial_socket.unlink()

    def console_tail(self, chars: int = 4000) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)[-chars:]
