"""The door on gpiozero mock pins: fail-secure whatever happens."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.config import GpioConfig, PinConfig
from maskgate.access.decider import Decision
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
    door.apply(Decision("granted", "mask worn", "granted"))
    assert level(factory, 17) == 0 and door.unlocked


def test_grant_opens_relay_and_lights_green_then_lock_closes(factory, make_door):
    door = make_door(gpio())
    door.apply(Decision("granted", "mask worn", "granted"))
    assert level(factory, 17) == 1 and level(factory, 27) == 1 and level(factory, 22) == 0
    door.apply(Decision("cooldown", "mask worn"))
    assert level(factory, 17) == 0 and level(factory, 27) == 0


def test_denial_keeps_relay_off_lights_red_and_buzzes(factory, make_door):
    door = make_door(gpio())
    door.apply(Decision("denied", "no mask", "denied"))
    assert level(factory, 17) == 0 and level(factory, 22) == 1 and level(factory, 27) == 0
    deadline = time.monotonic() + 2
    while not any(state for _, state in factory.pin(24).states) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(state for _, state in factory.pin(24).states), "the buzzer beeped"


def test_checking_lights_amber(factory, make_door):
    door = make_door(gpio())
    door.apply(Decision("checking", "no mask"))
    assert level(factory, 23) == 1 and level(factory, 17) == 0


def test_close_always_leaves_the_relay_off(factory, make_door):
    door = make_door(gpio())
    door.apply(Decision("granted", "mask worn", "granted"))
    door.close()
    assert level(factory, 17) == 0


def test_optional_devices_may_be_left_out(factory, make_door):
    door = make_door(GpioConfig(relay=PinConfig(pin=5), green_led=None, red_led=None))
    door.apply(Decision("denied", "no mask", "denied"))
    door.apply(Decision("granted", "mask worn", "granted"))
    assert level(factory, 5) == 1
    with door:
        pass
    assert level(factory, 5) == 0
