"""The Debian package: `packaging/deb/build.sh`, then `apt-get install -y
./homegw_*.deb` in a clean Debian 12 root (mmdebstrap minbase), the files and
conffiles it installed, the installed unit's command lines run by hand (no
systemd in a chroot) in a virtual home's gateway namespace chrooted into that
root: it comes up (READY=1 on a NOTIFY_SOCKET), a LAN host gets a DHCP lease
from it (udhcpc) and reaches the ISP's web server through NAT; then apt-get
remove and purge.

The tests of this module run in order and share one root: install, run,
remove. The root's mounts, the namespaces, the pins and the processes go away
in finalizers, also when a test fails.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from homegw import netns
from homegw.virtualhome import VirtualHome, leftovers
from tests.conftest import new_tag
from tests.integration.appliance_proc import ApplianceProcess
from tests.integration.dhcp_helpers import hook_script, wait_event
from tests.package.debroot import DebianRoot, in_root_argv, unit_commands

# the first test builds the package, a root and installs into it: minutes
pytestmark = [pytest.mark.netns, pytest.mark.image, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
VENV = "/opt/homegw/venv"
SITE = f"{VENV}/lib/python3.11/site-packages"
CONFIG = "/etc/homegw/homegw.yaml"
NOTIFY = "/run/homegw-test.notify"
READY_TIMEOUT = 180.0  # the first start compiles every module with bcc
WEB_PATH = "/index.html?from-the-deb-test"
UPLOT = "webui/static/vendor/uPlot.iife.min.js"
LEFTOVER = f"{SITE}/__pycache__/leftover.cpython-311.pyc"

UDHCPC_HOOK = """#!/bin/sh
echo "EVENT $1 ip=$ip mask=$mask router=$router" >> {events}
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    ip route replace default via "$router" dev "$interface" ;;
esac
exit 0
"""


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built once per session by packaging/deb/build.sh."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [str(REPO / "packaging/deb/build.sh"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [package] = out.glob("homegw_*_amd64.deb")
    assert package.name == f"homegw_{VERSION}_amd64.deb"
    return package


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianRoot]:
    """A fresh minbase root with its mounts; unmounted afterwards."""
    debian = DebianRoot(tmp_path_factory.mktemp("debroot") / "root")
    try:
        yield debian.create()
    finally:
        debian.unmount()


@pytest.fixture(scope="module")
def installed(root: DebianRoot, deb: Path) -> subprocess.CompletedProcess:
    """`apt-get install -y ./homegw_*.deb` in the root: its output."""
    (root.file("/tmp") / deb.name).write_bytes(deb.read_bytes())
    root.run(["apt-get", "update", "-q"])
    return root.run(["apt-get", "install", "-y", "-q", f"/tmp/{deb.name}"])


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_files_and_conffiles(root: DebianRoot, installed: subprocess.CompletedProcess) -> None:
    conffiles = root.run(["dpkg-query", "-W", "-f=${Conffiles}", "homegw"]).stdout.split("\n")
    assert sorted(line.split() for line in conffiles if line.strip()) == [
        ["/etc/default/homegw", md5(REPO / "packaging/systemd/homegw.default")],
        [CONFIG, md5(REPO / "homegw.example.yaml")],
    ]
    same = {
        "/usr/share/homegw/homegw.yaml": "homegw.example.yaml",
        "/lib/systemd/system/homegw.service": "packaging/systemd/homegw.service",
        "/usr/share/doc/homegw/README.md": "README.md",
        "/usr/lib/homegw/kernel-headers.sh": "scripts/kernel-headers.sh",
        f"{SITE}/{UPLOT}": UPLOT,
    }
    for installed_path, repo_path in same.items():
        assert root.file(installed_path).read_bytes() == (REPO / repo_path).read_bytes()
    assert "Apache-2.0" in root.file("/usr/share/doc/homegw/copyright").read_text()
    assert os.readlink(root.file("/usr/bin/homegw")) == f"{VENV}/bin/homegw"
    assert root.file(f"{VENV}/bin/homegw").read_text().startswith(f"#!{VENV}/bin/python\n")
    wants = root.file("/etc/systemd/system/multi-user.target.wants/homegw.service")
    assert os.readlink(wants) == "/lib/systemd/system/homegw.service"  # enabled by postinst

    # the venv is Debian's python3 with its bcc, and homegw from the venv
    probe = "import bcc, homegw, webui; print(bcc.__file__, homegw.__file__, webui.__file__)"
    paths = root.run([f"{VENV}/bin/python", "-c", probe]).stdout.split()
    assert paths[0].startswith("/usr/lib/python3/dist-packages/bcc/")
    assert [p.startswith(f"{SITE}/") for p in paths[1:]] == [True, True]
    # no build path in any installed file (text or bytecode)
    for needle in ("/tmp/homegw-deb.", str(REPO)):
        found = subprocess.run(["grep", "-rl", "--fixed-strings", needle, str(root.file(VENV))])
        assert found.returncode == 1, f"{needle} in the venv"


def test_postinst_said_what_to_edit_and_linked_no_headers_outside(
    root: DebianRoot, installed: subprocess.CompletedProcess
) -> None:
    missing = [
        f"{side}.interface={name}"
        for side, name in (("wan", "eth0"), ("lan", "eth1"))
        if not Path(f"/sys/class/net/{name}").exists()  # the chroot sees the machine's /sys
    ]
    if missing:  # (on this machine: no eth1) told what to edit, not started
        said = [
            f"homegw: not started: {CONFIG} names interfaces this machine does not have: "
            + " ".join(missing),
            f"homegw: edit {CONFIG} (wan.interface, lan.interface) then systemctl start homegw",
        ]
    else:  # both placeholders exist here: a start is wanted, but there is no systemd
        said = [f"homegw: no systemd running: start it with /usr/bin/homegw run -c {CONFIG}"]
    lines = installed.stdout.splitlines()
    assert [line for line in lines if line.startswith("homegw: ")] == said
    # the shared script, for a kernel without headers: the link goes into the root only
    release = "0.0.0-homegw-test"
    out = root.run(["/usr/lib/homegw/kernel-headers.sh", release]).stdout
    build = os.readlink(root.file(f"/lib/modules/{release}/build"))
    assert re.fullmatch(r"/usr/src/linux-headers-[\d.]+-\d+-amd64", build), build
    assert root.file(f"{build}/Makefile").exists()
    assert out == f"pointed /lib/modules/{release}/build at {build} and " + (
        f"/lib/modules/{release}/source at {build.removesuffix('-amd64')}-common\n"
    )
    assert not Path(f"/lib/modules/{release}").exists()
    assert root.run(["/usr/lib/homegw/kernel-headers.sh", release]).stdout == ""


class UnitProcess(ApplianceProcess):
    """The installed unit's ExecStart, chrooted into the root in the gateway
    namespace, its log read as ApplianceProcess reads `homegw run`'s."""

    def __init__(self, home: VirtualHome, root: DebianRoot, env: dict[str, str]) -> None:
        super().__init__(home, {}, name="deb-unit")
        self.root, self.env = root, env

    def start_command(self, argv: list[str]) -> UnitProcess:
        full = in_root_argv(self.root.path, self.env, argv)
        self.proc = self.home.popen(
            "gw", full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self


def wait_ready(sock: socket.socket, app: UnitProcess, timeout: float) -> str:
    """The notify messages up to READY=1; fail if the process exits first."""
    deadline, seen = time.monotonic() + timeout, []
    sock.settimeout(0.5)  # a bounded wait on the socket, to notice an exit
    while time.monotonic() < deadline and not app.exited():
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if "READY=1" in seen[-1].split("\n"):
            return "\n".join(seen)
    raise AssertionError(f"no READY=1 (exited: {app.exited()}, got {seen}); log:\n{app.log}")


@pytest.fixture(scope="module")
def home() -> Iterator[VirtualHome]:
    """One LAN host without an address (it asks the gateway by DHCP); shared
    by the run and the remove (whose prerm detaches the datapath)."""
    with VirtualHome(new_tag(), n_hosts=1, lan_hosts_static=False) as built:
        yield built
    assert not leftovers(built.tag)


def configure(root: DebianRoot, home: VirtualHome) -> None:
    """What the user edits: the two interfaces (and, here, a pin dir of this
    test's own and no IPv6: the virtual ISP has none)."""
    path = root.file(CONFIG)
    config = yaml.safe_load(path.read_text())
    config["wan"]["interface"], config["lan"]["interface"] = "wan0", "lan0"
    config["wan"]["ipv6"]["mode"] = config["lan"]["ipv6"]["mode"] = "off"
    config["dataplane"]["pin_dir"] = str(home.pin_dir)
    path.write_text(yaml.safe_dump(config))


def test_the_installed_unit_runs_the_gateway(
    root: DebianRoot, installed: subprocess.CompletedProcess, home: VirtualHome
) -> None:
    configure(root, home)
    env, pre, start = unit_commands(root)
    assert pre == [["/usr/bin/homegw", "check-config", CONFIG]]
    assert start == ["/usr/bin/homegw", "run", "-c", CONFIG]
    for argv in pre:
        check = home.run("gw", in_root_argv(root.path, env, argv), timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root.file(NOTIFY)))
    app = UnitProcess(home, root, {**env, "NOTIFY_SOCKET": NOTIFY})
    try:
        app.start_command(start)
        wait_ready(notify, app, READY_TIMEOUT)
        lease_and_nat(home)
        served_assets(home)
    finally:
        notify.close()
        root.file(NOTIFY).unlink()
        code = app.stop() if app.proc is not None else None  # SIGTERM, as systemd stops it
    assert code == 0, app.log
    assert "Traceback" not in app.log


def lease_and_nat(home: VirtualHome) -> None:
    """h1 leases an address from the gateway and fetches a page from the ISP's
    web server, which sees the gateway's WAN address."""
    script, events = hook_script(home, "udhcpc-deb", UDHCPC_HOOK)
    argv = ["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", str(script)]
    client = home.run("h1", argv, timeout=60)
    assert client.returncode == 0, client.stdout + client.stderr
    bound = wait_event(events, r"^EVENT bound ip=")
    lease = ipaddress.ip_address(re.search(r"ip=(\S+)", bound).group(1))  # type: ignore[union-attr]
    assert lease in ipaddress.ip_network("192.168.1.0/24") and "router=192.168.1.1" in bound

    page = home.run(
        "h1", ["curl", "-sS", "--max-time", "10", f"http://{home.web_server}{WEB_PATH}"]
    )
    assert page.returncode == 0, page.stderr
    assert home.web_text in page.stdout
    wan = home.run("gw", ["ip", "-4", "-o", "addr", "show", "dev", "wan0"], check=True).stdout
    wan_ip = re.search(r"inet (\S+)/", wan).group(1)  # type: ignore[union-attr]
    assert ipaddress.ip_address(wan_ip) in ipaddress.ip_network("203.0.113.0/24")
    web_log = home.tmpdir / "web.out"  # type: ignore[operator]
    line = rf'^{re.escape(wan_ip)} - - \[[^]]*\] "GET {re.escape(WEB_PATH)} HTTP/1\.1" 200 '

    def served() -> bool:
        return re.search(line, web_log.read_text(), re.MULTILINE) is not None

    assert netns.wait_for(served, 10), web_log.read_text()[-2000:]


def served_assets(home: VirtualHome) -> None:
    """The web UI on the LAN serves the vendored chart library from the package."""
    url = f"http://{home.lan_gateway}/static/vendor/uPlot.iife.min.js"
    got = home.run("h1", ["curl", "-sS", "--fail", "--max-time", "10", url], text=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout == (REPO / UPLOT).read_bytes()


def dpkg_status(root: DebianRoot) -> str:
    result = root.run(["dpkg-query", "-W", "-f=${Status}", "homegw"], check=False)
    return result.stdout.strip() if result.returncode == 0 else "not installed"


def xdp_attached(home: VirtualHome, ifname: str) -> bool:
    out = home.run("gw", ["ip", "-d", "link", "show", "dev", ifname], check=True).stdout
    return "prog/xdp" in out


def test_remove_detaches_keeps_the_config_and_purge_removes_everything(
    root: DebianRoot, installed: subprocess.CompletedProcess, home: VirtualHome
) -> None:
    # the run left its datapath attached and pinned, as a stop does for a restart
    assert xdp_attached(home, "lan0") and xdp_attached(home, "wan0")
    assert home.pin_dir.exists()
    root.file(LEFTOVER).write_bytes(b"written at run time, not by dpkg")
    # apt-get remove where the appliance ran: prerm's `homegw cleanup` detaches it
    env = {"DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    argv = in_root_argv(root.path, env, ["apt-get", "remove", "-y", "-q", "homegw"])
    remove = home.run("gw", argv)
    assert remove.returncode == 0, remove.stdout + remove.stderr
    assert not xdp_attached(home, "lan0") and not xdp_attached(home, "wan0")
    assert not home.pin_dir.exists()
    assert dpkg_status(root) == "deinstall ok config-files"
    assert not root.file("/usr/bin/homegw").is_symlink()
    assert not root.file(f"{SITE}/homegw").exists()
    assert root.file(CONFIG).exists() and root.file("/etc/default/homegw").exists()
    assert any(root.file("/var/lib/homegw").iterdir())  # the appliance's state stays

    root.run(["apt-get", "purge", "-y", "-q", "homegw"])
    assert dpkg_status(root) == "not installed"
    for gone in (CONFIG, "/etc/default/homegw", "/var/lib/homegw", "/opt/homegw"):
        assert not root.file(gone).exists(), gone
    wants = root.file("/etc/systemd/system/multi-user.target.wants/homegw.service")
    assert not wants.is_symlink()
