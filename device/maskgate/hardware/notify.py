"""systemd's sd_notify protocol over $NOTIFY_SOCKET, by hand (no libsystemd needed)."""

from __future__ import annotations

import os
import socket
import time

from ..messages import CameraChanged, DoorChanged, EventLogChanged, FrameProcessed


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING to systemd; does nothing when not run by systemd."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address = None
        self._socket = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(self, *fields: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError:
            pass  # systemd gone or socket full: never let notification break the door loop

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()


class StatusReporter:
    """Keeps systemd's STATUS= line current from the bus: at most every ``every_seconds`` for frames,
    at once when the camera or the door changes."""

    def __init__(self, notifier: Notifier, bus, *, every_seconds: float = 2.0, clock=time.monotonic):
        self.notifier, self.every_seconds, self.clock = notifier, every_seconds, clock
        self._camera = "camera starting"
        self._door = "door locked"
        self._vision = ""
        self._events = ""
        self._last = float("-inf")
        bus.subscribe(FrameProcessed, self._frame, name="sd_notify:frames", latest=True)
        bus.subscribe((CameraChanged, DoorChanged, EventLogChanged), self._change, name="sd_notify:changes")

    def line(self) -> str:
        return "; ".join(part for part in (self._camera, self._door, self._events, self._vision) if part)

    def _frame(self, message) -> None:
        if self._camera != "camera ok":
            self._camera = "camera ok"
        elif self.clock() - self._last < self.every_seconds:
            return
        result, decision = message.result, message.decision
        self._vision = (f"{decision.state}: {decision.reason.text}; {result.detect_ms + result.classify_ms:.1f} ms/frame, "
                        f"{message.fps:.0f} fps")
        self._send()

    def _change(self, message) -> None:
        if isinstance(message, CameraChanged):
            self._camera = "camera ok" if message.ok else f"camera lost, door locked, reconnecting: {message.reason}"
            if not message.ok:
                self._vision = ""
        elif isinstance(message, EventLogChanged):
            self._events = "" if message.ok else "EVENT LOG FAILING (disk full?)"
        else:
            state = message.state
            self._door = f"door {'unlocked' if state.unlocked else 'locked'} ({state.who or state.layer}: {state.reason})"
        self._send()

    def _send(self) -> None:
        self._last = self.clock()
        self.notifier.status(self.line())
