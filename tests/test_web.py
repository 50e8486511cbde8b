"""The web server in the running daemon: config rules, status and events API, the kiosk's words, remote
access with a token, previews encoded only while watched, a stalled viewer dropped, the loop never slowed."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from maskgate.access.reasons import Reason
from maskgate.config import Config, load_config
from maskgate.errors import ConfigError
from maskgate.messages import FrameProcessed
from maskgate.services.web.live import screen
from web_rig import TOKEN, SceneCamera, running, wait_for, web_config


def get(web, path, *, source="127.0.0.1", headers=None, method="GET", body=None):
    """An HTTP request from ``source`` (127.0.0.2 is another host as far as the server's rules go)."""
    conn = http.client.HTTPConnection(web.host, web.port, timeout=10, source_address=(source, 0))
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def ws_connect(web, query="", *, source="127.0.0.1", headers=None):
    sock = socket.create_connection((web.host, web.port), timeout=10, source_address=(source, 0))
    return connect(f"ws://{web.host}:{web.port}/api/v1/live{query}", sock=sock, additional_headers=headers,
                   open_timeout=10, max_size=2**23)


# --- config -------------------------------------------------------------------------------------------

def test_defaults_serve_the_kiosk_on_loopback_port_8080():
    web = Config().web
    assert (web.enabled, web.host, web.port, web.remote.enabled, web.remote.token) == (True, "127.0.0.1", 8080,
                                                                                       False, None)


@pytest.mark.parametrize("web, message", [
    ("remote: {enabled: true}", "web: remote.enabled needs remote.token of at least 16 characters"),
    ("remote: {enabled: true, token: short-secret}", "needs remote.token of at least 16 characters"),
    ("host: 0.0.0.0", "web: host 0.0.0.0 is beyond loopback: set remote.enabled (with a token) first"),
    ("port: 70000", "web.port: Input should be less than or equal to 65535"),
    ("doors: [{name: Back, url: 'ftp://x'}]", "web.doors.0.url: must be http://host:port or https://host:port, with no path"),
])
def test_bad_web_configs_are_refused_without_showing_the_secret(tmp_path, web, message):
    path = tmp_path / "c.yaml"
    path.write_text(f"web: {{{web}}}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value) and "short-secret" not in str(exc.value)


def test_remote_beyond_loopback_with_a_long_token_is_accepted_and_the_token_stays_hidden(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"web: {{host: 0.0.0.0, remote: {{enabled: true, token: {TOKEN}}}}}\n")
    config = load_config(path)
    assert config.web.remote.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(config) and TOKEN not in config.model_dump_json()


# --- what the kiosk says ------------------------------------------------------------------------------

@pytest.mark.parametrize("state, reason, near, title, tone", [
    ("granted", Reason.GRANTED, 1, "Welcome — door open", "go"),
    ("granted", Reason.NO_MASK, 2, "Please wear a mask", "stop"),  # open for one, another has no mask
    ("denied", Reason.NO_MASK, 1, "Please wear a mask", "stop"),
    ("denied", Reason.INCORRECT, 1, "Please cover your nose", "warn"),
    ("denied", Reason.UNSURE, 1, "Please face the camera", "warn"),
    ("denied", Reason.NOT_EVERYONE, 2, "Everyone must wear a mask", "stop"),
    ("checking", Reason.UNSURE, 1, "Please face the camera", "warn"),
    ("checking", Reason.NO_MASK, 1, "Checking…", "wait"),
    ("checking", Reason.NO_MASK, 2, "One person at a time", "warn"),
    ("camera_lost", "camera unavailable: camera 0: no frame", 0, "Camera unavailable — door locked", "locked"),
    ("emergency", "fire alarm", 0, "Emergency — door released", "alarm"),
    ("override_locked", "maintenance", 0, "Door locked by staff", "locked"),
])
def test_every_state_has_words_an_icon_and_a_colour(state, reason, near, title, tone):
    view = screen(state, reason, near)
    assert (view["title"], view["tone"]) == (title, tone)
    assert view["icon"] and view["word"].isupper() and view["detail"]


# --- the running server -------------------------------------------------------------------------------

def test_default_host_binds_127_0_0_1_only(tmp_path, core, scenes):
    with running(web_config(tmp_path), core, SceneCamera(scenes, "empty")) as (app, web):
        assert web.sock.getsockname()[0] == "127.0.0.1" and web.port > 0
        assert get(web, "/")[0] == 200
        with pytest.raises(ConnectionRefusedError):  # another loopback address: nobody listens there
            socket.create_connection(("127.0.0.2", web.port), timeout=5)


def test_status_and_events_follow_the_door(tmp_path, core, scenes):
    camera = SceneCamera(scenes, "bare")
    with running(web_config(tmp_path), core, camera) as (app, web):
        def status():
            return json.loads(get(web, "/api/v1/status")[2])

        denied = wait_for(lambda: (s := status())["state"] == "denied" and s, what="denied")
        assert denied["door"] == "locked" and denied["reason"] == "no_mask" and denied["camera_ok"] is True
        assert denied["view"]["title"] == "Please wear a mask"
        assert denied["decided_by"] == 0 and denied["track"] >= 1, "the person the denial is for"
        assert [f["label"] for f in denied["faces"]] == ["without_mask"]
        assert len(denied["faces"][0]["box"]) == 4 and 0 < denied["faces"][0]["confidence"] <= 1
        assert abs(denied["time"] - time.time()) < 5
        wait_for(lambda: status()["fps"] > 0, what="a frame rate once frames are counted")
        camera.show("masked")
        granted = wait_for(lambda: (s := status())["state"] == "granted" and s, what="granted")
        assert granted["door"] == "unlocked" and 0 < granted["seconds_left"] <= 4.0
        assert granted["view"]["title"] == "Welcome — door open"
        def events(query: str = "limit=1000") -> list[dict]:
            return json.loads(get(web, f"/api/v1/events?{query}")[2])["events"]

        # the status page and the event log are separate subscribers: the log may write the grant a moment later
        everything = wait_for(lambda: (e := events()) and "granted" in [x["outcome"] for x in e] and e,
                              what="the grant in the event log")
        outcomes = [e["outcome"] for e in everything]
        assert outcomes.index("denied") < outcomes.index("granted")
        last = events("limit=1")
        later = events()  # the door may log more between the two reads: limit=1 is no older than what came before it
        assert len(last) == 1 and later.index(last[0]) >= len(everything) - 1, "limit=1 is the newest event"
        decided = [e for e in everything if e["outcome"] in ("granted", "denied")]
        assert all(e["source"] == "vision" and e["track"] >= 1 and e["face"] == 0 for e in decided)
        assert granted["track"] == everything[outcomes.index("granted")]["track"], "the kiosk and the log agree"
        granted_at = everything[outcomes.index("granted")]["time"]
        since = json.loads(get(web, f"/api/v1/events?since={granted_at}&limit=1000")[2])["events"]
        assert since[0]["outcome"] == "granted" and all(e["time"] >= granted_at for e in since)
        assert get(web, "/api/v1/events?limit=0")[0] == 422


def test_remote_needs_the_token(tmp_path, core, scenes):
    config = web_config(tmp_path, remote={"enabled": True, "token": TOKEN})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        remote = "127.0.0.2"
        for path in ("/api/v1/status", "/api/v1/events", "/remote", "/doors", "/"):
            code, headers, body = get(web, path, source=remote)
            assert code == 401, path
        assert get(web, "/api/v1/status", source=remote)[1]["www-authenticate"] == "Bearer"
        assert b"<form" in get(web, "/remote", source=remote)[2], "a browser is offered the login form"
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
        assert get(web, "/api/v1/status", source=remote, headers=wrong)[0] == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        code, _, body = get(web, "/api/v1/status", source=remote, headers=right)
        assert code == 200 and json.loads(body)["door"] == "locked"
        assert get(web, "/api/v1/status")[0] == 200, "127.0.0.1 needs no token"

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        code, _, page = get(web, "/login", source=remote, method="POST", body="token=wrong-token-0123456", headers=form)
        assert code == 401 and b'role="alert" data-role="error">That token was not accepted' in page
        assert b'data-role="error" hidden>' in get(web, "/login", source=remote)[2], "no message before a try"
        code, headers, _ = get(web, "/login", source=remote, method="POST", body=f"token={TOKEN}", headers=form)
        assert code == 303 and headers["location"] == "/remote"
        cookie = headers["set-cookie"].split(";")[0]
        assert TOKEN not in cookie and "HttpOnly" in headers["set-cookie"]
        assert get(web, "/remote", source=remote, headers={"Cookie": cookie})[0] == 200
        assert get(web, "/remote", source=remote, headers={"Cookie": cookie[:-2] + "00"})[0] == 401

        with pytest.raises(InvalidStatus) as exc:
            ws_connect(web, source=remote)
        assert exc.value.response.status_code == 401
        with ws_connect(web, source=remote, headers=right) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "status"


def test_with_remote_off_other_clients_are_refused_whatever_they_send(tmp_path, core, scenes):
    with running(web_config(tmp_path), core, SceneCamera(scenes, "empty")) as (app, web):
        assert get(web, "/api/v1/status", source="127.0.0.2", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 401


def test_previews_are_encoded_only_while_someone_watches_and_at_a_capped_rate(tmp_path, core, scenes):
    with running(web_config(tmp_path, preview_fps=5), core, SceneCamera(scenes, "bare", fps=20)) as (app, web):
        channel = web.feed.channel
        time.sleep(1.0)
        with ws_connect(web, "?preview=0") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "status"
            time.sleep(0.5)
        assert channel.jpegs == 0, "nobody watched the preview: nothing encoded"
        with ws_connect(web, "?preview=1") as ws:
            start, frames = time.monotonic(), []
            while time.monotonic() - start < 2.0:
                message = ws.recv(timeout=10)
                if isinstance(message, bytes):
                    frames.append(message)
        assert frames and all(f.startswith(b"\xff\xd8") for f in frames), "JPEGs"
        assert len(frames) <= 12, f"{len(frames)} previews in 2 s: never above preview_fps 5 (+ slack)"
        time.sleep(0.5)
        after = channel.jpegs
        time.sleep(1.0)
        assert channel.jpegs == after, "encoding stopped when the viewer left"
        assert channel.viewers == set()


def test_a_viewer_that_stops_reading_is_dropped_while_others_carry_on(tmp_path, core, scenes):
    with running(web_config(tmp_path, preview_fps=30), core, SceneCamera(scenes, "bare", fps=30)) as (app, web):
        channel = web.feed.channel
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((web.host, web.port))
        stalled.sendall(f"GET /api/v1/live?preview=1 HTTP/1.1\r\nHost: {web.host}:{web.port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        try:
            with ws_connect(web, "?preview=1") as reader:
                wait_for(lambda: len(channel.viewers) == 2, what="two viewers")
                received, start = 0, time.monotonic()
                while len(channel.viewers) == 2 and time.monotonic() - start < 60:
                    received += isinstance(reader.recv(timeout=10), bytes)
                dropped_after = time.monotonic() - start
                assert len(channel.viewers) == 1, "the stalled viewer was dropped"
                assert received > 10, "the reading viewer kept getting previews meanwhile"
                before = received
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    received += isinstance(reader.recv(timeout=10), bytes)
                assert received > before
        finally:
            stalled.close()
        print(f"stalled viewer dropped after {dropped_after:.1f} s")


class SteadyCore:
    """2 ms a frame and one face: the loop's rate is set by this, not by the machine's load."""

    def __init__(self, real):
        self.classifier, self.result = real.classifier, None

    def process(self, image, *, streaming=False):
        time.sleep(0.002)
        return self.result


def test_three_preview_viewers_are_served_off_the_frame_loop(tmp_path, core, scenes, monkeypatch):
    """Previews are drawn off the frame loop: with a slow encoder (30 ms a preview) and three viewers the
    loop never draws one and keeps taking frames. (The rates: ``maskgate.bench.web``.)"""
    from maskgate.services.web import live

    drawn_on = []

    def slow_preview(*args, **kwargs):
        drawn_on.append(threading.current_thread().name)
        time.sleep(0.03)
        return real_preview(*args, **kwargs)

    real_preview = live.draw_preview
    monkeypatch.setattr(live, "draw_preview", slow_preview)
    stub = SteadyCore(core)
    stub.result = core.process(scenes["bare"])  # a face to draw on every preview
    camera = SceneCamera(scenes, "bare", fps=100)
    with running(web_config(tmp_path, preview_fps=30), stub, camera) as (app, web), ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(web, "?preview=1")) for _ in range(3)]
        frames = []
        app.bus.subscribe(FrameProcessed, frames.append, name="count", maxlen=1_000_000)
        received = [0] * len(clients)
        deadline = time.monotonic() + 60  # only stops a hung test
        while (min(received) < 5 or len(frames) < 200) and time.monotonic() < deadline:
            for n, client in enumerate(clients):
                try:
                    received[n] += isinstance(client.recv(timeout=0.01), bytes)
                except TimeoutError:
                    pass
        assert min(received) >= 5, f"every viewer was sent previews: {received}"
        assert len(frames) >= 200, "the loop kept taking frames while previews were drawn"
        assert drawn_on and "frame-loop" not in drawn_on, set(drawn_on)


def test_kiosk_mode_is_an_install_option_with_an_off_switch():
    root = Path(__file__).resolve().parent.parent / "systemd"
    assert subprocess.run(["bash", "-n", str(root / "kiosk.sh")]).returncode == 0
    install = (root / "install.sh").read_text()
    assert "--kiosk)" in install and "--no-kiosk)" in install and 'maskgate-kiosk.desktop" "$kiosk_entry"' in install
    entry = dict(line.split("=", 1) for line in (root / "maskgate-kiosk.desktop").read_text().splitlines() if "=" in line)
    assert entry["Exec"] == "/opt/maskgate/kiosk.sh" and "kiosk.sh\" \"$prefix/kiosk.sh\"" in install
    assert "--kiosk" in (root / "kiosk.sh").read_text() and "127.0.0.1:8080" in (root / "kiosk.sh").read_text()
