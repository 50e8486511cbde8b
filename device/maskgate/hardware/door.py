"""The door: a relay plus optional LEDs and buzzer, built from gpiozero devices it is given.

Fail-secure: the relay is off at start and after ``lock()``/``close()``, whatever else happens.
"""

from __future__ import annotations

from ..config import GpioConfig, PinConfig
from ..access.decider import Decision


class Door:
    """Shows a Decision on the hardware; ``relay`` on means the lock is released."""

    def __init__(self, *, relay, green=None, red=None, amber=None, buzzer=None):
        self.relay, self.green, self.red, self.amber, self.buzzer = relay, green, red, amber, buzzer
        self._closed = False
        self.lock()

    @property
    def unlocked(self) -> bool:
        return bool(self.relay is not None and self.relay.value)

    def apply(self, decision: Decision) -> None:
        self._set(self.relay, decision.unlocked)
        self._set(self.green, decision.state == "granted")
        self._set(self.red, decision.state == "denied")
        self._set(self.amber, decision.state == "checking")
        if decision.outcome == "granted" and self.buzzer is not None:
            self.buzzer.beep(on_time=0.15, off_time=0.1, n=1, background=True)
        elif decision.outcome == "denied" and self.buzzer is not None:
            self.buzzer.beep(on_time=0.1, off_time=0.1, n=3, background=True)

    def lock(self) -> None:
        """Relay off first, then everything else off."""
        self._set(self.relay, False)
        for device in (self.green, self.amber):
            self._set(device, False)
        if self.buzzer is not None:
            self.buzzer.off()

    def close(self) -> None:
        if self._closed:
            return
        self.lock()
        self._closed = True
        for device in (self.buzzer, self.amber, self.red, self.green, self.relay):
            if device is not None:
                device.close()

    def __enter__(self) -> "Door":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _set(device, on: bool) -> None:
        if device is not None:
            device.on() if on else device.off()


def build_door(config: GpioConfig, *, pin_factory=None) -> Door:
    """Door from config; ``pin_factory`` overrides the configured one (tests pass a MockFactory)."""
    from gpiozero import LED, Buzzer, OutputDevice

    if pin_factory is None and config.pin_factory == "mock":
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()

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
