"""Face crops and model-input normalisation: the one definition training and the device share."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from .frames import as_bgr

Normalisation = Literal["raw", "zero_to_one", "minus_one_to_one"]


def crop_face(
    frame: np.ndarray,
    box: tuple[float, float, float, float],
    *,
    size: int,
    margin: float = 0.2,
) -> np.ndarray:
    """Square BGR crop centred on ``box`` (x1, y1, x2, y2), grown by ``margin`` of its side on
    every side, edge pixels replicated where it leaves the frame, resized to size×size."""
    image = as_bgr(frame)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx = min(max((x1 + x2) / 2.0, 0.0), w - 1.0)  # a centre inside the frame keeps the crop non-empty
    cy = min(max((y1 + y2) / 2.0, 0.0), h - 1.0)
    left, top = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    side_px = max(1, int(round(side)))
    right, bottom = left + side_px, top + side_px
    inside = image[max(top, 0) : min(bottom, h), max(left, 0) : min(right, w)]
    padded = cv2.copyMakeBorder(
        inside,
        max(0, -top),
        side_px - inside.shape[0] - max(0, -top),
        max(0, -left),
        side_px - inside.shape[1] - max(0, -left),
        cv2.BORDER_REPLICATE,
    )
    interpolation = cv2.INTER_AREA if side_px > size else cv2.INTER_LINEAR
    return cv2.resize(padded, (size, size), interpolation=interpolation)


def normalise(crops_bgr: np.ndarray, normalisation: Normalisation, *, rgb: bool = True) -> np.ndarray:
    """N×S×S×3 uint8 BGR crops → float32 model input in the colour order and range the model wants."""
    crops = np.asarray(crops_bgr)
    if rgb:
        crops = crops[..., ::-1]
    pixels = crops.astype(np.float32)
    if normalisation == "raw":
        return pixels
    if normalisation == "zero_to_one":
        return pixels / 255.0
    if normalisation == "minus_one_to_one":
        return pixels / 127.5 - 1.0
    raise ValueError(f"unknown normalisation {normalisation!r}")
