"""Compiled, loaded and pinned builds of the .bpf.c sources, and their cache.

A build is one source compiled with its options (cflags) by bcc in a
short-lived child (homegw/dataplane/build.py), every function loaded, and
everything pinned under ``<pin_dir>/builds/<name>-<key>/``:

    prog_<function>   each loaded program
    map_<table>       each map private to the build (the maps of the shared
                      header and the modules' HOMEGW_PIN maps stay where
                      they are pinned: <pin_dir>/<name>)
    manifest          a one-entry array map holding the build's manifest
                      (JSON): programs, maps with pin path, type, sizes and
                      bcc's key/leaf type descriptions, ids

The key is the sha256 of the program text, the headers it can include, the
cflags, the kernel release and bcc's version. A later start that wants the
same key finds the build pinned and reuses it without compiling (bpffs is
emptied at boot, so is the cache). The appliance opens everything by path:
no bcc, no LLVM in its memory.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homegw.dataplane import libbpf
from homegw.dataplane.ctypesdesc import decode_json
from homegw.dataplane.loader import INCLUDE_DIR, Define, LoadError, cflags, program_text
from homegw.dataplane.table import Table, open_table

log = logging.getLogger(__name__)

BUILDS = "builds"
MANIFEST = "manifest"
# a built-in module's build child: killed after this long (a slow box, or a VM
# without hardware virtualisation, may need more: HOMEGW_BUILD_TIMEOUT_S)
BUILD_TIMEOUT_S = float(os.environ.get("HOMEGW_BUILD_TIMEOUT_S", "120"))
FIRST_PIN = "chain_xdp"  # one of the maps every build's shared header pins
PROG_TYPES = {"xdp": 6, "tc": 3}  # BPF_PROG_TYPE_XDP, BPF_PROG_TYPE_SCHED_CLS


def _bcc_version() -> str:
    """bcc's version, read from its package without importing it."""
    for entry in sys.path:
        version = Path(entry or ".") / "bcc" / "version.py"
        if version.is_file():
            return version.read_text()
    return "unknown"


@dataclass(frozen=True)
class BuildLimits:
    """What a build child may take (user modules): wall time, address space
    and CPU seconds; the child is killed past the time, LLVM fails past the
    memory."""

    timeout_s: float = BUILD_TIMEOUT_S
    memory_bytes: int | None = None


@dataclass(frozen=True)
class BuildSpec:
    """One source with its options: what a build is made from."""

    name: str  # unique per dataplane: "root_lan", "fragment", a module's name
    source: Path
    pin_dir: str
    module_id: int = 0
    defines: dict[str, Define] = field(default_factory=dict)
    sdk: bool = False  # a user module: compiled with homegw_user.h
    limits: BuildLimits = field(default_factory=BuildLimits)

    def cflags(self) -> list[str]:
        return cflags(self.pin_dir, self.module_id, self.defines)

    def key(self) -> str:
        digest = hashlib.sha256()
        for part in (
            program_text(self.source, self.sdk),
            json.dumps(self.cflags()),
            *self._headers(),
            os.uname().release,
            _bcc_version(),
        ):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def _headers(self) -> list[str]:
        """Texts of every header the source can include: the shared ones, its
        folder's, and any file a define names (NAT_PARSE_H)."""
        paths = sorted(INCLUDE_DIR.glob("*.h")) + sorted(self.source.parent.glob("*.h"))
        for value in self.defines.values():
            if isinstance(value, str) and Path(value.strip('"')).is_file():
                paths.append(Path(value.strip('"')))
        return [f"{path}\n{path.read_text()}" for path in paths]

    def build_dir(self, key: str | None = None) -> Path:
        return Path(self.pin_dir) / BUILDS / f"{self.name}-{(key or self.key())[:20]}"

    def request(self, key: str) -> dict[str, Any]:
        """What the build child is asked to make."""
        return {
            "name": self.name,
            "source": str(self.source),
            "pin_dir": self.pin_dir,
            "module_id": self.module_id,
            "defines": self.defines,
            "sdk": self.sdk,
            "timeout_s": self.limits.timeout_s,
            "memory_bytes": self.limits.memory_bytes,
            "key": key,
            "build_dir": str(self.build_dir(key)),
        }


class BuildLimit(LoadError):
    """The build child ran past its time or memory limit (BuildLimits)."""


# -- manifests --------------------------------------------------------------------
def write_manifest(build_dir: Path, manifest: dict[str, Any]) -> None:
    """Pin the manifest as a one-entry array map (bpffs holds no files)."""
    data = json.dumps(manifest, sort_keys=True).encode()
    size = (len(data) + 8) & ~7
    fd = libbpf.create_array("homegw_manifest", size)
    try:
        buffer = ctypes.create_string_buffer(data, size)
        libbpf.update(fd, ctypes.c_uint32(0), buffer)
        libbpf.obj_pin(fd, build_dir / MANIFEST)
    finally:
        os.close(fd)


def read_manifest(build_dir: Path) -> dict[str, Any] | None:
    """The manifest pinned in build_dir; None if there is none (or unreadable)."""
    try:
        fd = libbpf.obj_get(build_dir / MANIFEST)
    except OSError:
        return None
    try:
        buffer = ctypes.create_string_buffer(libbpf.map_info(fd).value_size)
        if not libbpf.lookup(fd, ctypes.c_uint32(0), buffer):
            return None
        return json.loads(buffer.raw.rstrip(b"\0"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def stale_objects(manifest: dict[str, Any]) -> list[str]:
    """Pins of the manifest that are gone or now hold another object (a shared
    map dropped and made anew since): such a build must not be reused."""
    stale = []
    for name, prog in manifest["programs"].items():
        if libbpf.pinned_id(prog["path"], "prog") != prog["id"]:
            stale.append(f"program {name}")
    for name, table in manifest["maps"].items():
        if libbpf.pinned_id(table["path"]) != table["id"]:
            stale.append(f"map {name} ({table['path']})")
    return stale


# -- the adopted build --------------------------------------------------------------
class AdoptedBuild:
    """A build opened by path: ``obj["map"]`` is a Table, programs are fds.
    What a module's on_load(bpf) receives in the appliance."""

    def __init__(self, spec: BuildSpec, manifest: dict[str, Any], reused: bool) -> None:
        self.spec = spec
        self.manifest = manifest
        self.key = manifest["key"]
        self.reused = reused  # found pinned, not compiled by this start
        self._tables: dict[str, Table] = {}
        self._prog_fds: dict[str, int] = {}

    @property
    def build_dir(self) -> Path:
        return Path(self.manifest["build_dir"])

    def __getitem__(self, name: str) -> Table:
        if name not in self._tables:
            try:
                spec = self.manifest["maps"][name]
            except KeyError:
                raise KeyError(f"{self.spec.name} has no map {name}") from None
            self._tables[name] = open_table(
                name,
                libbpf.obj_get(spec["path"]),
                spec["type"],
                decode_json(spec["key_desc"]),
                decode_json(spec["leaf_desc"]),
            )
        return self._tables[name]

    def program_fd(self, name: str, prog_type: str) -> int:
        """fd of the loaded function `name` (prog_type "xdp" or "tc")."""
        try:
            prog = self.manifest["programs"][name]
        except KeyError:
            raise LoadError(f"{self.spec.name} has no function {name}") from None
        if prog["type"] != prog_type:
            raise LoadError(
                f"{self.spec.name}: {name} is a {prog['type']} program, not {prog_type}"
            )
        if name not in self._prog_fds:
            self._prog_fds[name] = libbpf.obj_get(prog["path"])
        return self._prog_fds[name]

    def program_id(self, name: str) -> int:
        return int(self.manifest["programs"][name]["id"])

    def cleanup(self) -> None:
        """Close what this process opened; the pins stay."""
        for table in self._tables.values():
            table.close()
        for fd in self._prog_fds.values():
            os.close(fd)
        self._tables.clear()
        self._prog_fds.clear()


# -- getting builds --------------------------------------------------------------------
def _cached(spec: BuildSpec, key: str) -> dict[str, Any] | None:
    build_dir = spec.build_dir(key)
    manifest = read_manifest(build_dir)
    if manifest is None:
        if build_dir.exists():
            shutil.rmtree(build_dir, ignore_errors=True)
        return None
    stale = stale_objects(manifest)
    if stale:
        log.warning("build %s is stale (%s): building it again", build_dir.name, ", ".join(stale))
        shutil.rmtree(build_dir, ignore_errors=True)
        return None
    return manifest


def _run_children(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One build child per request, all at once; their manifests in order.
    Every child is waited for (or killed) before an error is raised: none
    outlives the call."""
    children = []
    try:
        for request in requests:
            child = subprocess.Popen(
                [sys.executable, "-m", "homegw.dataplane.build", json.dumps(request)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            children.append((request, child))
        answers = [_answer(request, child) for request, child in children]
    finally:
        for _, child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    errors = [answer for answer in answers if isinstance(answer, LoadError)]
    if errors:
        raise errors[0]
    return answers  # type: ignore[return-value]


def _answer(request: dict[str, Any], child: subprocess.Popen[str]) -> dict[str, Any] | LoadError:
    """The manifest one child made, or the error it met."""
    try:
        out, err = child.communicate(timeout=request["timeout_s"])
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return BuildLimit(f"building {request['name']} took over {request['timeout_s']:g} s")
    _relay(request["name"], err)
    try:
        answer = json.loads(out)
    except ValueError:
        if child.returncode < 0 and request.get("memory_bytes"):
            return BuildLimit(
                f"building {request['name']} stopped on signal {-child.returncode}: over its "
                f"limit of {request['memory_bytes'] >> 20} MiB of memory or "
                f"{request['timeout_s']:g} s of CPU"
            )
        return LoadError(
            f"the build child of {request['name']} failed (exit {child.returncode}): "
            f"{err.strip()[-4000:]}"
        )
    if "error" in answer:
        return LoadError(answer["error"])
    if "manifest" not in answer:
        return LoadError(f"the build child of {request['name']} answered nothing: {err[-4000:]}")
    return answer["manifest"]


def _relay(name: str, stderr: str) -> None:
    """The child's log lines ("LEVEL logger: message") into our log."""
    for line in stderr.splitlines():
        level, _, message = line.partition(" ")
        log.log(
            getattr(logging, level, logging.DEBUG) if level.isupper() else logging.DEBUG,
            "build %s: %s",
            name,
            message if level.isupper() else line,
        )


def get_builds(specs: Iterable[BuildSpec]) -> list[AdoptedBuild]:
    """The builds of specs (in order): reused when pinned with the same key,
    else compiled in parallel children."""
    specs = list(specs)
    keys = [spec.key() for spec in specs]
    found: dict[int, tuple[dict[str, Any], bool]] = {}
    wanted = []
    for index, (spec, key) in enumerate(zip(specs, keys, strict=True)):
        manifest = _cached(spec, key)
        if manifest is not None:
            log.info("%s: reusing pinned build %s", spec.name, key[:12])
            found[index] = (manifest, True)
        else:
            wanted.append(index)
    if wanted:
        requests = [specs[i].request(keys[i]) for i in wanted]
        if not (Path(specs[0].pin_dir) / FIRST_PIN).exists():
            # the first build pins the shared header's maps; the others,
            # built together, would race it to pin them
            built = _run_children(requests[:1]) + _run_children(requests[1:])
        else:
            built = _run_children(requests)
        for index, manifest in zip(wanted, built, strict=True):
            log.info("%s: compiled and pinned build %s", specs[index].name, keys[index][:12])
            found[index] = (manifest, False)
    return [AdoptedBuild(spec, *found[i]) for i, spec in enumerate(specs)]


def prune_builds(pin_dir: str, keep: Iterable[Path]) -> list[str]:
    """Unpin every build under pin_dir but those in keep (programs no chain
    and no NIC uses any more are freed with their pins). Returns their names."""
    root = Path(pin_dir) / BUILDS
    if not root.is_dir():
        return []
    keep_names = {Path(path).name for path in keep}
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name not in keep_names:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("unpinned %d unused builds: %s", len(removed), ", ".join(removed))
    return removed
