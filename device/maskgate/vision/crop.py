"""Face crops and model-input normalisation: the one definition training and the device share."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from ..images import as_bgr

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
    left, top, side_px = _square(box, w, h, margin)
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


def crop_points(
    points: np.ndarray,
    box: tuple[float, float, float, float],
    frame_shape: tuple[int, ...],
    *,
    size: int,
    margin: float = 0.2,
) -> np.ndarray:
    """Frame points (N×2, e.g. the detector's keypoints) → pixels of ``crop_face``'s crop of ``box``."""
    left, top, side_px = _square(box, frame_shape[1], frame_shape[0], margin)
    return (np.asarray(points, np.float32) - (left, top)) * (size / side_px)


def _square(box: tuple[float, float, float, float], w: int, h: int, margin: float) -> tuple[int, int, int]:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx = min(max((x1 + x2) / 2.0, 0.0), w - 1.0)  # a centre inside the frame keeps the crop non-empty
    cy = min(max((y1 + y2) / 2.0, 0.0), h - 1.0)
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), max(1, int(round(side)))


NOSE_PATCH_SIDE = 1.5  # × the larger of eye distance and eye-to-mouth distance
NOSE_PATCH_SHIFT = 0.2  # centre moved from the nose tip this far towards the mouth


def nose_patch(crop: np.ndarray, keypoints: np.ndarray, *, size: int) -> np.ndarray:
    """The nose and upper lip of a face crop, size×size: what the nose check looks at.

    ``keypoints`` are the detector's five (right eye, left eye, nose tip, mouth right, mouth left)
    in crop pixels; edge pixels are replicated where the square leaves the crop."""
    right_eye, left_eye, nose, mouth_right, mouth_left = np.asarray(keypoints, np.float32)
    eyes, mouth = (right_eye + left_eye) / 2, (mouth_right + mouth_left) / 2
    centre = nose + NOSE_PATCH_SHIFT * (mouth - nose)
    side = NOSE_PATCH_SIDE * max(float(np.linalg.norm(left_eye - right_eye)), float(np.linalg.norm(mouth - eyes)), 2.0)
    x1, y1 = centre - side / 2
    return crop_face(crop, (float(x1), float(y1), float(x1 + side), float(y1 + side)), size=size, margin=0.0)


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
