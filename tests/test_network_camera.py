"""Network cameras for real: a GStreamer RTSP server and an HTTP MJPEG server on loopback, each its own
process (tests/stream_servers.py) streaming an H.264 clip made here from a real photo, read by the
daemon as `maskgate run` builds it — killed mid-run and started again."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.app import App
from maskgate.config import CameraConfig, Config
from maskgate.messages import CameraChanged, DoorChanged, FrameProcessed
from maskgate.records.events import EventLog
from maskgate.sources import SourceError, make_source
from maskgate.sources.network import NetworkSource
from maskgate.sources.scenes import door_scene

SERVERS = Path(__file__).with_name("stream_servers.py")
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = ["python3-gi", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad",
            "gstreamer1.0-plugins-ugly", "gstreamer1.0-libav", "ffmpeg"]
CAN_SERVE_RTSP = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("filesrc", "qtdemux", "h264parse", "rtph264pay") if not Gst.ElementFactory.find(e)]
assert not missing, missing
"""
RELAY = 17
USER, PASSWORD = "viewer", "c0rrect horse@battery/9"  # needs percent-encoding in a URL
SECRETS = (PASSWORD, "c0rrect%20horse%40battery%2F9")


def tools_ready() -> bool:
    if not shutil.which("ffmpeg") or not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", CAN_SERVE_RTSP], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def stream_tools():
    """GStreamer's RTSP server and ffmpeg from Debian, installed when missing."""
    if tools_ready():
        return
    if not shutil.which("apt-get"):
        pytest.skip("GStreamer RTSP server / ffmpeg missing and apt-get is unavailable to install them")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *PACKAGES]
    done = subprocess.run(install, capture_output=True, text=True)
    if done.returncode != 0:  # a clean machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True)
        done = subprocess.run(install, capture_output=True, text=True)
    assert done.returncode == 0 and tools_ready(), done.stderr[-2000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamServer:
    """A stream server process that a test can kill and start again on the same port."""

    def __init__(self, python: str, kind: str, *args):
        self.port = free_port()
        self.command = [python, str(SERVERS), kind, str(self.port), *map(str, args)]
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> "StreamServer":
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def pump(out):
            for line in out:
                self.lines.append(line.strip())
                if line.strip() == "ready":
                    ready.set()

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        if not ready.wait(20):
            self.kill()
            raise AssertionError(f"stream server did not start: {self.lines}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def servers():
    started: list[StreamServer] = []
    yield started
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def clip(tmp_path_factory, stream_tools) -> Path:
    """H.264 at 10 fps: the astronaut photo bare for 3 s, then wearing a blue mask for 5 s (clip.mp4),
    and the same clip decoded to JPEGs for the MJPEG server (frames/)."""
    root = tmp_path_factory.mktemp("clip")
    cv2.imwrite(str(root / "bare.png"), door_scene(masked=False))
    cv2.imwrite(str(root / "masked.png"), door_scene(masked=True, mask_bgr=(255, 60, 0)))
    ffmpeg = ["ffmpeg", "-loglevel", "error", "-y"]
    subprocess.run([*ffmpeg, "-loop", "1", "-t", "3", "-r", "10", "-i", root / "bare.png",
                    "-loop", "1", "-t", "5", "-r", "10", "-i", root / "masked.png",
                    "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-r", "10", "-g", "10", root / "clip.mp4"], check=True)
    (root / "frames").mkdir()
    subprocess.run([*ffmpeg, "-i", root / "clip.mp4", "-q:v", "4", root / "frames" / "%05d.jpg"], check=True)
    assert len(list((root / "frames").glob("*.jpg"))) == 80
    return root


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.02)


def lost_messages(timeline: list) -> list[CameraChanged]:
    return [m for m in timeline if isinstance(m, CameraChanged) and not m.ok]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["rtsp", "mjpeg"])
def test_daemon_on_a_network_camera_decides_locks_when_the_stream_dies_and_resumes(
        kind, clip, core, servers, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    if kind == "rtsp":  # the server demands the password: given through the environment
        server = StreamServer(SYSTEM_PYTHON, "rtsp", clip / "clip.mp4", USER, PASSWORD)
        camera = {"url": f"rtsp://127.0.0.1:{server.port}/stream1", "username": USER}
        monkeypatch.setenv("MASKGATE_CAMERA_PASSWORD", PASSWORD)
    else:  # the password written into the URL
        server = StreamServer(sys.executable, "mjpeg", clip / "frames", 10, USER, PASSWORD)
        camera = {"url": f"http://{USER}:{SECRETS[1]}@127.0.0.1:{server.port}/video.mjpg"}
    servers.append(server.start())
    config = Config.model_validate({
        "camera": {"backend": "network", "stream_timeout_seconds": 3, "reconnect_max_seconds": 1, **camera},
        "classifier": {"threshold": 0.5},
        # a grant holds the door for 30 s: only the lost camera can lock it again within this test
        "decision": {"frames_to_decide": 3, "unlock_seconds": 30, "denied_seconds": 0.5, "cooldown_seconds": 0.5},
        "events": {"state_dir": str(tmp_path / "state")},
        "web": {"enabled": False},
    })
    factory = MockFactory()
    app = App(config, core=core, pin_factory=factory)
    timeline: list = []
    app.bus.subscribe((FrameProcessed, DoorChanged, CameraChanged), timeline.append, name="test", maxlen=100_000)
    relay = factory.pin(RELAY)

    def decisions(start=0):
        return [m.decision.state for m in timeline[start:] if isinstance(m, FrameProcessed)]

    runner = threading.Thread(target=app.run)
    runner.start()
    try:
        wait_for(lambda: "granted" in decisions(), 30, "grant")
        assert "denied" in decisions(), "the bare face was denied before the masked one was let in"
        wait_for(lambda: relay.state == 1, 2, "relay release")

        server.kill()
        # within 20 s, long before the grant's 30 s: only the lost camera can have locked it
        wait_for(lambda: relay.state == 0, 20, "relock after the stream died")
        wait_for(lambda: lost_messages(timeline), 2, "CameraChanged(ok=False)")
        lost = lost_messages(timeline)[0]
        assert lost.reason.startswith(("rtsp://", "http://"))
        assert (False, f"camera unavailable: {lost.reason}") in [
            (m.state.unlocked, m.state.reason) for m in timeline if isinstance(m, DoorChanged)]
        time.sleep(2)  # reconnect attempts fail while the server is down; the door stays locked
        down = len(timeline)
        assert relay.state == 0 and not any(isinstance(m, FrameProcessed) for m in timeline[timeline.index(lost):])

        server.start()
        wait_for(lambda: any(isinstance(m, CameraChanged) and m.ok for m in timeline[down:]), 20, "reconnect")
        wait_for(lambda: "granted" in decisions(down), 20, "a grant after reconnecting")
        assert "denied" in decisions(down) and relay.state == 1
    finally:
        app.stop()
        runner.join(30)
    assert relay.state == 0

    events = EventLog(tmp_path / "state").list()
    outcomes = [e.outcome for e in events]
    assert outcomes.count("camera_ok") == 2 and "camera_lost" in outcomes
    assert outcomes.count("granted") == 2 and outcomes.count("denied") >= 2
    if kind == "rtsp":
        assert [line for line in server.lines if line.startswith("transport:")] and all(
            "RTP/AVP/TCP" in line for line in server.lines if line.startswith("transport:"))
    out, err = capfd.readouterr()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    for secret in SECRETS:  # not in a log line, not in native OpenCV/FFmpeg output, not in an event row
        assert secret not in caplog.text and secret not in out + err and secret.encode() not in stored
        assert all(secret not in str(e.as_dict()) for e in events)
    if kind == "mjpeg":
        assert f"http://***@127.0.0.1:{server.port}/video.mjpg" in caplog.text, "the URL is logged, masked"


@pytest.mark.parametrize("transport, seen", [("tcp", "RTP/AVP/TCP"), ("udp", "client_port=")])
def test_rtsp_transport_is_the_one_configured(clip, servers, transport, seen):
    server = StreamServer(SYSTEM_PYTHON, "rtsp", clip / "clip.mp4", USER, PASSWORD)
    servers.append(server.start())
    source = make_source(CameraConfig(backend="network", url=f"rtsp://127.0.0.1:{server.port}/stream1",
                                      rtsp_transport=transport, username=USER, password=PASSWORD))
    try:
        assert source.read().image.shape == (480, 640, 3)
    finally:
        source.close()
    setups = [line for line in server.lines if line.startswith("transport:")]
    assert setups and all(seen in line for line in setups), setups


def numbered(i: int) -> np.ndarray:
    """A frame showing ``i`` in binary, one 64-px black or white bar per bit (survives JPEG)."""
    image = np.zeros((96, 640, 3), np.uint8)
    for bit in range(10):
        if i >> bit & 1:
            image[:, bit * 64:(bit + 1) * 64] = 255
    return image


def number(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(10) if image[48, bit * 64 + 32].mean() > 128)


@pytest.fixture(scope="module")
def numbered_frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("numbered")
    for i in range(250):
        cv2.imwrite(str(root / f"{i:05d}.jpg"), numbered(i))
    return root


def mjpeg_url(server: StreamServer) -> str:
    return f"http://127.0.0.1:{server.port}/video.mjpg"


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "network-camera"]


def test_a_slow_consumer_gets_the_newest_frame_not_a_backlog(numbered_frames, servers):
    server = StreamServer(sys.executable, "mjpeg", numbered_frames, 25, USER, PASSWORD)
    servers.append(server.start())
    source = NetworkSource(mjpeg_url(server), username=USER, password=PASSWORD, timeout=3)
    source.open()
    try:
        first = number(source.read().image)
        time.sleep(1.0)  # a slow frame loop: 25 frames arrive meanwhile
        late = source.read()
        assert number(late.image) - first >= 15, "stale frames were dropped, not queued"
        assert number(source.read().image) > number(late.image), "each read waits for a new frame"
    finally:
        source.close()
    assert not reader_threads(), "closing stopped the reader"


def test_a_stalled_stream_is_a_source_error_within_the_timeout(numbered_frames, servers):
    server = StreamServer(sys.executable, "mjpeg", numbered_frames, 25, USER, PASSWORD, 10)
    servers.append(server.start())
    source = NetworkSource(mjpeg_url(server), username=USER, password=PASSWORD, timeout=1)
    source.open()
    try:
        last = time.monotonic()
        with pytest.raises(SourceError, match="no frame for 1 s|stream ended or stalled") as exc:
            while True:
                source.read()
                last = time.monotonic()
        assert time.monotonic() - last < 10, "an error after the 1 s timeout, not a hang"
        assert str(exc.value).startswith(f"{mjpeg_url(server)}: ")
    finally:
        started = time.monotonic()
        source.close()
    assert time.monotonic() - started < 10 and not reader_threads(), "closing does not hang"


def test_a_dead_or_silent_server_cannot_hang_open(capfd):
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead = free_port()
    try:
        for url in (f"rtsp://{USER}:{SECRETS[1]}@127.0.0.1:{silent.getsockname()[1]}/stream1",
                    f"http://{USER}:{SECRETS[1]}@127.0.0.1:{silent.getsockname()[1]}/video.mjpg",
                    f"rtsp://{USER}:{SECRETS[1]}@127.0.0.1:{dead}/stream1"):
            source = NetworkSource(url, timeout=1)
            started = time.monotonic()
            with pytest.raises(SourceError, match="cannot open stream") as exc:
                source.open()
            assert time.monotonic() - started < 20, f"{url}: an error after the 1 s timeout, not a hang"
            assert str(exc.value).startswith(url.split("//")[0] + "//***@127.0.0.1:")
    finally:
        silent.close()
    out, err = capfd.readouterr()
    assert all(secret not in out + err for secret in SECRETS)
