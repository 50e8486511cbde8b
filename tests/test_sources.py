"""Frame sources: replays of folders, globs and videos on a timeline; cameras that are missing."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from maskgate.config import CameraConfig
from maskgate.errors import MaskgateError
from maskgate.sources import EndOfStream, OpenCVSource, Picamera2Source, ReplaySource, SourceError, make_source


@pytest.fixture
def frames_dir(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((48, 64, 3), 50 * i, np.uint8))
    return tmp_path


def read_all(source):
    out = []
    while True:
        try:
            out.append(source.read())
        except EndOfStream:
            return out


def test_image_folder_replays_in_order_on_a_timeline(frames_dir):
    source = make_source(CameraConfig(backend="replay", replay_path=str(frames_dir), replay_fps=4), paced=False)
    frames = read_all(source)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 50, 100]
    assert np.diff([f.time for f in frames]).tolist() == [0.25, 0.25]


def test_glob_and_loop(frames_dir):
    source = make_source(CameraConfig(backend="replay", replay_path=str(frames_dir / "f[12].png"), replay_loop=True),
                         paced=False)
    assert [int(source.read().image[0, 0, 0]) for _ in range(5)] == [50, 100, 50, 100, 50]


def test_video_file_replay(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(7):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    frames = read_all(make_source(CameraConfig(backend="replay", replay_path=str(path)), paced=False))
    assert len(frames) == 7 and frames[0].image.shape == (48, 64, 3)


def test_paced_replay_sleeps_until_each_frame_is_due():
    now = [100.0]
    slept = []
    source = ReplaySource(lambda: iter([np.zeros((4, 4, 3), np.uint8)] * 3), fps=2, clock=lambda: now[0],
                          sleep=slept.append)
    source.open()
    times = [source.read().time for _ in range(3)]
    assert times == [100.0, 100.5, 101.0] and slept == [0.0, 0.5, 1.0]


def test_builtin_demo_scenes_have_nobody_then_people():
    frames = read_all(make_source(CameraConfig(backend="scenes"), paced=False))
    assert len(frames) == 60 and frames[0].image.shape == (480, 640, 3)
    assert frames[0].image.std() == 0 and frames[10].image.std() > 10


def test_a_missing_replay_file_is_clear(tmp_path):
    with pytest.raises(MaskgateError, match="replay source not found"):
        make_source(CameraConfig(backend="replay", replay_path=str(tmp_path / "missing.mp4")))


def test_missing_opencv_camera_is_a_source_error():
    with pytest.raises(SourceError, match="cannot open"):
        OpenCVSource("/dev/video-none", width=640, height=480).open()


def test_missing_picamera2_is_a_source_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="python3-picamera2"):
        Picamera2Source(width=640, height=480).open()


def test_a_broken_picamera2_install_is_a_source_error_and_auto_warns_with_the_cause(monkeypatch, tmp_path, caplog):
    # What bookworm's python3-simplejpeg does under a venv's numpy 2 (docs/pi.md).
    (tmp_path / "picamera2.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(SourceError, match="ValueError: numpy.dtype size changed"):
        Picamera2Source(width=640, height=480).open()
    with caplog.at_level("INFO", logger="maskgate.sources"), pytest.raises(SourceError):
        make_source(CameraConfig(backend="auto", device="/dev/no-such-camera"))
    warning = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning and "numpy.dtype size changed" in warning[0].getMessage()


def test_auto_tries_picamera2_then_opencv(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="tried picamera2 and OpenCV"):
        make_source(CameraConfig(backend="auto", device="/dev/video-none"))


def test_auto_picks_picamera2_when_it_works(monkeypatch):
    class FakePicamera2:
        """Stands in for the Pi camera: RGB888 frames arrive BGR-ordered, 4 bytes per pixel allowed."""

        def create_video_configuration(self, main):
            self.size = main["size"]
            return main

        def configure(self, config):
            assert config["format"] == "RGB888"

        def start(self):
            pass

        def capture_array(self, stream):
            w, h = self.size
            return np.full((h, w, 4), 7, np.uint8)

        def close(self):
            pass

    fake_module = type(sys)("picamera2")
    fake_module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", fake_module)
    source = make_source(CameraConfig(backend="auto", width=320, height=240))
    assert source.name == "picamera2"
    frame = source.read()
    assert frame.image.shape == (240, 320, 3) and frame.image.flags["C_CONTIGUOUS"]
    source.close()


@pytest.mark.parametrize("text, masked", [
    ("rtsp://admin:s3cret@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("open 'http://u:p@ss@cam/video.mjpg' failed", "open 'http://***@cam/video.mjpg' failed"),
    ("RTSPS://admin@cam and rtsp://cam:554/s", "RTSPS://***@cam and rtsp://cam:554/s"),
    ("rtsp://cam/onvif?user=a@b", "rtsp://cam/onvif?user=a@b"),
])
def test_urls_lose_their_user_info_in_any_text(text, masked):
    from maskgate.sources.network import mask_url

    assert mask_url(text) == masked


def test_credentials_are_percent_encoded_into_the_url_and_redacted_in_every_form():
    from maskgate.sources.network import NetworkSource, with_credentials

    assert with_credentials("rtsp://cam/s", None, None) == "rtsp://cam/s"
    assert with_credentials("rtsp://old:pw@cam:554/s", "ad min", "p@ss/1") == "rtsp://ad%20min:p%40ss%2F1@cam:554/s"
    assert with_credentials("rtsp://admin@cam/s", None, "pw") == "rtsp://admin:pw@cam/s"
    source = NetworkSource("rtsp://admin@cam/s", password="p@ss word")
    assert source.label == "rtsp://***@cam/s"
    said = source.redact("auth p@ss word / p%40ss%20word failed for rtsp://admin:p%40ss%20word@cam/s")
    assert said == "auth *** / *** failed for rtsp://***@cam/s"


def test_an_unreachable_network_camera_is_a_source_error_naming_it_without_the_password():
    with pytest.raises(SourceError, match=r"^rtsp://\*\*\*@127\.0\.0\.1:9/live: cannot open stream") as exc:
        make_source(CameraConfig(backend="network", url="rtsp://admin:hunter2@127.0.0.1:9/live",
                                 stream_timeout_seconds=2))
    assert "hunter2" not in str(exc.value)
