"""Frame checks and conversions shared by every stage: everything downstream sees BGR uint8."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import FrameError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Return ``frame`` as a contiguous H×W×3 uint8 BGR array (grayscale and BGRA accepted)."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise FrameError(f"frame must be H×W, H×W×3 or H×W×4, got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame is empty (shape {frame.shape})")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8, or raise FrameError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise FrameError(f"{path}: not a readable image")
    return image


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand directories into the image files they hold (sorted); keep files as given."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found
