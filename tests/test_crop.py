"""The face crop training and the device share."""

import numpy as np
import pytest

from maskgate.vision.crop import crop_face, crop_points, normalise, nose_patch


def gradient_frame(h=100, w=200):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.dstack([xs % 256, ys % 256, np.zeros_like(xs)]).astype(np.uint8)


def test_crop_is_square_centred_and_grown_by_the_margin():
    frame = gradient_frame()
    crop = crop_face(frame, (80, 30, 120, 70), size=60, margin=0.25)  # 40 px box → 60 px crop
    assert crop.shape == (60, 60, 3)
    assert crop[0, 0, 0] == 70 and crop[0, 0, 1] == 20  # top-left pixel is (70, 20)
    assert crop[59, 59, 0] == 129 and crop[59, 59, 1] == 79


def test_non_square_box_uses_its_longer_side():
    crop = crop_face(gradient_frame(), (90, 20, 110, 80), size=60, margin=0.0)
    assert crop[0, 0, 0] == 70 and crop[59, 59, 0] == 129


def test_crop_at_frame_edge_replicates_edge_pixels():
    frame = gradient_frame()
    crop = crop_face(frame, (-20, -20, 20, 20), size=40, margin=0.0)
    assert crop.shape == (40, 40, 3)
    assert (crop[:20, :20, 0] == 0).all() and (crop[:20, :20, 1] == 0).all()
    assert crop[39, 39, 0] == 19


@pytest.mark.parametrize("box", [(300, 300, 400, 400), (-300, -300, -200, -200), (10, 10, 10, 10)])
def test_degenerate_or_outside_boxes_still_give_a_crop(box):
    assert crop_face(gradient_frame(), box, size=32).shape == (32, 32, 3)


def test_grayscale_frames_crop_to_three_channels():
    gray = np.full((50, 50), 77, np.uint8)
    crop = crop_face(gray, (10, 10, 40, 40), size=16)
    assert crop.shape == (16, 16, 3) and (crop == 77).all()


def test_normalise_ranges_and_colour_order():
    bgr = np.array([[[[255, 0, 0]]]], np.uint8)  # one blue pixel
    assert normalise(bgr, "raw").tolist() == [[[[0.0, 0.0, 255.0]]]]
    assert normalise(bgr, "zero_to_one", rgb=False).tolist() == [[[[1.0, 0.0, 0.0]]]]
    assert normalise(bgr, "minus_one_to_one").tolist() == [[[[-1.0, -1.0, 1.0]]]]
    with pytest.raises(ValueError):
        normalise(bgr, "imagenet")


@pytest.mark.parametrize("box", [(120, 80, 200, 160), (-30, 150, 40, 230)])
def test_crop_points_land_where_crop_face_puts_the_pixel(box):
    frame = np.zeros((240, 320, 3), np.uint8)
    x1, y1, x2, y2 = box
    px, py = int(max(x1, 0) + 10), int(y1 + 10)
    frame[py:py + 4, px:px + 4] = 255
    crop = crop_face(frame, box, size=64, margin=0.2)
    ((x, y),) = crop_points(np.array([[px + 2, py + 2]]), box, frame.shape, size=64, margin=0.2)
    ys, xs = np.nonzero(crop[..., 0] > 100)
    assert abs(xs.mean() + 0.5 - x) < 1 and abs(ys.mean() + 0.5 - y) < 1


def test_nose_patch_is_centred_below_the_nose_tip_and_scales_with_the_face():
    crop = np.zeros((128, 128, 3), np.uint8)
    crop[70:74, 62:66] = 255  # just below the nose tip at (64, 66)
    points = np.array([[44, 46], [84, 46], [64, 66], [50, 86], [78, 86]], np.float32)
    patch = nose_patch(crop, points, size=60)
    ys, xs = np.nonzero(patch[..., 0] > 100)
    assert abs(xs.mean() - 29.5) < 2 and abs(ys.mean() - 29.5) < 3
    assert 60 / (1.5 * 40) * 4 - 1 <= len(set(xs)) <= 60 / (1.5 * 40) * 4 + 2, "the patch spans 1.5 eye distances"
