"""Config section ``router:`` of the router IO module (static routes, neighbour aging)."""

from __future__ import annotations

from typing import Annotated

from pydantic import StrictBool, model_validator

from homegw.configtypes import (
    Duration,
    IPv4Address,
    IPv4Network,
    Problem,
    Section,
    duplicates,
    duration_range,
    raise_problems,
)


class Route(Section):
    """A static route: traffic for ``destination`` goes to the next hop ``via``."""

    destination: IPv4Network
    via: IPv4Address


class RouterConfig(Section):
    """``router:`` -- IPv4 forwarding between LAN and WAN."""

    enabled: StrictBool = True
    routes: tuple[Route, ...] = ()
    neighbour_timeout: Annotated[Duration, duration_range(1)] = 300

    @model_validator(mode="after")
    def _check(self) -> RouterConfig:
        problems: list[Problem] = [
            (("routes", i, "destination"), f"duplicate route to {self.routes[i].destination}")
            for i in duplicates(route.destination for route in self.routes)
        ]
        raise_problems("RouterConfig", problems)
        return self
