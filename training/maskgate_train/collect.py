"""Step 5 — collect: save face crops from a camera or video into ``<out>/<label>/`` for retraining."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from maskgate.crop import crop_face
from maskgate.detector import FaceDetector
from maskgate.errors import MaskgateError


def open_capture(source: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        raise MaskgateError(f"{source}: cannot open camera or video")
    return capture


def collect(source: str, out_dir: Path, *, label: str, every: int, count: int, size: int, margin: float,
            show: bool = False) -> int:
    """Save the largest face of every ``every``-th frame (or on SPACE when ``show``) until ``count`` crops."""
    detector = FaceDetector()
    target = out_dir / label
    target.mkdir(parents=True, exist_ok=True)
    capture = open_capture(source)
    saved = frame_index = 0
    try:
        while saved < count:
            ok, frame = capture.read()
            if not ok:
                break
            frame_index += 1
            faces = detector.detect(frame)
            key = -1
            if show:
                for face in faces:
                    x1, y1, x2, y2 = (int(v) for v in face.box)
                    cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), 2)
                cv2.imshow("maskgate collect — SPACE saves, q quits", frame)
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    break
            wanted = key == ord(" ") if show else frame_index % every == 0
            if wanted and faces:
                face = max(faces, key=lambda f: f.width * f.height)
                path = target / f"{label}_{time.strftime('%Y%m%d-%H%M%S')}_{frame_index:06d}.jpg"
                cv2.imwrite(str(path), crop_face(frame, face.box, size=size, margin=margin))
                saved += 1
                print(f"saved {path} (face {face.width:.0f} px, score {face.score:.2f})", flush=True)
    finally:
        capture.release()
    return saved
