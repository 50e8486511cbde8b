"""Faces followed from frame to frame: each person in view is one track, from box overlap and motion.

A detection joins the track whose predicted box (its last box moved on by its recent motion, which
also covers a face growing as a person walks up) it overlaps most; one that overlaps none starts a
new track. A track not seen for ``lost_seconds`` has left and ends. Pure: boxes and the time in.

Why not a tracker library (norfair, motpy, ByteTrack through supervision): they bring scipy/filterpy
(supervision far more) onto the Pi, age tracks in frames rather than on the clock the decider is fed,
and solve crowds; a door sees one to three faces that move little between frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
MOTION_SMOOTHING = 0.5  # weight of the newest frame in a track's motion estimate


@dataclass
class Track:
    """One person's face over time (times in the caller's clock)."""

    id: int
    box: Box  # where it was last seen
    first_seen: float
    last_seen: float
    frames: int = 1
    face: int | None = None  # its index in the current frame's faces; None when not seen in it
    motion: Box = field(default=(0.0, 0.0, 0.0, 0.0))  # box corners' velocity, px/s

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def predicted(self, now: float) -> Box:
        dt = now - self.last_seen
        return tuple(b + v * dt for b, v in zip(self.box, self.motion))  # type: ignore[return-value]

    def seen(self, box: Box, now: float, face: int) -> None:
        dt = now - self.last_seen
        if dt > 0:
            step = tuple((new - old) / dt for new, old in zip(box, self.box))
            self.motion = tuple(MOTION_SMOOTHING * s + (1 - MOTION_SMOOTHING) * m
                                for s, m in zip(step, self.motion))  # type: ignore[assignment]
        self.box, self.last_seen, self.face = box, now, face
        self.frames += 1


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class Tracker:
    """Associates each frame's face boxes with the tracks of the frames before."""

    def __init__(self, *, lost_seconds: float, min_iou: float = 0.2):
        self.lost_seconds, self.min_iou = lost_seconds, min_iou
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: Sequence[Box], now: float) -> list[Track]:
        """The live tracks after this frame; ``face`` says which of ``boxes`` each one is."""
        self.tracks = [t for t in self.tracks if now - t.last_seen <= self.lost_seconds]
        for track in self.tracks:
            track.face = None
        pairs = sorted(((max(iou(t.predicted(now), box), iou(t.box, box)), k, i)
                        for k, t in enumerate(self.tracks) for i, box in enumerate(boxes)), reverse=True)
        matched_tracks, matched_faces = set(), set()
        for overlap, k, i in pairs:  # greedy, best overlap first: a handful of faces, no need for more
            if overlap < self.min_iou:
                break
            if k not in matched_tracks and i not in matched_faces:
                self.tracks[k].seen(tuple(boxes[i]), now, i)
                matched_tracks.add(k)
                matched_faces.add(i)
        for i, box in enumerate(boxes):
            if i not in matched_faces:
                self.tracks.append(Track(self._next_id, tuple(box), now, now, face=i))
                self._next_id += 1
        return list(self.tracks)

    def reset(self) -> None:
        self.tracks = []
