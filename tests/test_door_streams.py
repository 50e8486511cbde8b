"""``maskgate-train door-streams``: measure-only scene photos shown to the daemon's pipeline and Decider as streams."""

from pathlib import Path

import numpy as np
import pytest

from maskgate.vision.classifier import LABELS
from maskgate_train.cli import main
from maskgate_train.detectors import stream_variant_name
from maskgate_train.streams import door_streams, jittered, markdown

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ILC = DATA / "research" / "ilc2021" / "annotations"


@pytest.mark.skipif(not ILC.is_dir(), reason=f"measure-only scene photos not present at {ILC}")
def test_every_setting_decides_on_the_same_streams():
    results = door_streams(DATA, first_pass_sizes=[None, 160], every=40, seed=3)
    full, cheap = results[stream_variant_name(None, 3)], results[stream_variant_name(160, 3)]
    assert len(full) == len(cheap) > 5
    assert [row["label"] for row in full] == [row["label"] for row in cheap]
    assert {row["label"] for row in full} <= set(LABELS)
    for row in full + cheap:
        assert row["outcome"] in ("granted", "denied", "checking")
        assert (row["seconds"] is None) == (row["outcome"] == "checking")
        assert row["seconds"] is None or 0 <= row["seconds"] < 3
    assert any(row["outcome"] == "granted" for row in full if row["label"] == "with_mask")
    assert not any(row["outcome"] == "granted" for row in full if row["label"] == "without_mask")
    table = markdown(results).splitlines()
    assert sum(line.startswith("| YuNet") for line in table) == 2
    assert table[-1].endswith("|") and "0 / 0 |" in table[-2], "the first row differs from itself in nothing"


def test_a_stream_frame_sways_but_stays_the_same_scene():
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    first, again = jittered(frame, np.random.default_rng(1)), jittered(frame, np.random.default_rng(1))
    assert first.shape == frame.shape and first.dtype == np.uint8
    assert np.array_equal(first, again), "the same seed gives the same frames"
    assert not np.array_equal(first, frame)
    assert abs(float(first.mean()) - float(frame.mean())) < 0.15 * float(frame.mean())


def test_without_the_scene_photos_is_one_line(tmp_path, capsys):
    assert main(["door-streams", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "annotations" in err
