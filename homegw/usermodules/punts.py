"""The punts of user modules, streamed to API clients (the controller pattern:
a user module's slow path can live outside the appliance).

The slow-path thread publishes every punt of a user module to the hub;
each subscriber (an SSE client of GET /api/v1/modules/user/<name>/punts) has
its own bounded queue. Publishing never blocks: a full queue loses the event
and counts the drop, for the subscriber (each event it gets says how many it
lost so far) and for the module (stats()). A subscriber waits on its queue's
condition, never polls.

``Subscription.next_event(timeout)`` returns an event dict, or None when
nothing came within timeout; once the hub ended the subscription
(close_module: the module went) it returns what was still queued and then
raises ``Closed``. After the subscriber's own close() it raises ``Closed``
at once.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from homegw.control import Conflict
from homegw.dataplane.slowpath import Punt

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
MAX_SUBSCRIBERS = 4


class Closed(Exception):
    """The subscription ended: its module went, the hub closed, or close()."""


@dataclass
class _Totals:
    """One module's events over all its subscribers, past ones included."""

    delivered: int = 0  # taken by a subscriber
    dropped: int = 0  # lost to a full queue


class Subscription:
    """One subscriber's bounded queue of one module's punts."""

    def __init__(self, hub: PuntHub, module: str, queue_size: int) -> None:
        self.module = module
        self._hub = hub
        self._size = queue_size
        self._events: deque[dict[str, Any]] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._ended = False  # by the hub: what is queued is still given
        self._closed = False  # by the subscriber: nothing more
        self.delivered = 0
        self.dropped = 0

    def _offer(self, event: dict[str, Any]) -> bool:
        """Queue one event; False when the queue was full (a drop)."""
        with self._ready:
            if self._ended or self._closed:
                return True
            if len(self._events) >= self._size:
                self.dropped += 1
                return False
            self._events.append(event)
            self._ready.notify()
            return True

    def _end(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next punt ({reason, meta, ifindex, nic, pkt_len, frame (base64),
        dropped}), None if none came within `timeout` seconds; Closed once
        the subscription ended and its queue is empty."""
        with self._ready:
            self._ready.wait_for(
                lambda: self._events or self._ended or self._closed, timeout=timeout
            )
            if self._closed:
                raise Closed(f"the subscription to {self.module!r} is closed")
            if self._events:
                event = self._events.popleft()
                self.delivered += 1
                dropped = self.dropped
            elif self._ended:
                raise Closed(f"the punts of {self.module!r} ended")
            else:
                return None
        self._hub._count_delivered(self.module)
        return event | {"dropped": dropped}

    @property
    def closed(self) -> bool:
        return self._closed or self._ended

    def close(self) -> None:
        """Unsubscribe (idempotent): the hub forgets this subscriber."""
        with self._ready:
            if self._closed:
                return
            self._closed = True
            self._events.clear()
            self._ready.notify_all()
        self._hub._remove(self)


def punt_event(punt: Punt, nic: str | None) -> dict[str, Any]:
    """A punt as the stream's JSON carries it (without ``dropped``)."""
    return {
        "reason": punt.reason,
        "meta": [int(m) for m in punt.meta],
        "ifindex": punt.ifindex,
        "nic": nic,
        "pkt_len": punt.pkt_len,
        "frame": base64.b64encode(punt.packet).decode("ascii"),
    }


class PuntHub:
    """Every user module's subscribers; safe from any number of threads."""

    def __init__(self, queue_size: int = QUEUE_SIZE, max_subscribers: int = MAX_SUBSCRIBERS):
        if queue_size < 1 or max_subscribers < 1:
            raise ValueError("queue_size and max_subscribers must be at least 1")
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Subscription]] = {}
        self._totals: dict[str, _Totals] = {}

    def subscribe(self, module: str) -> Subscription:
        """A new subscriber of `module`'s punts from now on; Conflict when
        it has max_subscribers already."""
        with self._lock:
            current = self._subscribers.setdefault(module, [])
            if len(current) >= self.max_subscribers:
                raise Conflict(
                    f"{module!r} has {len(current)} punt subscribers already "
                    f"(at most {self.max_subscribers}): close one first"
                )
            subscription = Subscription(self, module, self.queue_size)
            current.append(subscription)
            self._totals.setdefault(module, _Totals())
        log.info("punt subscriber %d of %s", len(current), module)
        return subscription

    def publish(self, module: str, punt: Punt, nic: str | None) -> None:
        """Give one punt to every subscriber of `module`, never blocking
        (called by the slow-path thread): a full queue drops it, counted."""
        with self._lock:
            subscribers = list(self._subscribers.get(module, ()))
        if not subscribers:
            return
        event = punt_event(punt, nic)
        lost = sum(not s._offer(event) for s in subscribers)
        if lost:
            with self._lock:
                self._totals.setdefault(module, _Totals()).dropped += lost

    def stats(self, module: str) -> dict[str, int]:
        """{subscribers (now), delivered, dropped (over every subscriber)}."""
        with self._lock:
            totals = self._totals.get(module, _Totals())
            return {
                "subscribers": len(self._subscribers.get(module, ())),
                "delivered": totals.delivered,
                "dropped": totals.dropped,
            }

    def close_module(self, module: str) -> None:
        """End `module`'s subscriptions (the module went) and forget its
        counts: each subscriber gets what is queued, then Closed."""
        with self._lock:
            ended = self._subscribers.pop(module, [])
            self._totals.pop(module, None)
        for subscription in ended:
            subscription._end()
        if ended:
            log.info("ended %d punt subscriber(s) of %s", len(ended), module)

    def close_all(self) -> None:
        """End every subscription (the appliance stops): no stream holds a
        web server thread past this."""
        with self._lock:
            modules = list(self._subscribers)
        for module in modules:
            self.close_module(module)

    def _count_delivered(self, module: str) -> None:
        with self._lock:
            totals = self._totals.get(module)
            if totals is not None:
                totals.delivered += 1

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            current = self._subscribers.get(subscription.module, [])
            if subscription in current:
                current.remove(subscription)
            if not current:
                self._subscribers.pop(subscription.module, None)
