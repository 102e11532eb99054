"""The Control methods of user modules (homegw/control.py documents them),
mixed into homegw.management.Management: request bodies validated with the
upload model (ConfigRejected with key paths), then the appliance's
UserModules manager (homegw/usermodules/manager.py) does the work."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from homegw.control import ConfigRejected, Conflict, Problem, Sample
from homegw.usermodules.spec import POSITION_PATTERN, ModuleUpload

if TYPE_CHECKING:
    from homegw.appliance import Appliance
    from homegw.usermodules.manager import UserModules


def _upload(document: Any) -> ModuleUpload:
    if not isinstance(document, dict):
        raise ConfigRejected([Problem("", "must be an object")])
    try:
        return ModuleUpload.model_validate(document)
    except ValidationError as exc:
        raise ConfigRejected(
            [Problem(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        ) from None


class UserModuleControl:
    appliance: Appliance

    def _users(self) -> UserModules:
        users = self.appliance.user_modules
        if users is None:
            raise Conflict("the appliance is starting or restarting: try again")
        return users

    def module_upload(self, upload: dict[str, Any], admin: str | None) -> dict[str, Any]:
        return self._users().upload(_upload(upload), admin)

    def module_replace(
        self, name: str, upload: dict[str, Any], admin: str | None
    ) -> dict[str, Any]:
        return self._users().replace(name, _upload(upload), admin)

    def user_modules(self) -> list[dict[str, Any]]:
        users = self.appliance.user_modules
        return [users.describe(name) for name in users.names()] if users else []

    def user_module(self, name: str) -> dict[str, Any]:
        return self._users().describe(name, source=True)

    def module_confirm(self, name: str, caller: str | None = None) -> dict[str, Any]:
        return self._users().confirm(name, caller)

    def module_revert(self, name: str, caller: str | None = None) -> dict[str, Any] | None:
        users = self._users()
        users.revert(name, caller)
        return users.describe(name) if users.is_user_module(name) else None

    def module_delete(self, name: str, caller: str | None = None) -> None:
        self._users().delete(name, caller)

    def module_move(self, name: str, position: str, caller: str | None = None) -> dict[str, Any]:
        if not isinstance(position, str) or not re.match(POSITION_PATTERN, position):
            raise ConfigRejected(
                [Problem("position", "first, last, before:<module> or after:<module>")]
            )
        return self._users().move(name, position, caller)

    def module_map(self, name: str, map_name: str) -> list[dict[str, Any]]:
        return self._users().map_rows(name, map_name)

    def module_map_set(
        self, name: str, map_name: str, key: str, value: str, caller: str | None = None
    ) -> None:
        self._users().map_set(name, map_name, key, value, caller)

    def module_map_delete(
        self, name: str, map_name: str, key: str, caller: str | None = None
    ) -> bool:
        return self._users().map_delete(name, map_name, key, caller)

    def module_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._users().audit.entries(limit)

    def module_examples(self) -> list[dict[str, Any]]:
        from homegw.usermodules.examples.examples import examples  # reads the files

        return examples()

    def module_punts(self, name: str) -> Any:
        return self._users().subscribe(name)

    def module_packet_out(self, name: str, nic: str, frame: bytes) -> None:
        self._users().packet_out(name, nic, frame)

    def user_module_samples(self) -> Iterable[Sample]:
        """Punts handed to each user module's subscribers, and their drops
        (the modules' counters are in module_packets_total)."""
        users = self.appliance.user_modules
        for name in users.names() if users else []:
            stats = users.hub.stats(name)
            for key in ("delivered", "dropped"):
                yield Sample(
                    f"user_module_punts_{key}_total",
                    "counter",
                    "Punts of a user module to its API subscribers: delivered, dropped",
                    {"module": name},
                    stats[key],
                )
        if users:
            yield Sample(
                "user_module_packets_out_total",
                "counter",
                "Frames user modules' controllers sent out through the API",
                {},
                users.packets_out,
            )
