"""YuNet detector on real photos: boxes and landmarks land on faces in original-frame coordinates,
from a ~48 px face to one filling the frame, masked and bare."""

from __future__ import annotations

import hashlib
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ASTRONAUT_FACE

from maskgate.errors import FrameError, ModelError
from maskgate.sources.scenes import door_scene
from maskgate.vision.detector import KEYPOINT_NAMES, FaceDetector, default_model_path, iou

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared photo set not present at {SHARED_DATA}")


def assert_box_near(box, expected, tolerance):
    assert np.allclose(box, expected, atol=tolerance), f"{np.round(box)} not within {tolerance}px of {expected}"


def centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def on_canvas(photo, canvas_hw, offset_xy, fill=127):
    """``photo`` pasted on a grey canvas at ``offset_xy`` (may be negative: the photo is cut)."""
    canvas = np.full((*canvas_hw, 3), fill, np.uint8)
    ox, oy = offset_xy
    src_x, src_y, dst_x, dst_y = max(0, -ox), max(0, -oy), max(0, ox), max(0, oy)
    h = min(photo.shape[0] - src_y, canvas_hw[0] - dst_y)
    w = min(photo.shape[1] - src_x, canvas_hw[1] - dst_x)
    canvas[dst_y : dst_y + h, dst_x : dst_x + w] = photo[src_y : src_y + h, src_x : src_x + w]
    return canvas


def test_shipped_model_is_inside_the_package_with_its_licence():
    path = default_model_path()
    assert path.is_file() and path.parent.name == "models"
    assert "MIT License" in (path.parent / "LICENSE").read_text()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (path.parent / "README.md").read_text(), "the model's README records its sha256"


def test_astronaut_has_exactly_one_face_with_landmarks_in_place(detector, astronaut):
    (face,) = detector.detect(astronaut)
    assert_box_near(face.box, ASTRONAUT_FACE, 20)
    assert face.score > 0.8
    points = dict(zip(KEYPOINT_NAMES, face.keypoints))
    assert len(face.keypoints) == 5
    (rx, ry), (lx, ly) = points["right_eye"], points["left_eye"]
    assert rx < lx and abs(ry - ly) < 15, "eyes side by side, the subject's right eye on the image's left"
    nose_y = points["nose"][1]
    mouth_y = (points["mouth_right"][1] + points["mouth_left"][1]) / 2
    assert max(ry, ly) < nose_y < mouth_y < face.box[3]
    assert points["mouth_right"][0] < points["mouth_left"][0]


def test_photo_without_face_has_none(detector, no_face_photo):
    assert detector.detect(no_face_photo) == []


@pytest.mark.parametrize("face_px", [48, 60])
def test_small_face_far_from_the_camera_is_found(detector, astronaut, face_px):
    scale = face_px / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    photo = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = on_canvas(photo, (480, 640), (300, 150))
    expected = [300 + v * scale if i % 2 == 0 else 150 + v * scale for i, v in enumerate(ASTRONAUT_FACE)]
    faces = detector.detect(canvas)
    assert len(faces) == 1, f"{face_px} px face: found {len(faces)}"
    assert iou(np.array(expected, float), np.array([faces[0].box]))[0] > 0.5


@pytest.mark.parametrize("crop", [(60, 200, 155, 295), (85, 175, 182, 272)], ids=["head", "face-only"])
def test_close_up_face_filling_the_frame_is_found(detector, astronaut, crop):
    y1, y2, x1, x2 = crop
    close_up = cv2.resize(astronaut[y1:y2, x1:x2], (480, 480), interpolation=cv2.INTER_CUBIC)
    (face,) = detector.detect(close_up)
    assert face.width > 0.6 * 480 and face.height > 0.6 * 480
    assert abs(centre(face.box)[0] - 240) < 60


@pytest.mark.parametrize(
    "canvas_hw, offset_xy, face_px",
    [((500, 1200), (500, -60), 110), ((1100, 420), (-80, 400), 90), ((480, 640), (100, -20), 160)],
    ids=["landscape", "portrait", "vga"],
)
def test_boxes_map_back_to_the_original_frame(detector, astronaut, canvas_hw, offset_xy, face_px):
    scale = face_px / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    photo = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    (face,) = detector.detect(on_canvas(photo, canvas_hw, offset_xy))
    ox, oy = offset_xy
    expected = [ox + ASTRONAUT_FACE[0] * scale, oy + ASTRONAUT_FACE[1] * scale,
                ox + ASTRONAUT_FACE[2] * scale, oy + ASTRONAUT_FACE[3] * scale]
    assert_box_near(face.box, expected, 0.2 * (expected[2] - expected[0]) + 2)
    nose_x, nose_y = face.keypoints[2]
    assert face.box[0] < nose_x < face.box[2] and face.box[1] < nose_y < face.box[3]


def test_finds_several_faces(detector, astronaut):
    head = astronaut[30:230, 125:325]  # 200×200 around her face
    canvas = np.full((600, 600, 3), 127, np.uint8)
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for row, col in cells:
        canvas[50 + 300 * row : 250 + 300 * row, 50 + 300 * col : 250 + 300 * col] = head
    faces = detector.detect(canvas)
    assert sorted((int(centre(f.box)[1] // 300), int(centre(f.box)[0] // 300)) for f in faces) == cells
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_face_cut_by_the_frame_edge_is_found_and_clamped(detector, astronaut):
    cut = astronaut[:, 205:]  # the left part of her face is outside the frame
    (face,) = detector.detect(cut)
    x1, y1, x2, y2 = face.box
    assert x1 == 0.0 and 0 < x2 < 100 and y1 < y2


def test_grayscale_and_bgra_frames_find_the_same_face(detector, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    for frame in (gray, gray[:, :, None], bgra):
        (face,) = detector.detect(frame)
        assert_box_near(face.box, ASTRONAUT_FACE, 20)


def test_huge_frame(detector, astronaut):
    huge = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_LINEAR)
    (face,) = detector.detect(huge)
    assert_box_near(face.box, [v * 8 for v in ASTRONAUT_FACE], 160)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 7, 3), (3, 1000, 3)])
def test_tiny_or_sliver_frames_give_no_faces(detector, shape):
    assert detector.detect(np.full(shape, 200, np.uint8)) == []


def test_thin_strips_give_no_faces_whatever_came_before(detector, astronaut):
    # Unpadded, YuNet answers a 320×32 input with inf/1e26 boxes, depending on the previous frame.
    for strip_px in (1, 2, 4, 8, 16, 24, 31, 32, 40):
        detector.detect(astronaut)
        assert detector.detect(np.full((strip_px * 1000 // 320, 1000, 3), 200, np.uint8)) == [], strip_px


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((10,), np.uint8), "shape"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_frames_raise_a_clear_frame_error(detector, frame, message):
    with pytest.raises(FrameError, match=message):
        detector.detect(frame)


def test_concurrent_callers_get_the_same_faces(detector, astronaut):
    frames = [astronaut, cv2.resize(astronaut, (300, 200)), np.ascontiguousarray(astronaut[:, 205:])]
    expected = [detector.detect(f) for f in frames]
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = [detector.detect(frames[(i + k) % 3]) for k in range(12)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, got in results.items():
        assert got == [expected[(i + k) % 3] for k in range(12)]


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="nope.onnx: model file not found"):
        FaceDetector(missing)


def test_corrupt_model_file_is_named_in_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf" * 64)
    with pytest.raises(ModelError, match="corrupt.onnx: not a YuNet face detector model") as info:
        FaceDetector(corrupt)
    assert "\n" not in str(info.value)


def test_a_model_that_is_not_yunet_is_refused(tiny_bundles):
    path = tiny_bundles["float32"] / "classifier.tflite"
    with pytest.raises(ModelError, match="not a YuNet face detector model"):
        FaceDetector(path)


def _voc_faces(label: str, min_px: float, limit: int):
    """The first ``limit`` annotated ``label`` faces at least ``min_px`` tall in the shared scene photos."""
    faces = []
    for xml_path in sorted((SHARED_DATA / "scenes" / "annotations").glob("*.xml")):
        root = ET.parse(xml_path).getroot()
        for obj in root.iter("object"):
            box = [float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            if obj.findtext("name") == label and box[3] - box[1] >= min_px:
                faces.append((SHARED_DATA / "scenes" / "images" / root.findtext("filename"), box))
        if len(faces) >= limit:
            return faces[:limit]
    return faces


@needs_shared
@pytest.mark.parametrize("label", ["with_mask", "without_mask"])
def test_masked_and_bare_faces_in_real_scene_photos(detector, label):
    faces = _voc_faces(label, min_px=64, limit=40)
    assert len(faces) >= 30
    found = sum(
        any(iou(np.array(box), np.array([f.box]))[0] >= 0.4 for f in detector.detect(cv2.imread(str(path))))
        for path, box in faces
    )
    assert found >= 0.9 * len(faces), f"{label}: {found} of {len(faces)} faces ≥ 64 px found"


@needs_shared
@pytest.mark.parametrize("label", ["with_mask", "without_mask"])
def test_masked_and_bare_close_up_photos(detector, label):
    folder = SHARED_DATA / "faces" / "chandrikadeb7" / label
    photos = sorted(folder.glob("*.jpg"))[:60]
    assert len(photos) == 60
    found = sum(bool(detector.detect(cv2.imread(str(p)))) for p in photos)
    assert found >= 0.9 * len(photos), f"{label}: a face in {found} of {len(photos)} photos"


class CountingNet:
    """Stands in for one of the detector's OpenCV networks and counts its passes."""

    def __init__(self, net):
        self.net, self.passes = net, 0

    def setInputSize(self, size):  # noqa: N802 - OpenCV's name
        self.net.setInputSize(size)

    def detect(self, image):
        self.passes += 1
        return self.net.detect(image)


def counted(detector: FaceDetector) -> dict[int, CountingNet]:
    """Count the passes of each of ``detector``'s input sizes."""
    counters = {}
    for size, net in detector._nets.items():
        net.net = counters[size] = CountingNet(net.net)
    return counters


def test_small_masked_face_missed_by_the_first_pass_is_found_by_the_centre_zoom():
    frame = door_scene(face_height_px=40, masked=True)  # 40 px face: ~20 px in the 320 px pass
    assert FaceDetector(centre_zoom=False).detect(frame) == []
    (face,) = FaceDetector().detect(frame)
    assert abs(centre(face.box)[0] - 320) < 15 and abs(centre(face.box)[1] - 240) < 20
    assert 25 < face.height < 60
    nose_x, nose_y = face.keypoints[2]
    assert face.box[0] < nose_x < face.box[2] and face.box[1] < nose_y < face.box[3]


def test_a_still_photo_gets_the_full_look_one_pass_with_a_face_two_without(no_face_photo):
    detector = FaceDetector(first_pass_size=160)
    passes = counted(detector)
    for _ in range(3):
        assert len(detector.detect(door_scene(face_height_px=120, masked=True))) == 1
    assert (passes[160].passes, passes[320].passes) == (0, 3)
    assert detector.detect(no_face_photo) == []
    assert (passes[160].passes, passes[320].passes) == (0, 5), "320 px pass, then the centre ×2"


def test_in_a_stream_the_full_look_runs_when_the_cheaper_first_pass_finds_nobody(no_face_photo):
    detector = FaceDetector(first_pass_size=160, full_pass_every=1000)
    detector.detect(no_face_photo, streaming=True)  # the stream's first frame gets the full look
    passes = counted(detector)
    assert len(detector.detect(door_scene(face_height_px=200, masked=True), streaming=True)) == 1
    assert (passes[160].passes, passes[320].passes) == (1, 0)
    # 56 px tall: 14 px in the 160 px pass, too small for it; the 320 px pass finds it.
    (face,) = detector.detect(door_scene(face_height_px=56, masked=True), streaming=True)
    assert (passes[160].passes, passes[320].passes) == (2, 1)
    assert abs(centre(face.box)[0] - 320) < 15 and 35 < face.height < 80
    assert detector.detect(no_face_photo, streaming=True) == []
    assert (passes[160].passes, passes[320].passes) == (3, 3), "first pass, 320 px pass, centre ×2"


def test_in_a_stream_a_first_pass_finding_only_faces_too_small_for_the_door_gets_the_full_look():
    frame = door_scene(face_height_px=120, masked=True)  # the 160 px pass finds it, ~147 px tall
    for min_px, full_looks in ((140, 0), (160, 1)):
        detector = FaceDetector(first_pass_size=160, full_pass_every=1000, first_pass_min_px=min_px)
        detector.detect(frame, streaming=True)  # the stream's first frame gets the full look
        passes = counted(detector)
        assert len(detector.detect(frame, streaming=True)) == 1
        assert (passes[160].passes, passes[320].passes) == (1, full_looks), min_px


def test_in_a_stream_every_nth_frame_gets_the_full_look_whatever_the_first_pass_finds():
    detector = FaceDetector(first_pass_size=160, full_pass_every=3)
    passes = counted(detector)
    frame = door_scene(face_height_px=200, masked=True)
    seen = []
    for _ in range(7):
        before = passes[320].passes
        assert len(detector.detect(frame, streaming=True)) == 1
        seen.append(passes[320].passes - before)
    assert seen == [1, 0, 0, 1, 0, 0, 1]
    assert passes[160].passes == 4


def test_the_cheaper_first_pass_finds_the_faces_the_full_look_finds_at_the_door(astronaut):
    stream, still = FaceDetector(first_pass_size=160, full_pass_every=1000), FaceDetector()
    stream.detect(astronaut, streaming=True)  # past the stream's first, full, frame
    passes = counted(stream)
    for face_px in (100, 160, 240, 320):
        frame = door_scene(face_height_px=face_px, masked=face_px % 160 == 0)
        (cheap,), (full,) = stream.detect(frame, streaming=True), still.detect(frame)
        assert iou(np.array(cheap.box), np.array([full.box]))[0] > 0.8, face_px
        assert np.abs(np.array(cheap.keypoints) - np.array(full.keypoints)).max() < 0.1 * face_px, face_px
    assert passes[320].passes == 0, "the first pass found each face itself"


@pytest.mark.parametrize("options, message", [
    ({"first_pass_size": 32}, "first_pass_size must be >= 64 and < input_size"),
    ({"first_pass_size": 320}, "first_pass_size must be >= 64 and < input_size"),
    ({"input_size": 224, "first_pass_size": 256}, "first_pass_size must be >= 64 and < input_size"),
    ({"full_pass_every": 0}, "full_pass_every must be >= 1"),
])
def test_bad_first_pass_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        FaceDetector(**options)


def test_frames_of_changing_shapes_give_what_a_fresh_detector_gives(astronaut):
    frames = [astronaut, cv2.resize(astronaut, (640, 360)), np.ascontiguousarray(astronaut[100:, 50:]),
              door_scene(face_height_px=56)]
    def fresh_stream():
        detector = FaceDetector(first_pass_size=160, full_pass_every=1000)
        detector.detect(frames[0], streaming=True)  # the stream's first frame gets the full look
        return detector

    stream, still = fresh_stream(), FaceDetector()
    for frame in frames + frames[::-1]:
        assert stream.detect(frame, streaming=True) == fresh_stream().detect(frame, streaming=True)
        assert still.detect(frame) == FaceDetector().detect(frame)


def _door_frame_faces(min_px: float, limit: int):
    """The shared scene photos that fit a 640×480 frame, put on one as the door camera would see them (faces keep
    their size), with their annotated faces at least ``min_px`` tall: [(frame, [box, ...])], ``limit`` faces."""
    photos, count = [], 0
    for xml_path in sorted((SHARED_DATA / "scenes" / "annotations").glob("*.xml")):
        root = ET.parse(xml_path).getroot()
        boxes = [[float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                 for obj in root.iter("object")]
        boxes = [box for box in boxes if box[3] - box[1] >= min_px]
        photo = cv2.imread(str(SHARED_DATA / "scenes" / "images" / root.findtext("filename")))
        if boxes and photo.shape[0] <= 480 and photo.shape[1] <= 640:
            photos.append((on_canvas(photo, (480, 640), (0, 0)), boxes))
            count += len(boxes)
        if count >= limit:
            break
    return photos


@needs_shared
def test_door_sized_faces_in_scene_photos_are_still_found_by_a_160_px_first_pass():
    """Scene faces of the door's decision size (80 px) in a 640×480 frame: a stream frame that gets the 160 px
    first pass finds most of them, and a lone person whenever the full look does."""
    photos = _door_frame_faces(min_px=80, limit=280)
    still = FaceDetector()

    def found(faces, box):
        return bool(faces) and iou(np.array(box), np.array([f.box for f in faces])).max() >= 0.4

    cheap_hits = full_hits = total = lone = lone_cheap = 0
    for frame, boxes in photos:
        stream = FaceDetector(first_pass_size=160)
        stream.detect(frame, streaming=True)  # the stream's first frame gets the full look, the next the first pass
        cheap, full = stream.detect(frame, streaming=True), still.detect(frame)
        for box in boxes:
            total += 1
            cheap_hits += found(cheap, box)
            full_hits += found(full, box)
        if len(boxes) == 1 and found(full, boxes[0]):
            lone += 1
            lone_cheap += found(cheap, boxes[0])
    assert total >= 280 and lone >= 50
    assert full_hits >= 0.9 * total, f"the full look finds {full_hits} of {total} faces ≥ 80 px"
    assert cheap_hits >= 0.85 * total, f"a cheaper frame finds {cheap_hits} of {total} faces ≥ 80 px"
    assert lone_cheap >= 0.97 * lone, f"of {lone} lone faces the full look finds, a cheaper frame finds {lone_cheap}"
