"""BlazeFace detector on real photos: boxes land on faces in original-frame coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import ASTRONAUT_FACE

from maskgate.vision.detector import FaceDetector, ssd_anchors
from maskgate.errors import FrameError, ModelError


def assert_box_near(box, expected, tolerance):
    assert np.allclose(box, expected, atol=tolerance), f"{np.round(box)} not within {tolerance}px of {expected}"


def centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def test_anchor_grid_has_896_centres_inside_unit_square():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    assert anchors.min() > 0 and anchors.max() < 1


def test_astronaut_has_exactly_one_face_on_her_face(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    assert_box_near(faces[0].box, ASTRONAUT_FACE, 12)
    assert faces[0].score > 0.8
    (rx, ry), (lx, ly) = faces[0].keypoints[:2]
    assert rx < lx and abs(ry - ly) < 15, "eyes should sit side by side, right eye on the image's left"


def test_photo_without_face_has_none(detector, no_face_photo):
    assert detector.detect(no_face_photo) == []


@pytest.mark.parametrize(
    "canvas_hw, offset_xy",
    [((500, 1200), (500, -60)), ((1100, 420), (-80, 400)), ((480, 640), (100, -20))],
    ids=["landscape", "portrait", "vga"],
)
def test_letterbox_maps_boxes_back_to_the_original_frame(detector, astronaut, canvas_hw, offset_xy):
    # BlazeFace short range needs a face of about 1/6 of the frame's longer side or more.
    scale = max(canvas_hw) / 6 / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    photo = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((*canvas_hw, 3), 127, np.uint8)
    ox, oy = offset_xy
    src_x, src_y, dst_x, dst_y = max(0, -ox), max(0, -oy), max(0, ox), max(0, oy)
    h = min(photo.shape[0] - src_y, canvas_hw[0] - dst_y)
    w = min(photo.shape[1] - src_x, canvas_hw[1] - dst_x)
    canvas[dst_y : dst_y + h, dst_x : dst_x + w] = photo[src_y : src_y + h, src_x : src_x + w]

    (face,) = detector.detect(canvas)
    expected = [ox + ASTRONAUT_FACE[0] * scale, oy + ASTRONAUT_FACE[1] * scale,
                ox + ASTRONAUT_FACE[2] * scale, oy + ASTRONAUT_FACE[3] * scale]
    assert_box_near(face.box, expected, 0.12 * (expected[2] - expected[0]) + 2)


def test_faces_smaller_than_the_detector_can_see_are_not_found(detector, astronaut):
    # Documented limit: a face under ~1/10 of the frame's longer side is too far away.
    small = cv2.resize(astronaut, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 1100, 3), 127, np.uint8)
    canvas[100:356, 400:656] = small
    assert detector.detect(canvas) == []


def test_finds_several_faces(detector, astronaut):
    head = astronaut[30:230, 125:325]  # 200×200 around her face
    canvas = np.full((600, 600, 3), 127, np.uint8)
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for row, col in cells:
        canvas[50 + 300 * row : 250 + 300 * row, 50 + 300 * col : 250 + 300 * col] = head
    faces = detector.detect(canvas)
    assert sorted((int(centre(f.box)[1] // 300), int(centre(f.box)[0] // 300)) for f in faces) == cells


def test_face_cut_by_the_frame_edge_is_found_and_clamped(detector, astronaut):
    cut = astronaut[:, 205:]  # the left part of her face is outside the frame
    faces = detector.detect(cut)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert x1 == 0.0 and 0 < x2 < 100 and y1 < y2


def test_grayscale_and_bgra_frames_find_the_same_face(detector, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    for frame in (gray, gray[:, :, None], bgra):
        (face,) = detector.detect(frame)
        assert_box_near(face.box, ASTRONAUT_FACE, 14)


def test_huge_frame(detector, astronaut):
    huge = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_LINEAR)
    (face,) = detector.detect(huge)
    assert_box_near(face.box, [v * 8 for v in ASTRONAUT_FACE], 100)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 7, 3), (3, 1000, 3)])
def test_tiny_or_sliver_frames_give_no_faces(detector, shape):
    assert detector.detect(np.full(shape, 200, np.uint8)) == []


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


def test_pad_retry_recovers_a_face_that_fills_the_picture(astronaut):
    tight = astronaut[60:200, 155:295]  # face fills the picture
    padded_detector = FaceDetector(pad_retry=True)
    (face,) = padded_detector.detect(tight)
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < 40 and 0 <= y1 < 40 and 100 < x2 <= 140 and 100 < y2 <= 140


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ModelError, match="nope.tflite: model file not found"):
        FaceDetector(missing)


def test_corrupt_model_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(ModelError, match="corrupt.tflite: not a valid TFLite model"):
        FaceDetector(corrupt)


def test_a_tflite_model_that_is_not_blazeface_is_refused(tiny_bundles):
    path = tiny_bundles["float32"] / "classifier.tflite"
    with pytest.raises(ModelError, match="not a BlazeFace"):
        FaceDetector(path)
