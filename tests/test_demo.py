"""`maskgate demo` as a newcomer runs it: a kiosk page to open while it runs, an event log to read after."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from maskgate.cli import main


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture
def taken_port():
    """A loopback port something else already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_demo_serves_its_kiosk_page_until_interrupted_and_keeps_the_log(tmp_path, taken_port, capsys):
    state = tmp_path / "state"
    demo = subprocess.Popen([sys.executable, "-m", "maskgate.cli", "demo", "--serve", "--port", str(taken_port),
                             "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        notice = demo.stdout.readline()
        first = demo.stdout.readline()
        assert f"port {taken_port} is taken" in notice
        assert first.startswith("kiosk page: http://127.0.0.1:"), first + demo.stderr.read()
        url = first.split()[2]
        assert not url.endswith(f":{taken_port}/")
        status, page = fetch(url)
        assert status == 200 and b"<html" in page.lower()
        for line in demo.stdout:  # the replay runs past the bare face to the masked one: the door opened
            if "granted" in line and "relay OPEN" in line:
                break
        status, body = fetch(url + "api/v1/status")
        assert status == 200 and json.loads(body)["camera_ok"] is True
        assert demo.poll() is None  # one pass of the scene is over, and it still serves
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=30)
    assert demo.returncode == 0, err
    last = out.splitlines()[-1]
    assert last.startswith("door locked;") and str(state) in last
    assert main(["events", "--state-dir", str(state)]) == 0
    outcomes = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert outcomes[0] == "started" and "granted" in outcomes and outcomes[-1] == "stopped"


def test_demo_once_ends_without_pointing_at_a_removed_folder(capsys):
    assert main(["demo", "--once", "--port", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("kiosk page: http://127.0.0.1:")
    assert any(" relay OPEN " in line for line in lines) and any(" relay locked " in line for line in lines)
    assert lines[-1].startswith("door locked;") and "not kept" in lines[-1] and "/" not in lines[-1]


def test_run_prints_the_kiosk_address(tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text(f"camera: {{backend: scenes, replay_fps: 50}}\ngpio: {{pin_factory: mock}}\n"
                      f"events: {{state_dir: {tmp_path}}}\nweb: {{port: 0}}\n")
    assert main(["run", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("kiosk page: http://127.0.0.1:")
