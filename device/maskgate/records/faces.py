"""Collected faces: crops kept at this door, with the model's answer, for an operator to label.

Everything lives under ``<state_dir>/collect/``: ``faces.sqlite3`` (one row per crop: when, the model's
probabilities, the frame's verdict, the label once given) and ``crops/<id>.jpg`` (the exact crop the
model saw). Only the daemon's user and its group may read them. ``enforce`` deletes what is older than
the retention or beyond the size cap; ``purge`` deletes everything.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import MaskgateError

FOLDER = "collect"
DB_FILE = "faces.sqlite3"
CROPS = "crops"
EXPORT_FORMAT = "maskgate-site-data/1"
# what an operator answers → the model's class (None: kept out of training)
LABELS: dict[str, str | None] = {"masked": "with_mask", "no_mask": "without_mask", "worn_wrongly": "incorrect_mask",
                                 "not_a_face": None, "skip": None}
OWNERSHIP = ("These images were recorded at {site} with its operator's consent. They belong to the site: use them "
             "only to train or measure this site's door, keep them no longer than that needs, and delete them "
             "when the site asks.")

SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    file TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    probs TEXT NOT NULL,
    nose_covered REAL,
    keypoints TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT,
    labelled_at REAL,
    labelled_by TEXT
)
"""


@dataclass(frozen=True)
class CollectedFace:
    """One collected crop and what is known about it."""

    id: int
    time: float
    file: str
    outcome: str  # the frame's verdict: granted | denied
    reason: str
    probs: dict[str, float]
    nose_covered: float | None
    keypoints: list[list[float]]  # the detector's five points, in crop pixels
    model: str
    label: str | None = None
    labelled_at: float | None = None
    labelled_by: str | None = None

    @property
    def model_label(self) -> str:
        return max(self.probs, key=self.probs.__getitem__)

    def as_dict(self) -> dict:
        return {**self.__dict__, "model_label": self.model_label}


class FaceStore:
    """The collected faces of one state directory (safe to share between threads and processes)."""

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir) / FOLDER
        self.crops = self.root / CROPS
        self._lock = threading.Lock()
        try:
            self.crops.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o750)
            os.chmod(self.crops, 0o750)
            self._db = sqlite3.connect(self.root / DB_FILE, isolation_level=None, check_same_thread=False,
                                       timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise MaskgateError(f"{self.root}: cannot open the collected faces ({exc})") from None

    def add(self, crop_bgr: np.ndarray, *, when: float, outcome: str, reason: str, probs: dict[str, float],
            nose_covered: float | None, keypoints: np.ndarray, model: str) -> CollectedFace:
        ok, jpeg = cv2.imencode(".jpg", crop_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise MaskgateError("cannot encode a face crop")
        points = [[round(float(x), 2), round(float(y), 2)] for x, y in np.asarray(keypoints).reshape(-1, 2)]
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO faces (time, file, outcome, reason, probs, nose_covered, keypoints, model)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (when, "", outcome, reason, json.dumps(probs), nose_covered, json.dumps(points), model))
            face_id = cursor.lastrowid
            name = f"{face_id:08d}.jpg"
            path = self.crops / name
            path.write_bytes(jpeg.tobytes())
            os.chmod(path, 0o640)
            self._db.execute("UPDATE faces SET file = ? WHERE id = ?", (name, face_id))
        return self.get(face_id)

    def get(self, face_id: int) -> CollectedFace:
        found = self.list(ids=[face_id])
        if not found:
            raise MaskgateError(f"no collected face {face_id} (deleted, or never kept)")
        return found[0]

    def list(self, *, unlabelled: bool = False, ids: list[int] | None = None,
             limit: int | None = None) -> list[CollectedFace]:
        """Oldest first."""
        query, args = "SELECT * FROM faces WHERE file != ''", []
        if unlabelled:
            query += " AND label IS NULL"
        if ids is not None:
            query += f" AND id IN ({','.join('?' * len(ids))})"
            args += [int(i) for i in ids]
        query += " ORDER BY id"
        if limit:
            query += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [_face(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many crops in all, unlabelled, and per label."""
        with self._lock:
            rows = self._db.execute("SELECT label, COUNT(*) FROM faces WHERE file != '' GROUP BY label").fetchall()
        counts = {"total": sum(n for _, n in rows), "unlabelled": 0}
        for label, n in rows:
            counts["unlabelled" if label is None else label] = n
        return counts

    def label(self, face_id: int, label: str, *, by: str) -> CollectedFace:
        if label not in LABELS:
            raise MaskgateError(f"unknown label {label!r}: use one of {', '.join(LABELS)}")
        with self._lock:
            cursor = self._db.execute("UPDATE faces SET label = ?, labelled_at = ?, labelled_by = ? WHERE id = ?"
                                      " AND file != ''", (label, time.time(), by, int(face_id)))
        if cursor.rowcount == 0:
            raise MaskgateError(f"no collected face {face_id} (deleted, or never kept)")
        return self.get(face_id)

    def enforce(self, *, retention_days: float, max_images: int, now: float | None = None) -> int:
        """Delete crops older than ``retention_days``, then the oldest beyond ``max_images`` (unlabelled
        first); returns how many went."""
        cutoff = (time.time() if now is None else now) - retention_days * 86400
        with self._lock:
            doomed = self._db.execute("SELECT id, file FROM faces WHERE time < ?", (cutoff,)).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM faces WHERE time >= ?", (cutoff,)).fetchone()[0]
            if total > max_images:
                doomed += self._db.execute(
                    "SELECT id, file FROM faces WHERE time >= ? ORDER BY label IS NOT NULL, id LIMIT ?",
                    (cutoff, total - max_images)).fetchall()
            self._delete(doomed)
        return len(doomed)

    def purge(self) -> int:
        """Delete every crop and row; returns how many crops there were."""
        with self._lock:
            count = self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
            self._db.execute("DELETE FROM faces")
            self._db.execute("VACUUM")
            shutil.rmtree(self.crops, ignore_errors=True)
            self.crops.mkdir(mode=0o750, exist_ok=True)
        return count

    def export(self, out: Path, *, site: str, now: float | None = None) -> dict:
        """Write the labelled crops (not skipped ones), ``labels.csv`` and ``manifest.json`` to the tar ``out``."""
        faces = [f for f in self.list() if f.label is not None and f.label != "skip"]
        if not faces:
            raise MaskgateError("nothing to export: label some collected faces first (maskgate collect label)")
        counts: dict[str, int] = {}
        for face in faces:
            counts[face.label] = counts.get(face.label, 0) + 1
        manifest = {
            "format": EXPORT_FORMAT, "site": site, "exported": _iso(time.time() if now is None else now),
            "first": _iso(min(f.time for f in faces)), "last": _iso(max(f.time for f in faces)),
            "counts": counts, "labels": {k: v for k, v in LABELS.items() if k != "skip"},
            "models": sorted({f.model for f in faces}), "ownership": OWNERSHIP.format(site=site),
            "crop": "the exact face crop the model saw (crops/ID.jpg); keypoints in crop pixels",
        }
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["file", "label", "class", "model_label", "p_with_mask", "nose_covered", "outcome", "reason",
                         "time", "keypoints"])
        writer.writerows([f"crops/{f.file}", f.label, LABELS[f.label] or "", f.model_label,
                          round(f.probs.get("with_mask", 0.0), 4), "" if f.nose_covered is None else round(f.nose_covered, 4),
                          f.outcome, f.reason, round(f.time, 3), json.dumps(f.keypoints)] for f in faces)
        partial = out.with_name(out.name + ".partial")
        try:
            with tarfile.open(partial, "w") as tar:
                _add_bytes(tar, "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
                _add_bytes(tar, "labels.csv", table.getvalue().encode())
                for face in faces:
                    tar.add(self.crops / face.file, arcname=f"crops/{face.file}", recursive=False)
            os.replace(partial, out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise MaskgateError(f"{out}: cannot write the export ({exc.strerror or exc})") from None
        return manifest

    def _delete(self, rows: list[tuple[int, str]]) -> None:
        for face_id, name in rows:
            if name:
                (self.crops / name).unlink(missing_ok=True)
            self._db.execute("DELETE FROM faces WHERE id = ?", (face_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _face(row: tuple) -> CollectedFace:
    (face_id, when, name, outcome, reason, probs, nose, keypoints, model, label, labelled_at, labelled_by) = row
    return CollectedFace(face_id, when, name, outcome, reason, json.loads(probs), nose, json.loads(keypoints), model,
                         label, labelled_at, labelled_by)


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o640
    tar.addfile(info, io.BytesIO(data))
