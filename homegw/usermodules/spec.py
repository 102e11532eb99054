"""What a user module upload is (a pydantic model the API validates and the
OpenAPI document shows) and the source check that keeps a user module to
its SDK (homegw/dataplane/include/homegw_user.h) before anything compiles.

The check works on the source after line splicing, with comments and string
literals blanked and digraphs spelled out, token by token: it refuses names
of homegw's own (``homegw_*``, ``HOMEGW_*``, the chain, cursor and slow-path
maps), pinned or shared tables, ``bpf_pseudo_fd`` (a raw map fd), inline
assembly, pragmas, attributes, token pasting and stringizing (which could
build any of these names or a pinned map's path), trigraphs, backslashes
outside strings (universal character names), string literals holding ``:``
or ``/`` (a bcc map type string with them opens a pinned map by its path),
includes other than the SDK header and kernel headers, and redirects
(XDP_TX, bpf_redirect*: forwarding is the router's, and a redirect past NAT
would send a LAN address out of the WAN). Every refusal names its line. The
upload's -D options go through the same name check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from homegw.registry import MODULE_NAMES

MAX_SOURCE_BYTES = 64 * 1024
MAX_DEFINES = 16
MAX_MAPS = 8
MAX_COUNTERS = 16  # HGW_MAX_COUNTERS
TRIAL_DEFAULT_S = 60
TRIAL_MIN_S, TRIAL_MAX_S = 10, 600
#: names the API's paths use next to /modules/<name>
RESERVED_NAMES = frozenset({"order", "audit", "examples", "user"})
#: the dataplane's own builds (pinned as builds/<name>-<key>)
BUILD_NAMES = frozenset({"root_lan", "root_wan", "fragment"})

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
DefineName = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")]
DefineText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/+-]{0,64}$")]
MapName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,31}$")]
CounterName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
#: where in its chain a module goes: first, last, or next to a module
POSITION_PATTERN = r"^(first|last|(before|after):[a-z][a-z0-9_]{0,31})$"
Position = Annotated[str, StringConstraints(pattern=POSITION_PATTERN)]


class ModulePlacement(BaseModel):
    """Where a module sits: one NIC, one hook, a place in that chain."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    nic: Literal["lan", "wan"]
    hook: Literal["xdp", "tc"] = Field(
        "xdp", description="xdp: XDP ingress of the NIC; tc: TC egress of the NIC"
    )
    position: Position = Field(
        "first",
        description="first, last, before:<module> or after:<module> (a module of that chain)",
    )


class ModuleUpload(ModulePlacement):
    """A user module: its C source (including homegw_user.h) and how to run it."""

    name: Name
    source: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SOURCE_BYTES)]
    function: Name | None = Field(
        None, description="the program to chain; by default the source's only program"
    )
    defines: dict[DefineName, int | DefineText] = Field(
        default_factory=dict, max_length=MAX_DEFINES, description="-D options"
    )
    maps: list[MapName] = Field(
        default_factory=list,
        max_length=MAX_MAPS,
        description="the module's own maps the API may read and write",
    )
    counters: list[CounterName] = Field(
        default_factory=list,
        max_length=MAX_COUNTERS,
        description="names of hgw_count() indexes 0, 1, ...",
    )
    trial_s: Annotated[int, Field(ge=TRIAL_MIN_S, le=TRIAL_MAX_S)] = TRIAL_DEFAULT_S

    @field_validator("defines")
    @classmethod
    def _defines_are_the_modules_own(cls, defines: dict) -> dict:
        """A -D option is source too: it may not set HOMEGW_MODULE_ID (punt
        as another module) nor expand to a name the source check refuses."""
        for name, value in defines.items():
            for token in [name, *IDENTIFIER.findall(str(value))]:
                why = _forbidden(token)
                if why:
                    raise ValueError(f"{name}: {token}: {why}")
        return defines


class MapEntry(BaseModel):
    """One entry of an exposed map: key and value as hex of their bytes
    (a MAC key of the examples: the 6 bytes then 2 zero bytes)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{2}){1,256}$")]
    value: Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{2}){1,4096}$")]


@dataclass(frozen=True)
class SourceProblem:
    line: int  # 1-based line of the source
    message: str


class SourceRefused(ValueError):
    def __init__(self, problems: list[SourceProblem]) -> None:
        first = problems[0]
        super().__init__(f"line {first.line}: {first.message}")
        self.problems = problems


def name_problem(name: str) -> str | None:
    """Why a user module cannot have this name, or None."""
    if name in MODULE_NAMES:
        return f"{name!r} is a built-in module"
    if name in RESERVED_NAMES or name in BUILD_NAMES:
        return f"{name!r} is reserved"
    return None


# -- the source check ------------------------------------------------------------------
FORBIDDEN = (
    (re.compile(r"^(homegw|HOMEGW)\w*$"), "homegw's own names are not for user modules: use hgw_*"),
    (
        re.compile(r"^(chain_(xdp|tc|fragment|generation|stats)|cursor_(xdp|tc)|slowpath)$"),
        "the chain's maps are the gateway's",
    ),
    (re.compile(r"^BPF_\w*(PINNED|PUBLIC|SHARED)\w*$"), "only private maps: no pinned or shared"),
    (re.compile(r"^(bpf_pseudo_fd|__builtin_bpf\w*)$"), "no raw map descriptors"),
    (re.compile(r"^(asm|__asm__|__asm|_Pragma|__pragma)$"), "no inline assembly or pragmas"),
    (re.compile(r"^__attribute__$"), "no attributes (sections decide what is loaded)"),
    (
        re.compile(r"^(bpf_redirect\w*|bpf_clone_redirect|XDP_TX|XDP_REDIRECT|TC_ACT_REDIRECT)$"),
        "forwarding is the router's: continue, drop, pass or punt",
    ),
)
ALLOWED_INCLUDE = re.compile(r'^\s*#\s*include\s*(<(uapi/)?linux/[\w/]+\.h>|"homegw_user\.h")\s*$')
DIRECTIVE = re.compile(r"^\s*#\s*(\w+)")
ALLOWED_DIRECTIVES = frozenset(
    {"include", "define", "undef", "if", "ifdef", "ifndef", "elif", "else", "endif"}
)
TOKEN = re.compile(r"[A-Za-z_]\w*|##|#|.", re.S)
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
TRIGRAPH = re.compile(r"\?\?[=/'()!<>\-]")
#: C escapes in a string literal, decoded before its characters are checked
ESCAPE = re.compile(r"\\(x[0-9a-fA-F]+|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)
SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
LITERAL_FORBIDDEN = ":/"


def _forbidden(token: str) -> str | None:
    for pattern, why in FORBIDDEN:
        if pattern.match(token):
            return why
    return None


@dataclass(frozen=True)
class _Scanned:
    text: str  # the spliced source, comments and literals blanked, digraphs spelled out
    literals: list[tuple[int, str]]  # (line index in text, content) of each string literal


def _scan(text: str) -> _Scanned:
    """Comments and string/char literals replaced by spaces (newlines kept),
    after line splicing: what the compiler's tokens are."""
    spliced = re.sub(r"\\\r?\n", "", text)
    out, literals, i, n = [], [], 0, len(spliced)
    while i < n:
        two = spliced[i : i + 2]
        if two == "//":
            end = spliced.find("\n", i)
            end = n if end < 0 else end
        elif two == "/*":
            end = spliced.find("*/", i + 2)
            end = n if end < 0 else end + 2
        elif spliced[i] in "\"'":
            end = _literal_end(spliced, i)
            if spliced[i] == '"':
                literals.append((spliced.count("\n", 0, i), spliced[i + 1 : end - 1]))
        else:
            out.append(spliced[i])
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", spliced[i:end]))
        i = end
    # digraphs: %:%: is ## and %: is # (the others are brackets)
    blanked = "".join(out).replace("%:%:", "##  ").replace("%:", "# ")
    return _Scanned(blanked, literals)


def _literal_end(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text) and text[i] not in (quote, "\n"):
        i += 2 if text[i] == "\\" else 1
    return min(i + 1, len(text))


def _spliced_line_numbers(text: str) -> list[int]:
    """For each line of the spliced text, the original line it starts on."""
    numbers, line = [1], 1
    for part in re.split(r"(\\\r?\n|\n)", text):
        if part == "\n":
            line += 1
            numbers.append(line)
        elif part.startswith("\\"):
            line += 1
    return numbers


def check_source(source: str) -> None:
    """SourceRefused with every problem found (by line), or nothing."""
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise SourceRefused([SourceProblem(1, f"the source is over {MAX_SOURCE_BYTES} bytes")])
    if "\0" in source:
        raise SourceRefused([SourceProblem(1, "the source holds a NUL byte")])
    numbers = _spliced_line_numbers(source)

    def line_of(index: int) -> int:
        return numbers[index] if index < len(numbers) else numbers[-1]

    scanned = _scan(source)
    problems = _trigraph_problems(source)
    for index, line in enumerate(scanned.text.split("\n")):
        problems += _line_problems(line, line_of(index), source)
    for index, content in scanned.literals:
        problems += _literal_problems(content, line_of(index))
    if problems:
        raise SourceRefused(sorted(problems, key=lambda p: p.line))


def _trigraph_problems(source: str) -> list[SourceProblem]:
    return [
        SourceProblem(source.count("\n", 0, m.start()) + 1, f"no trigraphs ({m.group()})")
        for m in TRIGRAPH.finditer(source)
    ]


def _line_problems(line: str, number: int, source: str) -> list[SourceProblem]:
    problems = []
    directive = DIRECTIVE.match(line)
    if directive:
        word = directive.group(1)
        if word not in ALLOWED_DIRECTIVES:
            problems.append(SourceProblem(number, f"#{word} is not allowed"))
        elif word == "include" and not ALLOWED_INCLUDE.match(_original_line(source, number)):
            problems.append(
                SourceProblem(number, 'only #include "homegw_user.h" and <linux/...> headers')
            )
    if "\\" in line:
        problems.append(SourceProblem(number, "no backslash outside strings (\\u names)"))
    tokens = TOKEN.findall(line)
    if directive:
        tokens.remove("#")  # the directive's own
    for token in tokens:
        if token == "##":
            problems.append(SourceProblem(number, "no token pasting (##)"))
        elif token == "#":
            problems.append(SourceProblem(number, "no stringizing (#)"))
        elif why := _forbidden(token):
            problems.append(SourceProblem(number, f"{token}: {why}"))
    return problems


def _literal_problems(content: str, number: int) -> list[SourceProblem]:
    text = ESCAPE.sub(_unescape, content)
    if any(c in text for c in LITERAL_FORBIDDEN):
        return [SourceProblem(number, 'no ":" or "/" in strings (a pinned map\'s path)')]
    return []


def _unescape(match: re.Match) -> str:
    body = match.group(1)
    if body[0] in "xuU":
        return chr(min(int(body[1:], 16), 0x10FFFF))
    if body[0] in "01234567":
        return chr(int(body, 8))
    return SIMPLE_ESCAPES.get(body, body)


def _original_line(source: str, number: int) -> str:
    lines = source.split("\n")
    return lines[number - 1] if 0 < number <= len(lines) else ""
