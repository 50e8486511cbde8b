"""kiosk.sh and its autostart on Raspberry Pi OS bookworm's desktops — X11 (LXDE), Wayland with labwc or
wayfire — run here with stand-ins for Chromium, xset and wlopm (no Pi, no compositor): which blanking
control each session gets, the page waited for, one browser per session, wayfire.ini edited in place."""

from __future__ import annotations

import fcntl
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"


@pytest.fixture
def page():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def session(tmp_path, page):
    """Run kiosk.sh in a desktop session of ``kind``; returns what each stand-in was called with."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    for tool in ("chromium", "xset", "wlopm"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{calls}/{tool}"\n')
        stub.chmod(0o755)

    def run(kind: str) -> dict[str, list[str]]:
        for old in calls.iterdir():
            old.unlink()
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path), "MASKGATE_URL": page,
               **({"DISPLAY": ":0"} if kind == "x11" else {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"})}
        done = subprocess.run(["bash", str(SYSTEMD / "kiosk.sh")], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {f.name: f.read_text().splitlines() for f in calls.iterdir()}

    return run


def test_x11_turns_blanking_off_with_xset_and_opens_the_page_full_screen(session, page):
    calls = session("x11")
    assert calls["xset"] == ["s", "off", "-dpms", "s", "noblank"] and "wlopm" not in calls
    assert "--kiosk" in calls["chromium"] and calls["chromium"][-1] == page


@pytest.mark.parametrize("compositor", ["labwc", "wayfire"])
def test_wayland_wakes_the_outputs_and_never_calls_xset(session, page, compositor):
    calls = session(compositor)  # both set WAYLAND_DISPLAY (and DISPLAY, for Xwayland)
    assert calls["wlopm"] == ["--on", "*"] and "xset" not in calls
    assert "--ozone-platform-hint=auto" in calls["chromium"] and calls["chromium"][-1] == page


def test_a_second_start_in_the_same_session_opens_no_second_browser(session, tmp_path):
    with open(tmp_path / "maskgate-kiosk.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the first kiosk.sh (its Chromium holds the lock)
        assert "chromium" not in session("labwc")


def wayfire(action: str, ini: Path) -> str:
    done = subprocess.run(["bash", str(SYSTEMD / "kiosk-autostart.sh"), action, str(ini)], capture_output=True,
                          text=True, check=True)
    return done.stdout


def test_wayfire_autostart_is_added_once_beside_the_users_own_and_removed_alone(tmp_path):
    ini = tmp_path / "wayfire.ini"
    assert "log in to the wayfire desktop once" in wayfire("enable", ini) and not ini.exists()
    ini.write_text("[core]\nplugins = autostart\n\n[autostart]\npanel = wf-panel-pi\n")
    wayfire("enable", ini)
    wayfire("enable", ini)
    assert ini.read_text() == ("[core]\nplugins = autostart\n\n[autostart]\nmaskgate_kiosk = /opt/maskgate/kiosk.sh\n"
                               "panel = wf-panel-pi\n")
    wayfire("disable", ini)
    assert ini.read_text() == "[core]\nplugins = autostart\n\n[autostart]\npanel = wf-panel-pi\n"
    bare = tmp_path / "bare.ini"
    bare.write_text("[core]\nxwayland = true\n")
    wayfire("enable", bare)
    assert bare.read_text() == "[core]\nxwayland = true\n\n[autostart]\nmaskgate_kiosk = /opt/maskgate/kiosk.sh\n"


def test_install_enables_and_removes_every_sessions_autostart_and_blanking():
    install = (SYSTEMD / "install.sh").read_text()
    assert 'kiosk-autostart.sh" enable "$wayfire_ini"' in install and 'kiosk-autostart.sh" disable' in install
    assert "raspi-config nonint do_blanking 1" in install
    assert 'kiosk-autostart.sh" disable "$ini"' in (SYSTEMD / "uninstall.sh").read_text()
    assert os.access(SYSTEMD / "kiosk-autostart.sh", os.X_OK) and os.access(SYSTEMD / "kiosk.sh", os.X_OK)
