"""First boot: pick the WAN and LAN ports, write the default config, show the banner.

The image runs `homegw firstboot --config /etc/homegw/homegw.yaml` before
homegw.service. With no config file it probes the Ethernet ports
(homegw/portprobe.py), chooses WAN and LAN with `choose_ports` (pure: the
facts in, the choice and its reason out), writes the packaged default config
with the two interfaces and `dataplane.xdp_mode: auto`, and prints the console
banner (also written to /run/homegw/issue, which agetty shows). With a config
it only prints the banner; `--wan/--lan` rewrite the two interface lines.

The default file's comments are kept: the two `interface:` lines (and
`xdp_mode:`) are substituted in its text, and the result is loaded with the
project's config loader before it is written; a file whose lines cannot be
found is rewritten from its parsed data instead (without comments).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from homegw import __version__
from homegw.atomicfile import write_atomic
from homegw.config import ConfigError, _read_yaml, config_to_dict, load_config, parse_config
from homegw.configschema import Config

log = logging.getLogger(__name__)

PACKAGED_DEFAULT = Path("/usr/share/homegw/homegw.yaml")
SOURCE_DEFAULT = Path(__file__).resolve().parent.parent / "homegw.example.yaml"
ISSUE_FILE = Path("/run/homegw/issue")
CONFIG_MODE = 0o600


class FirstBootError(RuntimeError):
    """A refusal: the reason is for the console (exit 1, no config written)."""


@dataclass(frozen=True)
class PortFacts:
    """What the probe saw on one Ethernet port."""

    name: str
    carrier: bool = False
    offer_from: str | None = None  # the DHCP server that sent an OFFER here
    offered: str | None = None  # the address it offered

    @property
    def dhcp_answered(self) -> bool:
        return self.offer_from is not None


@dataclass(frozen=True)
class PortChoice:
    wan: str
    lan: str
    reason: str  # why this WAN, in words
    ports: tuple[str, ...] = field(default=())  # every candidate port, sorted


# -- the choice (pure) ------------------------------------------------------------


def choose_ports(ports: list[PortFacts]) -> PortChoice:
    """WAN: the port a DHCP server answered on; else the only port with a
    link; else the first by name. LAN: the first other port by name."""
    ordered = sorted(ports, key=lambda p: p.name)
    names = tuple(p.name for p in ordered)
    if len(ordered) < 2:
        found = ", ".join(names) or "none"
        raise FirstBootError(
            f"homegw needs two Ethernet ports (WAN and LAN); found {len(ordered)}: {found}"
        )
    wan, reason = _wan_of(ordered)
    lan = next(p for p in ordered if p.name != wan.name)
    return PortChoice(wan.name, lan.name, reason, names)


def _wan_of(ordered: list[PortFacts]) -> tuple[PortFacts, str]:
    answered = [p for p in ordered if p.dhcp_answered]
    if answered:
        port = answered[0]
        more = f" (also on {', '.join(p.name for p in answered[1:])})" if answered[1:] else ""
        return port, (
            f"a DHCP server ({port.offer_from}) answered on {port.name}, "
            f"offering {port.offered}{more}"
        )
    linked = [p for p in ordered if p.carrier]
    if len(linked) == 1:
        port = linked[0]
        return port, f"no DHCP server answered; {port.name} is the only port with a link"
    first = ordered[0]
    why = "no port has a link" if not linked else f"{len(linked)} ports have a link"
    return first, f"no DHCP server answered and {why}: {first.name} is the first port by name"


# -- the config file --------------------------------------------------------------


def default_config_text(chosen: Path | None = None) -> str:
    """The default config: `chosen`, else the packaged one (the .deb's copy),
    else the source tree's example."""
    if chosen is not None:
        try:
            return chosen.read_text(encoding="utf-8")
        except OSError as exc:
            raise FirstBootError(f"{chosen}: cannot read the default config: {exc}") from None
    for path in (PACKAGED_DEFAULT, SOURCE_DEFAULT):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FirstBootError(f"no default config: neither {PACKAGED_DEFAULT} nor {SOURCE_DEFAULT}")


def _set_line(text: str, section: str, key: str, value: str) -> str | None:
    """`text` with `section.key`'s value (a two-space indented line of the
    top-level `section:` block) replaced, its comment kept; None when the
    line is not there."""
    block = re.search(rf"(?m)^{section}:[^\n]*\n((?:(?:[ #][^\n]*)?\n)*)", text)
    if block is None:
        return None
    start, end = block.span(1)
    line = re.compile(rf"(?m)^(  {key}:[ \t]*)([^\s#]+)")
    found = line.search(text, start, end)
    if found is None:
        return None
    return text[: found.start(2)] + _scalar(value) + text[found.end(2) :]


def _scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when it reads back as itself, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*", value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def with_settings(text: str, settings: dict[tuple[str, str], str]) -> tuple[str, Config]:
    """The config text with each (section, key) set, and the Config it loads
    as (ConfigError if invalid). Lines substituted when all are found, else
    the parsed data rewritten as YAML."""
    edited: str | None = text
    for (section, key), value in settings.items():
        edited = _set_line(edited, section, key, value) if edited is not None else None
    if edited is not None:
        config = parse_config(_read_yaml(edited))  # the loader's own rules (duplicate keys...)
    else:
        edited, config = _rewritten(text, settings)
    for (section, key), value in settings.items():
        if getattr(getattr(config, section), key) != value:  # a substitution gone wrong
            raise ConfigError([f"{section}.{key}: {value!r} did not read back as itself"])
    return edited, config


def _rewritten(text: str, settings: dict[tuple[str, str], str]) -> tuple[str, Config]:
    """The config as data with the settings, dumped as YAML (comments lost)."""
    data = _read_yaml(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(["top level: must be a mapping of sections"])
    for (section, key), value in settings.items():
        if not isinstance(data.get(section), dict):
            data[section] = {}
        data[section][key] = value
    config = parse_config(data)
    log.warning("the config's interface lines were not found: rewritten without its comments")
    return yaml.safe_dump(config_to_dict(config), sort_keys=False), config


def write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"), mode=CONFIG_MODE)


def first_config(path: Path, choice: PortChoice, default: Path | None = None) -> Config:
    """Write the default config with the chosen ports and xdp_mode auto."""
    text, config = with_settings(
        default_config_text(default),
        {
            ("wan", "interface"): choice.wan,
            ("lan", "interface"): choice.lan,
            ("dataplane", "xdp_mode"): "auto",
        },
    )
    write_config(path, text)
    log.info("wrote %s: WAN %s, LAN %s", path, choice.wan, choice.lan)
    return config


def override_ports(path: Path, wan: str, lan: str, default: Path | None = None) -> Config:
    """Set the two interfaces in the config at `path` (the rest kept), or
    write the default config with them when there is none."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        settings = {("wan", "interface"): wan, ("lan", "interface"): lan}
    else:
        text = default_config_text(default)
        settings = {
            ("wan", "interface"): wan,
            ("lan", "interface"): lan,
            ("dataplane", "xdp_mode"): "auto",
        }
    new_text, config = with_settings(text, settings)
    write_config(path, new_text)
    return config


# -- the banner -------------------------------------------------------------------


def web_address(config: Config) -> str:
    listen = config.webui.listen
    host = str(config.lan.ip)
    port = listen.port if listen is not None else 80
    return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"


def setup_code(config: Config) -> tuple[bool, str | None]:
    """(whether the admin exists, the one-time setup code the first-run page
    asks for). The code is made here, before the appliance's first start
    (which reads the same file), so that the console can show it."""
    from homegw.auth import AuthStore

    try:
        store = AuthStore(Path(config.state_dir))
        if store.has_admin:
            return True, None
        return False, store.ensure_setup_token()
    except (OSError, ValueError) as exc:  # ValueError: a broken auth.json
        log.warning("cannot read or make the setup code in %s: %s", config.state_dir, exc)
        return False, None


def banner(
    config: Config, why_wan: str, why_lan: str, ports: tuple[str, ...] = (), code: str | None = None
) -> str:
    """The console text. `code`: the setup code (None once there is an admin)."""
    wan, lan = config.wan.interface, config.lan.interface
    url = web_address(config)
    lines = [
        f"homegw {__version__}",
        "",
        f"  WAN (internet): {wan}  ({why_wan})",
        f"  LAN (home):     {lan}  ({why_lan})",
        f"  LAN address:    {config.lan.ip}",
        "",
        f"Plug the modem into {wan}, the home switch/computer into {lan},",
    ]
    if code is not None:
        lines.append(f"then open {url} to set the admin password; setup code: {code}")
    else:
        lines.append(f"then open {url} to manage homegw.")
    lines += [
        "",
        "Other ports? Log in on this console and run:",
        "  homegw firstboot --wan <port> --lan <port> && systemctl restart homegw",
    ]
    if ports:
        lines.append(f"Ethernet ports found: {' '.join(ports)}")
    return "\n".join(lines) + "\n"


PORTS_ADVICE = (
    "Add a network port, or log in on this console and run:\n"
    "  homegw firstboot --wan <port> --lan <port> && systemctl restart homegw\n"
)


def refusal_banner(reason: str, advice: str = PORTS_ADVICE) -> str:
    return f"homegw {__version__}: not configured\n\n  {reason}\n\n{advice}"


def config_refusal_banner(path: Path, error: ConfigError) -> str:
    first = error.lines()[0] if error.lines() else str(error)
    more = f" (and {len(error.lines()) - 1} more)" if len(error.lines()) > 1 else ""
    advice = (
        f"Log in on this console, fix it (homegw check-config {path} lists every problem),\n"
        "then: systemctl restart homegw\n"
    )
    return refusal_banner(f"{first}{more}", advice)


def show(text: str, issue_file: Path | None) -> None:
    """Print the banner and write it where agetty's /etc/issue.d link points
    (backslashes doubled there: agetty reads `\\x` as an escape)."""
    print(text, end="")
    if issue_file is None:
        return
    try:
        issue_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(issue_file, text.replace("\\", "\\\\").encode("utf-8"), mode=0o644)
    except OSError as exc:
        log.warning("cannot write the console banner to %s: %s", issue_file, exc)


# -- the command ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """`homegw firstboot`'s options."""

    config: Path
    wan: str | None = None
    lan: str | None = None
    force: bool = False
    include_virtual: bool = False
    banner_only: bool = False
    issue_file: Path | None = ISSUE_FILE
    default_config: Path | None = None  # None: the packaged default


def run(request: Request) -> int:
    """0: the config is there (written now or before) and the banner shown;
    1: refused, with the reason on stderr (and in the banner)."""
    try:
        return _run(request)
    except FirstBootError as exc:
        print(f"homegw firstboot: {exc}", file=sys.stderr)
        show(refusal_banner(str(exc)), request.issue_file)
        return 1
    except ConfigError as exc:
        for line in exc.lines():
            print(f"homegw firstboot: {line}", file=sys.stderr)
        if request.config.exists():  # the console must not show an old, happy banner
            show(config_refusal_banner(request.config, exc), request.issue_file)
        return 1


def _run(request: Request) -> int:
    path = request.config
    if (request.wan is None) != (request.lan is None):
        raise FirstBootError("give both --wan and --lan (or neither)")
    if request.wan is not None and request.lan is not None:
        return _override(request, request.wan, request.lan)
    if request.banner_only or (path.exists() and not request.force):
        config = load_config(path)  # no config: ConfigError, "cannot read"
        _show_banner(request, config, f"from {path}", f"from {path}")
        return 0
    from homegw.portprobe import probe

    found = probe(include_virtual=request.include_virtual)
    choice = choose_ports(found.ports)
    if path.exists():
        config = override_ports(path, choice.wan, choice.lan)
    else:
        config = first_config(path, choice, request.default_config)
    print(f"wrote {path} (WAN {choice.wan}, LAN {choice.lan})", file=sys.stderr)
    _show_banner(request, config, choice.reason, "the first other port", choice.ports)
    return 0


def _show_banner(
    request: Request, config: Config, why_wan: str, why_lan: str, ports: tuple[str, ...] = ()
) -> None:
    has_admin, code = setup_code(config)
    if not has_admin and code is None:
        code = f"see {Path(config.state_dir) / 'setup-token'}"
    show(banner(config, why_wan, why_lan, ports, code), request.issue_file)


def _override(request: Request, wan: str, lan: str) -> int:
    from homegw.interfaces import missing_interfaces

    missing = missing_interfaces([wan, lan])
    if missing:
        from homegw.portprobe import candidate_ports

        present = " ".join(candidate_ports(request.include_virtual)) or "none"
        raise FirstBootError(f"no such port: {', '.join(missing)} (Ethernet ports: {present})")
    config = override_ports(request.config, wan, lan, request.default_config)
    print(
        f"wrote {request.config} (WAN {wan}, LAN {lan}); apply it with: systemctl restart homegw",
        file=sys.stderr,
    )
    _show_banner(request, config, "set on the console", "set on the console")
    return 0
