"""Frame sources behind one interface: ``open()``, ``read() -> Frame`` (raises SourceError), ``close()``.

picamera2 (imported lazily; its RGB888 format is BGR-ordered), an OpenCV camera, a network camera
(RTSP / HTTP MJPEG, in ``network``), and replays of a video, an image folder/glob or the built-in demo scenes.
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..config import CameraConfig
from ..errors import MaskgateError
from ..images import list_images, read_image
from .frame import EndOfStream, Frame, SourceError

log = logging.getLogger(__name__)


class OpenCVSource:
    """A V4L2 camera (index or /dev/video path) through OpenCV, with a one-frame buffer so frames are fresh."""

    name = "opencv"

    def __init__(self, device: int | str, *, width: int, height: int, clock: Callable[[], float] = time.monotonic):
        self.device, self.width, self.height, self.clock = device, width, height, clock
        self._capture = None

    def open(self) -> None:
        capture = cv2.VideoCapture(self.device)
        if not capture.isOpened():
            raise SourceError(f"camera {self.device!r}: cannot open")
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._capture = capture

    def read(self) -> Frame:
        ok, image = self._capture.read() if self._capture is not None else (False, None)
        if not ok or image is None:
            raise SourceError(f"camera {self.device!r}: no frame")
        return Frame(image, self.clock())

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (Debian package python3-picamera2)."""

    name = "picamera2"

    def __init__(self, *, width: int, height: int, clock: Callable[[], float] = time.monotonic):
        self.width, self.height, self.clock = width, height, clock
        self._camera = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ModuleNotFoundError as exc:
            if exc.name != "picamera2":  # installed, but one of its own imports is missing
                raise SourceError(f"picamera2 cannot be imported: {exc}") from None
            raise SourceError("picamera2 is not installed (apt install python3-picamera2; venv needs --system-site-packages)") from None
        except Exception as exc:  # e.g. ValueError "numpy.dtype size changed": an extension built for another numpy
            raise SourceError(f"picamera2 cannot be imported: {type(exc).__name__}: {exc}"
                              " (see docs/pi.md: simplejpeg must come from the venv)") from None
        try:
            camera = Picamera2()
            camera.configure(camera.create_video_configuration(main={"format": "RGB888", "size": (self.width, self.height)}))
            camera.start()
        except Exception as exc:  # picamera2 raises plain RuntimeError/IndexError when no camera is attached
            raise SourceError(f"picamera2: cannot start camera ({exc})") from None
        self._camera = camera

    def read(self) -> Frame:
        try:
            image = self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"picamera2: capture failed ({exc})") from None
        return Frame(np.ascontiguousarray(image[:, :, :3]), self.clock())

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


class ReplaySource:
    """Frames from a factory of images, stamped on a replay timeline of ``fps``; paced in real time
    unless ``paced`` is False (tests)."""

    name = "replay"

    def __init__(self, frames: Callable[[], Iterator[np.ndarray]], *, fps: float, loop: bool = False,
                 paced: bool = True, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._factory, self.fps, self.loop, self.paced = frames, fps, loop, paced
        self.clock, self.sleep = clock, sleep
        self._frames: Iterator[np.ndarray] | None = None
        self._index = 0
        self._start = 0.0

    def open(self) -> None:
        self._frames = iter(self._factory())
        self._start = self.clock()
        self._index = 0

    def read(self) -> Frame:
        try:
            image = next(self._frames)
        except StopIteration:
            if not self.loop:
                raise EndOfStream from None
            self._frames = iter(self._factory())
            try:
                image = next(self._frames)
            except StopIteration:
                raise EndOfStream from None
        when = self._start + self._index / self.fps
        self._index += 1
        if self.paced:
            self.sleep(max(0.0, when - self.clock()))
        return Frame(image, when)

    def close(self) -> None:
        self._frames = None


def demo_scenes() -> Iterator[np.ndarray]:
    """Nobody, a person without a mask, nobody, a person with a (black cloth) mask, nobody."""
    from .scenes import FRAME_HEIGHT, FRAME_WIDTH, door_scene

    empty = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 90, np.uint8)
    bare, masked = door_scene(masked=False), door_scene(masked=True, mask_bgr=(60, 60, 60))
    for image, count in ((empty, 5), (bare, 12), (empty, 8), (masked, 30), (empty, 5)):
        for _ in range(count):
            yield image


def files_or_video(spec: str) -> Callable[[], Iterator[np.ndarray]]:
    """A replay factory for an image folder, a glob, or a video file."""
    path = Path(spec)
    if path.is_dir() or any(c in spec for c in "*?["):
        files = list_images([path]) if path.is_dir() else [Path(p) for p in sorted(glob.glob(spec))]
        if not files:
            raise MaskgateError(f"{spec}: no images to replay")
        return lambda: (read_image(p) for p in files)
    if not path.is_file():
        raise MaskgateError(f"{spec}: replay source not found")

    def video() -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise SourceError(f"{path}: cannot open as a video")
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield image
        finally:
            capture.release()

    return video


def make_source(config: CameraConfig, *, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep, paced: bool = True):
    """The configured source, opened; ``auto`` tries picamera2, then OpenCV, and logs the choice."""
    if config.backend == "scenes":
        source = ReplaySource(demo_scenes, fps=config.replay_fps, loop=config.replay_loop, paced=paced, clock=clock, sleep=sleep)
    elif config.backend == "replay":
        if not config.replay_path:
            raise MaskgateError("camera.replay_path: required when camera.backend is replay")
        source = ReplaySource(files_or_video(config.replay_path), fps=config.replay_fps, loop=config.replay_loop,
                              paced=paced, clock=clock, sleep=sleep)
    elif config.backend == "picamera2":
        source = Picamera2Source(width=config.width, height=config.height, clock=clock)
    elif config.backend == "opencv":
        source = OpenCVSource(config.device, width=config.width, height=config.height, clock=clock)
    elif config.backend == "network":
        from .network import network_source

        source = network_source(config, clock=clock)
    else:
        for source in (Picamera2Source(width=config.width, height=config.height, clock=clock),
                       OpenCVSource(config.device, width=config.width, height=config.height, clock=clock)):
            try:
                source.open()
            except SourceError as exc:
                # A Pi camera that cannot be imported is worth a warning: OpenCV may not see it.
                level = logging.WARNING if "cannot be imported" in str(exc) else logging.INFO
                log.log(level, "camera backend %s unavailable: %s", source.name, exc)
                continue
            log.info("camera backend: %s", source.name)
            return source
        raise SourceError("no camera found (tried picamera2 and OpenCV)")
    source.open()
    log.info("camera backend: %s", source.name)
    return source
