"""The door controller: the only code that switches the lock, by explicit priority.

    fire alarm  >  local operator (lock, unlock)  >  remote (MQTT)  >  request-to-exit  >  vision

Every party states a claim on its own layer ("unlocked for 5 s", "locked until withdrawn"); the
winner is the highest-priority claim that has not expired (``resolve``, a pure function of the
claims and the time). Every request names its source, and ``RIGHTS`` says which layers each source
may set and withdraw: a source never touches a layer above its own, so a remote command cannot end
an operator's lock. The controller shows the winner on the Door and publishes ``DoorChanged``
whenever the lock or whoever holds it changes. Requests come from any thread (gpiozero callbacks,
the control socket, MQTT, the web server) and never wait for the frame loop.

The door contact adds two things outside the layers: an alarm shown while the door is locked
(forced or held open; it never moves the relay; an operator may ``silence`` its buzzer), and
``relock`` when the door closes after a grant.

When the lock closes because a claim ended, the change says which (``ENDED``: "entry time over", not
the reason the grant was made). Handing the door back to automatic never opens it by itself: a grant
vision made while an override kept the door locked is spent.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Literal, Mapping

from ..messages import AlarmSilenced, DoorChanged
from .decider import Decision
from .door_state import Display, DoorState, Layer

log = logging.getLogger(__name__)

PRIORITY: tuple[Layer, ...] = ("fire_alarm", "manual_lock", "manual_unlock", "remote", "request_to_exit", "vision")
Source = Literal["operator", "mqtt", "request_to_exit"]  # who sends Unlock/Lock/Auto (the fire alarm: Release)


@dataclass(frozen=True)
class Rights:
    """What one source may do: the layer its unlock and its lock claim, the layers its ``Auto`` withdraws."""

    unlock: Layer
    lock: Layer | None = None
    clears: tuple[Layer, ...] = ()


# Who may override whom (docs/wiring.md and docs/mqtt.md show this table). The fire alarm alone sets and
# ends its layer (``Release``), vision alone its own (``vision``); the door closing ends vision's grant
# and request-to-exit (``relock``). An operator's lock or unlock replaces the operator's other claim.
RIGHTS: dict[Source, Rights] = {
    "operator": Rights(unlock="manual_unlock", lock="manual_lock", clears=("manual_lock", "manual_unlock", "remote")),
    "mqtt": Rights(unlock="remote", clears=("remote",)),
    "request_to_exit": Rights(unlock="request_to_exit"),
}


@dataclass(frozen=True)
class Claim:
    """One layer's wish: unlock or not, what to show, why, who asked, until when (controller clock)."""

    unlock: bool
    display: Display
    reason: str
    who: str = ""
    until: float | None = None


LOCKED = DoorState(False, "idle", "vision", "nobody at the door")
# Why the lock closed when the unlocking claim ended on its own (a timer, the fire alarm clearing).
ENDED: dict[Layer, str] = {"fire_alarm": "fire alarm over", "manual_unlock": "manual unlock ran out",
                           "remote": "remote unlock ran out", "request_to_exit": "exit time over",
                           "vision": "entry time over"}


def resolve(claims: Mapping[Layer, Claim], now: float) -> DoorState:
    """The highest-priority claim still in force; locked when there is none."""
    for layer in PRIORITY:
        claim = claims.get(layer)
        if claim is not None and (claim.until is None or now < claim.until):
            return DoorState(claim.unlock, claim.display, layer, claim.reason, claim.who, claim.until)
    return LOCKED


# Requests: what inputs, operators and remote systems may ask for.
@dataclass(frozen=True)
class Release:
    """Fire alarm: release the door (``active``) or end the release."""

    active: bool
    reason: str = "fire alarm"
    who: str = "fire_alarm"


@dataclass(frozen=True, kw_only=True)
class Unlock:
    """Unlock for ``seconds`` (None: until ``Auto``), on the layer of ``source``."""

    source: Source
    who: str
    reason: str
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class Lock:
    """Keep the door locked for ``seconds`` (None: until ``Auto``), whatever the layers below say."""

    source: Source
    who: str
    reason: str
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class Auto:
    """Withdraw the overrides ``source`` may clear: the layers below decide again."""

    source: Source
    who: str
    reason: str = "back to automatic"


Request = Release | Unlock | Lock | Auto
DoorAlarm = Literal["forced_open", "held_open"]


class DoorController:
    """Owns the door. Thread-safe; ``clock`` is injected (tests drive time by hand with ``tick``)."""

    def __init__(self, door, *, bus=None, clock: Callable[[], float] = time.monotonic):
        self.door, self.bus, self.clock = door, bus, clock
        self._claims: dict[Layer, Claim] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._state = LOCKED
        self._alarm: DoorAlarm | None = None
        self._silenced: DoorAlarm | None = None  # the alarm an operator acknowledged
        self._grant_spent = False  # the door closed behind vision's current grant
        self._unlocked_at = float("-inf")
        self._timer: threading.Thread | None = None
        self._closed = False
        self.door.show(LOCKED.display)

    @property
    def state(self) -> DoorState:
        with self._lock:
            return self._state

    def claims(self) -> dict[Layer, Claim]:
        with self._lock:
            now = self.clock()
            return {k: c for k, c in self._claims.items() if c.until is None or now < c.until}

    @property
    def last_unlocked(self) -> float:
        """When the lock was last released (controller clock): now while it is, -inf if never."""
        with self._lock:
            now = self.clock()
            return now if self._apply(now).unlocked else self._unlocked_at

    def vision(self, decision: Decision) -> DoorState:
        """The frame loop's decision; a grant carries its own end, so a stalled loop cannot hold the door open."""
        now = self.clock()
        with self._lock:
            if decision.outcome == "granted":
                self._grant_spent = False
            elif decision.unlocked and self._grant_spent:
                return self._state  # the rest of a grant the door already closed behind
            until = now + decision.seconds_left if decision.unlocked else None
            return self._set("vision", Claim(decision.unlocked, decision.state, decision.reason, "vision", until), now)

    def camera_lost(self, reason: str) -> DoorState:
        return self._set("vision", Claim(False, "camera_lost", reason, "vision"), self.clock())

    def request(self, request: Request) -> DoorState:
        now = self.clock()
        if isinstance(request, Release):
            claim = Claim(True, "emergency", request.reason, request.who) if request.active else None
            return self._set("fire_alarm", claim, now)
        rights = RIGHTS[request.source]
        if isinstance(request, Auto):
            with self._lock:
                if self._closed:
                    return self._state
                for layer in rights.clears:
                    self._claims.pop(layer, None)
                if not self._state.unlocked:
                    self._spend_unlocks_below(now)
                return self._apply(now, who=request.who, reason=request.reason)
        layer = rights.lock if isinstance(request, Lock) else rights.unlock
        if layer is None:
            raise ValueError(f"{request.source} may not lock the door")
        until = None if request.seconds is None else now + request.seconds
        display: Display = "override_locked" if isinstance(request, Lock) else "override_unlocked"
        with self._lock:
            for other in {rights.unlock, rights.lock} - {layer, None}:
                self._claims.pop(other, None)  # an operator's unlock replaces their lock, and back
            return self._set(layer, Claim(isinstance(request, Unlock), display, request.reason, request.who, until), now)

    def alarm(self, alarm: DoorAlarm | None) -> DoorState:
        """Show a door-position alarm whenever the door is locked (None: it closed); the relay is untouched."""
        with self._lock:
            if alarm != self._alarm:
                self._silenced = None
            self._alarm = alarm
            return self._apply(self.clock())

    def silence(self, *, who: str, reason: str) -> DoorAlarm | None:
        """An operator acknowledges the door alarm: its buzzer stops (lights stay until the door closes).
        Returns the alarm silenced, None if none is sounding."""
        with self._lock:
            alarm = self._alarm if self._alarm != self._silenced and self._state.display == self._alarm else None
            if alarm is None:
                return None
            self._silenced = alarm
            self.door.silence()
        log.info("door alarm %s silenced by %s (%s)", alarm, who, reason)
        if self.bus is not None:
            self.bus.publish(AlarmSilenced(alarm, who, reason, time.time()))
        return alarm

    def relock(self, reason: str = "door closed") -> DoorState:
        """The door closed after a grant: end vision's grant and request-to-exit; overrides and fire alarm stay."""
        now = self.clock()
        with self._lock:
            if self._closed:
                return self._state
            self._claims.pop("request_to_exit", None)
            vision = self._claims.get("vision")
            if vision is not None and vision.unlock:
                self._grant_spent = True
                self._claims["vision"] = Claim(False, "cooldown", reason, "door_contact")
            return self._apply(now, who="door_contact", reason=reason)

    def tick(self) -> DoorState:
        """Let expired claims go (the timer thread does this on its own; tests call it)."""
        with self._lock:
            return self._apply(self.clock())

    def start(self) -> None:
        """Run the expiry timer in a thread of its own."""
        self._timer = threading.Thread(target=self._run_timer, name="door-controller", daemon=True)
        self._timer.start()

    @property
    def alive(self) -> bool:
        return self._timer is None or self._timer.is_alive()

    def close(self, reason: str = "daemon stopped") -> None:
        """Drop every claim and lock the door."""
        with self._lock:
            self._claims.clear()
            self._alarm = None
            self._closed = True
            self._apply(self.clock(), reason=reason)
            self._wake.notify_all()
        if self._timer is not None:
            self._timer.join(timeout=1.0)

    def _set(self, layer: Layer, claim: Claim | None, now: float) -> DoorState:
        with self._lock:
            if self._closed:
                return self._state
            if claim is None:
                self._claims.pop(layer, None)
            else:
                self._claims[layer] = claim
            return self._apply(now)

    def _spend_unlocks_below(self, now: float) -> None:
        """The door was held locked: what vision and request-to-exit granted meanwhile does not open it later."""
        self._claims.pop("request_to_exit", None)
        vision = self._claims.get("vision")
        if vision is not None and vision.unlock and (vision.until is None or now < vision.until):
            self._grant_spent = True
            self._claims["vision"] = Claim(False, "cooldown", "granted while the door was held locked", "vision")

    def _apply(self, now: float, *, who: str = "", reason: str = "") -> DoorState:
        previous, state = self._state, resolve(self._claims, now)
        if state.layer == "vision" and (who or reason):  # vision decides again because someone asked
            state = replace(state, who=who or state.who, reason=reason or state.reason)
        elif state.layer == "vision" and previous.unlocked and not state.unlocked and (
                previous.layer != "vision" or state.display == "cooldown"
                or (previous.until is not None and now >= previous.until)):
            state = replace(state, reason=ENDED[previous.layer])  # the unlocking claim ended on its own
        if self._alarm is not None and not state.unlocked:
            state = replace(state, display=self._alarm)
        if state.unlocked or previous.unlocked:  # a claim that ran out did so at its end, maybe before now
            self._unlocked_at = now if state.unlocked else min(now, previous.until or now)
        if state.display != previous.display or state.unlocked != previous.unlocked:
            self.door.show(state.display)
        self._state = state
        if state.holder() != previous.holder():
            log.info("door %s by %s (%s)", "unlocked" if state.unlocked else "locked", state.who or state.layer,
                     state.reason)
            if self.bus is not None:
                seconds_left = None if state.until is None else max(0.0, state.until - now)
                self.bus.publish(DoorChanged(state, previous, time.time(), seconds_left))
        self._wake.notify_all()
        return state

    def _run_timer(self) -> None:
        with self._lock:
            while not self._closed:
                now = self.clock()
                self._apply(now)
                ends = [c.until for c in self._claims.values() if c.until is not None and c.until > now]
                self._wake.wait(timeout=min([e - now for e in ends] + [1.0]))
