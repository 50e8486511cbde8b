"""The door inputs on gpiozero mock pins with an injected clock: fire alarm, request-to-exit, door
contact (forced, held open, relock on close), debounce and chatter; then the fire alarm pin through
the whole App with the frame loop stalled."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.access.controller import DoorController, Lock
from maskgate.access.decider import Decision
from maskgate.access.reasons import Reason
from maskgate.app import App
from maskgate.bus import EventBus
from maskgate.config import Config, GpioConfig, InputsConfig, PinConfig
from maskgate.hardware.door import build_door
from maskgate.hardware.inputs import Debouncer, DoorInputs
from maskgate.records.events import EventLog
from maskgate.records.recorder import Recorder
from maskgate.services.control import send
from maskgate.sources import EndOfStream, Frame
from maskgate.vision.classifier import MaskClassifier
from maskgate.vision.core import FrameResult
from web_rig import wait_for

RELAY, GREEN, RED, AMBER, BUZZER = 17, 27, 22, 23, 24
FIRE, REX, CONTACT = 5, 6, 13
GRANT = Decision("granted", Reason.GRANTED, "granted", seconds_left=5.0)
STILL_GRANTED = Decision("granted", Reason.GRANTED, seconds_left=3.0)
DENY = Decision("denied", Reason.NO_MASK, "denied", seconds_left=3.0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# As docs/wiring.md wires them: the fire panel's NC contact and the reed switch pull their pins to
# ground while all is well (active high); the exit button pulls its pin to ground when pressed.
INPUTS = {"fire_alarm": {"pin": FIRE, "active_high": True}, "request_to_exit": {"pin": REX},
          "door_contact": {"pin": CONTACT, "active_high": True}}


class Rig:
    def __init__(self, tmp_path, **inputs):
        self.factory, self.clock, self.bus = MockFactory(), Clock(), EventBus()
        self.door = build_door(GpioConfig(relay=PinConfig(pin=RELAY), green_led=PinConfig(pin=GREEN),
                                          red_led=PinConfig(pin=RED), amber_led=PinConfig(pin=AMBER),
                                          buzzer=PinConfig(pin=BUZZER)), pin_factory=self.factory)
        self.controller = DoorController(self.door, bus=self.bus, clock=self.clock)
        self.log = EventLog(tmp_path / "state")
        Recorder(self.log, self.bus)
        self.config = InputsConfig.model_validate({**INPUTS, **inputs})
        self.inputs = DoorInputs(self.config, controller=self.controller, bus=self.bus, pin_factory=self.factory,
                                 clock=self.clock)
        self.pin(FIRE).drive_low()  # the pull-ups hold the pins high until the contacts close
        self.pin(CONTACT).drive_low()
        self.settle()

    def pin(self, number):
        return self.factory.pin(number)

    def settle(self, seconds: float = 0.06) -> None:
        self.clock.now += seconds
        self.inputs.poll()

    def relay(self) -> bool:
        return self.pin(RELAY).state == 1

    def rows(self) -> list[tuple[str, str, str]]:
        self.bus.drain()
        return [(e.outcome, e.source, e.reason) for e in self.log.list()]

    def outcomes(self) -> list[str]:
        return [outcome for outcome, _, _ in self.rows()]

    def close(self):
        self.inputs.stop()
        self.bus.close()
        self.door.close()
        self.log.close()


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def test_all_quiet_at_start_is_no_event(rig):
    assert rig.inputs.levels() == {"fire_alarm": False, "request_to_exit": False, "door_contact": False}
    assert rig.rows() == [] and not rig.relay()


def test_fire_alarm_releases_over_an_unmasked_person_and_relocks_when_cleared(rig):
    rig.controller.vision(DENY)
    rig.pin(FIRE).drive_high()
    rig.settle(0.04)
    assert not rig.relay(), "not before the level has held bounce_seconds"
    rig.settle(0.02)
    assert rig.relay() and rig.door.display == "emergency"
    rig.controller.vision(DENY)
    rig.controller.request(Lock(source="operator", who="operator:ann", reason="lockdown"))
    assert rig.relay(), "nothing outranks the fire alarm"
    rig.pin(FIRE).drive_low()
    rig.settle()
    assert not rig.relay() and rig.controller.state.layer == "manual_lock"
    rows = rig.rows()
    assert ("fire_alarm", "fire_alarm", "door released") in rows
    assert ("fire_alarm_end", "fire_alarm", "fire alarm cleared") in rows
    assert rig.outcomes() == ["fire_alarm", "door", "fire_alarm_end", "override"]


def test_a_fire_alarm_already_active_at_start_releases_the_door(rig):
    rig.inputs.stop()
    # A daemon starting while the panel's contact is open (the pull-up holds the pin high: alarm).
    rig.inputs = DoorInputs(InputsConfig(fire_alarm=INPUTS["fire_alarm"]), controller=rig.controller, bus=rig.bus,
                            pin_factory=rig.factory, clock=rig.clock)
    assert rig.pin(FIRE).state == 1
    rig.inputs.poll()
    assert rig.relay() and rig.outcomes() == ["fire_alarm", "door"]


def test_request_to_exit_unlocks_for_rex_seconds_once_per_press(rig):
    rig.pin(REX).drive_low()
    rig.settle()
    assert rig.relay()
    rig.pin(REX).drive_high()
    rig.settle()
    rig.clock.now += 4.8
    assert rig.controller.tick().unlocked
    rig.clock.now += 0.2
    assert not rig.controller.tick().unlocked
    assert rig.rows()[0] == ("exit_request", "request_to_exit", "unlock for 5 s")
    assert rig.outcomes().count("exit_request") == 1


def test_request_to_exit_under_a_manual_lock_is_logged_as_held(rig):
    rig.controller.request(Lock(source="operator", who="operator:ann", reason="lockdown"))
    rig.pin(REX).drive_low()
    rig.settle()
    assert not rig.relay()
    assert "the door stays as operator:ann holds it" in rig.rows()[-1][2]


def test_a_bouncing_button_is_one_event_and_one_unlock(rig):
    for level in [0, 1, 0, 1, 0, 1, 0]:  # 7 edges 4 ms apart, ending pressed
        rig.pin(REX).drive_high() if level else rig.pin(REX).drive_low()
        rig.settle(0.004)
    assert not rig.relay(), "nothing counts while it bounces"
    rig.settle()
    assert rig.relay()
    assert rig.outcomes() == ["exit_request", "door"]


def test_a_glitch_shorter_than_the_bounce_time_does_not_release_the_door(rig):
    rig.pin(FIRE).drive_high()
    rig.settle(0.01)
    rig.pin(FIRE).drive_low()
    rig.settle()
    rig.settle()
    assert not rig.relay() and rig.rows() == []


def test_a_chattering_input_is_one_event_and_holds_its_last_steady_level(rig):
    for i in range(31):  # a loose wire: an edge every 30 ms for almost a second, ending high
        rig.pin(FIRE).drive_high() if i % 2 == 0 else rig.pin(FIRE).drive_low()
        rig.settle(0.03)
    assert not rig.relay(), "the last steady level (no alarm) holds while it chatters"
    rig.settle(0.5)
    assert not rig.relay()
    assert rig.outcomes() == ["input_chatter"]
    assert rig.rows()[0][1:] == ("fire_alarm", "20 changes within 1 s: check the wiring; the last steady level "
                                               "holds until the input is quiet")
    rig.settle(0.5)  # quiet for chatter_seconds: the pin is read again (it ended high: alarm)
    assert rig.relay() and rig.outcomes() == ["input_chatter", "fire_alarm", "door"]


def test_door_opened_without_a_grant_is_forced_with_the_alarm(rig):
    rig.pin(CONTACT).drive_high()
    rig.settle()
    assert rig.door.display == "forced_open" and not rig.relay()
    wait_for(lambda: rig.pin(BUZZER).state == 1, 30, "the buzzer sounds the alarm")
    rig.pin(CONTACT).drive_low()
    rig.settle()
    assert rig.door.display == "idle" and rig.pin(BUZZER).state == 0
    assert rig.rows() == [("door_forced", "door_contact", "opened while locked"),
                          ("door_closed", "door_contact", "closed")]


def test_opened_on_a_grant_then_closed_relocks_at_once_and_the_rest_of_the_grant_is_spent(rig):
    rig.controller.vision(GRANT)
    rig.pin(CONTACT).drive_high()
    rig.settle()
    assert rig.relay() and rig.door.display == "granted"
    rig.pin(CONTACT).drive_low()
    rig.settle(1.0)
    assert not rig.relay(), "relocked when the door closed, 4 s before the grant would have ended"
    rig.controller.vision(STILL_GRANTED)  # the frame loop still in its grant: stays locked
    assert not rig.relay()
    rig.controller.vision(GRANT)  # a new decision
    assert rig.relay()
    rows = rig.rows()
    assert rows[1] == ("door_opened", "door_contact", "opened")
    assert ("door_closed", "door_contact", "closed, grant ended") in rows
    assert ("door", "door_contact", "locked: door closed after entry") in rows


def test_without_relock_on_close_the_grant_runs_its_time(tmp_path):
    rig = Rig(tmp_path, relock_on_close=False)
    try:
        rig.controller.vision(GRANT)
        rig.pin(CONTACT).drive_high()
        rig.settle()
        rig.pin(CONTACT).drive_low()
        rig.settle()
        assert rig.relay()
    finally:
        rig.close()


def test_opened_just_after_a_grant_relocked_is_not_forced(rig):
    rig.controller.vision(GRANT)
    rig.clock.now += 5.5  # relocked 0.5 s ago
    rig.controller.tick()
    rig.pin(CONTACT).drive_high()
    rig.settle()
    assert rig.door.display != "forced_open" and "door_opened" in rig.outcomes()
    rig.pin(CONTACT).drive_low()
    rig.settle()
    rig.clock.now += 10
    rig.pin(CONTACT).drive_high()
    rig.settle()
    assert rig.door.display == "forced_open"


def test_held_open_past_the_limit_is_an_event_and_an_alarm_until_closed(rig):
    rig.controller.vision(GRANT)
    rig.pin(CONTACT).drive_high()
    rig.settle()
    rig.settle(29.0)
    assert "door_held_open" not in rig.outcomes() and rig.door.display != "held_open"
    rig.settle(1.0)
    assert rig.door.display == "held_open" and not rig.relay()
    assert rig.outcomes().count("door_held_open") == 1
    rig.settle(5.0)
    assert rig.outcomes().count("door_held_open") == 1, "one event per opening"
    rig.pin(CONTACT).drive_low()
    rig.settle()
    assert rig.door.display not in ("held_open", "forced_open")
    assert rig.rows()[-1][0] == "door_closed"


def test_held_open_waits_while_an_operator_keeps_the_door_unlocked(rig):
    from maskgate.access.controller import Auto, Unlock

    rig.controller.request(Unlock(source="operator", who="operator:ann", reason="delivery"))
    rig.pin(CONTACT).drive_high()
    rig.settle(60.0)
    rig.settle(60.0)
    assert "door_held_open" not in rig.outcomes() and rig.relay()
    rig.controller.request(Auto(source="operator", who="operator:ann"))
    rig.settle()
    assert rig.door.display == "held_open"


def test_debouncer_reads_the_last_level_not_the_first_edge():
    level = [False]
    debouncer = Debouncer(lambda: level[0], bounce_seconds=0.05, chatter_changes=5, chatter_seconds=1.0)
    assert debouncer.settle(0.0) is False  # the first read
    for t, value in ((1.0, True), (1.01, False), (1.02, True)):
        level[0] = value
        assert not debouncer.edge(t)
    assert debouncer.settle(1.06) is None and debouncer.due() == pytest.approx(1.07)
    assert debouncer.settle(1.07) is True and debouncer.due() is None


def test_overlapping_pins_are_rejected_naming_both_keys():
    with pytest.raises(ValueError, match="pin 27 is used twice: gpio.green_led and inputs.request_to_exit"):
        Config.model_validate({"inputs": {"request_to_exit": {"pin": "GPIO27"}}})


class BlockingCamera:
    """One frame of nobody, then read() blocks until released: a hung camera driver."""

    def __init__(self):
        self.release, self.blocked = threading.Event(), threading.Event()
        self.frames = 1

    def __call__(self):
        return self

    def read(self):
        if self.frames:
            self.frames -= 1
            return Frame(__import__("numpy").zeros((480, 640, 3), "uint8"), time.monotonic())
        self.blocked.set()
        self.release.wait()
        raise EndOfStream

    def close(self):
        pass


class NobodyCore:
    def __init__(self):
        self.classifier = MaskClassifier(None)

    def process(self, image, *, streaming=False):
        return FrameResult(640, 480, (), 1.0, 0.0)


def test_fire_alarm_pin_releases_with_the_frame_loop_stalled(tmp_path):
    sock = tmp_path / "control.sock"
    config = Config.model_validate({"camera": {"backend": "scenes"}, "inputs": {"fire_alarm": {"pin": FIRE}},
                                    "control": {"socket_path": str(sock), "group": None},
                                    "events": {"state_dir": str(tmp_path / "state")}, "web": {"enabled": False}})
    factory, camera = MockFactory(), BlockingCamera()
    app = App(config, core=NobodyCore(), pin_factory=factory, open_source=camera)
    runner = threading.Thread(target=app.run)
    runner.start()
    try:
        assert camera.blocked.wait(30)
        factory.pin(FIRE).drive_low()  # active low by default: the panel closes its contact on alarm
        wait_for(lambda: factory.pin(RELAY).state == 1, 30, "released while the loop is stuck")
        assert app.controller.state.display == "emergency"
        status = send(sock, {"command": "status"})  # what `maskgate door status` shows
        assert status["door"]["layer"] == "fire_alarm" and status["inputs"] == {"fire_alarm": True}
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600, "group null: the daemon's user only"
        factory.pin(FIRE).drive_high()
        wait_for(lambda: factory.pin(RELAY).state == 0, 30, "relocked when cleared")
        assert runner.is_alive() and not camera.frames, "the loop was stuck in read() all along"
    finally:
        app.stop()
        camera.release.set()
        runner.join(30)
    outcomes = [e.outcome for e in EventLog(tmp_path / "state").list()]
    assert outcomes.count("fire_alarm") == 1 and outcomes.count("fire_alarm_end") == 1


def test_a_pin_gpiozero_refuses_is_a_one_line_error_naming_the_key():
    from gpiozero import DigitalInputDevice

    from maskgate.errors import MaskgateError

    factory = MockFactory()
    taken = DigitalInputDevice(REX, pin_factory=factory)  # e.g. claimed by another program
    config = InputsConfig.model_validate({"fire_alarm": {"pin": FIRE}, "request_to_exit": {"pin": REX}})
    with pytest.raises(MaskgateError, match=r"^inputs.request_to_exit: pin 6: .*in use"):
        DoorInputs(config, controller=None, bus=None, pin_factory=factory)
    DigitalInputDevice(FIRE, pin_factory=factory).close()  # the fire alarm's pin was released again
    taken.close()
