"""The door's outputs: a relay plus optional LEDs and buzzer, built from gpiozero devices it is given.

Every display state the controller can ask for sets **every** output (``OUTPUTS``), so nothing is
left over from the state before. Fail-secure: the relay is off at start and after ``close()``.
Only ``DoorController`` calls ``show``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

from ..access.door_state import Display
from ..config import GpioConfig, PinConfig
from ..errors import MaskgateError

Light = Literal["off", "on", "blink"]
Sound = Literal["off", "once", "three", "alarm"]


@dataclass(frozen=True)
class Outputs:
    relay: bool  # on = lock released
    green: Light
    red: Light
    amber: Light
    buzzer: Sound  # once/three: on entering the state; alarm: until the state ends


OUTPUTS: dict[Display, Outputs] = {
    "idle": Outputs(relay=False, green="off", red="off", amber="off", buzzer="off"),
    "checking": Outputs(relay=False, green="off", red="off", amber="on", buzzer="off"),
    "granted": Outputs(relay=True, green="on", red="off", amber="off", buzzer="once"),
    "cooldown": Outputs(relay=False, green="off", red="off", amber="off", buzzer="off"),
    "denied": Outputs(relay=False, green="off", red="on", amber="off", buzzer="three"),
    "camera_lost": Outputs(relay=False, green="off", red="blink", amber="off", buzzer="off"),
    "emergency": Outputs(relay=True, green="blink", red="blink", amber="off", buzzer="alarm"),
    "override_unlocked": Outputs(relay=True, green="on", red="off", amber="on", buzzer="off"),
    "override_locked": Outputs(relay=False, green="off", red="on", amber="on", buzzer="off"),
    "forced_open": Outputs(relay=False, green="off", red="blink", amber="off", buzzer="alarm"),
    "held_open": Outputs(relay=False, green="off", red="blink", amber="blink", buzzer="alarm"),
}
assert set(OUTPUTS) == set(get_args(Display)), "every display state needs its outputs"


class Door:
    """Relay, LEDs and buzzer showing one display state at a time."""

    def __init__(self, *, relay, green=None, red=None, amber=None, buzzer=None):
        self.relay, self.green, self.red, self.amber, self.buzzer = relay, green, red, amber, buzzer
        self.display: Display | None = None
        self._closed = False
        self.show("idle")

    @property
    def unlocked(self) -> bool:
        return bool(self.relay is not None and self.relay.value)

    def show(self, display: Display) -> None:
        """Relay first (locking never waits for an LED), then lights and sound."""
        if self._closed:
            return
        outputs = OUTPUTS[display]
        if self.relay is not None:
            self.relay.on() if outputs.relay else self.relay.off()
        for device, light in ((self.green, outputs.green), (self.red, outputs.red), (self.amber, outputs.amber)):
            _light(device, light)
        if self.buzzer is not None and display != self.display:
            _sound(self.buzzer, outputs.buzzer)
        self.display = display

    def silence(self) -> None:
        """Stop the buzzer until the next display state (an operator acknowledged the alarm)."""
        if self.buzzer is not None and not self._closed:
            self.buzzer.off()

    def close(self) -> None:
        """Lock, everything off, release the pins."""
        if self._closed:
            return
        self.show("idle")
        self._closed = True
        for device in (self.buzzer, self.amber, self.red, self.green, self.relay):
            if device is not None:
                device.close()

    def __enter__(self) -> "Door":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _light(device, light: Light) -> None:
    if device is None:
        return
    if light == "blink":
        device.blink(on_time=0.25, off_time=0.25, background=True)
    elif light == "on":
        device.on()
    else:
        device.off()


def _sound(buzzer, sound: Sound) -> None:
    if sound == "once":
        buzzer.beep(on_time=0.15, off_time=0.1, n=1, background=True)
    elif sound == "three":
        buzzer.beep(on_time=0.1, off_time=0.1, n=3, background=True)
    elif sound == "alarm":
        buzzer.beep(on_time=0.5, off_time=0.5, background=True)
    else:
        buzzer.off()


NO_GPIO = ("no GPIO here: gpiozero found no pin driver (on a Raspberry Pi 5 install lgpio: "
           "apt install python3-lgpio, see docs/pi.md); to try maskgate without a Pi set gpio.pin_factory: mock")


def build_door(config: GpioConfig, *, pin_factory=None) -> Door:
    """Door from config; ``pin_factory`` overrides the configured one (tests pass a MockFactory).
    A machine without GPIO is a one-line MaskgateError, not gpiozero's traceback."""
    from gpiozero import LED, Buzzer, Device, OutputDevice
    from gpiozero.exc import BadPinFactory

    pin_factory = pin_factory or config.make_pin_factory()
    if pin_factory is None and Device.pin_factory is None:
        with warnings.catch_warnings():  # gpiozero warns once per driver it could not load
            warnings.simplefilter("ignore")
            try:
                Device.ensure_pin_factory()
            except BadPinFactory:
                raise MaskgateError(NO_GPIO) from None

    def make(cls, pin: PinConfig | None, **kwargs):
        if pin is None:
            return None
        return cls(pin.pin, active_high=pin.active_high, initial_value=False, pin_factory=pin_factory, **kwargs)

    return Door(
        relay=make(OutputDevice, config.relay),
        green=make(LED, config.green_led),
        red=make(LED, config.red_led),
        amber=make(LED, config.amber_led),
        buzzer=make(Buzzer, config.buzzer),
    )
