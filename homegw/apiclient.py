"""The CLI's side of the management API: find the running appliance from its
config (webui.listen, state_dir), call it with the local token that the
appliance writes into state_dir at start (readable by root only), and print
its answers the way a person reads them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from homegw.auth import read_local_token

TIMEOUT_S = 60  # a config apply may reload a module


class ApiError(Exception):
    """The appliance refused (status, its JSON answer) or cannot be reached
    (status 0)."""

    def __init__(self, status: int, message: str, problems: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []

    def lines(self) -> list[str]:
        if not self.problems:
            return [str(self)]
        return [f"{p['loc']}: {p['msg']}" for p in self.problems]


@dataclass
class ApiClient:
    base_url: str
    token: str

    @classmethod
    def for_config(cls, config_path: str) -> ApiClient:
        from homegw.config import load_config

        config = load_config(config_path)
        listen = config.webui.listen
        assert listen is not None  # derived from lan.address when unset
        host = "127.0.0.1" if str(listen.host) == "0.0.0.0" else str(listen.host)
        try:
            token = read_local_token(Path(config.state_dir))
        except OSError as exc:
            raise ApiError(0, f"no local token ({exc}): is the appliance running? root?") from None
        return cls(f"http://{host}:{listen.port}", token)

    def call(self, method: str, path: str, document: Any = None) -> Any:
        data = None if document is None else json.dumps(document).encode()
        request = urllib.request.Request(f"{self.base_url}/api/v1{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach the appliance at {self.base_url}: {reason}") from None
        return json.loads(body) if body else None


def _refusal(exc: urllib.error.HTTPError) -> ApiError:
    try:
        answer = json.loads(exc.read())
    except ValueError:
        answer = {}
    message = answer.get("error", exc.reason) if isinstance(answer, dict) else exc.reason
    problems = answer.get("problems") if isinstance(answer, dict) else None
    return ApiError(exc.code, f"{exc.code}: {message}", problems)


# -- editing a document by dotted key -------------------------------------------


def _step(node: Any, part: str, create: bool) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise KeyError(part)
        return node[int(part)]
    if isinstance(node, dict):
        if part not in node:
            if not create:
                raise KeyError(part)
            node[part] = {}
        return node[part]
    raise KeyError(part)


def set_dotted(document: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.0.c`` in `document` (dict keys are made on the way; list
    indexes must exist). KeyError names the first part that cannot be."""
    *path, last = key.split(".")
    node: Any = document
    for part in path:
        node = _step(node, part, create=True)
    if isinstance(node, list):
        if not last.isdigit() or int(last) > len(node):
            raise KeyError(last)
        if int(last) == len(node):
            node.append(value)
        else:
            node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(last)


# -- printing -------------------------------------------------------------------


def as_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")


def modules_table(modules: list[dict[str, Any]]) -> str:
    rows = [("MODULE", "ENABLED", "LOADED", "CHAINS", "COUNTERS")]
    for module in modules:
        chains = " ".join(
            f"{c['nic']}/{c['hook']}:{c['position']}" for c in module.get("chains", [])
        )
        counters = " ".join(f"{k}={v}" for k, v in module.get("counters", {}).items() if v)
        rows.append(
            (
                module["name"],
                "yes" if module.get("enabled") else "no",
                "yes" if module.get("loaded") else "no",
                chains or "-",
                counters or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    )


def applied(result: dict[str, Any]) -> str:
    changed = ", ".join(result.get("changed", [])) or "nothing"
    if result.get("dry_run"):
        return f"valid; would change: {changed}"
    how = ", ".join(f"{k}: {v}" for k, v in result.get("applied", {}).items())
    return f"applied as version {result.get('version')}; changed: {changed}" + (
        f" ({how})" if how else ""
    )
