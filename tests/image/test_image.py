"""The disk image booted in qemu, its NICs in a virtual home (tests/image/vm.py).

First boot (UEFI): the image picks the WAN port by the ISP's DHCP offer (the
LAN NIC is the first PCI device), a LAN host gets a lease from it, reaches the
ISP's web server through its NAT (the server sees the gateway's WAN address),
and the web UI on 192.168.1.1 answers with the first-run page.

Upgrade (BIOS): an admin made through the API, a config change, then a second
image (a version bump) uploaded to POST /api/v1/system/upgrade boots from slot
b and keeps config and state; a deliberately broken third image (its
appliance cannot start) goes into slot a, is tried once and rolled back: slot
b (the second image) is running again by itself.

Slow (TCG): `./run test -m image tests/image` (README, "The image").
"""

from __future__ import annotations

import json
import os
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from homegw.virtualhome import LAN_GATEWAY, WEB_SERVER, VirtualHome

from .conftest import REPO, BuiltImage
from .vm import WAN_MAC, ImageVM, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.image, pytest.mark.timeout(3600)]

BOOT_S = 900  # TCG: firmware, kernel, and bcc compiling every module
LAN_NET = IPv4Network("192.168.1.0/24")
PASSWORD = "correct horse battery staple"
SITE_PACKAGES = "/opt/homegw/venv/lib/python3.11/site-packages"
LEASE_HOOK = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route replace default via "$router" dev "$interface"
    echo "$ip" > {out} ;;
esac
"""


def lease(home: VirtualHome, host: str, timeout: float = BOOT_S) -> IPv4Address:
    """A DHCP lease for `host` from the gateway (udhcpc waits on its socket)."""
    out = home.tmpdir / f"{host}.lease"
    hook = home.tmpdir / f"{host}.lease.sh"
    hook.write_text(LEASE_HOOK.format(out=out))
    os.chmod(hook, 0o755)
    tries = int(timeout // 3)
    argv = ["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", str(tries), "-T", "3", "-s", str(hook)]
    done = home.run(host, argv, timeout=timeout + 30)
    assert done.returncode == 0, f"no lease for {host}: {done.stderr[-500:]}"
    return IPv4Address(out.read_text().strip())


def curl(home: VirtualHome, *args: str, timeout: float = 60) -> tuple[int, str]:
    """curl from h1: (HTTP status, body)."""
    argv = ["curl", "-sS", "--max-time", str(int(timeout)), "-w", "\n%{http_code}", *args]
    done = home.run("h1", argv, timeout=timeout + 10)
    if done.returncode != 0:
        return 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


class Api:
    def __init__(self, home: VirtualHome) -> None:
        self.home = home
        self.token = ""

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data_file: Path | None = None,
        curl_args: tuple[str, ...] = (),
        timeout: float = 60,
    ) -> tuple[int, Any]:
        args = [*curl_args, "-X", method, f"http://{LAN_GATEWAY}/api/v1{path}"]
        if self.token:
            args += ["-H", f"Authorization: Bearer {self.token}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        if data_file is not None:
            args += [
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                f"@{data_file}",
            ]
        status, text = curl(self.home, *args, timeout=timeout)
        try:
            return status, json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            return status, text

    def system(self) -> dict[str, Any] | None:
        status, body = self.call("GET", "/system", timeout=10)
        return body if status == 200 else None


def wan_address(home: VirtualHome) -> str:
    """The gateway's WAN address, from the ISP's DHCP lease file."""
    for line in home.dhcp_leases.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == WAN_MAC:
            return fields[2]
    raise AssertionError(f"no ISP lease for {WAN_MAC}: {home.dhcp_leases.read_text()!r}")


def failure_context(vm: ImageVM) -> str:
    """The serial console's tail and, when a shell still answers there, the
    appliance's journal of this boot (it is in RAM: gone with the VM)."""
    context = f"\n--- console ---\n{vm.console_tail()}"
    try:
        vm.console.login(timeout=120)
        _, journal = vm.console.run("journalctl -b -u homegw --no-pager | tail -n 80", 60)
    except (AssertionError, OSError) as exc:
        journal = f"(no journal: {exc})"
    return f"{context}\n--- journalctl -u homegw ---\n{journal}"


def page_once_up(home: VirtualHome, *args: str) -> str | None:
    """curl's body once it answers 200, else None (for wait_until): the web UI
    starts after the DHCP server, and the gateway's WAN lease may come after
    the LAN host's (under TCG: seconds)."""
    status, body = curl(home, *args, timeout=20)
    return body if status == 200 else None


def first_run_page(home: VirtualHome) -> str | None:
    return page_once_up(home, "-L", f"http://{LAN_GATEWAY}/")


def test_first_boot_lan_lease_nat_and_first_run_page(built_image: BuiltImage, tmp_path: Path):
    with (
        VirtualHome("img1", n_hosts=1, lan_hosts_static=False) as home,
        ImageVM(home, built_image.qcow2, tmp_path, "uefi", built_image.kernel) as vm,
    ):
        try:
            address = lease(home, "h1")
            assert address in LAN_NET
            page = wait_until(lambda: first_run_page(home), 300, "the web UI on the LAN", 2)
            assert "Welcome to homegw" in page, page[:500]
            url = f"http://{WEB_SERVER}/index.html"
            body = wait_until(lambda: page_once_up(home, url), 120, "the ISP's web server", 2)
            assert home.web_text in body, body
            seen = (home.tmpdir / "web.out").read_text()
            assert f"{wan_address(home)} - - " in seen  # NAT: the server saw the WAN address
            assert "setup code" in page.lower()
            vm.console.login()
            code, banner = vm.console.run("cat /run/homegw/issue")
            assert code == 0 and f"http://{LAN_GATEWAY}/" in banner, banner
            code, wan_if = vm.console.run(f"ip -o link | grep -i {WAN_MAC} | cut -d: -f2")
            assert code == 0 and wan_if.strip(), wan_if
            wan_if = wan_if.strip()
            code, wan_line = vm.console.run(
                "sed -n '/^wan:/,/^lan:/p' /etc/homegw/homegw.yaml | grep interface:"
            )
            assert wan_line.split("#")[0].split() == ["interface:", wan_if], wan_line
            assert f"WAN (internet): {wan_if}" in banner, banner
        except AssertionError as exc:
            raise AssertionError(f"{exc}{failure_context(vm)}") from None


def debugfs_write(image: Path, path: str, content: str, tmp: Path) -> None:
    """Replace one file of an ext4 image (no mount): debugfs rm + write."""
    local = tmp / Path(path).name
    local.write_text(content)
    os.chmod(local, 0o644)
    for request in (f"rm {path}", f"write {local} {path}"):
        done = subprocess.run(
            ["debugfs", "-w", "-R", request, str(image)], capture_output=True, text=True, check=True
        )
        assert "rror" not in done.stderr.replace("debugfs ", ""), done.stderr


def debugfs_read(image: Path, path: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, text=True, check=True
    ).stdout


def derived_bundle(built: BuiltImage, tmp: Path, version: str, broken: bool) -> Path:
    """An upgrade bundle of the built root with another version (and, broken,
    an appliance that cannot start: homegw run fails, homegw upgrade confirm works)."""
    rootfs = tmp / f"rootfs-{version}.img"
    subprocess.run(["cp", "--sparse=always", str(built.rootfs), str(rootfs)], check=True)
    release = debugfs_read(rootfs, "/usr/lib/homegw/image-release")
    new_release = "".join(
        f"VERSION={version}\n" if line.startswith("VERSION=") else line + "\n"
        for line in release.splitlines()
    )
    debugfs_write(rootfs, "/usr/lib/homegw/image-release", new_release, tmp)
    if broken:
        debugfs_write(
            rootfs,
            f"{SITE_PACKAGES}/homegw/appliance.py",
            'raise SystemExit("homegw: a deliberately broken build")\n',
            tmp,
        )
    bundle = tmp / f"homegw-{version}.hgwup"
    python = REPO / ".venv/bin/python"
    subprocess.run(
        [
            str(python),
            "-m",
            "homegw.upgrade.bundle",
            "make",
            "--rootfs",
            str(rootfs),
            "--version",
            version,
            "--out",
            str(bundle),
        ],
        cwd=REPO,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    rootfs.unlink()
    return bundle


def admin_token(api: Api, vm: ImageVM) -> str:
    vm.console.login()
    code, setup_code = vm.console.run("cat /var/lib/homegw/setup-token")
    assert code == 0, setup_code
    status, body = api.call("POST", "/setup", {"token": setup_code.strip(), "password": PASSWORD})
    assert status == 201, body
    jar = str(api.home.tmpdir / "jar")
    status, body = api.call("POST", "/auth/login", {"password": PASSWORD}, curl_args=("-c", jar))
    assert status == 200, body
    csrf = ("-b", jar, "-H", f"X-CSRFToken: {body['csrf_token']}")
    status, body = api.call("POST", "/auth/tokens", {"name": "image-test"}, curl_args=csrf)
    assert status == 201, body
    return body["token"]


def upgrade(api: Api, bundle: Path) -> dict[str, Any]:
    status, body = api.call("POST", "/system/upgrade", data_file=bundle, timeout=1800)
    assert status == 202, body
    return body


def booted(api: Api, version: str, slot: str) -> dict[str, Any] | None:
    """The system's state once it runs `version` from `slot` with nothing on trial."""
    system = api.system()
    if not system or (system.get("image") or {}).get("VERSION") != version:
        return None
    slots = system.get("slots") or {}
    if slots.get("booted") != slot or slots.get("trial") is not None:
        return None
    return system


def test_upgrade_keeps_config_and_a_broken_image_rolls_back(
    built_image: BuiltImage, tmp_path: Path
):
    v1 = built_image.version
    v2_bundle = derived_bundle(built_image, tmp_path, f"{v1}+up2", broken=False)
    v3_bundle = derived_bundle(built_image, tmp_path, f"{v1}+up3", broken=True)
    with (
        VirtualHome("img2", n_hosts=1, lan_hosts_static=False) as home,
        ImageVM(home, built_image.qcow2, tmp_path, "bios", built_image.kernel) as vm,
    ):
        api = Api(home)
        try:
            lease(home, "h1")
            wait_until(lambda: first_run_page(home), 300, "the web UI on the LAN", 2)
            api.token = admin_token(api, vm)
            first = wait_until(lambda: booted(api, v1, "a"), BOOT_S, f"{v1} in slot a")
            assert first["upgrade_supported"] is True, first
            status, dhcp = api.call("GET", "/config/dhcp")
            assert status == 200, dhcp
            status, body = api.call("PUT", "/config/dhcp", {**dhcp, "lease_time": "7h"})
            assert status == 200, body

            answer = upgrade(api, v2_bundle)
            assert (answer["slot"], answer["version"]) == ("b", f"{v1}+up2"), answer
            second = wait_until(
                lambda: booted(api, f"{v1}+up2", "b"),
                BOOT_S,
                "the second image running from slot b",
            )
            assert second["slots"]["active"] == "b", second
            status, dhcp = api.call("GET", "/config/dhcp")  # the token (state) still works
            assert status == 200 and dhcp["lease_time"] in ("7h", 25200), dhcp

            answer = upgrade(api, v3_bundle)
            assert answer["slot"] == "a", answer
            # the API goes away (reboot into the trial), the broken appliance
            # never answers, homegw-confirm reboots, GRUB falls back to b
            wait_until(lambda: api.system() is None, 600, "the reboot into the broken image")
            back = wait_until(
                lambda: booted(api, f"{v1}+up2", "b"),
                2 * BOOT_S,
                "the rollback to the second image in slot b",
            )
            assert back["slots"]["active"] == "b", back
            vm.console.login()
            code, env = vm.console.run("grub-editenv /boot/efi/homegw/grubenv list")
            assert code == 0 and "homegw_active=b" in env, env
            # GRUB said so on the serial console (the journal is in RAM: gone with the reboot)
            assert "slot a did not confirm: back to slot b" in vm.console_tail(200_000)
            status, dhcp = api.call("GET", "/config/dhcp")
            assert status == 200 and dhcp["lease_time"] in ("7h", 25200), dhcp
        except AssertionError as exc:
            raise AssertionError(f"{exc}{failure_context(vm)}") from None
