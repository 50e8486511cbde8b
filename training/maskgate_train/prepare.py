"""Step 1 — prepare: labelled photos → face crops made by the device's own detector and crop.

Sources are class folders (``faces/<source>/<class>/*.jpg``) and scene photos with Pascal-VOC face
boxes (``scenes/images`` + ``scenes/annotations``). Every crop goes through
``maskgate.vision.detector.FaceDetector`` and ``maskgate.vision.crop.crop_face``. Where the detector finds no face
the fallback is the annotated box (scenes) or a centre crop (class folders); the manifest records which
method made each crop.
Exact and near duplicates (64-bit difference hash within ``NEAR_DUPLICATE_BITS``) with the same label
are dropped across all sources; the split is by source photo (near duplicates with different labels
share one), so every crop of one photo lands in one split. Photos holding a real ``incorrect_mask``
face are split 60/20/20 instead of 80/10/10, so validation and test hold enough of the scarce class
to measure it.
"""

from __future__ import annotations

import csv
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from maskgate.vision.classifier import LABELS
from maskgate.vision.crop import crop_face, crop_points
from maskgate.vision.detector import Face, FaceDetector, iou
from maskgate.errors import FrameError
from maskgate.images import IMAGE_SUFFIXES, read_image

from .errors import DataError

VOC_LABELS = {"with_mask": "with_mask", "without_mask": "without_mask", "mask_weared_incorrect": "incorrect_mask",
              "with_incorrect_mask": "incorrect_mask"}
MIN_SCENE_FACE_PX = 16  # smaller annotated faces hold too little to learn from
NEAR_DUPLICATE_BITS = 4
SPLIT_FRACTIONS = (0.8, 0.1)  # train, validation; the rest is test
RARE_SPLIT_FRACTIONS = (0.6, 0.2)  # photos with an incorrect_mask face


@dataclass
class CropRecord:
    source: str
    path: str  # relative to the data root
    label: str
    group: str  # the source photo; all its crops share a split
    method: str  # detector | voc_box | centre
    face_px: float  # face height in the source picture
    split: str = ""
    dhash: str = ""
    landmarks: str = ""  # the detector's five keypoints in crop pixels, "x y" × 5 (empty when no detector face)


def prepare(data_root: Path, out_dir: Path, *, sources: list[str], input_size: int, margin: float,
            heldout_sources: list[str] = ()) -> dict:
    """Write ``crops.npz`` and ``manifest.csv`` into ``out_dir``; return counts for the report.

    ``heldout_sources`` are ``research/<name>`` sets (VOC like ``scenes`` or class folders), cropped the
    same way but put in the ``heldout`` split: measured, never trained on. They come after the
    training sources, so their near duplicates of training crops are dropped."""
    detector = FaceDetector(num_threads=2)
    crops: list[np.ndarray] = []
    records: list[CropRecord] = []
    folders = [(s, data_root / ("scenes" if s == "scenes" else f"faces/{s}")) for s in sources]
    folders += [(s, data_root / "research" / s) for s in heldout_sources]
    for source, folder in folders:
        if (folder / "annotations").is_dir():
            items = _scene_crops(folder, source, detector, input_size, margin)
        else:
            items = _folder_crops(folder, source, detector, input_size, margin)
        for crop, record in items:
            record.path = str(Path(record.path).relative_to(data_root))
            crops.append(crop)
            records.append(record)
    if not records:
        raise DataError(f"{data_root}: no images found for sources {', '.join(sources)}")

    total = len(records)
    keep = _drop_duplicates(crops, records)
    crops = [crops[i] for i in keep]
    records = [records[i] for i in keep]
    rare_groups = {r.group for r in records if r.label == "incorrect_mask"}
    for record in records:
        record.split = "heldout" if record.source in heldout_sources else split_of(
            record.group, RARE_SPLIT_FRACTIONS if record.group in rare_groups else SPLIT_FRACTIONS)

    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "crops.npz", images=np.stack(crops))
    with open(out_dir / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(records[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
    return summarise(records, dropped=total - len(records))


def split_of(group: str, fractions: tuple[float, float] = SPLIT_FRACTIONS) -> str:
    """Deterministic split from a hash of the source photo's name (train, validation fractions)."""
    u = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < fractions[0] else "val" if u < sum(fractions) else "test"


def _folder_crops(folder, source, detector, input_size, margin):
    if not folder.is_dir():
        raise DataError(f"{folder}: source folder not found")
    for label in LABELS:
        class_dir = folder / label
        if not class_dir.is_dir():
            continue
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: class folder holds no images")
        for path in tqdm(files, desc=f"{source}/{label}", unit="img"):
            image = _read(path)
            method, faces = "detector", detector.detect(image)
            if faces:
                face = max(faces, key=lambda f: f.width * f.height)
                crop = crop_face(image, face.box, size=input_size, margin=margin)
                landmarks = _landmarks(face, image.shape, input_size, margin)
                face_px = face.height
            else:
                method = "centre"
                h, w = image.shape[:2]
                side = min(h, w) / (1 + 2 * margin)
                box = (w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2)
                crop = crop_face(image, box, size=input_size, margin=margin)
                landmarks = ""
                face_px = side
            group = f"{source}/{label}/{path.stem}"
            yield crop, CropRecord(source, str(path), label, group, method, round(face_px, 1), landmarks=landmarks)


def _scene_crops(scenes, source, detector, input_size, margin):
    """Each annotated face is framed as a door camera would see it (face ≈ 1/4 of the picture),
    then found by the detector; the annotated box is the fallback."""
    annotations = sorted((scenes / "annotations").glob("*.xml"))
    if not annotations:
        raise DataError(f"{scenes / 'annotations'}: no VOC annotation files")
    for xml_path in tqdm(annotations, desc=source, unit="img"):
        image_path, boxes = read_voc(xml_path, scenes / "images")
        image = _read(image_path)
        for i, (label, box) in enumerate(boxes):
            side = max(box[2] - box[0], box[3] - box[1])
            if side < MIN_SCENE_FACE_PX:
                continue
            view_px = 256
            view = crop_face(image, box, size=view_px, margin=1.5)  # face fills ~1/4 of the view
            expected = np.array([view_px * 3 / 8, view_px * 3 / 8, view_px * 5 / 8, view_px * 5 / 8])
            faces = [f for f in detector.detect(view) if iou(expected, np.array([f.box]))[0] > 0.3]
            if faces:
                face = max(faces, key=lambda f: f.score)
                crop = crop_face(view, face.box, size=input_size, margin=margin)
                landmarks = _landmarks(face, view.shape, input_size, margin)
                method = "detector"
            else:
                crop = crop_face(image, box, size=input_size, margin=margin)
                landmarks = ""
                method = "voc_box"
            group = f"{source}/{image_path.stem}"
            record = CropRecord(source, str(image_path), label, group, method, round(box[3] - box[1], 1),
                                landmarks=landmarks)
            record.path = f"{image_path}#{i}"
            yield crop, record


def read_voc(xml_path: Path, images_dir: Path) -> tuple[Path, list[tuple[str, tuple[float, float, float, float]]]]:
    """The image a VOC file describes and its (label, box) faces; unknown classes are errors."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{xml_path}: not a readable VOC annotation ({exc})") from None
    filename = root.findtext("filename")
    if not filename:
        raise DataError(f"{xml_path}: no <filename>")
    image_path = images_dir / filename
    boxes = []
    for obj in root.iter("object"):
        name = obj.findtext("name", "")
        if name not in VOC_LABELS:
            raise DataError(f"{xml_path}: unknown class {name!r} (expected one of {', '.join(VOC_LABELS)})")
        bb = obj.find("bndbox")
        try:
            box = tuple(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError, AttributeError):
            raise DataError(f"{xml_path}: object {name!r} has no valid <bndbox>") from None
        boxes.append((VOC_LABELS[name], box))
    return image_path, boxes


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except FrameError as exc:
        raise DataError(str(exc)) from None


def _landmarks(face: Face, frame_shape: tuple[int, ...], input_size: int, margin: float) -> str:
    points = crop_points(np.array(face.keypoints), face.box, frame_shape, size=input_size, margin=margin)
    return " ".join(f"{v:.1f}" for v in points.ravel())


def dhash(crop: np.ndarray) -> int:
    """64-bit difference hash of a crop (robust to resizing and re-encoding)."""
    gray = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (gray[:, 1:] > gray[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def _drop_duplicates(crops, records) -> list[int]:
    """Indices to keep. A crop within NEAR_DUPLICATE_BITS of an earlier one is dropped if it has the
    same label; with another label (e.g. a mask pasted onto the same photo) it is kept but joins the
    earlier crop's group, so both land in the same split."""
    hashes = np.array([dhash(c) for c in crops], dtype=np.uint64)
    for record, h in zip(records, hashes):
        record.dhash = f"{int(h):016x}"
    keep: list[int] = []
    for i, h in enumerate(tqdm(hashes, desc="dedupe", unit="crop")):
        if keep:
            near = np.flatnonzero(np.bitwise_count(hashes[keep] ^ h) <= NEAR_DUPLICATE_BITS)
            if any(records[keep[j]].label == records[i].label for j in near):
                continue
            if near.size:
                records[i].group = records[keep[near[0]]].group
        keep.append(i)
    return keep


def summarise(records: list[CropRecord], dropped: int) -> dict:
    counts: dict = {}
    for r in records:
        counts.setdefault(r.source, {}).setdefault(r.label, {}).setdefault(r.split, 0)
        counts[r.source][r.label][r.split] += 1
    methods: dict = {}
    for r in records:
        methods.setdefault(f"{r.source}/{r.label}", {}).setdefault(r.method, 0)
        methods[f"{r.source}/{r.label}"][r.method] += 1
    return {"crops": len(records), "duplicates_dropped": dropped, "counts": counts, "methods": methods}
