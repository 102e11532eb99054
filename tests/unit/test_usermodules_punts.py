"""homegw.usermodules.punts: the bounded per-subscriber queues of user
modules' punts, drops counted, many publishers, the end of a module."""

from __future__ import annotations

import base64
import threading

import pytest

from homegw.control import Conflict
from homegw.dataplane.slowpath import Punt
from homegw.usermodules.punts import Closed, PuntHub

FRAME = bytes(range(64))


def punt(reason: int = 3, meta0: int = 0, packet: bytes = FRAME) -> Punt:
    return Punt(module=200, reason=reason, ifindex=7, pkt_len=1500, meta=(meta0, 2, 3, 4),
                packet=packet)  # fmt: skip


def test_an_event_carries_the_punt_and_the_nic() -> None:
    hub = PuntHub()
    sub = hub.subscribe("blocklist")
    hub.publish("blocklist", punt(reason=5, meta0=0xFFFFFFFF), "lan")
    assert sub.next_event(timeout=1) == {
        "reason": 5,
        "meta": [0xFFFFFFFF, 2, 3, 4],
        "ifindex": 7,
        "nic": "lan",
        "pkt_len": 1500,
        "frame": base64.b64encode(FRAME).decode(),
        "dropped": 0,
    }
    assert sub.next_event(timeout=0) is None
    assert hub.stats("blocklist") == {"subscribers": 1, "delivered": 1, "dropped": 0}


def test_other_modules_punts_are_not_delivered() -> None:
    hub = PuntHub()
    sub = hub.subscribe("a")
    hub.publish("b", punt(), "wan")
    hub.publish("nobody_listens", punt(), "wan")
    assert sub.next_event(timeout=0) is None
    assert hub.stats("b") == {"subscribers": 0, "delivered": 0, "dropped": 0}


def test_a_full_queue_drops_and_counts_per_subscriber_and_module() -> None:
    hub = PuntHub(queue_size=3)
    slow, fast = hub.subscribe("m"), hub.subscribe("m")
    for i in range(3):
        hub.publish("m", punt(meta0=i), "lan")
    assert fast.next_event(timeout=0)["meta"][0] == 0  # fast has room for one more
    for i in range(3, 5):
        hub.publish("m", punt(meta0=i), "lan")  # slow drops both, fast drops one
    assert (slow.dropped, fast.dropped) == (2, 1)
    assert hub.stats("m") == {"subscribers": 2, "delivered": 1, "dropped": 3}
    got = [slow.next_event(timeout=0) for _ in range(3)]
    assert [e["meta"][0] for e in got] == [0, 1, 2]  # the oldest kept, in order
    assert [e["dropped"] for e in got] == [2, 2, 2]  # the drops so far, with each event
    assert slow.next_event(timeout=0) is None
    assert [fast.next_event(timeout=0)["meta"][0] for _ in range(3)] == [1, 2, 3]
    assert hub.stats("m") == {"subscribers": 2, "delivered": 7, "dropped": 3}


def test_publish_never_waits_for_a_subscriber() -> None:
    hub = PuntHub(queue_size=2)
    hub.subscribe("m")  # never reads
    done = threading.Event()

    def flood() -> None:
        for _ in range(10_000):
            hub.publish("m", punt(), "lan")
        done.set()

    threading.Thread(target=flood).start()
    assert done.wait(timeout=30)
    assert hub.stats("m")["dropped"] == 10_000 - 2


def test_many_publishers_each_event_once_or_counted() -> None:
    hub = PuntHub(queue_size=100_000)
    sub = hub.subscribe("m")
    per_thread, threads = 2000, 4

    def publish(worker: int) -> None:
        for i in range(per_thread):
            hub.publish("m", punt(reason=worker, meta0=i), "lan")

    workers = [threading.Thread(target=publish, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    seen: dict[int, list[int]] = {w: [] for w in range(threads)}
    for _ in range(per_thread * threads):
        event = sub.next_event(timeout=10)
        assert event is not None
        seen[event["reason"]].append(event["meta"][0])
    for w in workers:
        w.join()
    assert all(order == list(range(per_thread)) for order in seen.values())  # per publisher
    assert sub.next_event(timeout=0) is None
    assert hub.stats("m") == {"subscribers": 1, "delivered": 8000, "dropped": 0}


def test_a_waiting_subscriber_wakes_on_publish() -> None:
    hub = PuntHub()
    sub = hub.subscribe("m")
    got: list[dict] = []
    waiting = threading.Thread(target=lambda: got.append(sub.next_event(timeout=30)))
    waiting.start()
    hub.publish("m", punt(reason=9), "wan")
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    assert got[0]["reason"] == 9 and got[0]["nic"] == "wan"


def test_close_module_ends_its_subscriptions_after_what_is_queued() -> None:
    hub = PuntHub()
    sub, other = hub.subscribe("m"), hub.subscribe("other")
    hub.publish("m", punt(reason=1), "lan")
    ended = threading.Event()

    def wait_for_end() -> None:
        waiter = hub.subscribe("m")
        with pytest.raises(Closed):
            waiter.next_event(timeout=30)
        ended.set()

    thread = threading.Thread(target=wait_for_end)
    thread.start()
    while hub.stats("m")["subscribers"] < 2:  # the waiter subscribed
        thread.join(timeout=0.01)
    hub.close_module("m")
    assert ended.wait(timeout=30)  # a blocked next_event wakes up
    assert sub.closed
    assert sub.next_event(timeout=0)["reason"] == 1
    with pytest.raises(Closed):
        sub.next_event(timeout=0)
    hub.publish("m", punt(), "lan")  # nobody left
    assert hub.stats("m") == {"subscribers": 0, "delivered": 0, "dropped": 0}
    assert not other.closed
    hub.publish("other", punt(), "lan")
    assert other.next_event(timeout=0) is not None
    sub.close()  # after the end: harmless


def test_close_all_ends_every_module() -> None:
    hub = PuntHub()
    subs = [hub.subscribe("a"), hub.subscribe("b")]
    hub.close_all()
    for sub in subs:
        with pytest.raises(Closed):
            sub.next_event(timeout=0)


def test_close_unsubscribes_and_keeps_the_module_counts() -> None:
    hub = PuntHub(max_subscribers=2)
    first, second = hub.subscribe("m"), hub.subscribe("m")
    hub.publish("m", punt(), "lan")
    assert first.next_event(timeout=0) is not None
    first.close()
    first.close()  # idempotent
    with pytest.raises(Closed):
        first.next_event(timeout=0)
    assert hub.stats("m") == {"subscribers": 1, "delivered": 1, "dropped": 0}
    assert second.next_event(timeout=0) is not None  # queued before the close
    third = hub.subscribe("m")  # the freed place
    hub.publish("m", punt(reason=4), "lan")
    assert third.next_event(timeout=0)["reason"] == 4
    assert hub.stats("m") == {"subscribers": 2, "delivered": 3, "dropped": 0}


def test_close_wakes_a_waiting_next_event() -> None:
    hub = PuntHub()
    sub = hub.subscribe("m")
    raised = threading.Event()

    def wait() -> None:
        try:
            sub.next_event(timeout=30)
        except Closed:
            raised.set()

    thread = threading.Thread(target=wait)
    thread.start()
    sub.close()
    thread.join(timeout=30)
    assert raised.is_set()


def test_more_than_max_subscribers_is_a_conflict() -> None:
    hub = PuntHub(max_subscribers=4)
    subs = [hub.subscribe("m") for _ in range(4)]
    with pytest.raises(Conflict, match="at most 4"):
        hub.subscribe("m")
    assert hub.stats("m")["subscribers"] == 4
    hub.subscribe("another")  # per module
    subs[0].close()
    hub.subscribe("m")


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PuntHub(queue_size=0)
    with pytest.raises(ValueError):
        PuntHub(max_subscribers=0)
