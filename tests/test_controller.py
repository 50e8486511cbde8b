"""The door controller: explicit priorities, timed claims, one DoorChanged per change, real mock pins."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.access.controller import (LOCKED, Auto, Claim, DoorController, Lock, Release, Unlock, resolve)
from maskgate.access.decider import Decision
from maskgate.access.reasons import Reason
from maskgate.bus import EventBus
from maskgate.config import GpioConfig, PinConfig
from maskgate.hardware.door import build_door
from maskgate.messages import AlarmSilenced, DoorChanged

RELAY = 17


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig():
    factory, clock, bus = MockFactory(), Clock(), EventBus()
    door = build_door(GpioConfig(relay=PinConfig(pin=RELAY), green_led=PinConfig(pin=27), red_led=PinConfig(pin=22),
                                 amber_led=PinConfig(pin=23)), pin_factory=factory)
    changes: list[DoorChanged] = []
    bus.subscribe(DoorChanged, changes.append, name="test")
    controller = DoorController(door, bus=bus, clock=clock)
    yield controller, clock, lambda: factory.pin(RELAY).state == 1, changes, bus
    bus.close()
    door.close()


GRANT = Decision("granted", Reason.GRANTED, "granted", seconds_left=5.0)
DENY = Decision("denied", Reason.NO_MASK, "denied", seconds_left=3.0)


def test_resolve_with_no_claims_is_locked():
    assert resolve({}, 0.0) == LOCKED


@pytest.mark.parametrize("higher, lower", [
    ("fire_alarm", "manual_lock"), ("manual_lock", "manual_unlock"), ("manual_unlock", "remote"),
    ("manual_lock", "remote"), ("remote", "request_to_exit"), ("request_to_exit", "vision"),
])
def test_resolve_follows_the_documented_priority(higher, lower):
    claims = {higher: Claim(True, "emergency", higher), lower: Claim(False, "idle", lower)}
    assert resolve(claims, 0.0).layer == higher


# Each source's claim, and everything a source may send to undo another's: who may override whom, pair by pair.
CLAIM = {
    "fire_alarm": (lambda c: c.request(Release(active=True)), "fire_alarm"),
    "operator": (lambda c: c.request(Lock(source="operator", who="operator:ann", reason="lockdown", seconds=3600)),
                 "manual_lock"),
    "mqtt": (lambda c: c.request(Unlock(source="mqtt", who="mqtt", reason="remote unlock", seconds=5)), "remote"),
    "request_to_exit": (lambda c: c.request(Unlock(source="request_to_exit", who="rex", reason="exit", seconds=5)),
                        "request_to_exit"),
    "vision": (lambda c: c.vision(GRANT), "vision"),
}
ATTEMPTS = {
    "operator": [lambda c: c.request(Unlock(source="operator", who="operator:bob", reason="delivery")),
                 lambda c: c.request(Lock(source="operator", who="operator:bob", reason="cleaning")),
                 lambda c: c.request(Auto(source="operator", who="operator:bob"))],
    "mqtt": [lambda c: c.request(Unlock(source="mqtt", who="mqtt", reason="remote unlock", seconds=5)),
             lambda c: c.request(Auto(source="mqtt", who="mqtt", reason="remote lock"))],
    "request_to_exit": [lambda c: c.request(Unlock(source="request_to_exit", who="rex", reason="exit", seconds=5))],
    "vision": [lambda c: c.vision(DENY), lambda c: c.vision(GRANT)],
}
ORDER = list(CLAIM)


@pytest.mark.parametrize("higher, lower", [(h, lo) for i, h in enumerate(ORDER) for lo in ORDER[i + 1:]])
def test_a_lower_source_neither_overrides_nor_clears_a_higher_ones_claim(rig, higher, lower):
    controller, clock, relay, _, _ = rig
    claim, layer = CLAIM[higher]
    held = claim(controller)
    for attempt in ATTEMPTS[lower]:
        attempt(controller)
        clock.now += 0.1
        state = controller.tick()
        assert (state.layer, state.unlocked, state.who) == (layer, held.unlocked, held.who), attempt
        assert relay() == held.unlocked


def test_an_operator_lock_survives_a_remote_unlock_and_lock_and_auto_ends_a_remote_unlock(rig):
    controller, clock, relay, changes, bus = rig
    controller.request(Lock(source="operator", who="operator:ann", reason="lockdown", seconds=3600))
    controller.request(Unlock(source="mqtt", who="mqtt", reason="remote unlock", seconds=5))
    controller.request(Auto(source="mqtt", who="mqtt", reason="remote lock"))
    assert not relay() and "manual_lock" in controller.claims()
    controller.request(Auto(source="operator", who="operator:ann"))
    controller.request(Unlock(source="mqtt", who="mqtt", reason="remote unlock", seconds=60))
    assert relay() and controller.state.layer == "remote"
    controller.request(Auto(source="operator", who="operator:ann"))
    assert not relay() and controller.claims() == {}


def test_only_an_operator_may_lock(rig):
    controller, *_ = rig
    for source in ("mqtt", "request_to_exit"):
        with pytest.raises(ValueError, match="may not lock"):
            controller.request(Lock(source=source, who=source, reason="lock"))
    assert controller.claims() == {}


def test_expired_claims_do_not_count():
    claims = {"manual_unlock": Claim(True, "override_unlocked", "party", until=10.0),
              "vision": Claim(False, "denied", Reason.NO_MASK)}
    assert resolve(claims, 9.9).unlocked and not resolve(claims, 10.0).unlocked


def test_vision_grant_unlocks_and_relocks_by_itself_even_if_the_loop_stalls(rig):
    controller, clock, relay, changes, bus = rig
    controller.vision(GRANT)
    assert relay()
    clock.now += 4.9
    controller.tick()
    assert relay()
    clock.now += 0.2  # no new frame from the loop: the grant's own end relocks
    controller.tick()
    assert not relay()
    bus.drain()
    assert [(c.state.unlocked, c.state.layer) for c in changes] == [(True, "vision"), (False, "vision")]


def test_fire_alarm_releases_over_an_unmasked_person_and_relocks_when_cleared(rig):
    controller, clock, relay, changes, bus = rig
    controller.vision(DENY)
    controller.request(Release(active=True))
    assert relay() and controller.state.display == "emergency"
    controller.vision(DENY)
    controller.request(Lock(source="operator", who="operator:ann", reason="lockdown"))
    assert relay(), "nothing outranks the fire alarm"
    controller.request(Release(active=False))
    assert not relay() and controller.state.layer == "manual_lock"
    bus.drain()
    assert [c.state.layer for c in changes] == ["fire_alarm", "manual_lock"]


def test_manual_lock_outranks_request_to_exit_and_vision(rig):
    controller, clock, relay, _, _ = rig
    controller.request(Lock(source="operator", who="operator:ann", reason="after hours"))
    controller.vision(GRANT)
    controller.request(Unlock(source="request_to_exit", who="rex", reason="request to exit", seconds=5))
    assert not relay()
    controller.request(Auto(source="operator", who="operator:ann"))
    assert not relay(), "what was granted while the door was held locked does not open it afterwards"


def test_request_to_exit_lasts_its_seconds(rig):
    controller, clock, relay, changes, bus = rig
    controller.request(Unlock(source="request_to_exit", who="rex", reason="request to exit", seconds=5))
    clock.now += 4.0
    assert controller.tick().unlocked
    clock.now += 1.0
    assert not controller.tick().unlocked
    bus.drain()
    assert changes[0].seconds_left == 5.0 and changes[0].state.who == "rex"


def test_manual_unlock_replaces_a_manual_lock_and_auto_hands_back_to_vision(rig):
    controller, clock, relay, changes, bus = rig
    controller.request(Lock(source="operator", who="operator:ann", reason="cleaning"))
    controller.request(Unlock(source="operator", who="operator:bob", reason="delivery", seconds=60))
    assert relay() and "manual_lock" not in controller.claims()
    controller.request(Auto(source="operator", who="operator:bob"))
    assert not relay()
    bus.drain()
    assert changes[-1].state.who == "operator:bob" and changes[-1].state.reason == "back to automatic"


def test_auto_names_who_asked_even_when_vision_holds_a_claim(rig):
    controller, clock, relay, changes, bus = rig
    controller.vision(DENY)
    controller.request(Unlock(source="mqtt", who="mqtt", reason="remote unlock"))
    controller.request(Auto(source="mqtt", who="mqtt", reason="remote lock"))
    bus.drain()
    assert not relay() and changes[-1].state.layer == "vision"
    assert (changes[-1].state.who, changes[-1].state.reason) == ("mqtt", "remote lock")


def test_vision_changes_that_keep_the_door_locked_are_not_door_changes(rig):
    controller, _, _, changes, bus = rig
    for state in ("checking", "denied", "idle", "checking", "cooldown"):
        controller.vision(Decision(state, "x"))
    controller.camera_lost("camera 0: no frame")
    bus.drain()
    assert changes == []
    assert controller.state.display == "camera_lost"


def test_close_locks_and_ignores_later_requests(rig):
    controller, _, relay, _, _ = rig
    controller.request(Unlock(source="operator", who="operator:ann", reason="x"))
    controller.close()
    controller.request(Unlock(source="operator", who="operator:ann", reason="x"))
    assert not relay()


def test_the_timer_thread_relocks_on_its_own(rig):
    import time

    controller, clock, relay, _, _ = rig
    controller.clock = time.monotonic
    controller.start()
    controller.request(Unlock(source="request_to_exit", who="rex", reason="request to exit", seconds=0.2))
    assert relay()
    deadline = time.monotonic() + 2
    while relay() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not relay() and controller.alive


def test_a_door_alarm_shows_only_while_locked_and_never_moves_the_relay(rig):
    controller, clock, relay, changes, bus = rig
    controller.alarm("forced_open")
    assert controller.door.display == "forced_open" and not relay()
    controller.request(Unlock(source="operator", who="operator:ann", reason="let security in"))
    assert relay() and controller.door.display == "override_unlocked"
    controller.request(Auto(source="operator", who="operator:ann"))
    assert not relay() and controller.state.display == "forced_open"
    controller.alarm(None)
    assert controller.door.display == "idle"
    bus.drain()
    assert [c.state.layer for c in changes] == ["manual_unlock", "vision"], "alarms are not door changes"


def test_relock_ends_vision_and_exit_grants_but_not_an_operators_unlock(rig):
    controller, clock, relay, changes, bus = rig
    controller.vision(GRANT)
    controller.request(Unlock(source="request_to_exit", who="rex", reason="request to exit", seconds=5))
    controller.relock("door closed after entry")
    assert not relay()
    controller.vision(Decision("granted", Reason.GRANTED, seconds_left=4.0))  # the same grant, a frame later
    assert not relay(), "a grant the door closed behind stays spent"
    controller.vision(GRANT)
    assert relay(), "a new grant opens again"
    controller.request(Unlock(source="operator", who="operator:ann", reason="delivery"))
    controller.relock()
    assert relay() and controller.state.layer == "manual_unlock"
    bus.drain()
    assert [(c.state.unlocked, c.state.who) for c in changes[:3]] == [(True, "vision"), (True, "rex"),
                                                                      (False, "door_contact")]
    assert changes[2].state.reason == "door closed after entry"


def test_last_unlocked_is_now_while_unlocked_then_when_it_relocked(rig):
    controller, clock, _, _, _ = rig
    assert controller.last_unlocked == float("-inf")
    controller.vision(GRANT)
    clock.now += 3
    assert controller.last_unlocked == clock.now
    clock.now += 2.5  # the grant ended 0.5 s ago; nothing has ticked since
    assert controller.last_unlocked == clock.now - 0.5
    controller.request(Unlock(source="operator", who="operator:ann", reason="x"))
    clock.now += 7
    controller.request(Auto(source="operator", who="operator:ann"))
    clock.now += 1
    assert controller.last_unlocked == clock.now - 1


def test_a_relock_says_what_ended_not_why_it_had_opened(rig):
    controller, clock, relay, changes, bus = rig
    controller.vision(GRANT)
    clock.now += 5.0
    controller.vision(Decision("cooldown", Reason.GRANTED, seconds_left=0.5))  # the decider's grant is over
    controller.request(Unlock(source="request_to_exit", who="rex", reason="request to exit", seconds=5))
    clock.now += 5.0
    controller.tick()
    controller.request(Unlock(source="operator", who="operator:ann", reason="delivery", seconds=60))
    clock.now += 60.0
    controller.tick()
    controller.request(Release(active=True))
    controller.request(Release(active=False))
    controller.vision(GRANT)
    controller.camera_lost("camera unavailable: no frame")
    bus.drain()
    relocks = [c.state.reason for c in changes if not c.state.unlocked]
    assert relocks == ["entry time over", "exit time over", "manual unlock ran out", "fire alarm over",
                       "camera unavailable: no frame"]
    assert not relay()


def test_auto_hands_back_without_opening_the_door_by_itself(rig):
    controller, clock, relay, changes, bus = rig
    controller.request(Lock(source="operator", who="operator:ann", reason="cleaning"))
    controller.vision(GRANT)  # a masked person was granted while the door was held locked
    controller.request(Auto(source="operator", who="operator:ann"))
    assert not relay() and controller.state.layer == "vision"
    controller.vision(Decision("granted", Reason.GRANTED, seconds_left=4.0))  # the rest of that grant
    assert not relay()
    controller.vision(GRANT)  # checked again and granted: the door opens
    assert relay()
    bus.drain()
    assert [(c.state.unlocked, c.state.reason) for c in changes] == [
        (False, "cleaning"), (False, "back to automatic"), (True, Reason.GRANTED)]


def test_an_operator_silences_a_door_alarm_and_the_next_one_sounds_again():
    import time

    factory, bus = MockFactory(), EventBus()
    door = build_door(GpioConfig(relay=PinConfig(pin=RELAY), buzzer=PinConfig(pin=24)), pin_factory=factory)
    silenced = []
    bus.subscribe(AlarmSilenced, silenced.append, name="test")
    controller = DoorController(door, bus=bus, clock=Clock())
    buzzer = factory.pin(24)

    def sounding() -> bool:
        seen = set()
        for _ in range(8):  # the alarm beeps 0.5 s on, 0.5 s off
            seen.add(buzzer.state)
            time.sleep(0.15)
        return 1 in seen

    try:
        assert controller.silence(who="operator:ann", reason="") is None, "nothing to silence"
        controller.alarm("forced_open")
        assert sounding()
        assert controller.silence(who="operator:ann", reason="checked") == "forced_open"
        assert not sounding() and controller.state.display == "forced_open", "the lights stay"
        assert controller.silence(who="operator:ann", reason="again") is None
        controller.alarm(None)
        controller.alarm("held_open")
        assert sounding()
        bus.drain()
        assert [(s.alarm, s.who, s.reason) for s in silenced] == [("forced_open", "operator:ann", "checked")]
    finally:
        bus.close()
        door.close()
