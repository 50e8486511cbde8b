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


@pytest.mark.skipif(not (PEER / Res10SSD.MODEL).is_file(), reason=f"res10 SSD files not present at {PEER}")
def test_side_by_side_times_the_peer_recipe_and_every_maskgate_setting(capsys):
    from maskgate_train.cli import main
    from maskgate_train.detectors import STREAM_VARIANTS, PeerRecipe
    from maskgate.sources.scenes import door_scene

    assert PeerRecipe(PEER).process(door_scene()) == 1, "the peer pipeline finds and classifies the one face"
    assert main(["side-by-side", "--peer", str(PEER), "--rounds", "1", "--frames", "6"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| peer") or
            line.startswith("| maskgate")]
    assert len(rows) == 2 + len(STREAM_VARIANTS)
    assert rows[0].endswith("| 1.00 (1.00–1.00) |")
    assert sum("(default)" in row for row in rows) == 1


def test_side_by_side_without_the_peer_files_is_one_line(tmp_path, capsys):
    from maskgate_train.cli import main

    assert main(["side-by-side", "--peer", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
