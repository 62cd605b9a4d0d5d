"""AlertHub: in-process pub/sub of alerts for the alert page. ``publish`` is an AlertSink: it only appends to
bounded queues, so the pipeline never waits for a browser; each open page reads its own subscription."""

from __future__ import annotations

import queue
import threading
from collections import deque

from ..alerts import Alert


class Subscription:
    """One listener's queue of alerts, filled by AlertHub.publish; closed when it overflows or the hub closes."""

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue[Alert | None] = queue.Queue(size)
        self.closed = False

    def offer(self, alert: Alert | None) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            # a listener that cannot keep up is cut off; it gets the recent alerts again when it resubscribes
            self.closed = True

    def get(self, timeout: float) -> Alert | None:
        """The next alert, or None after ``timeout`` or once closed."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self.offer(None)  # wakes a waiting get()


class AlertHub:
    """In-process pub/sub of alerts keeping the last ``keep``. ``publish`` is an AlertSink: it never blocks."""

    def __init__(self, keep: int = 30, queue_size: int = 256) -> None:
        if not 1 <= keep <= queue_size:
            raise ValueError("keep: must be in 1..queue_size")
        self._recent: deque[Alert] = deque(maxlen=keep)
        self._subs: set[Subscription] = set()
        self._queue_size = queue_size
        self._lock = threading.Lock()

    def publish(self, alert: Alert) -> None:
        with self._lock:
            self._recent.append(alert)
            for sub in self._subs:
                sub.offer(alert)

    def recent(self) -> list[Alert]:
        """The kept alerts, oldest first."""
        with self._lock:
            return list(self._recent)

    def get(self, uuid: str) -> Alert | None:
        with self._lock:
            return next((a for a in self._recent if a.uuid == uuid), None)

    def subscribe(self) -> Subscription:
        """A new subscription, starting with the kept alerts (oldest first), then every new one."""
        sub = Subscription(self._queue_size)
        with self._lock:
            for a in self._recent:
                sub.offer(a)
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
        sub.close()

    def close(self) -> None:
        """End every subscription (their listeners return)."""
        with self._lock:
            subs, self._subs = self._subs, set()
        for s in subs:
            s.close()
