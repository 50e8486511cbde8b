"""Template masks warped onto real bare faces from the detector's five landmarks (training only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maskgate.vision.crop import crop_face

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEMPLATES = SHARED_DATA / "mask-templates"
BARE = SHARED_DATA / "faces" / "chandrikadeb7" / "without_mask"
pytestmark = pytest.mark.skipif(not (TEMPLATES / "masks" / "masks.cfg").is_file() or not BARE.is_dir(),
                                reason="../shared/data (mask templates, bare faces) is not beside the repository")
SIZE, MARGIN = 128, 0.2


@pytest.fixture(scope="module")
def maker():
    from maskgate_train.synthetic import MaskMaker

    return MaskMaker(TEMPLATES)


@pytest.fixture(scope="module")
def bare_faces(detector, astronaut) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real bare faces as the recipe sees them: detector crop + five landmarks in crop pixels."""
    from maskgate.images import read_image
    from maskgate.vision.crop import crop_points

    photos = [astronaut] + [read_image(p) for p in sorted(BARE.glob("*.jpg"))[::150][:12]]
    faces = []
    for photo in photos:
        found = detector.detect(photo)
        if found:
            face = max(found, key=lambda f: f.width * f.height)
            faces.append((crop_face(photo, face.box, size=SIZE, margin=MARGIN),
                          crop_points(np.array(face.keypoints), face.box, photo.shape, size=SIZE, margin=MARGIN)))
    assert len(faces) >= 10
    return faces


def test_every_mask_type_and_view_loads_with_six_anchors(maker):
    assert {t.kind for t in maker.templates} == {"surgical", "cloth", "KN95", "N95", "gas"}
    assert {t.view for t in maker.templates} == {"frontal", "left", "right"}
    assert all(t.anchors.shape == (6, 2) and t.rgba.shape[2] == 4 for t in maker.templates)
    assert len(maker.textures) >= 20


def test_a_correct_placement_covers_nose_and_mouth_but_not_the_eyes(maker, bare_faces):
    rng = np.random.default_rng(0)
    for crop, landmarks in bare_faces:
        for _ in range(6):
            masked = maker.put_on(crop, landmarks, "correct", rng)
            assert masked.label == "with_mask" and masked.consistent, masked.template
            assert masked.covered["nose"] and masked.covered["mouth_right"] and masked.covered["mouth_left"]
            assert not masked.covered["right_eye"] and not masked.covered["left_eye"]


@pytest.mark.parametrize("placement", ["below_nose", "chin"])
def test_a_wrong_placement_leaves_the_nose_uncovered_and_its_pixels_untouched(maker, bare_faces, placement):
    rng = np.random.default_rng(1)
    for crop, landmarks in bare_faces:
        for _ in range(6):
            masked = maker.put_on(crop, landmarks, placement, rng)
            assert masked.label == "incorrect_mask" and not masked.covered["nose"], masked.template
            x, y = np.round(landmarks[2]).astype(int)
            assert np.abs(masked.image[y, x].astype(int) - crop[y, x]).max() <= 8, "the nose tip is still skin"
            if placement == "chin":
                assert not masked.covered["mouth_right"] and not masked.covered["mouth_left"]


def test_below_the_nose_still_covers_the_mouth(maker, bare_faces):
    rng = np.random.default_rng(2)
    results = [maker.put_on(crop, lm, "below_nose", rng) for crop, lm in bare_faces for _ in range(4)]
    assert np.mean([m.covered["mouth_right"] and m.covered["mouth_left"] for m in results]) >= 0.9


def test_the_mask_changes_the_lower_face_and_varies_in_look(maker, bare_faces):
    rng = np.random.default_rng(3)
    crop, landmarks = bare_faces[0]
    looks = [maker.put_on(crop, landmarks, "correct", rng) for _ in range(20)]
    mouth_y = int(landmarks[3:, 1].mean())
    changed = [np.abs(m.image[mouth_y].astype(int) - crop[mouth_y]).mean() for m in looks]
    assert min(changed) > 10
    assert len({m.template for m in looks}) >= 4
    assert np.std([m.image[mouth_y].mean() for m in looks]) > 5, "colours and textures differ"


def test_gas_masks_are_only_worn_correctly(maker, bare_faces):
    rng = np.random.default_rng(4)
    crop, landmarks = bare_faces[0]
    with pytest.raises(ValueError, match="gas"):
        maker.put_on(crop, landmarks, "below_nose", rng, kind="gas")
    wrong = [maker.put_on(crop, landmarks, "chin", rng).template for _ in range(60)]
    assert not any(name.startswith("gas") for name in wrong)


def test_unknown_placement_and_bad_landmarks_are_named(maker, bare_faces):
    crop, landmarks = bare_faces[0]
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="unknown placement 'forehead'"):
        maker.put_on(crop, landmarks, "forehead", rng)
    with pytest.raises(ValueError, match="five finite landmarks"):
        maker.put_on(crop, np.full((5, 2), np.nan), "correct", rng)
