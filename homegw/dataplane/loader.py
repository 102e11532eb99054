"""Compile .bpf.c sources with bcc, the shared header on the include path."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from homegw.dataplane.pinned import possible_cpus

log = logging.getLogger(__name__)

INCLUDE_DIR = Path(__file__).parent / "include"
ROOT_SOURCE = Path(__file__).parent / "root.bpf.c"

Define = int | str


class LoadError(RuntimeError):
    """A BPF program did not compile or was refused by the verifier."""


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture file descriptor 2: bcc's clang and the verifier write there
    directly, and their text belongs in our error message."""
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            out.append(sink.read().decode(errors="replace"))


def _bcc():  # bcc has no type information
    try:
        import bcc
    except ImportError as exc:  # pragma: no cover - setup installs it
        raise LoadError(
            "bcc is not importable: install Debian's python3-bpfcc and run homegw from a venv "
            "made with --system-site-packages (scripts/setup.sh does both)"
        ) from exc
    return bcc


def cflags(pin_dir: str, module_id: int, defines: dict[str, Define]) -> list[str]:
    flags = [
        f"-I{INCLUDE_DIR}",
        f'-DHOMEGW_PIN_DIR="{pin_dir}"',
        f"-DHOMEGW_MODULE_ID={module_id}",
        f"-DHOMEGW_CPUS={possible_cpus()}",
        "-Wno-macro-redefined",
    ]
    flags += [f"-D{name}={value}" for name, value in defines.items()]
    return flags


#: Headers prepended to every source; a user module's also gets its SDK.
PRELUDE = ("homegw.h",)
USER_PRELUDE = ("homegw.h", "homegw_user.h")


#: Headers with map calls of their own that only some sources include: a
#: source's #include line of one is replaced by the header's text.
INLINED_HEADERS = ("homegw_fastpath.h",)


def program_text(source: Path, sdk: bool = False) -> str:
    """The shared header (and, for a user module, the SDK header) followed by
    the source, as one translation unit.

    bcc rewrites map calls (lookup, call, perf_submit) only in the main file,
    so the headers' inline helpers must be part of it. The source's own
    #include "homegw.h" is then a no-op thanks to the include guard; so is
    the inlined header's own.
    """
    headers = "\n".join(
        (INCLUDE_DIR / name).read_text() for name in (USER_PRELUDE if sdk else PRELUDE)
    )
    return f'{headers}\n#line 1 "{source}"\n{_inline_headers(source)}'


def _inline_headers(source: Path) -> str:
    lines = source.read_text().splitlines()
    for number, line in enumerate(lines):
        name = line.removeprefix("#include ").strip('"')
        if line.startswith("#include ") and name in INLINED_HEADERS:
            lines[number] = (
                f'#line 1 "{INCLUDE_DIR / name}"\n{(INCLUDE_DIR / name).read_text()}\n'
                f'#line {number + 2} "{source}"'
            )
    return "\n".join(lines) + "\n"


def compile_source(
    source: Path,
    *,
    pin_dir: str,
    module_id: int = 0,
    defines: dict[str, Define] | None = None,
    sdk: bool = False,
):  # returns bcc.BPF
    """Compile one source; its pinned maps are created or reused under pin_dir.
    sdk: a user module (homegw_user.h prepended too)."""
    bcc = _bcc()
    os.makedirs(pin_dir, exist_ok=True)
    flags = cflags(pin_dir, module_id, defines or {})
    log.debug("compiling %s with %s", source, flags)
    with captured_stderr() as diagnostics:
        try:
            return bcc.BPF(text=program_text(source, sdk), cflags=flags)
        except Exception as exc:  # bcc raises bare Exception on compile errors
            error = exc
    raise LoadError(f"cannot compile {source.name}: {error}\n{diagnostics[0][-4000:]}")


def load_function(bpf, name: str, prog_type: str) -> int:
    """Load one function of a compiled object as XDP or SCHED_CLS; return its fd.
    With an adopted build (the appliance: loaded by the build child) the
    function is already loaded and pinned: its fd is returned."""
    program_fd = getattr(bpf, "program_fd", None)
    if program_fd is not None:
        return program_fd(name, prog_type)
    bcc = _bcc()
    kind = {"xdp": bcc.BPF.XDP, "tc": bcc.BPF.SCHED_CLS}[prog_type]
    with captured_stderr() as verifier_log:
        try:
            return bpf.load_func(name, kind).fd
        except Exception as exc:
            error = exc
    raise LoadError(f"verifier refused {name}: {error}\n{verifier_log[0][-4000:]}")
