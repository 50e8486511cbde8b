"""The decision log: SQLite in WAL mode, one committed row per decision (no images by default)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import MaskgateError

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    face_count INTEGER NOT NULL,
    faces TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    snapshot TEXT,
    source TEXT NOT NULL DEFAULT '',
    until REAL,
    code TEXT NOT NULL DEFAULT '',
    face INTEGER,
    track INTEGER
)
"""
ADDED_COLUMNS = {"source": "TEXT NOT NULL DEFAULT ''", "until": "REAL", "code": "TEXT NOT NULL DEFAULT ''",
                 "face": "INTEGER", "track": "INTEGER"}  # logs from older versions gain these
LOG_FILE = "events.sqlite3"


@dataclass(frozen=True)
class Event:
    time: float
    # granted | denied | door | override | alarm_silenced | camera_lost | camera_ok | started | stopped | error,
    # or an input's (InputChanged.kind): fire_alarm, fire_alarm_end, exit_request, door_forced, door_held_open, …
    outcome: str
    reason: str
    face_count: int = 0
    faces: tuple[dict, ...] = ()  # [{"label", "confidence", "box"}]
    latency_ms: float = 0.0
    snapshot: str | None = None
    source: str = ""  # who or what asked: vision, rex, fire_alarm, operator:alice, mqtt, …
    until: float | None = None  # wall-clock end of a timed door change
    code: str = ""  # a decision's reason code (access.reasons.Reason); ``reason`` is its text
    face: int | None = None  # a decision's deciding face: index into ``faces``
    track: int | None = None  # and the person (track id) it belongs to
    id: int | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "time": self.time, "outcome": self.outcome, "reason": self.reason,
                "face_count": self.face_count, "faces": list(self.faces), "latency_ms": self.latency_ms,
                "snapshot": self.snapshot, "source": self.source, "until": self.until,
                "code": self.code, "face": self.face, "track": self.track}


class EventLog:
    """Append-only decision log; ``record`` and ``record_many`` commit before they return (or raise
    ``sqlite3.Error``/``OSError``: the disk is full or failing)."""

    def __init__(self, state_dir: Path, *, snapshot_denied: bool = False, snapshot_retention_days: float = 7.0):
        self.path = Path(state_dir) / LOG_FILE
        self.snapshot_dir = Path(state_dir) / "snapshots"
        self.snapshot_denied = snapshot_denied
        self.retention_seconds = snapshot_retention_days * 86400
        self._lock = threading.Lock()  # the recorder writes from its thread, the web server reads from its own
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")
        except (OSError, sqlite3.Error) as exc:
            raise MaskgateError(f"{self.path}: cannot open event log ({exc})") from None

    def record(self, event: Event, *, frame: np.ndarray | None = None) -> Event:
        return self.record_many([(event, frame)])[0]

    def record_many(self, events: list[tuple[Event, np.ndarray | None]]) -> list[Event]:
        """Commit all of them in one transaction (one disk sync), or none."""
        rows = []
        for event, frame in events:
            snapshot = event.snapshot
            if snapshot is None and self.snapshot_denied and event.outcome == "denied" and frame is not None:
                snapshot = self._save_snapshot(frame, event.time)
            rows.append(Event(**{**event.__dict__, "snapshot": snapshot}))
        written = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for event in rows:
                    cursor = self._db.execute(
                        "INSERT INTO events (time, outcome, reason, face_count, faces, latency_ms, snapshot, source,"
                        " until, code, face, track) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (event.time, event.outcome, event.reason, event.face_count, json.dumps(list(event.faces)),
                         event.latency_ms, event.snapshot, event.source, event.until, str(event.code), event.face,
                         event.track))
                    written.append(Event(**{**event.__dict__, "id": cursor.lastrowid}))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        return written

    def list(self, *, since: float | None = None, limit: int | None = None) -> list[Event]:
        query = ("SELECT id, time, outcome, reason, face_count, faces, latency_ms, snapshot, source, until, code, face,"
                 " track FROM events")
        args: list = []
        if since is not None:
            query += " WHERE time >= ?"
            args.append(since)
        query += " ORDER BY id DESC"
        if limit:
            query += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(query, args).fetchall()[::-1]
        return [Event(time=t, outcome=o, reason=r, face_count=n, faces=tuple(json.loads(f)), latency_ms=ms,
                      snapshot=snap, source=src, until=until, code=code, face=face, track=track, id=i)
                for i, t, o, r, n, f, ms, snap, src, until, code, face, track in rows]

    def _save_snapshot(self, frame: np.ndarray, when: float) -> str:
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - self.retention_seconds
        for old in self.snapshot_dir.glob("*.jpg"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        path = self.snapshot_dir / f"denied-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}-{int(when * 1000) % 1000:03d}.jpg"
        cv2.imwrite(str(path), frame)
        return path.name

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_existing(state_dir: Path) -> EventLog:
    path = Path(state_dir) / LOG_FILE
    if not path.is_file():
        raise MaskgateError(f"{path}: no event log yet (has the daemon run with this state directory?)")
    return EventLog(state_dir)
