"""Supervised threads and loops: a crash is logged, counted, restarted or fatal."""

from __future__ import annotations

import asyncio
import threading

import pytest

from homegw import supervise


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "FIRST_PAUSE", 0.0)


def test_a_restartable_loop_runs_again_after_a_crash() -> None:
    runs = []

    def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")

    thread = supervise.Thread(body, "test-restart", restart=True)
    thread.start()
    thread.join(5)
    assert len(runs) == 3 and not thread.is_alive()
    assert supervise.failures["test-restart"] == 2 and supervise.restarts["test-restart"] == 2


def test_a_crash_without_restart_is_fatal() -> None:
    told = threading.Event()
    reasons: list[str] = []
    supervise.on_fatal(lambda reason: (reasons.append(reason), told.set()))

    def body() -> None:
        raise ValueError("the reader died")

    supervise.Thread(body, "test-fatal").start()
    assert told.wait(5)
    assert "thread test-fatal stopped after a crash" in reasons


def test_too_many_crashes_in_a_window_are_fatal() -> None:
    told = threading.Event()
    supervise.on_fatal(lambda reason: told.set() if "test-flap" in reason else None)

    def body() -> None:
        raise OSError("always")

    thread = supervise.Thread(body, "test-flap", restart=True)
    thread.start()
    thread.join(5)
    assert told.is_set()
    assert supervise.restarts["test-flap"] == supervise.MAX_RESTARTS


def test_a_loop_callback_error_is_counted_and_the_loop_goes_on() -> None:
    loop = asyncio.new_event_loop()
    supervise.watch_loop(loop, "test-loop")
    done = []

    def bad() -> None:
        raise KeyError("callback")

    loop.call_soon(bad)
    loop.call_soon(lambda: (done.append(1), loop.stop()))
    loop.run_forever()
    loop.close()
    assert done == [1] and supervise.failures["test-loop"] == 1
