"""What every source yields and how it fails."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MaskgateError


class SourceError(MaskgateError):
    """The camera failed or disappeared; the daemon locks the door and reconnects."""


class EndOfStream(Exception):
    """A replay ran out of frames (and does not loop)."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8
    time: float  # seconds, monotonic clock or replay timeline
