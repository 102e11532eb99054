"""A clean Debian 12 root (mmdebstrap --variant=minbase) to install the .deb
into, its mounts, commands run chrooted in it, and the installed unit's
command lines.

The root is a private mount of itself, so nothing mounted under it propagates
to the machine; /dev is a recursive bind made a slave; /lib/modules is an
overlay whose lower layer is the machine's (kernel headers links), so what a
maintainer script writes there stays in the test's directory.
"""

from __future__ import annotations

import datetime
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CACHE_DIR = Path("/var/cache/homegw-test")
APT_SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
DEBIAN_URI = re.compile(r"https?://\S*debian\.org")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MMDEBSTRAP_TIMEOUT = 900


def debian_sources() -> list[Path]:
    """The machine's enabled apt source files that name a Debian mirror."""
    found = []
    for path in APT_SOURCES:
        enabled = path.suffix in (".list", ".sources") and path.is_file()
        if enabled and DEBIAN_URI.search(path.read_text()):
            found.append(path)
    if not found:
        raise AssertionError(f"no Debian mirror in the machine's apt sources {APT_SOURCES}")
    return found


def minbase_tarball() -> Path:
    """Today's bookworm minbase tarball, made once a day under CACHE_DIR
    (older days' are removed)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"bookworm-minbase-{datetime.date.today():%Y%m%d}.tar"
    if tarball.exists():
        return tarball
    for old in CACHE_DIR.glob("bookworm-minbase-*.tar"):
        old.unlink()
    partial = CACHE_DIR / "bookworm-minbase-partial.tar"
    sources = [str(path) for path in debian_sources()]
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(partial), *sources]
    subprocess.run(argv, check=True, timeout=MMDEBSTRAP_TIMEOUT)
    partial.rename(tarball)
    return tarball


def run_host(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 120)
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


class DebianRoot:
    """An extracted minbase root at `path` with the mounts apt and the appliance need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def create(self) -> DebianRoot:
        self.path.mkdir(parents=True)
        run_host(["tar", "-xf", str(minbase_tarball()), "-C", str(self.path), "--numeric-owner"])
        (self.path / "etc/resolv.conf").unlink(missing_ok=True)
        (self.path / "etc/resolv.conf").write_bytes(Path("/etc/resolv.conf").read_bytes())
        self._mount()
        return self

    def _mount(self) -> None:
        root = str(self.path)
        run_host(["mount", "--bind", root, root])
        self.mounted = True
        run_host(["mount", "--make-private", root])
        # each a slave at once: an unmount here must never reach the machine's
        for source, bind in (("/proc", "--bind"), ("/sys", "--bind"), ("/dev", "--rbind")):
            run_host(["mount", bind, source, f"{root}{source}"])
            run_host(["mount", "--make-rslave", f"{root}{source}"])
        run_host(["mount", "--bind", "/sys/fs/bpf", f"{root}/sys/fs/bpf"])
        run_host(["mount", "--make-rslave", f"{root}/sys/fs/bpf"])
        upper, work = self.path.parent / "modules-upper", self.path.parent / "modules-work"
        upper.mkdir()
        work.mkdir()
        (self.path / "lib/modules").mkdir(parents=True, exist_ok=True)
        options = f"lowerdir=/lib/modules,upperdir={upper},workdir={work}"
        run_host(["mount", "-t", "overlay", "overlay", "-o", options, f"{root}/lib/modules"])

    def unmount(self) -> None:
        """Everything under the root, deepest first (umount -R); idempotent."""
        if self.mounted:
            run_host(["umount", "-R", str(self.path)])
            self.mounted = False

    def run(
        self, argv: Sequence[str], check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """`argv` chrooted into the root (the machine's network namespace)."""
        env = {"PATH": CHROOT_PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        kw.setdefault("timeout", 600)
        argv = ["chroot", str(self.path), *argv]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, **kw)
        if check:
            assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])
        return result

    def file(self, path: str) -> Path:
        """The root's `path` seen from the machine."""
        return self.path / path.lstrip("/")


# Runs "$@" chrooted into $1 inside the namespace the wrapper entered: the
# root's /sys becomes that namespace's sysfs (its interfaces), with the
# machine's bpffs (pins) on /sys/fs/bpf, as in homegw.netns.exec_argv.
IN_ROOT_SH = """set -e
root=$1; shift
mount -t sysfs sysfs "$root/sys"
mount --bind /sys/fs/bpf "$root/sys/fs/bpf"
exec chroot "$root" /usr/bin/env -i "$@"
"""


def in_root_argv(root: Path, env: dict[str, str], argv: Sequence[str]) -> list[str]:
    """argv for VirtualHome.run/popen("gw", ...): `argv` chrooted into `root`
    with exactly `env` (as systemd gives a service), keeping the PID."""
    pairs = [f"{key}={value}" for key, value in {"PATH": CHROOT_PATH, **env}.items()]
    return ["sh", "-c", IN_ROOT_SH, "sh", str(root), *pairs, *argv]


def environment_file(text: str) -> dict[str, str]:
    """KEY=value lines of an EnvironmentFile= (comments and blanks skipped)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = " ".join(shlex.split(value))
    return env


def unit_settings(unit: str) -> dict[str, list[str]]:
    """Every Key=value of a unit file, values in order, per key."""
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand_command(line: str, env: dict[str, str]) -> list[str]:
    """A unit's Exec line as systemd runs it: `${VAR}` is one word, a word
    that is `$VAR` splits into the variable's words (none when empty)."""
    words: list[str] = []
    for word in shlex.split(line.lstrip("-@:+!")):
        if re.fullmatch(r"\$\w+", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def unit_commands(root: DebianRoot) -> tuple[dict[str, str], list[list[str]], list[str]]:
    """(environment, ExecStartPre command lines, ExecStart) of the installed
    unit, with its Environment= and EnvironmentFile= variables substituted."""
    settings = unit_settings(root.file("/lib/systemd/system/homegw.service").read_text())
    env: dict[str, str] = {}
    for assignment in settings.get("Environment", []):
        env.update(environment_file(assignment))
    for name in settings.get("EnvironmentFile", []):
        path = root.file(name.lstrip("-"))
        if path.exists():
            env.update(environment_file(path.read_text()))
    pre = [expand_command(line, env) for line in settings.get("ExecStartPre", [])]
    [start] = settings["ExecStart"]
    return env, pre, expand_command(start, env)
