"""The detector comparison harness (``maskgate-train detectors``): the peer project's res10 SSD side by side."""

from pathlib import Path

import numpy as np
import pytest

from maskgate.vision.detector import iou
from maskgate_train.detectors import Res10SSD, YuNet, report
from maskgate_train.errors import DataError

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer" / "face_detector"


@pytest.mark.skipif(not (PEER / Res10SSD.MODEL).is_file(), reason=f"res10 SSD files not present at {PEER}")
def test_res10_finds_the_face_yunet_finds(astronaut, no_face_photo):
    peer = Res10SSD(PEER).detect(astronaut)
    ours = YuNet(320).detect(astronaut)
    assert len(peer) == len(ours) == 1
    assert iou(np.array(peer[0]), np.array(ours)).max() > 0.7
    assert Res10SSD(PEER).detect(no_face_photo) == []


def test_unknown_detector_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(DataError, match=r"unknown detector 'YuNet 999' \(known: .*YuNet 320"):
        report(tmp_path, only=["YuNet 999"], peer=tmp_path)
