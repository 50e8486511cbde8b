"""Step 5 — collect: save face crops from a camera or video into ``<out>/<label>/`` for retraining.

Frames come through the device's own frame sources (``maskgate.sources``), so crops are what the
door camera sees; faces are found and cut with the device's detector and crop.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from maskgate.config import CameraConfig
from maskgate.vision.crop import crop_face
from maskgate.vision.detector import FaceDetector
from maskgate.sources import EndOfStream, make_source


def camera_config(spec: str) -> CameraConfig:
    """``auto``/``picamera2``/``scenes``, a camera index or /dev/video path, else a video, image folder or glob."""
    if spec in ("auto", "picamera2", "scenes"):
        return CameraConfig(backend=spec)
    if spec.isdigit() or spec.startswith("/dev/video"):
        return CameraConfig(backend="opencv", device=int(spec) if spec.isdigit() else spec)
    return CameraConfig(backend="replay", replay_path=spec)


def collect(source: str, out_dir: Path, *, label: str, every: int, count: int, size: int, margin: float,
            show: bool = False) -> int:
    """Save the largest face of every ``every``-th frame (or on SPACE when ``show``) until ``count`` crops."""
    detector = FaceDetector()
    target = out_dir / label
    target.mkdir(parents=True, exist_ok=True)
    frames = make_source(camera_config(source), paced=False)
    saved = frame_index = 0
    try:
        while saved < count:
            try:
                image = frames.read().image
            except EndOfStream:
                break
            frame_index += 1
            faces = detector.detect(image)
            key = -1
            if show:
                preview = image.copy()
                for face in faces:
                    x1, y1, x2, y2 = (int(v) for v in face.box)
                    cv2.rectangle(preview, (x1, y1), (x2, y2), (0, 255, 0), 2)
                cv2.imshow("maskgate collect — SPACE saves, q quits", preview)
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    break
            wanted = key == ord(" ") if show else frame_index % every == 0
            if wanted and faces:
                face = max(faces, key=lambda f: f.width * f.height)
                path = target / f"{label}_{time.strftime('%Y%m%d-%H%M%S')}_{frame_index:06d}.jpg"
                cv2.imwrite(str(path), crop_face(image, face.box, size=size, margin=margin))
                saved += 1
                print(f"saved {path} (face {face.width:.0f} px, score {face.score:.2f})", flush=True)
    finally:
        frames.close()
    return saved
