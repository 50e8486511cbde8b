"""The in-process event bus: parts of the daemon publish typed messages, others subscribe.

``publish`` never blocks and never runs a handler in the publisher's thread. Every subscription has
its own thread and its own bounded queue:

- a queue (default ``maxlen=1000``) keeps messages in order; when it is full the **oldest** message is
  dropped and counted in ``Subscription.dropped`` — a slow subscriber loses old messages, it never
  slows the publisher (the frame loop);
- ``latest=True`` keeps only the newest message (previews, status lines: only "now" matters);
- ``when`` filters in the publisher's thread (cheap predicates only), so a subscriber that wants one
  frame in a thousand (decisions) is never flooded out by the other 999;
- ``keep`` maps a message to what is queued, in the publisher's thread: a queue that may back up for
  long (MQTT while the broker is away) keeps ``messages.without_image`` copies, not ~1 MB frames;
- ``batch=True`` hands the handler everything queued at once, as a list (the event log commits it in
  one transaction); ``Subscription.flush`` waits until what was offered before it has been handled.

A handler that raises is logged and the subscription carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

log = logging.getLogger(__name__)


class Subscription:
    """One subscriber: a bounded queue drained by its own thread."""

    def __init__(self, name: str, types: tuple[type, ...], handler: Callable[[Any], None], *,
                 when: Callable[[Any], bool] | None, maxlen: int, keep: Callable[[Any], Any] | None = None,
                 batch: bool = False):
        self.name, self.types, self.handler, self.when, self.keep, self.batch = name, types, handler, when, keep, batch
        self.dropped = 0
        self._offered = self._done = 0  # messages queued / handled or dropped, ever
        self._queue: deque = deque(maxlen=maxlen)
        self._ready = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"bus:{name}", daemon=True)
        self._thread.start()

    def offer(self, message: Any) -> None:
        if self.when is not None and not self.when(message):
            return
        if self.keep is not None:
            message = self.keep(message)
        with self._ready:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                self._done += 1
            self._queue.append(message)
            self._offered += 1
            self._ready.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def idle(self) -> bool:
        with self._ready:
            return not self._queue and not self._busy

    def flush(self, timeout: float) -> bool:
        """Wait until every message offered before this call has been handled (or dropped); False on timeout."""
        with self._ready:
            mark = self._offered
            return self._ready.wait_for(lambda: self._done >= mark, timeout)

    def close(self, timeout: float) -> None:
        """Handle what is queued, then stop (waits at most ``timeout`` seconds)."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:
                    return
                if self.batch:
                    message = list(self._queue)
                    self._queue.clear()
                else:
                    message = self._queue.popleft()
                self._busy = True
            try:
                self.handler(message)
            except Exception:
                log.exception("subscriber %s failed on %s", self.name, type(message).__name__)
            finally:
                with self._ready:
                    self._busy = False
                    self._done += len(message) if self.batch else 1
                    self._ready.notify_all()


class EventBus:
    """Publish/subscribe by message type (a message reaches subscribers of its class or a base)."""

    def __init__(self):
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, types: type | tuple[type, ...], handler: Callable[[Any], None], *, name: str,
                  when: Callable[[Any], bool] | None = None, latest: bool = False,
                  maxlen: int = 1000, keep: Callable[[Any], Any] | None = None, batch: bool = False) -> Subscription:
        types = types if isinstance(types, tuple) else (types,)
        subscription = Subscription(name, types, handler, when=when, maxlen=1 if latest else maxlen, keep=keep,
                                    batch=batch)
        with self._lock:
            self._subscriptions = [*self._subscriptions, subscription]
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s is not subscription]
        subscription.close(timeout=1.0)

    def publish(self, message: Any) -> None:
        for subscription in self._subscriptions:  # a snapshot: subscribe() replaces the list
            if isinstance(message, subscription.types):
                subscription.offer(message)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queue is empty and no handler runs (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.idle() for s in self._subscriptions):
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop every subscriber thread."""
        deadline = time.monotonic() + timeout
        for subscription in self.subscriptions:
            subscription.close(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._subscriptions = []
