"""The DNS page's data: query-log statistics, block list status per source,
uploaded block lists."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from homegw.config import parse_config
from homegw.control import ConfigRejected
from homegw.modules.dns.blocklists import cached_path
from homegw.modules.dns.listrefresh import ListRefresher, first_delay
from homegw.modules.dns.liststore import MAX_UPLOAD, store_blocklist, unloaded_status
from homegw.modules.dns.querylog import QueryLogEntry
from homegw.modules.dns.querystats import query_stats
from homegw.modules.dns.service import LIST_DIR, DnsService

BASE = {"wan": {"interface": "wan0"}, "lan": {"interface": "lan0", "address": "192.168.7.1/24"}}


def entry(name: str, client: str, blocked: bool = False) -> QueryLogEntry:
    source = "blocked" if blocked else "upstream"
    return QueryLogEntry(1.0, client, name, "A", "NOERROR", (), source, blocked, None)


def ten_thousand() -> list[QueryLogEntry]:
    """A hand-built log: names n0..n99 asked 100-i times each by client i % 7,
    every query of ads<k> (k < 5) blocked."""
    log = []
    for i in range(100):
        for j in range(100 - i):
            log.append(entry(f"n{i}.example", f"192.168.7.{10 + (i + j) % 7}"))
    while len(log) < 10_000:
        k = len(log) % 5
        log.append(entry(f"ads{k}.example", "192.168.7.99", blocked=True))
    return log


def test_stats_over_a_10000_entry_log() -> None:
    log = ten_thousand()
    assert len(log) == 10_000
    started = time.perf_counter()
    stats = query_stats(log, limit=3)
    elapsed = time.perf_counter() - started
    blocked = 10_000 - 5050
    assert stats["queries"] == 10_000 and stats["blocked"] == blocked
    assert stats["top_domains"] == [
        {"name": "ads0.example", "count": 990},
        {"name": "ads1.example", "count": 990},
        {"name": "ads2.example", "count": 990},
    ]
    assert [d["name"] for d in stats["top_blocked"]] == [f"ads{k}.example" for k in range(3)]
    assert sum(d["count"] for d in query_stats(log, 10)["top_blocked"]) == blocked
    assert stats["top_clients"][0] == {"name": "192.168.7.99", "count": blocked}
    by_client: dict[str, int] = {}
    for e in log:
        by_client[e.client] = by_client.get(e.client, 0) + 1
    expected = sorted(by_client.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(c["name"], c["count"]) for c in stats["top_clients"]] == expected
    assert elapsed < 0.5, f"{elapsed:.3f} s for 10,000 entries"


def test_stats_of_an_empty_log_and_the_limit() -> None:
    assert query_stats([], 10) == {
        "queries": 0,
        "blocked": 0,
        "top_domains": [],
        "top_blocked": [],
        "top_clients": [],
    }
    log = [entry(f"n{i}.example", "10.0.0.1") for i in range(300)]
    assert len(query_stats(log, 1000)["top_domains"]) == 100  # capped
    assert query_stats(log, 0)["top_domains"] == []


# -- uploads ---------------------------------------------------------------------


def refused(state_dir: Path, name: str, content: bytes) -> str:
    with pytest.raises(ConfigRejected) as caught:
        store_blocklist(state_dir, name, content)
    (problem,) = caught.value.problems
    assert problem.loc == "blocklist"
    return problem.msg


@pytest.mark.parametrize("name", ["", "Ads", "-ads", "ads.txt", "../etc", "a/b", "a" * 33, "ä"])
def test_a_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    assert "must be 1-32" in refused(tmp_path, name, b"ads.example.com\n")
    assert not (tmp_path / "blocklists").exists()


def test_a_file_over_16_mib_is_refused(tmp_path: Path) -> None:
    line = b"ads.example.com\n"
    content = line * (MAX_UPLOAD // len(line) + 1)
    assert "more than 16777216" in refused(tmp_path, "big", content)
    assert not (tmp_path / "blocklists" / "big.txt").exists()


@pytest.mark.parametrize(
    "content", [b"", b"# only a comment\n\n", b"10.0.0.1 not-a-sink.example\n", b"\x00\xff\xfe"]
)
def test_a_file_without_any_domain_is_refused(tmp_path: Path, content: bytes) -> None:
    assert "no domain found" in refused(tmp_path, "empty", content)


def test_a_hosts_file_is_stored_with_its_count(tmp_path: Path) -> None:
    content = b"# hosts\n0.0.0.0 ads.example.com\n127.0.0.1 track.example.net\n0.0.0.0 localhost\n"
    stored = store_blocklist(tmp_path, "my-list_1", content)
    target = tmp_path / "blocklists" / "my-list_1.txt"
    assert stored == {"source": str(target), "entries": 2}
    assert target.read_bytes() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    again = store_blocklist(tmp_path, "my-list_1", b"||other.example^\n")  # replaced
    assert again["entries"] == 1 and target.read_bytes() == b"||other.example^\n"
    assert [p.name for p in target.parent.iterdir()] == ["my-list_1.txt"]  # no temp file left


# -- status per source --------------------------------------------------------------


@pytest.fixture
def lists(tmp_path: Path) -> dict[str, Any]:
    good = tmp_path / "good.txt"
    good.write_text("ads.example.com\ntrack.example.com\n")
    missing = tmp_path / "missing.txt"
    url = "http://127.0.0.1:9/list.txt"  # discard port: nothing listens
    cached = "http://127.0.0.1:9/cached.txt"
    cache = cached_path(tmp_path / "state" / LIST_DIR, cached)
    cache.parent.mkdir(parents=True)
    cache.write_text("0.0.0.0 cached.example.org\n")
    return {"good": str(good), "missing": str(missing), "url": url, "cached": cached}


@pytest.fixture
def service(tmp_path: Path, lists: dict[str, Any]) -> Iterator[DnsService]:
    dns = {
        "blocklists": [lists["good"], lists["url"], lists["cached"]],
        "groups": [
            {"name": "kids", "clients": ["192.168.7.50"], "blocklists": [lists["missing"]]},
            {"name": "tv", "blocklists": [lists["good"]]},
        ],
    }
    config = parse_config({**BASE, "state_dir": str(tmp_path / "state"), "dns": dns})
    yield DnsService(config, lambda: [])


def by_source(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row.pop("source"): row for row in rows}


def test_status_of_every_source(service: DnsService, lists: dict[str, Any]) -> None:
    rows = by_source(service.blocklist_status())
    good_mtime = Path(lists["good"]).stat().st_mtime
    assert rows[lists["good"]] == {
        "groups": ["default", "tv"],
        "entries": 2,
        "updated_at": good_mtime,
        "error": None,
    }
    assert rows[lists["missing"]] == {
        "groups": ["kids"],
        "entries": None,
        "updated_at": None,
        "error": "No such file or directory",
    }
    assert rows[lists["url"]]["error"] == "not downloaded yet"
    assert rows[lists["cached"]]["entries"] == 1 and rows[lists["cached"]]["error"] is None
    assert list(rows) == sorted(rows)


def test_refresh_keeps_a_failed_download_error_and_reloads_files(
    service: DnsService, lists: dict[str, Any]
) -> None:
    Path(lists["good"]).write_text("one.example.com\ntwo.example.com\nthree.example.com\n")
    assert not service.resolver.policies.default.is_blocked("three.example.com")
    problems = service.refresh_blocklists()
    assert lists["url"] in problems and lists["cached"] in problems
    rows = by_source(service.blocklist_status())
    assert rows[lists["good"]]["entries"] == 3
    assert service.resolver.policies.default.is_blocked("three.example.com")
    assert "refused" in rows[lists["url"]]["error"].lower(), rows[lists["url"]]
    # the copy downloaded before is still used, beside the error of this download
    assert rows[lists["cached"]]["entries"] == 1 and rows[lists["cached"]]["error"]


def test_status_without_a_dns_service(service: DnsService, lists: dict[str, Any]) -> None:
    rows = by_source(unloaded_status(service.config.dns, "DNS is off"))
    assert set(rows) == {lists["good"], lists["url"], lists["cached"], lists["missing"]}
    assert all(r["entries"] is None and r["error"] == "DNS is off" for r in rows.values())


# -- keeping URL lists downloaded ---------------------------------------------------


def test_first_delay_is_when_the_oldest_copy_is_due() -> None:
    now = time.time()
    assert first_delay([]) == 0.0 and first_delay([now, None]) == 0.0
    assert first_delay([now - 3600, now - 60], every_s=7200) == pytest.approx(3600, abs=5)
    assert first_delay([now - 10_000], every_s=7200) == 0.0


def test_the_refresher_retries_failed_downloads_later_each_time_then_waits_long() -> None:
    calls: list[float] = []
    third = threading.Event()

    def refresh() -> dict[str, str]:
        calls.append(time.monotonic())
        if len(calls) == 3:
            third.set()
        return {"http://x/l": "no route"} if len(calls) <= 2 else {}

    refresher = ListRefresher(refresh, ["http://x/l"], 0, every_s=3600, retry_s=0.05)
    refresher.start()
    try:
        assert third.wait(10), calls
    finally:
        refresher.stop()
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1  # doubled
    assert len(calls) == 3  # after a success: the next in an hour


class ListHandler(BaseHTTPRequestHandler):
    body = b"0.0.0.0 served.example.org\n"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def list_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ListHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/list.txt"
    server.shutdown()
    server.server_close()


def test_a_url_list_is_downloaded_in_the_background(tmp_path: Path, list_server: str) -> None:
    config = parse_config(
        {**BASE, "state_dir": str(tmp_path), "dns": {"blocklists": [list_server]}}
    )
    service = DnsService(config, lambda: [])
    assert service.blocklist_status()[0]["error"] == "not downloaded yet"
    service.start_list_refresh()
    try:
        deadline = time.monotonic() + 15
        while service.blocklist_status()[0]["entries"] != 1:
            assert time.monotonic() < deadline, service.blocklist_status()
            time.sleep(0.02)  # polling the loader's state, not a fixed wait
    finally:
        assert service.refresher is not None
        service.refresher.stop()
    assert service.resolver.policies.default.is_blocked("served.example.org")
    assert service.blocklist_status()[0]["error"] is None
    # a restarted service finds the fresh copy: nothing to download for a day
    again = DnsService(config, lambda: [])
    again.start_list_refresh()
    assert again.refresher is not None and again.refresher.first_delay > 3600
    again.refresher.stop()
