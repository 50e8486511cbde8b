"""Log lines for problems that recur: one line a period, not one per occurrence."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class Throttled:
    """Logs at most one line every ``every`` seconds; the next line says how many it held back."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, *, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.level, self.every, self.clock = logger, level, every, clock
        self._last = float("-inf")
        self._held = 0
        self._lock = threading.Lock()

    def __call__(self, message: str, *args) -> None:
        with self._lock:
            now = self.clock()
            if now - self._last < self.every:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        suffix = f" ({held} more like this in the last {self.every:g} s)" if held else ""
        self.logger.log(self.level, message + suffix, *args)

    def reset(self) -> None:
        """The problem is over: the next occurrence is logged at once."""
        with self._lock:
            self._last, self._held = float("-inf"), 0


class OncePerMinute(logging.Filter):
    """``Throttled`` for a logger maskgate does not own (uvicorn's per-request warnings): each message
    template at most once a minute, the rest dropped."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.clock = clock
        self._last: dict[str, float] = {}  # message template → when last let through

    def filter(self, record: logging.LogRecord) -> bool:
        now, key = self.clock(), str(record.msg)
        if now - self._last.get(key, float("-inf")) < 60.0:
            return False
        self._last[key] = now
        return True
