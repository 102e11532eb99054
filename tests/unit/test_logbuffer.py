"""The in-memory log of the logs page: bounded, thread-safe, module mapping, cut."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from homegw import logbuffer
from homegw.logbuffer import CUT_MARK, MAX_MESSAGE, LogBuffer, module_of


@pytest.fixture
def buffer() -> Iterator[LogBuffer]:
    handler = LogBuffer(capacity=50)
    logger = logging.getLogger("homegw.modules.nat.module")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.mark.parametrize(
    ("logger", "module"),
    [
        ("homegw.modules.nat.module", "nat"),
        ("homegw.modules.dhcp.wan_client", "dhcp"),
        ("homegw.modules.router", "router"),
        ("homegw.appliance", "appliance"),
        ("homegw.management", "appliance"),
        ("homegw", "appliance"),
        ("homegw.dataplane.loader", "dataplane"),
        ("webui.api.errors", "webui"),
        ("webui", "webui"),
        ("waitress", "webui"),
        ("waitress.queue", "webui"),
        ("pyroute2.ndb", "pyroute2"),
        ("homegwx.thing", "homegwx"),
        ("", "root"),
    ],
)
def test_module_from_the_logger_name(logger: str, module: str) -> None:
    assert module_of(logger) == module


def test_records_are_plain_text_with_their_module(buffer: LogBuffer) -> None:
    logging.getLogger("homegw.modules.nat.module").warning("port %d <b>busy</b>", 80)
    (record,) = buffer.records()
    assert record["module"] == "nat" and record["logger"] == "homegw.modules.nat.module"
    assert record["level"] == "WARNING" and record["message"] == "port 80 <b>busy</b>"
    assert isinstance(record["time"], float)


def test_the_buffer_keeps_only_the_newest_records(buffer: LogBuffer) -> None:
    log = logging.getLogger("homegw.modules.nat.module")
    for i in range(120):
        log.info("line %d", i)
    assert len(buffer) == 50
    kept = buffer.records(limit=500)
    assert [r["message"] for r in kept] == [f"line {i}" for i in range(70, 120)]
    assert [r["message"] for r in buffer.records(limit=3)] == ["line 117", "line 118", "line 119"]
    assert buffer.records(limit=0) == []


def test_at_most_500_records_are_returned() -> None:
    handler = LogBuffer()
    record = logging.LogRecord("homegw.appliance", logging.INFO, __file__, 1, "x", (), None)
    for _ in range(logbuffer.CAPACITY + 10):
        handler.emit(record)
    assert len(handler) == logbuffer.CAPACITY
    assert len(handler.records(limit=10_000)) == logbuffer.MAX_RECORDS


def test_filter_by_module_then_limit(buffer: LogBuffer) -> None:
    other = logging.getLogger("homegw.modules.nat.module.sub")
    for i in range(10):
        logging.getLogger("homegw.modules.nat.module").info("nat %d", i)
    record = logging.LogRecord("webui.api", logging.ERROR, __file__, 1, "web %d", (1,), None)
    buffer.emit(record)
    other.info("nat again")
    web = buffer.records(module="webui")
    assert [r["message"] for r in web] == ["web 1"]
    nat = buffer.records(module="nat", limit=2)
    assert [r["message"] for r in nat] == ["nat 9", "nat again"]
    assert buffer.records(module="dns") == []


def test_a_long_message_is_cut(buffer: LogBuffer) -> None:
    logging.getLogger("homegw.modules.nat.module").info("x" * 10_000)
    (record,) = buffer.records()
    assert len(record["message"]) == MAX_MESSAGE and record["message"].endswith(CUT_MARK)
    logging.getLogger("homegw.modules.nat.module").info("y" * MAX_MESSAGE)
    assert buffer.records()[-1]["message"] == "y" * MAX_MESSAGE


def test_a_traceback_is_kept_with_its_message(buffer: LogBuffer) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("homegw.modules.nat.module").exception("failed")
    message = buffer.records()[0]["message"]
    assert message.startswith("failed\nTraceback") and "ValueError: boom" in message


def test_a_bad_format_string_is_not_a_crash(buffer: LogBuffer) -> None:
    logging.raiseExceptions, old = False, logging.raiseExceptions
    try:
        logging.getLogger("homegw.modules.nat.module").info("%d", "not a number")
    finally:
        logging.raiseExceptions = old
    assert buffer.records() == []


def test_logging_from_many_threads_keeps_the_bound(buffer: LogBuffer) -> None:
    log = logging.getLogger("homegw.modules.nat.module")

    def spam(n: int) -> None:
        for i in range(200):
            log.debug("t%d %d", n, i)

    threads = [threading.Thread(target=spam, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(buffer) == 50 and len(buffer.records()) == 50


def test_install_puts_one_buffer_on_the_root_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logbuffer, "_installed", None)
    root = logging.getLogger()
    try:
        first = logbuffer.install()
        assert logbuffer.install() is first and logbuffer.installed() is first
        assert sum(1 for h in root.handlers if isinstance(h, LogBuffer)) == 1
        root.warning("seen by the buffer")
        assert first.records()[-1]["message"] == "seen by the buffer"
    finally:
        root.handlers = [h for h in root.handlers if not isinstance(h, LogBuffer)]
