"""The door's inputs: fire alarm, request-to-exit button, door-position contact.

    gpiozero edge callback ─► Debouncer ─► (its own thread, once the level holds) ─► controller request
                                                                                  └► bus: InputChanged

Nothing here waits for the frame loop. Debouncing is done here rather than with gpiozero's
``bounce_time``, whose meaning depends on the pin backend (some drop every edge after the first and
can miss the final level; the mock pins ignore it): a level counts once it has held still for
``bounce_seconds``, read from the pin itself, so the last level always wins.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial
from typing import Callable

from ..access.controller import PRIORITY, DoorController, Release, Unlock
from ..access.door_contact import DoorMonitor
from ..config import InputsConfig
from ..errors import MaskgateError
from ..messages import InputChanged

POLL_SECONDS = 0.5  # the door's timers are checked at least this often


class Debouncer:
    """One input's steady level, read once it has held still for ``bounce_seconds`` after its last edge.

    ``chatter_changes`` edges within ``chatter_seconds`` is chatter (a loose wire, a floating input):
    the input then keeps its last steady level until it has been quiet for ``chatter_seconds``.
    """

    def __init__(self, read: Callable[[], bool], *, bounce_seconds: float, chatter_changes: int,
                 chatter_seconds: float):
        self.read = read
        self.bounce_seconds = bounce_seconds
        self.chatter_changes, self.chatter_seconds = chatter_changes, chatter_seconds
        self.level: bool | None = None  # None until first read
        self.chattering = False
        self._edges: deque[float] = deque()
        self._pending = True

    def edge(self, now: float) -> bool:
        """An edge was seen; True when it starts an episode of chatter."""
        self._edges.append(now)
        while self._edges[0] < now - self.chatter_seconds:
            self._edges.popleft()
        self._pending = True
        if self.chattering or len(self._edges) < self.chatter_changes:
            return False
        self.chattering = True
        return True

    def due(self) -> float | None:
        """When the level may next be read (None: nothing pending)."""
        if not self._pending:
            return None
        last = self._edges[-1] if self._edges else float("-inf")
        return last + (self.chatter_seconds if self.chattering else self.bounce_seconds)

    def settle(self, now: float) -> bool | None:
        """The new steady level if it changed now, else None."""
        due = self.due()
        if due is None or now < due:
            return None
        self._pending = self.chattering = False
        level = self.read()
        if level == self.level:
            return None
        self.level = level
        return level


def _level(device, active_high: bool) -> bool:
    return bool(device.pin.state) == active_high


class DoorInputs:
    """Input pins → controller requests and ``InputChanged``; ``poll`` does the work (its thread, or a test)."""

    name = "door-inputs"

    def __init__(self, config: InputsConfig, *, controller: DoorController, bus, pin_factory=None,
                 clock: Callable[[], float] = time.monotonic):
        from gpiozero import DigitalInputDevice, GPIOZeroError

        self.config, self.controller, self.bus, self.clock = config, controller, bus, clock
        self.monitor = DoorMonitor(held_open_seconds=config.held_open_seconds) if config.door_contact else None
        self.inputs: dict[str, Debouncer] = {}
        self._devices = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        for name, pin in config.pins().items():
            try:
                device = DigitalInputDevice(pin.pin, pull_up=pin.pull_up, pin_factory=pin_factory,
                                            active_state=pin.active_high if pin.pull_up is None else None)
            except GPIOZeroError as exc:
                self.stop()
                raise MaskgateError(f"inputs.{name}: pin {pin.pin}: {exc}") from None
            self._devices.append(device)
            self.inputs[name] = Debouncer(partial(_level, device, pin.active_high),
                                          bounce_seconds=pin.bounce_seconds, chatter_changes=config.chatter_changes,
                                          chatter_seconds=config.chatter_seconds)
            device.when_activated = device.when_deactivated = partial(self._edge, name)

    def levels(self) -> dict[str, bool | None]:
        """Each input's steady level (True: active; None: not read yet)."""
        with self._wake:
            return {name: debouncer.level for name, debouncer in self.inputs.items()}

    def poll(self) -> float:
        """Settle the inputs and check the door's timers; seconds until something is next due."""
        with self._wake:
            now = self.clock()
            for name, debouncer in self.inputs.items():
                first = debouncer.level is None
                level = debouncer.settle(now)
                if level is not None:
                    self._changed(name, level, now, first=first)
            if self.monitor is not None and self.monitor.tick(now, unlocked=self.controller.tick().unlocked):
                self.controller.alarm("held_open")
                self._publish("door_contact", True, "door_held_open",
                              f"open longer than {self.config.held_open_seconds:g} s after a grant")
            dues = [d for d in (*(i.due() for i in self.inputs.values()), self.monitor and self.monitor.held_due())
                    if d is not None and d > now]
            return min([POLL_SECONDS] + [d - now for d in dues])

    def start(self) -> None:
        self.poll()  # the levels at start: a fire alarm already active releases the door now
        self._thread = threading.Thread(target=self._run, name="door-inputs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for device in self._devices:
            device.close()

    def healthy(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def _run(self) -> None:
        with self._wake:
            while not self._stopping:
                self._wake.wait(self.poll())

    def _edge(self, name: str) -> None:
        """gpiozero's callback (its thread): note the edge, wake the poller."""
        with self._wake:
            debouncer = self.inputs[name]
            if debouncer.edge(self.clock()):
                self._publish(name, bool(debouncer.level), "input_chatter",
                              f"{self.config.chatter_changes} changes within {self.config.chatter_seconds:g} s: "
                              "check the wiring; the last steady level holds until the input is quiet")
            self._wake.notify_all()

    def _changed(self, name: str, active: bool, now: float, *, first: bool) -> None:
        """Publish what the change means, then act on it (so the log shows cause before effect)."""
        if name == "fire_alarm":
            if first and not active:
                return
            self._publish(name, active, "fire_alarm" if active else "fire_alarm_end",
                          "door released" if active else "fire alarm cleared")
            self.controller.request(Release(active=active))
        elif name == "request_to_exit":
            if first or not active:
                return
            claims = self.controller.claims()
            above = [claims[layer] for layer in PRIORITY[:PRIORITY.index("request_to_exit")] if layer in claims]
            held_by = f"; the door stays as {above[0].who} holds it" if above else ""
            self._publish(name, True, "exit_request", f"unlock for {self.config.rex_seconds:g} s{held_by}")
            self.controller.request(Unlock(source="request_to_exit", who=name, reason="request to exit",
                                           seconds=self.config.rex_seconds))
        elif active:
            kind = self.monitor.opened(now, last_unlocked=now if first else self.controller.last_unlocked)
            self._publish(name, True, kind, "open at start" if first else
                          "opened while locked" if kind == "door_forced" else "opened")
            if kind == "door_forced":
                self.controller.alarm("forced_open")
        elif not first:
            relock = self.monitor.closed() and self.config.relock_on_close
            self._publish(name, False, "door_closed", "closed, grant ended" if relock else "closed")
            self.controller.alarm(None)
            if relock:
                self.controller.relock("door closed after entry")

    def _publish(self, name: str, active: bool, kind: str, detail: str) -> None:
        self.bus.publish(InputChanged(name, active, time.time(), detail, kind))
