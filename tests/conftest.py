"""Shared fixtures: real photos from scikit-image and tiny real TFLite bundles."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import QUANTISATIONS, copy_bundle  # noqa: E402

# In the astronaut photo (512×512) her face spans roughly this box (hairline to chin).
ASTRONAUT_FACE = (180, 70, 270, 176)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def no_face_photo() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.rocket(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def detector():
    from maskgate.vision.detector import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def core(detector, tiny_bundles):
    """The real detector with the tiny colour model: a strongly blue mask is with_mask, bare skin without_mask."""
    from maskgate.vision.classifier import MaskClassifier
    from maskgate.vision.core import InferenceCore

    return InferenceCore(detector, MaskClassifier(tiny_bundles["int8"]))


@pytest.fixture(scope="session")
def scenes() -> dict[str, np.ndarray]:
    """Door scenes for ``core``: masked, bare, a far (60 px) face, nobody."""
    from maskgate.sources.scenes import door_scene

    return {"masked": door_scene(masked=True, mask_bgr=(255, 60, 0)), "bare": door_scene(masked=False),
            "far": door_scene(face_height_px=60), "empty": np.full((480, 640, 3), 90, np.uint8)}


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """One colour-model bundle per quantisation: float32, int8, uint8; and "nose": int8 with a nose check."""
    root = tmp_path_factory.mktemp("bundles")
    return {q: copy_bundle(q, root / q) for q in (*QUANTISATIONS, "nose")}
