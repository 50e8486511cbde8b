"""Prints each change of the door's state to the terminal (``maskgate demo``, ``run --verbose``)."""

from __future__ import annotations

import time

from ..bus import EventBus
from ..messages import DoorChanged, FrameProcessed


class ConsoleReporter:
    """One line per change of (vision state, relay), with the faces seen."""

    name = "console"

    def __init__(self, bus: EventBus, *, clock=time.monotonic):
        self.clock, self.began = clock, clock()
        self._unlocked = False
        self._shown: tuple | None = None
        self.subscription = bus.subscribe((FrameProcessed, DoorChanged), self._on_message, name="console")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.subscription.close(timeout=5.0)

    def healthy(self) -> bool:
        return self.subscription.alive

    def _on_message(self, message) -> None:
        if isinstance(message, DoorChanged):
            self._unlocked = message.state.unlocked
            return
        decision, result = message.decision, message.result
        key = (decision.state, self._unlocked)
        if key == self._shown:
            return
        self._shown = key
        labels = ", ".join(_describe(fr.prediction) for fr in result.faces) or "-"
        print(f"{self.clock() - self.began:6.1f}s  {decision.state:<9} relay {'OPEN  ' if self._unlocked else 'locked'}"
              f"  {decision.reason.text:<45} faces: {labels}", flush=True)


def _describe(prediction) -> str:
    nose = "" if prediction.nose_covered is None else f" (nose covered {prediction.nose_covered:.0%})"
    return f"{prediction.label} {prediction.confidence:.0%}{nose}"
