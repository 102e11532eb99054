"""The user-module part of tests/unit/fake_control.FakeControl: uploads kept
in dicts, a trial that only ends by confirm or revert, exposed maps of MAC
keys (8 bytes) and one-byte values, a real PuntHub for the punt streams."""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from homegw.control import ConfigRejected, Conflict, ModuleRefused, NotFound, Problem
from homegw.usermodules.punts import PuntHub, Subscription
from homegw.usermodules.spec import SourceRefused, check_source, name_problem

FIRST_USER_ID = 200
KEY_BYTES, VALUE_BYTES = 8, 1  # every exposed map of the fake: <hgw_mac_key, u8>
MAX_MAP_ENTRIES = 4
MIN_FRAME, MAX_FRAME = 14, 1514
COMPILE_ERROR = "undeclared_thing"  # a source naming it fails to compile (at that line)
VERIFIER_ERROR = "verifier_rejects"  # ... passes the compiler, not the verifier
VERIFIER_LOG = "0: (61) r1 = *(u32 *)(r1 +0)\ninvalid access to packet, off=0 size=4, R1(id=0)"
PASS_SOURCE = """#include "homegw_user.h"

int pass_all(struct xdp_md *ctx)
{
\thgw_count(0);
\treturn hgw_next_xdp(ctx);
}
"""
EXAMPLES = [
    {
        "name": "pass_all",
        "description": "counts every frame and passes it on",
        "upload": {"name": "pass_all", "source": PASS_SOURCE, "nic": "lan", "hook": "xdp",
                   "position": "first", "function": None, "defines": {}, "maps": [],
                   "counters": ["seen"], "trial_s": 60},
    }
]  # fmt: skip
HEALTHY = [
    {"name": "wan", "ok": True, "detail": "203.0.113.1 answered in 1 ms"},
    {"name": "dhcp", "ok": True, "detail": "offered 192.168.1.250"},
    {"name": "admin", "ok": None, "detail": "not on the LAN"},
]


def _refusal(source: str) -> ModuleRefused | None:
    """What the fake's "compiler" and "verifier" say of a source."""
    try:
        check_source(source)
    except SourceRefused as refused:
        first = refused.problems[0]
        return ModuleRefused("check", first.message, first.line)
    for number, line in enumerate(source.split("\n"), start=1):
        if COMPILE_ERROR in line:
            message = f"use of undeclared identifier '{COMPILE_ERROR}'"
            return ModuleRefused(
                "compile", message, number, f"module.c:{number}:5: error: {message}"
            )
        if VERIFIER_ERROR in line:
            return ModuleRefused("verifier", "invalid access to packet", number, VERIFIER_LOG)
    return None


class FakeUserModules:
    """Mixed into FakeControl (which has ``now``, ``order`` and ``calls``)."""

    now: float
    order: dict[str, list[str]]
    calls: list[tuple[Any, ...]]

    def _init_user_modules(self) -> None:
        self.user: dict[str, dict[str, Any]] = {}  # upload order
        self.user_maps: dict[tuple[str, str], dict[str, str]] = {}
        self.audit: list[dict[str, Any]] = []  # oldest first
        self.punt_hub = PuntHub()
        self.packets_out: list[tuple[str, str, bytes]] = []
        self._next_user_id = FIRST_USER_ID

    # -- helpers -------------------------------------------------------------
    def _user(self, name: str) -> dict[str, Any]:
        if name not in self.user:
            raise NotFound(f"no user module {name!r}")
        return self.user[name]

    def _record(self, action: str, module: str, caller: str | None, detail: str = "") -> None:
        version = self.user[module]["version"] if module in self.user else None
        self.audit.append({"time": self.now, "action": action, "module": module,
                           "version": version, "caller": caller, "detail": detail})  # fmt: skip

    def _check(self, upload: dict[str, Any], caller: str | None) -> None:
        why = name_problem(upload["name"])
        if why:
            raise ConfigRejected([Problem("name", why)])
        self._check_position(upload["name"], upload["nic"], upload["position"])
        refused = _refusal(upload["source"])
        if refused is not None:
            self._record_refusal(upload["name"], caller, refused)
            raise refused

    def _record_refusal(self, name: str, caller: str | None, refused: ModuleRefused) -> None:
        self.audit.append({"time": self.now, "action": "refused", "module": name,
                           "version": None, "caller": caller, "detail": str(refused)})  # fmt: skip

    def _check_position(self, name: str, nic: str, position: str) -> None:
        anchor = position.partition(":")[2]
        users = [n for n, m in self.user.items() if m["nic"] == nic and n != name]
        if anchor and anchor not in self.order[nic] + users:
            raise ConfigRejected([Problem("position", f"{anchor!r} is not in the {nic} chain")])

    def _trial(self, seconds: int) -> dict[str, Any]:
        ends = self.now + seconds
        return {"ends_at": ends, "remaining_s": float(seconds), "checks": copy.deepcopy(HEALTHY)}

    def _version(self, upload: dict[str, Any], version: int, module_id: int) -> dict[str, Any]:
        fields = ("nic", "hook", "position", "function", "defines", "maps", "source")
        return {
            "name": upload["name"],
            "kind": "user",
            "id": module_id,
            **{k: copy.deepcopy(upload[k]) for k in fields},
            "counters": dict.fromkeys(upload["counters"], 0),
            "enabled": True,
            "loaded": True,
            "state": "trial",
            "error": None,
            "trial": self._trial(upload["trial_s"]),
            "trial_s": upload["trial_s"],
            "version": version,
            "source_sha256": hashlib.sha256(upload["source"].encode()).hexdigest(),
            "uploaded_at": self.now,
            "confirmed_at": None,
            "chains": [{"nic": upload["nic"], "hook": upload["hook"], "position": 0}],
        }

    def _view(self, module: dict[str, Any], source: bool = False) -> dict[str, Any]:
        shown = {k: copy.deepcopy(v) for k, v in module.items() if k != "previous"}
        if not source:
            del shown["source"]
        return shown | {"punts": self.punt_hub.stats(module["name"])}

    def _forget(self, name: str) -> None:
        del self.user[name]
        for key in [k for k in self.user_maps if k[0] == name]:
            del self.user_maps[key]
        self.punt_hub.close_module(name)

    # -- the Control methods -------------------------------------------------
    def module_upload(self, upload: dict[str, Any], admin: str | None) -> dict[str, Any]:
        self.calls.append(("module_upload", upload["name"], admin))
        if upload["name"] in self.user:
            raise Conflict(f"a user module {upload['name']!r} exists: replace it (PUT)")
        self._check(upload, admin)
        self.user[upload["name"]] = self._version(upload, 1, self._next_user_id)
        self._next_user_id += 1
        for map_name in upload["maps"]:
            self.user_maps[(upload["name"], map_name)] = {}
        self._record("upload", upload["name"], admin)
        return self._view(self.user[upload["name"]])

    def module_replace(
        self, name: str, upload: dict[str, Any], admin: str | None
    ) -> dict[str, Any]:
        self.calls.append(("module_replace", name, admin))
        current = self._user(name)
        if upload["name"] != name:
            raise ConfigRejected([Problem("name", f"must be {name!r}, the module replaced")])
        if current["state"] == "trial":
            raise Conflict(f"{name!r} is on trial: confirm or revert it first")
        self._check(upload, admin)
        new = self._version(upload, current["version"] + 1, current["id"])
        self.user[name] = new | {"previous": current}
        self._record("replace", name, admin)
        return self._view(self.user[name])

    def user_modules(self) -> list[dict[str, Any]]:
        return [self._view(m) for m in self.user.values()]

    def user_module(self, name: str) -> dict[str, Any]:
        return self._view(self._user(name), source=True)

    def _on_trial(self, name: str) -> dict[str, Any]:
        module = self._user(name)
        if module["state"] != "trial":
            raise Conflict(f"{name!r} is not on trial")
        return module

    def module_confirm(self, name: str, caller: str | None = None) -> dict[str, Any]:
        module = self._on_trial(name)
        module.update(state="confirmed", trial=None, confirmed_at=self.now)
        module.pop("previous", None)
        self._record("confirm", name, caller)
        return self._view(self.user[name])

    def module_revert(self, name: str, caller: str | None = None) -> dict[str, Any] | None:
        module = self._on_trial(name)
        self._record("revert", name, caller, "by the caller")
        previous = module.get("previous")
        if previous is None:
            self._forget(name)
            return None
        self.user[name] = previous
        return self._view(previous)

    def module_delete(self, name: str, caller: str | None = None) -> None:
        self._user(name)
        self._record("delete", name, caller)
        self._forget(name)

    def module_move(self, name: str, position: str, caller: str | None = None) -> dict[str, Any]:
        module = self._user(name)
        self._check_position(name, module["nic"], position)
        module["position"] = position
        self._record("move", name, caller, position)
        return self._view(self.user[name])

    def _map(self, name: str, map_name: str) -> dict[str, str]:
        self._user(name)
        if (name, map_name) not in self.user_maps:
            raise NotFound(f"{name!r} exposes no map {map_name!r}")
        return self.user_maps[(name, map_name)]

    def module_map(self, name: str, map_name: str) -> list[dict[str, Any]]:
        entries = self._map(name, map_name)
        return [{"key": k, "value": v} for k, v in sorted(entries.items())]

    def module_map_set(
        self, name: str, map_name: str, key: str, value: str, caller: str | None = None
    ) -> None:
        entries = self._map(name, map_name)
        for loc, text, size in (("key", key, KEY_BYTES), ("value", value, VALUE_BYTES)):
            if not re.fullmatch(r"([0-9a-f]{2})*", text) or len(text) != 2 * size:
                raise ConfigRejected([Problem(loc, f"give {size} bytes as hex")])
        if key not in entries and len(entries) >= MAX_MAP_ENTRIES:
            raise Conflict(f"the map {map_name!r} is full ({MAX_MAP_ENTRIES} entries)")
        entries[key] = value
        self._record("map_set", name, caller, f"{map_name}[{key}]")

    def module_map_delete(
        self, name: str, map_name: str, key: str, caller: str | None = None
    ) -> bool:
        found = self._map(name, map_name).pop(key, None) is not None
        if found:
            self._record("map_delete", name, caller, f"{map_name}[{key}]")
        return found

    def module_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return copy.deepcopy(self.audit[::-1][:limit])

    def module_examples(self) -> list[dict[str, Any]]:
        return copy.deepcopy(EXAMPLES)

    def module_punts(self, name: str) -> Subscription:
        self._user(name)
        return self.punt_hub.subscribe(name)

    def module_packet_out(self, name: str, nic: str, frame: bytes) -> None:
        self._user(name)
        if not MIN_FRAME <= len(frame) <= MAX_FRAME:
            why = f"a frame is {MIN_FRAME} to {MAX_FRAME} bytes, not {len(frame)}"
            raise ConfigRejected([Problem("frame", why)])
        self.packets_out.append((name, nic, frame))

    def user_set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """module_set_enabled of a user module."""
        module = self._user(name)
        module["enabled"] = enabled
        if module["state"] != "trial":
            module["state"] = "confirmed" if enabled else "disabled"
        module["chains"] = [{"nic": module["nic"], "hook": module["hook"], "position": 0}][
            : int(enabled)
        ]
        self._record("enable" if enabled else "disable", name, None)
        return {"name": name, "enabled": enabled}
