"""A user module's build refusal in the user's terms: which stage refused it
(the compiler, the verifier, a limit), the compiler's or the verifier's own
message, and the line of the uploaded source it points at.

The build child (homegw/dataplane/build.py) reports a failure as one text: a
clang diagnostic names ``<source path>:<line>:<column>: error: ...`` (the
loader's #line directive makes the uploaded file line 1); a verifier log
interleaves the source lines it walked (``; <code> @ <file>:<line>``, from
BTF line info) with instructions and ends with the reason and a
``processed N insns`` summary.
"""

from __future__ import annotations

import re
from pathlib import Path

from homegw.control import ModuleRefused
from homegw.dataplane.builds import BuildLimit
from homegw.dataplane.loader import LoadError

LOG_TAIL = 4000
CLANG = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): (?:fatal )?error: (?P<msg>.*)$"
)
LINE_INFO = re.compile(r"^; .* @ (?P<file>\S+):(?P<line>\d+)$")
BRACE = re.compile(r"^; [{}] @ ")  # a function's braces: the code is elsewhere
INSN = re.compile(r"^\d+: ")
SUMMARY = re.compile(r"^processed \d+ insns")
MEMORY = re.compile(r"memory limit|out of memory|Cannot allocate memory|std::bad_alloc", re.I)


def refusal(error: LoadError, source: Path) -> ModuleRefused:
    text = str(error)
    tail = text[-LOG_TAIL:]
    if isinstance(error, BuildLimit):
        return ModuleRefused("limit", str(error), None, tail)
    if MEMORY.search(text):
        return ModuleRefused("limit", "the compiler ran out of its memory limit", None, tail)
    if "verifier refused" in text:
        message, line = verifier_message(text, source)
        return ModuleRefused("verifier", message, line, tail)
    message, line = compiler_message(text, source)
    return ModuleRefused("compile", message, line, tail)


def compiler_message(text: str, source: Path) -> tuple[str, int | None]:
    """The first error clang names (in the uploaded source if there is one)."""
    first: tuple[str, int | None] | None = None
    for raw in text.splitlines():
        match = CLANG.match(raw.strip())
        if not match:
            continue
        if Path(match["file"]).name == source.name:
            return match["msg"], int(match["line"])
        first = first or (f"{Path(match['file']).name}: {match['msg']}", None)
    if first:
        return first
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else text), None


def verifier_message(text: str, source: Path) -> tuple[str, int | None]:
    """The verifier's reason (the lines between the last instruction and the
    summary) and the last source line it walked in the uploaded file."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if SUMMARY.match(line)), len(lines))
    reason: list[str] = []
    line_no: int | None = None
    for line in lines[:end]:
        info = LINE_INFO.match(line)
        if info:
            if Path(info["file"]).name == source.name and not BRACE.match(line):
                line_no = int(info["line"])
            reason = []
        elif INSN.match(line) or line.startswith("verifier refused") or not line.strip():
            reason = []
        else:
            reason.append(line.strip())
    message = "; ".join(reason) or next((x for x in lines if x.strip()), text)
    return message, line_no
