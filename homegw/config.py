"""The homegw configuration: load, parse, save, report errors, diff.

The file is YAML; every section is a frozen pydantic model that rejects unknown
keys (root sections in :mod:`homegw.configschema`, module sections in
``homegw/modules/<name>/config.py``).  Every problem is reported at once, as
``"<dotted.key.path>: <reason>"`` entries of :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from homegw.atomicfile import write_atomic
from homegw.configschema import (
    CROSS_CHECK,
    Config,
    DataplaneConfig,
    LanConfig,
    WanConfig,
    WebuiConfig,
    partial_problems,
)
from homegw.configtypes import Loc, shown
from homegw.modules.dhcp.config import DhcpConfig, default_range
from homegw.modules.dns.config import DnsConfig
from homegw.modules.dpi.config import DpiConfig
from homegw.modules.nat.config import NatConfig
from homegw.modules.router.config import RouterConfig

__all__ = [
    "Config",
    "ConfigError",
    "DataplaneConfig",
    "DhcpConfig",
    "DnsConfig",
    "DpiConfig",
    "LanConfig",
    "NatConfig",
    "RouterConfig",
    "WanConfig",
    "WebuiConfig",
    "check_config_main",
    "changed_keys",
    "config_diff",
    "config_to_dict",
    "load_config",
    "load_or_report",
    "parse_config",
    "save_config",
]


class ConfigError(Exception):
    """Invalid configuration; ``errors`` holds one ``"<key.path>: <reason>"`` per problem.

    ``file`` is the file the errors are about (set by :func:`load_config`), or
    None when the entries stand alone.
    """

    def __init__(self, errors: list[str], file: str | None = None) -> None:
        self.errors = list(errors)
        self.file = file
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The errors as printed: ``"<file>: <key.path>: <reason>"`` when ``file`` is set."""
        return [f"{self.file}: {e}" if self.file else e for e in self.errors]


# --- error messages ---------------------------------------------------------------

_FIXED = {
    "extra_forbidden": "unknown key",
    "invalid_key": "unknown key",
    "missing": "required",
}
_TYPE_NAMES = {
    "bool": "true or false",
    "int": "an integer",
    "string": "a string",
    "list": "a list",
    "tuple": "a list",
    "model": "a mapping (key: value)",
    "model_attributes": "a mapping (key: value)",
    "dict": "a mapping (key: value)",
}


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc) or "top level"


def _message(error: ErrorDetails) -> str:
    """A human reason for one pydantic error."""
    kind, ctx = error["type"], error.get("ctx", {})
    type_name = re.sub(r"_(type|parsing|from_float)$", "", kind)
    if kind in _FIXED:
        return _FIXED[kind]
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return f"must be one of: {choices} (not {shown(error['input'])})"
    if type_name in _TYPE_NAMES and type_name != kind:
        return f"must be {_TYPE_NAMES[type_name]}, not {shown(error['input'])}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = "least" if kind == "greater_than_equal" else "most"
        return f"must be at {bound} {ctx.get('ge', ctx.get('le'))}, not {error['input']}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    return error["msg"]


def _problem_lines(exc: ValidationError, data: dict[Any, Any]) -> list[str]:
    errors = exc.errors()
    lines = [f"{_dotted(e['loc'])}: {_message(e)}" for e in errors]
    if not any(e["type"] == CROSS_CHECK for e in errors):
        # Field errors stopped validation before the cross-section checks ran:
        # run them on the sections that are valid, so everything shows at once.
        lines += [f"{_dotted(loc)}: {reason}" for loc, reason in partial_problems(data)]
    return lines


# --- YAML ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a yaml.SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError([f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"YAML: {exc}"]) from None


def _kind(data: object) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(data), type(data).__name__)


# --- public API ------------------------------------------------------------------


def parse_config(data: object) -> Config:
    """Validate plain data (as read from YAML or JSON) into a Config; raises ConfigError."""
    if data is None:
        raise ConfigError(["top level: the file is empty; it needs at least wan and lan"])
    if not isinstance(data, dict):
        raise ConfigError([f"top level: must be a mapping of sections, not {_kind(data)}"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problem_lines(exc, data)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; raises ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from None
    try:
        return parse_config(_read_yaml(text))
    except ConfigError as exc:
        raise ConfigError(exc.errors, file=os.fspath(path)) from None


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain data that :func:`parse_config` turns back into an equal Config.

    Values that equal what would be derived anyway (DHCP range and web UI
    address from ``lan.address``, a port forward's internal port) and unset
    optional values are left out, so a later change of ``lan.address`` carries
    the derived values along.
    """
    data = config.model_dump(mode="json")
    if (config.dhcp.range_start, config.dhcp.range_end) == default_range(config.lan.address):
        del data["dhcp"]["range_start"], data["dhcp"]["range_end"]
    if config.webui.listen is not None and config.webui.listen == (config.lan.ip, 80):
        del data["webui"]["listen"]
    for forward, dumped in zip(config.nat.port_forwards, data["nat"]["port_forwards"], strict=True):
        if forward.internal_port == forward.external_port.low:
            del dumped["internal_port"]
    return _without_none(data)


def _without_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_without_none(v) for v in data]
    return data


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically (temp file in the same dir, fsync, rename)."""
    text = _HEADER + yaml.safe_dump(config_to_dict(config), sort_keys=False)
    write_atomic(Path(path), text.encode("utf-8"))


_HEADER = "# homegw configuration, written by homegw (homegw.example.yaml documents every key)\n"


def config_diff(old: Config, new: Config) -> set[str]:
    """Names of the top-level keys (sections, ``state_dir``, ``log_level``) that differ."""
    return {name for name in Config.model_fields if getattr(old, name) != getattr(new, name)}


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted paths of the values that differ (a list counts as one value)."""
    return sorted(_changed(old.model_dump(mode="json"), new.model_dump(mode="json"), ()))


def _changed(old: Any, new: Any, at: tuple[str, ...]) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            path
            for key in dict.fromkeys([*old, *new])
            for path in _changed(old.get(key), new.get(key), (*at, str(key)))
        ]
    return [".".join(at)] if old != new else []


def load_or_report(path: str | Path) -> Config | None:
    """The config, or None after printing every error with its key path to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.lines():
            print(f"homegw: {line}", file=sys.stderr)
        return None


def check_config_main(path: str) -> int:
    """``homegw check-config FILE``: print the problems to stderr (1) or ``FILE: OK`` (0)."""
    try:
        load_config(path)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0
