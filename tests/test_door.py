"""The door on gpiozero mock pins: fail-secure whatever happens."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.config import GpioConfig, PinConfig
from maskgate.hardware.door import OUTPUTS
from maskgate.hardware.door import build_door


@pytest.fixture
def factory():
    return MockFactory()


@pytest.fixture
def make_door(factory):
    doors = []

    def make(config):
        doors.append(build_door(config, pin_factory=factory))
        return doors[-1]

    yield make
    for door in doors:
        door.close()


def gpio(**overrides):
    base = dict(relay=PinConfig(pin=17), green_led=PinConfig(pin=27), red_led=PinConfig(pin=22),
                amber_led=PinConfig(pin=23), buzzer=PinConfig(pin=24))
    return GpioConfig(**{**base, **overrides})


def level(factory, pin):
    return factory.pin(pin).state


def test_relay_is_off_at_start(factory, make_door):
    door = make_door(gpio())
    assert level(factory, 17) == 0 and not door.unlocked


def test_active_low_relay_idles_high(factory, make_door):
    door = make_door(gpio(relay=PinConfig(pin=17, active_high=False)))
    assert level(factory, 17) == 1 and not door.unlocked
    door.show("granted")
    assert level(factory, 17) == 0 and door.unlocked


def test_grant_opens_relay_and_lights_green_then_lock_closes(factory, make_door):
    door = make_door(gpio())
    door.show("granted")
    assert level(factory, 17) == 1 and level(factory, 27) == 1 and level(factory, 22) == 0
    door.show("cooldown")
    assert level(factory, 17) == 0 and level(factory, 27) == 0


def test_denial_keeps_relay_off_lights_red_and_buzzes(factory, make_door):
    door = make_door(gpio())
    door.show("denied")
    assert level(factory, 17) == 0 and level(factory, 22) == 1 and level(factory, 27) == 0
    deadline = time.monotonic() + 2
    while not any(state for _, state in factory.pin(24).states) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(state for _, state in factory.pin(24).states), "the buzzer beeped"


def test_checking_lights_amber(factory, make_door):
    door = make_door(gpio())
    door.show("checking")
    assert level(factory, 23) == 1 and level(factory, 17) == 0


def test_close_always_leaves_the_relay_off(factory, make_door):
    door = make_door(gpio())
    door.show("granted")
    door.close()
    assert level(factory, 17) == 0


def test_optional_devices_may_be_left_out(factory, make_door):
    door = make_door(GpioConfig(relay=PinConfig(pin=5), green_led=None, red_led=None))
    door.show("denied")
    door.show("granted")
    assert level(factory, 5) == 1
    with door:
        pass
    assert level(factory, 5) == 0


def test_after_a_denial_going_idle_turns_every_output_off(factory, make_door):
    door = make_door(gpio())
    door.show("denied")
    door.show("idle")
    assert [level(factory, pin) for pin in (17, 27, 22, 23)] == [0, 0, 0, 0]


@pytest.mark.parametrize("display", sorted(OUTPUTS))
def test_every_display_state_sets_every_output_whatever_came_before(factory, make_door, display):
    door = make_door(gpio())
    for before in OUTPUTS:
        door.show(before)
        door.show(display)
        expected = OUTPUTS[display]
        assert level(factory, 17) == int(expected.relay), (before, display)
        for pin, light in ((27, expected.green), (22, expected.red), (23, expected.amber)):
            if light != "blink":
                assert level(factory, pin) == int(light == "on"), (before, display, pin)


def test_fire_emergency_releases_the_relay_and_sounds_the_alarm(factory, make_door):
    door = make_door(gpio())
    door.show("emergency")
    assert level(factory, 17) == 1
    deadline = time.monotonic() + 2
    while sum(state for _, state in factory.pin(24).states) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(state for _, state in factory.pin(24).states) >= 2, "the alarm keeps sounding"
