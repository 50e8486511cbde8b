"""The event bus: publishing never blocks, slow subscribers lose old messages, order is kept."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from maskgate.bus import EventBus


@dataclass(frozen=True)
class Tick:
    n: int


@dataclass(frozen=True)
class Other:
    text: str


def test_messages_reach_subscribers_of_their_type_in_order():
    bus = EventBus()
    ticks, both = [], []
    bus.subscribe(Tick, ticks.append, name="ticks")
    bus.subscribe((Tick, Other), both.append, name="both")
    for n in range(100):
        bus.publish(Tick(n))
    bus.publish(Other("x"))
    assert bus.drain()
    assert [t.n for t in ticks] == list(range(100))
    assert both[-1] == Other("x") and len(both) == 101
    bus.close()


def test_a_subscriber_that_blocks_never_blocks_the_publisher():
    bus = EventBus()
    release = threading.Event()
    stuck = bus.subscribe(Tick, lambda m: release.wait(), name="stuck", maxlen=10)
    publisher = threading.Thread(target=lambda: [bus.publish(Tick(n)) for n in range(10_000)])
    publisher.start()
    publisher.join(60)
    assert not publisher.is_alive(), "every publish returned while the subscriber was stuck"
    assert stuck.dropped >= 10_000 - 11, "the oldest messages were dropped"
    release.set()
    bus.close()


def test_latest_only_keeps_the_newest():
    bus = EventBus()
    gate, seen = threading.Event(), []
    bus.subscribe(Tick, lambda m: (gate.wait(), seen.append(m.n)), name="preview", latest=True)
    for n in range(50):
        bus.publish(Tick(n))
    gate.set()
    assert bus.drain()
    assert seen[-1] == 49 and len(seen) <= 2
    bus.close()


def test_a_filter_keeps_rare_messages_from_being_flooded_out():
    bus = EventBus()
    gate, seen = threading.Event(), []
    bus.subscribe(Tick, lambda m: (gate.wait(), seen.append(m.n)), name="decisions", maxlen=5,
                  when=lambda m: m.n % 1000 == 0)
    for n in range(5000):
        bus.publish(Tick(n))
    gate.set()
    assert bus.drain()
    assert seen == [0, 1000, 2000, 3000, 4000]
    bus.close()


def test_a_failing_handler_is_logged_and_the_subscription_carries_on(caplog):
    bus = EventBus()
    seen = []

    def handler(message):
        if message.n == 1:
            raise ValueError("boom")
        seen.append(message.n)

    subscription = bus.subscribe(Tick, handler, name="flaky")
    for n in range(3):
        bus.publish(Tick(n))
    assert bus.drain()
    assert seen == [0, 2] and subscription.alive
    assert "subscriber flaky failed on Tick" in caplog.text
    bus.close()


def test_close_delivers_what_is_queued():
    bus = EventBus()
    seen = []
    bus.subscribe(Tick, lambda m: (time.sleep(0.001), seen.append(m.n)), name="slow")
    for n in range(200):
        bus.publish(Tick(n))
    bus.close(timeout=5)
    assert seen == list(range(200))


def test_a_queue_that_backs_up_keeps_decisions_without_their_pixels():
    """MQTT holds up to 1000 decisions while the broker is away: ~1 MB frames each would be ~1 GB on a Pi."""
    import numpy as np

    from maskgate.access.decider import Decision
    from maskgate.access.reasons import Reason
    from maskgate.messages import FrameProcessed, without_image
    from maskgate.sources import Frame
    from maskgate.vision.core import FrameResult

    bus = EventBus()
    release, seen = threading.Event(), []

    def handler(message):
        release.wait()
        seen.append(message)

    bus.subscribe(FrameProcessed, handler, name="slow", keep=without_image)
    image = np.zeros((480, 640, 3), np.uint8)
    result = FrameResult(width=640, height=480, faces=(), detect_ms=1.0, classify_ms=0.0)
    for n in range(3):
        bus.publish(FrameProcessed(Frame(image, float(n)), result, Decision("denied", Reason.NO_MASK, "denied"), 10.0, n))
    release.set()
    bus.close()
    assert [m.frame.time for m in seen] == [0.0, 1.0, 2.0]
    assert all(m.frame.image is None and m.decision.outcome == "denied" for m in seen)
