"""DpiService over a fake map adapter: DNS answers attribute addresses (junk
names and IPv6 left out), the DNS filter follows the policy per device, the
slow path's verdicts reach the datapath in its numbers, and a punt that is
not a frame is a counted nothing."""

from __future__ import annotations

import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from homegw.dataplane.slowpath import Punt
from homegw.modules.dpi import categories
from homegw.modules.dpi.config import DpiConfig
from homegw.modules.dpi.service import DpiService
from homegw.netns import wait_for

MAC = "02:48:47:00:00:01"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))


class FakeMaps:
    def __init__(self) -> None:
        self.dns: dict[str, tuple[int, int]] = {}
        self.policy: dict[tuple[str, str, int], str] = {}
        self.classified: list[tuple[Any, int, int, str]] = []

    def flows(self) -> list:
        return []

    tick = 1000

    def now_tick(self) -> int:
        return self.tick

    def drop_dns(self, addrs) -> None:
        for addr in addrs:
            del self.dns[str(addr)]

    def set_dns(self, addr, app: int, category: int, expires: int) -> None:
        self.dns[str(addr)] = (app, category)

    def set_policy(self, entries: dict) -> bool:
        changed = dict(entries) != getattr(self, "policy", None)
        self.policy = dict(entries)
        return changed

    def classify(self, key, app: int, category: int, source: str) -> None:
        self.classified.append((key, app, category, source))

    def counters(self) -> dict[str, int]:
        return {}

    def forget(self, keys) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path) -> DpiService:
    rule = {"name": "no-video", "who": [MAC], "block_categories": ["video"]}
    config = DpiConfig.model_validate({"enabled": True, "rules": [rule]})
    service = DpiService(config, tmp_path, FakeMaps(), local_now=lambda: NOW)  # type: ignore[arg-type]
    service.decide()
    return service


def test_dns_answers_attribute_their_ipv4_addresses(service: DpiService) -> None:
    maps: FakeMaps = service.maps  # type: ignore[assignment]
    service.on_dns_answer(
        "192.168.1.11", "r3---sn-4g5e6nze.googlevideo.com", ["198.51.100.7", "2001:db8::1"]
    )
    youtube = service.ids.number("youtube")
    assert maps.dns == {"198.51.100.7": (youtube, categories.category_number("video"))}
    service.on_dns_answer("192.168.1.11", "..", ["198.51.100.8"])  # junk: nothing
    service.on_dns_answer("192.168.1.11", "shop.example.co.uk", ["198.51.100.9"])
    unknown = service.ids.name(maps.dns["198.51.100.9"][0])
    assert unknown == "example.co.uk"  # an unknown name as its registrable domain


def test_the_dns_filter_follows_the_policy_per_device(service: DpiService) -> None:
    service._macs["192.168.1.11"] = MAC
    service._macs["192.168.1.12"] = "02:48:47:00:00:02"
    assert service.dns_blocked("192.168.1.11", "www.netflix.com")
    assert not service.dns_blocked("192.168.1.11", "en.wikipedia.org")
    assert not service.dns_blocked("192.168.1.12", "www.netflix.com")  # another device
    maps: FakeMaps = service.maps  # type: ignore[assignment]
    video = categories.category_number("video")
    assert maps.policy == {(MAC, "category", video): "block", (MAC, "hold", 0): "hold"}


def test_a_punt_that_is_no_frame_changes_nothing(service: DpiService) -> None:
    maps: FakeMaps = service.maps  # type: ignore[assignment]
    for junk in (b"", b"\x00" * 13, b"\xff" * 60):
        service.on_payload(Punt(7, 1, 3, len(junk), (4, 0, 0, 0), junk))
    assert maps.classified == []


def test_expired_dns_attributions_leave_the_map(service: DpiService) -> None:
    maps: FakeMaps = service.maps  # type: ignore[assignment]
    service.on_dns_answer("192.168.1.11", "www.netflix.com", ["198.51.100.7"])
    service.tick()
    assert "198.51.100.7" in maps.dns
    maps.tick += 4000  # over an hour of ticks (~1.07 s each)
    service.tick()
    assert maps.dns == {} and service.gauges()["dns_attributed_addresses"] == 0


def test_a_url_app_source_is_downloaded_in_the_background_and_used(tmp_path: Path) -> None:
    source = (
        b"category: games\napps:\n"
        b"  - id: test_game\n    label: Test game\n    domains: [play.dpi-test.example]\n"
    )

    class Serve(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(source)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/apps.yaml"
        config = DpiConfig.model_validate({"enabled": True, "app_sources": [url]})
        service = DpiService(config, tmp_path, FakeMaps(), local_now=lambda: NOW)  # type: ignore[arg-type]
        assert service.db.app("test_game") is None  # not downloaded yet
        service.refresh_sources()
        assert wait_for(lambda: service.db.app("test_game") is not None, 10.0)
        assert service.db.label_of("www.play.dpi-test.example") == ("test_game", "games")
        assert service.ids.number("test_game") > 0
    finally:
        server.shutdown()


def test_a_policy_written_retires_the_fast_path_once(tmp_path: Path) -> None:
    """The datapath's policy changed: on_policy_change (the fast path's
    invalidate) is called; the same decision again writes nothing and calls
    nothing."""
    calls = []
    rule = {"name": "no-video", "who": [MAC], "block_categories": ["video"]}
    config = DpiConfig.model_validate({"enabled": True, "rules": [rule]})
    service = DpiService(
        config, tmp_path, FakeMaps(), local_now=lambda: NOW,  # type: ignore[arg-type]
        on_policy_change=lambda: calls.append("retired"),
    )  # fmt: skip
    service.decide()
    assert calls == ["retired"]
    service.decide()
    assert calls == ["retired"]
