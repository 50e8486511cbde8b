"""What the web server shows, fed from the bus: the door's status, the kiosk's words, JPEG previews.

``LiveFeed`` is the bus side: its handlers run on bus subscriber threads, never on the frame loop;
previews are drawn and JPEG-encoded there, at most ``preview_fps`` a second and only while a viewer
wants them (the ``when`` filter the frame loop evaluates is one attribute read). ``Channel`` is the
server side: it holds one door's latest status and JPEG and hands them to that door's viewers on the
server's event loop; a viewer only ever gets the newest of each, and one that stops reading is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Awaitable, Callable

import cv2
import numpy as np

from ...access.controller import DoorController
from ...access.reasons import Reason
from ...bus import EventBus
from ...messages import CameraChanged, DoorChanged, EventLogChanged, FrameProcessed, Lifecycle
from ...vision.core import FaceResult, face_json

log = logging.getLogger(__name__)

CLOSING_SECONDS = 2.0  # a vision grant's last seconds: the kiosk says the door is closing
STATUS_EVERY = 0.25  # seconds: status pushes when nothing that is shown changed (faces, fps, countdown)
SEND_TIMEOUT = 2.0  # seconds a viewer may take to take one message before it is dropped

# (tone, icon, word, title, detail): text, colour (tone), icon and a word, never colour alone.
VIEWS: dict[str, tuple[str, str, str, str, str]] = {
    "starting": ("wait", "hourglass", "WAIT", "Starting…", "The door stays locked"),
    "idle": ("idle", "mask", "MASK", "Masks required", "Step up to the camera, one person at a time"),
    "checking": ("wait", "scan", "WAIT", "Checking…", "Hold still and look at the camera"),
    "granted": ("go", "check", "OPEN", "Welcome — door open", "Please come in"),
    "closing": ("go", "door", "OPEN", "Welcome — door open", "The door is closing"),
    "denied": ("stop", "mask", "STOP", "Please wear a mask", "The door stays locked"),
    "nose": ("warn", "nose", "STOP", "Please cover your nose", "The mask must cover nose and mouth"),
    "face_camera": ("warn", "scan", "WAIT", "Please face the camera", "The mask was not clearly seen"),
    "everyone": ("stop", "mask", "STOP", "Everyone must wear a mask", "The door stays locked"),
    "one_person": ("warn", "people", "ONE", "One person at a time", "Please step up alone"),
    "cooldown": ("idle", "hourglass", "WAIT", "Please wait", "Next person in a moment"),
    "camera_lost": ("locked", "camera-off", "LOCKED", "Camera unavailable — door locked", "Please ask staff"),
    "emergency": ("alarm", "alarm", "EXIT", "Emergency — door released", "Leave the building calmly"),
    "override_unlocked": ("go", "unlock", "OPEN", "Door opened by staff", "Please come in"),
    "override_locked": ("locked", "lock", "LOCKED", "Door locked by staff", "Please ask staff"),
    "forced_open": ("alarm", "alarm", "ALARM", "Door forced open", "Staff have been alerted"),
    "held_open": ("alarm", "door", "CLOSE", "Please close the door", "The door is held open"),
    "stopped": ("locked", "lock", "LOCKED", "Out of service — door locked", "Please ask staff"),
    "offline": ("locked", "camera-off", "OFFLINE", "Door offline", "No answer from this door"),
}
DENIAL_VIEWS = {Reason.INCORRECT: "nose", Reason.UNSURE: "face_camera", Reason.NOT_EVERYONE: "everyone"}
REFUSALS = {Reason.NO_MASK, Reason.INCORRECT, Reason.NOT_EVERYONE}


def screen(state: str, reason: str, people: int) -> dict:
    """The kiosk's words for a door state; the decision's reason code picks among the denials (also
    while the door is open for someone else: the words follow whoever is refused). ``people``: faces
    close enough to count."""
    key = state
    if state == "denied" or (state == "granted" and reason in REFUSALS):
        key = DENIAL_VIEWS.get(reason, "denied")
    elif state == "checking" and reason == Reason.UNSURE:
        key = "face_camera"
    if state in ("checking", "denied") and people > 1 and reason != Reason.NOT_EVERYONE:
        key = "one_person"
    tone, icon, word, title, detail = VIEWS.get(key, VIEWS["idle"])
    return {"key": key, "tone": tone, "icon": icon, "word": word, "title": title, "detail": detail}


def offline_status(detail: str) -> dict:
    view = {**screen("offline", "", 0), "detail": detail}
    return {"type": "status", "state": "offline", "reason": detail, "door": "unknown", "faces": [], "fps": 0.0,
            "camera_ok": False, "events_ok": None, "time": time.time(), "view": view}


LABEL_BGR = {"with_mask": (60, 170, 40), "without_mask": (40, 40, 220), "incorrect_mask": (0, 140, 255)}


def draw_preview(image: np.ndarray, faces: tuple[FaceResult, ...], *, person: int | None = None,
                 track: int | None = None, quality: int = 75) -> bytes:
    """A JPEG of the frame with each face's box and label drawn on a copy; the face the decision is
    about (``person``, an index into ``faces``) is drawn bolder and named by its ``track``."""
    canvas = image.copy()
    scale = max(canvas.shape[1] / 640, 0.5)
    for i, fr in enumerate(faces):
        x1, y1, x2, y2 = (int(round(v)) for v in fr.face.box)
        colour = LABEL_BGR.get(fr.prediction.label, (200, 200, 200))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, max(2, int((8 if i == person else 4) * scale)))
        text = (f"#{track} " if i == person and track is not None else "") + (
            f"{fr.prediction.label.replace('_', ' ')} {fr.prediction.confidence:.0%}")
        font_scale, thickness = 0.8 * scale, max(1, int(2 * scale))
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y1 - h - base - 8)
        cv2.rectangle(canvas, (x1, top), (x1 + w + 10, top + h + base + 8), colour, -1)
        cv2.putText(canvas, text, (x1 + 5, top + h + 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    ok, buffer = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


class Viewer:
    """One connected page: the newest status and JPEG not yet sent to it."""

    def __init__(self, preview: bool):
        self.preview = preview
        self.status: str | None = None
        self.jpeg: bytes | None = None
        self.wake = asyncio.Event()


class Channel:
    """One door's latest status and preview, and the viewers watching it (lives on the server's loop)."""

    def __init__(self):
        self.status: str | None = None
        self.jpeg: bytes | None = None
        self.viewers: set[Viewer] = set()
        self.preview_viewers = 0  # read by the bus threads
        self.demand_until = 0.0  # a one-off preview request (GET preview.jpg) wants frames until then
        self.jpegs = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def wants_preview(self) -> bool:
        return self.preview_viewers > 0 or time.monotonic() < self.demand_until

    def publish_status(self, status: dict) -> None:
        """From any thread."""
        self._call(self.put, json.dumps(status), None)

    def publish_jpeg(self, jpeg: bytes) -> None:
        """From any thread."""
        self._call(self.put, None, jpeg)

    def _call(self, fn, *args) -> None:
        loop = self.loop
        if loop is None:
            fn(*args)
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the server's loop has closed
            pass

    def put(self, status: str | None, jpeg: bytes | None) -> None:
        """On the server's loop: the newest status (JSON text) and/or JPEG, to every viewer."""
        if status is not None:
            self.status = status
        if jpeg is not None:
            self.jpeg, self.jpegs = jpeg, self.jpegs + 1
        for viewer in self.viewers:
            if status is not None:
                viewer.status = status
            if jpeg is not None and viewer.preview:
                viewer.jpeg = jpeg
            viewer.wake.set()

    async def serve(self, send_text: Callable[[str], Awaitable[None]], send_bytes: Callable[[bytes], Awaitable[None]],
                    *, preview: bool, send_timeout: float = SEND_TIMEOUT) -> None:
        """Send this door to one viewer until it goes away; returns when a send takes over ``send_timeout``."""
        viewer = Viewer(preview)
        viewer.status = self.status
        viewer.wake.set()
        self.viewers.add(viewer)
        self.preview_viewers += preview
        try:
            while True:
                await viewer.wake.wait()
                viewer.wake.clear()
                status, jpeg = viewer.status, viewer.jpeg
                viewer.status = viewer.jpeg = None
                try:
                    if status is not None:
                        await asyncio.wait_for(send_text(status), send_timeout)
                    if jpeg is not None:
                        await asyncio.wait_for(send_bytes(jpeg), send_timeout)
                except asyncio.TimeoutError:
                    log.info("dropped a viewer that stopped reading")
                    return
        finally:
            self.viewers.discard(viewer)
            self.preview_viewers -= preview


class LiveFeed:
    """Bus subscriber: turns the daemon's messages into the status and previews of the local Channel."""

    def __init__(self, channel: Channel, *, bus: EventBus, controller: DoorController, collecting: bool,
                 preview_fps: float):
        self.controller, self.channel = controller, channel
        self.collecting = collecting  # the kiosk says so while faces are kept
        self.preview_every = 1.0 / preview_fps
        self._lock = threading.RLock()
        self._camera_ok: bool | None = None
        self._events_ok = True
        self._stopped = False
        self._faces: list[dict] = []
        self._near = 0
        self._person: tuple[int | None, int | None] = (None, None)  # the decision's track, and its face index
        self._fps = 0.0
        self._shown: tuple | None = None
        self._seen: tuple | None = None
        self._pushed = 0.0
        self._encoded = 0.0
        self.subscriptions = [
            bus.subscribe((DoorChanged, CameraChanged, Lifecycle, EventLogChanged), self._on_event, name="web:events"),
            bus.subscribe(FrameProcessed, self._on_frame, name="web:status", latest=True),
            bus.subscribe(FrameProcessed, self._on_preview, name="web:preview", latest=True,
                          when=lambda m: channel.wants_preview()),
        ]

    def snapshot(self) -> dict:
        """The status as ``GET /api/v1/status`` answers it (any thread)."""
        with self._lock:
            door = self.controller.state.as_dict(self.controller.clock())
            state = door["display"]
            if self._stopped:
                state = "stopped"
            elif self._camera_ok is None and state == "idle" and door["layer"] == "vision":
                state = "starting"
            return {"type": "status", "state": state, "reason": door["reason"], "door": door["door"],
                    "layer": door["layer"], "who": door["who"], "seconds_left": door["seconds_left"],
                    "faces": self._faces, "track": self._person[0], "decided_by": self._person[1],
                    "fps": round(self._fps, 1), "camera_ok": bool(self._camera_ok), "events_ok": self._events_ok,
                    "time": time.time(), "view": self._view(state, door), "collecting": self.collecting}

    def _view(self, state: str, door: dict) -> dict:
        """The kiosk's words (``screen``); in the last seconds of a vision grant: the door is closing."""
        view = screen(state, door["reason"], self._near)
        if view["key"] == "granted" and door["seconds_left"] is not None and door["seconds_left"] <= CLOSING_SECONDS:
            return screen("closing", door["reason"], self._near)
        return view

    def _on_event(self, message) -> None:
        with self._lock:
            if isinstance(message, CameraChanged):
                self._camera_ok = message.ok
            elif isinstance(message, EventLogChanged):
                self._events_ok = message.ok
            elif isinstance(message, Lifecycle):
                self._stopped = message.kind == "stopped"
        self._push()

    def _on_frame(self, message: FrameProcessed) -> None:
        faces = message.result.faces
        decision = message.decision
        seen = (decision.state, decision.reason, decision.track, tuple(fr.prediction.label for fr in faces))
        if seen == self._seen and self._camera_ok and time.monotonic() - self._pushed < STATUS_EVERY:
            return  # nothing shown changed: cheap at hundreds of frames a second
        self._seen = seen
        with self._lock:
            self._camera_ok = True
            self._faces = [face_json(fr) for fr in faces]
            self._near = decision.people
            self._person = (decision.track, decision.face)
            self._fps = message.fps
        self._push()

    def _push(self) -> None:
        with self._lock:  # both handler threads push: keep their order
            status = self.snapshot()
            shown = (status["state"], status["reason"], status["door"], status["camera_ok"], status["events_ok"],
                     status["view"]["key"], status["track"], tuple(f["label"] for f in status["faces"]))
            now = time.monotonic()
            if shown != self._shown or now - self._pushed >= STATUS_EVERY:
                self._shown, self._pushed = shown, now
                self.channel.publish_status(status)

    def _on_preview(self, message: FrameProcessed) -> None:
        now = time.monotonic()
        if not self.channel.wants_preview() or now - self._encoded < self.preview_every:
            return
        self._encoded = now
        decision = message.decision
        self.channel.publish_jpeg(draw_preview(message.frame.image, message.result.faces, person=decision.face,
                                               track=decision.track))
