"""The example user IO modules shipped with homegw: their sources (next to
this file) and how each is uploaded. examples() is what
GET /api/v1/modules/examples lists, each ready to POST to /api/v1/modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from homegw.usermodules.spec import ModuleUpload

SOURCE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    nic: str
    hook: str
    position: str
    maps: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()
    defines: dict[str, int | str] = field(default_factory=dict)

    @property
    def source_path(self) -> Path:
        return SOURCE_DIR / f"{self.name}.bpf.c"

    def upload(self) -> ModuleUpload:
        """The upload of this example, its source read from the file."""
        return ModuleUpload(
            name=self.name,
            source=self.source_path.read_text(),
            nic=self.nic,
            hook=self.hook,
            position=self.position,
            function=self.name,
            defines=dict(self.defines),
            maps=list(self.maps),
            counters=list(self.counters),
        )


EXAMPLES: tuple[Example, ...] = (
    Example(
        name="mac_blocklist",
        description=(
            "Drop every frame from the LAN devices whose MAC is in the map `blocked` "
            '(key: the MAC\'s 12 hex digits then "0000", value "01").'
        ),
        nic="lan",
        hook="xdp",
        position="first",
        maps=("blocked",),
        counters=("passed", "blocked", "short"),
    ),
    Example(
        name="isolate",
        description=(
            "Isolate the devices whose MAC is in the map `isolated` from the rest of the LAN: "
            "they reach the internet and the gateway's DHCP and DNS, nothing else through the "
            "gateway, and no other device reaches them through it. Frames two hosts exchange "
            "directly (same switch or access point) never reach the gateway."
        ),
        nic="lan",
        hook="xdp",
        position="after:router",
        maps=("isolated",),
        counters=("internet", "service", "to_gateway", "to_lan", "to_isolated", "other"),
    ),
    Example(
        name="port_bytes",
        description=(
            "Count the packets and bytes the home's devices send through the gateway per "
            "protocol and destination port (LAN ingress, after the router and NAT), in the "
            "map `ports`."
        ),
        nic="lan",
        hook="xdp",
        position="last",
        maps=("ports",),
        counters=("counted", "table_full", "other", "local"),
    ),
)


def examples() -> list[dict]:
    """Every example: {name, description, upload} (the upload's fields, the
    source text included)."""
    return [
        {"name": e.name, "description": e.description, "upload": e.upload().model_dump()}
        for e in EXAMPLES
    ]
