"""Writes what happens to the event log: decisions, door changes, camera and input changes, start/stop.

One bus subscription for all of them, so rows keep the order things happened in; only frames that
made a decision pass the filter, so the queue holds what matters even at hundreds of frames a second.
Whatever queued up meanwhile is committed in one transaction, so a busy door costs one disk sync per
batch, not per row; ``flush`` lets the control socket answer "ok" only once its change is on disk.

A log that cannot be written (disk full, I/O error) is a health state, not a crash: the rows are held
in memory (up to ``QUEUE_LIMIT``) and retried, ``EventLogChanged`` tells status, MQTT and the web
views, and the problem is logged once a minute.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import numpy as np

from ..bus import EventBus
from ..logs import Throttled
from ..messages import (AlarmSilenced, CameraChanged, DoorChanged, EventLogChanged, FrameProcessed, InputChanged,
                        Lifecycle, is_event)
from ..vision.core import face_json
from .events import Event, EventLog

log = logging.getLogger(__name__)

OVERRIDES = {"manual_lock", "manual_unlock", "remote"}
QUEUE_LIMIT = 10_000  # about an hour of decisions at a busy door; beyond that the oldest are dropped
RETRY_SECONDS = 5.0  # while the log fails, held rows are retried this often (and with every new row)
_RETRY = object()  # offered to the subscription by the retry timer


class Recorder:
    """Bus subscriber that turns messages into committed event-log rows."""

    def __init__(self, events: EventLog, bus: EventBus):
        self.events, self.bus = events, bus
        self.ok = True
        self._held: list[tuple[Event, np.ndarray | None]] = []
        self._lost = 0
        self._retry: threading.Timer | None = None
        self._failing = Throttled(log, logging.ERROR, every=60.0)
        self.subscription = bus.subscribe(
            (FrameProcessed, DoorChanged, CameraChanged, InputChanged, AlarmSilenced, Lifecycle), self.record_batch,
            name="event-log", when=is_event, maxlen=QUEUE_LIMIT, batch=True)

    def record_batch(self, messages: list) -> None:
        """Commit the held rows and these in one transaction; on failure hold them all and retry later."""
        rows = self._held + [as_event(m) for m in messages if m is not _RETRY]
        if not rows:
            return
        try:
            self.events.record_many(rows)
        except (sqlite3.Error, OSError) as exc:
            self._lost += max(0, len(rows) - QUEUE_LIMIT)
            self._held = [(event, None) for event, _ in rows[-QUEUE_LIMIT:]]  # no frames (snapshots) held
            self._failed(exc)
            return
        self._held = []
        if not self.ok:
            self.ok = True
            self._failing.reset()
            lost = f"; {self._lost} rows were dropped while it failed" if self._lost else ""
            log.warning("event log: writing again, %d held rows written%s", len(rows), lost)
            self._lost = 0
            self.bus.publish(EventLogChanged(True, "event log ok", time.time()))

    def close(self) -> None:
        """After the bus has closed: stop retrying, and say what could not be written."""
        if self._retry is not None:
            self._retry.cancel()
        if self._held:
            log.error("event log: %d rows could not be written before the stop (the log kept failing)",
                      len(self._held))

    def flush(self, timeout: float) -> bool:
        """Wait until everything published before this call is committed; False if it is not (yet)."""
        return self.subscription.flush(timeout) and self.ok

    def _failed(self, exc: Exception) -> None:
        detail = f"cannot write the event log {self.events.path} ({exc})"
        if self.ok:
            self.ok = False
            self.bus.publish(EventLogChanged(False, detail, time.time()))
        self._failing("event log: %s; %d rows held in memory and retried, the door keeps working",
                      detail, len(self._held))
        if self._retry is None or not self._retry.is_alive():
            self._retry = threading.Timer(RETRY_SECONDS, self.subscription.offer, args=(_RETRY,))
            self._retry.daemon = True
            self._retry.start()


def as_event(message) -> tuple[Event, np.ndarray | None]:
    """The log row for a message, and the frame a decision was made on (for snapshots)."""
    if isinstance(message, FrameProcessed):
        result, decision = message.result, message.decision
        faces = tuple({k: v for k, v in face_json(fr).items() if k != "probs"} for fr in result.faces)
        event = Event(message.time, decision.outcome, decision.reason.text, len(result.faces), faces,
                      round(result.detect_ms + result.classify_ms, 2), source="vision", code=decision.reason.value,
                      face=decision.face, track=decision.track)
        return event, message.frame.image
    if isinstance(message, DoorChanged):
        state = message.state
        until = None if message.seconds_left is None else message.time + message.seconds_left
        what = "unlocked" if state.unlocked else "locked"
        override = OVERRIDES & {state.layer, message.previous.layer}  # an operator's override starting or ending
        return Event(message.time, "override" if override else "door", f"{what}: {state.reason}",
                     source=state.who or state.layer, until=until), None
    if isinstance(message, CameraChanged):
        return Event(message.time, "camera_ok" if message.ok else "camera_lost", message.reason), None
    if isinstance(message, InputChanged):
        state = "active" if message.active else "inactive"
        return Event(message.time, message.kind, message.detail or f"{message.name} {state}", source=message.name), None
    if isinstance(message, AlarmSilenced):
        reason = f"{message.alarm.replace('_', ' ')} alarm silenced" + (f": {message.reason}" if message.reason else "")
        return Event(message.time, "alarm_silenced", reason, source=message.who), None
    if isinstance(message, Lifecycle):
        return Event(message.time, message.kind, message.detail), None
    raise TypeError(f"no event for {type(message).__name__}")
