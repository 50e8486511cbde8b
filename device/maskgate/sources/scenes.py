"""Scenes maskgate makes by itself for the demo, the benchmark and tests: a real photo of a face
(scikit-image's public-domain "astronaut") on a 640×480 frame, bare or with a drawn-on mask."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import MaskgateError

FRAME_WIDTH, FRAME_HEIGHT = 640, 480


def astronaut_bgr() -> np.ndarray:
    """The 512×512 astronaut photo shipped inside the scikit-image wheel, as BGR."""
    try:
        from skimage import data
    except ImportError:
        raise MaskgateError("the built-in scene needs scikit-image: pip install 'maskgate[demo]'") from None
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


PALE_BLUE = (235, 215, 170)  # BGR, a surgical mask


def door_scene(*, face_height_px: int = 200, masked: bool = False, mask_bgr: tuple[int, int, int] = PALE_BLUE) -> np.ndarray:
    """A 640×480 BGR frame with the astronaut's head and shoulders in the middle."""
    photo = astronaut_bgr()
    # In the photo her face spans about 95 px of 512; scale so it spans face_height_px.
    scale = face_height_px / 95.0
    person = cv2.resize(photo[0:400, 100:356], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 90, np.uint8)
    face_cx, face_cy = (225 - 100) * scale, 128 * scale  # face centre inside the cut-out
    left, top = int(FRAME_WIDTH / 2 - face_cx), int(FRAME_HEIGHT / 2 - face_cy)
    src_x0, src_y0 = max(0, -left), max(0, -top)
    dst_x0, dst_y0 = max(0, left), max(0, top)
    w = min(person.shape[1] - src_x0, FRAME_WIDTH - dst_x0)
    h = min(person.shape[0] - src_y0, FRAME_HEIGHT - dst_y0)
    frame[dst_y0 : dst_y0 + h, dst_x0 : dst_x0 + w] = person[src_y0 : src_y0 + h, src_x0 : src_x0 + w]
    if masked:
        draw_mask(frame, centre=(FRAME_WIDTH / 2, FRAME_HEIGHT / 2), face_height_px=face_height_px, bgr=mask_bgr)
    return frame


def draw_mask(frame: np.ndarray, *, centre: tuple[float, float], face_height_px: float,
              bgr: tuple[int, int, int] = PALE_BLUE) -> None:
    """Paint a surgical-style mask over nose, mouth and chin (in place)."""
    cx, cy = centre
    s = face_height_px / 100.0
    outline = np.array(
        [(-42, -14), (-20, -22), (0, -24), (20, -22), (42, -14), (40, 20), (22, 44), (0, 52), (-22, 44), (-40, 20)],
        np.float32,
    )
    points = np.round(outline * s + (cx, cy)).astype(np.int32)
    cv2.fillPoly(frame, [points], bgr, lineType=cv2.LINE_AA)
    pleat = tuple(int(c * 0.85) for c in bgr)
    for dy in (6, 18, 30):
        y = int(cy + dy * s)
        cv2.line(frame, (int(cx - 36 * s), y), (int(cx + 36 * s), y), pleat, max(1, int(2 * s)), cv2.LINE_AA)
