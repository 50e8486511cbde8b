"""MQTT / Home Assistant against a real mosquitto broker on a loopback port of its own: the App on a
replay (real detector, tiny real classifier, mock GPIO pins), a watching client, the broker restarted
and the daemon killed under it."""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt
import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from maskgate.access.controller import Unlock
from maskgate.app import App
from maskgate.config import Config, load_config
from maskgate.errors import ConfigError
from maskgate.messages import FrameProcessed
from maskgate.records.events import EventLog
from maskgate.sources import ReplaySource
from maskgate.vision.classifier import MaskClassifier
from maskgate.vision.core import FrameResult

RELAY = 17
NODE = "front"
PREFIX = f"maskgate/{NODE}"
USER, PASSWORD = "door", "s3cret-door-pw"


# --- the broker --------------------------------------------------------------------------------------
def ensure_installed(command: str, package: str, extra_paths=("/usr/sbin",)) -> str:
    """The path of ``command``, installing the Debian ``package`` with apt when it is missing (CI runs as root)."""
    found = shutil.which(command) or next((f"{d}/{command}" for d in extra_paths if os.access(f"{d}/{command}", os.X_OK)), None)
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip(f"{command} is missing and cannot be installed here (needs apt-get as root): "
                    f"apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ((), ("update",)):
        if attempt:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        if subprocess.run(["apt-get", "install", "-y", package], env=env, capture_output=True).returncode == 0:
            break
    found = shutil.which(command) or next((f"{d}/{command}" for d in extra_paths if os.access(f"{d}/{command}", os.X_OK)), None)
    if not found:
        pytest.skip(f"apt-get install {package} did not provide {command}")
    return found


@pytest.fixture(scope="session")
def mosquitto() -> str:
    return ensure_installed("mosquitto", "mosquitto")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    openssl = ensure_installed("openssl", "openssl")
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=maskgate test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:<free port>; anonymous unless ``users``; TLS with ``tls``; ``persist`` keeps sessions."""

    def __init__(self, binary: str, directory: Path, *, users: dict[str, str] | None = None,
                 tls: dict[str, Path] | None = None, persist: bool = False):
        self.binary, self.dir, self.port, self.proc = binary, directory, free_port(), None
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "log_dest stderr",
                 f"persistence {'true' if persist else 'false'}", f"persistence_location {directory}/"]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        if users:
            passwd = directory / "passwd"
            tool = ensure_installed("mosquitto_passwd", "mosquitto", ("/usr/bin", "/usr/sbin"))
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([tool, "-b", *(["-c"] if i == 0 else []), str(passwd), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "broker.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.dir / "broker.log").read_text()
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(mosquitto, tmp_path):
    started = []

    def make(**kwargs) -> Broker:
        started.append(Broker(mosquitto, tmp_path / f"broker{len(started)}", **kwargs).start())
        return started[-1]

    yield make
    for b in started:
        b.stop()


class Watcher:
    """A test client that records every message it sees as (topic, payload, retained)."""

    def __init__(self, port: int, *, topics=("#",), tls: dict | None = None, auth: tuple | None = None,
                 client_id: str = "", persistent: bool = False):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        if auth:
            self.client.username_pw_set(*auth)
        if tls:
            self.client.tls_set(ca_certs=str(tls["ca"]))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.changed:
            self.messages.append((message.topic, message.payload, message.retain))
            self.changed.notify_all()

    def wait(self, predicate, timeout: float = 20.0, what: str = ""):
        """Wait until ``predicate(messages)`` is truthy; returns its value."""
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(list(self.messages)), timeout), \
                f"timed out waiting for {what}: {[(t, p[:80]) for t, p, _ in self.messages][-15:]}"
            return predicate(list(self.messages))

    def payloads(self, topic: str) -> list[bytes]:
        with self.changed:
            return [p for t, p, _ in self.messages if t == topic]

    def json(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.payloads(topic) if p]

    def publish(self, topic: str, payload, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, **kwargs) -> dict[str, bytes]:
    """What a new subscriber gets: the broker's retained messages."""
    watcher = Watcher(port, **kwargs)
    time.sleep(1.0)
    watcher.close()
    return {t: p for t, p, was_retained in watcher.messages if was_retained}


# --- the daemon ------------------------------------------------------------------------------------
def paced(frames, *, loop: bool, fps: float = 20):
    def open_source():
        source = ReplaySource(lambda: iter(frames), fps=fps, loop=loop)
        source.open()
        return source

    return open_source


def make_config(tmp_path, mqtt_section: dict) -> Config:
    return Config.model_validate({
        "classifier": {"threshold": 0.5},
        "decision": {"frames_to_decide": 3, "unlock_seconds": 1.0, "denied_seconds": 0.5, "cooldown_seconds": 0.5,
                     "min_face_px": 150},
        "events": {"state_dir": str(tmp_path / "state")},
        "mqtt": {"enabled": True, "node_id": NODE, **mqtt_section},
        "web": {"enabled": False},
    })


class Running:
    """An App in a thread, on mock pins."""

    def __init__(self, config: Config, core, open_source):
        self.factory = MockFactory()
        self.app = App(config, core=core, pin_factory=self.factory, open_source=open_source)
        self.thread = threading.Thread(target=self.app.run)
        self.thread.start()

    def relay(self) -> list[int]:
        return [state for _, state in self.factory.pin(RELAY).states]

    def wait_relay(self, level: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.factory.pin(RELAY).state != level:
            assert time.monotonic() < deadline, f"relay never went to {level}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.app.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def online(messages) -> bool:
    return any(t == f"{PREFIX}/availability" and p == b"online" for t, p, _ in messages)


DISCOVERY = re.compile(r"^homeassistant/(lock|binary_sensor|sensor)/front/([A-Za-z0-9_-]+)/config$")


def check_discovery(configs: dict[str, bytes]) -> dict[str, dict]:
    """The fields Home Assistant's MQTT discovery requires, for every config; returns them by object id."""
    found, unique_ids = {}, set()
    for topic, payload in configs.items():
        match = DISCOVERY.match(topic)
        assert match, topic
        component, object_id = match.groups()
        config = json.loads(payload)
        assert config["name"] and config["unique_id"] not in unique_ids
        unique_ids.add(config["unique_id"])
        assert config["state_topic"].startswith(PREFIX + "/") and config["availability_topic"] == f"{PREFIX}/availability"
        assert config["device"]["identifiers"] == [f"maskgate_{NODE}"] and config["device"]["name"]
        assert "{{" in config["value_template"] and "}}" in config["value_template"]
        if component == "lock":
            assert config["command_topic"] == f"{PREFIX}/door/set"
            assert (config["payload_lock"], config["payload_unlock"]) == ("LOCK", "UNLOCK")
        found[f"{component}/{object_id}"] = config
    return found


# --- tests -----------------------------------------------------------------------------------------
def test_discovery_state_events_and_availability_from_a_replay(broker, core, scenes, tmp_path):
    server = broker()
    watcher = Watcher(server.port)
    frames = [scenes["empty"]] * 6 + [scenes["masked"]] * 30 + [scenes["empty"]] * 6
    run = Running(make_config(tmp_path, {"port": server.port}), core, paced(frames, loop=False))
    run.thread.join(60)  # the replay ends, the daemon stops
    watcher.wait(lambda m: any(t.endswith("/availability") and p == b"offline" for t, p, _ in m), what="offline")
    watcher.close()

    availability = watcher.payloads(f"{PREFIX}/availability")
    assert availability[0] == b"online" and availability[-1] == b"offline", "clean stop says offline"
    states = [s["state"] for s in watcher.json(f"{PREFIX}/state")]
    assert {"checking", "granted"} <= set(states), states
    assert states.index("granted") > states.index("checking")
    last = watcher.json(f"{PREFIX}/state")[-1]
    assert last["last_decision"] == "granted" and last["last_reason"] == "granted" and last["camera_ok"] is True
    assert (last["last_reason_text"], last["last_face"], last["last_track"]) == ("mask worn", 0, 1)
    assert last["fps"] > 0 and isinstance(last["faces"], int)
    assert {(s["reason"], s["reason_text"]) for s in watcher.json(f"{PREFIX}/state")} >= {
        ("no_face", "no face"), ("granted", "mask worn")}
    events = watcher.json(f"{PREFIX}/event")
    assert [e["outcome"] for e in events if e["outcome"] in ("granted", "door")][:3] == ["door", "granted", "door"]
    (granted, *_) = [e for e in events if e["outcome"] == "granted"]
    assert (granted["code"], granted["reason"], granted["face"], granted["track"]) == ("granted", "mask worn", 0, 1)
    assert events[0]["outcome"] == "camera_ok"
    door = watcher.json(f"{PREFIX}/door")
    assert any(d["door"] == "unlocked" and d["layer"] == "vision" for d in door) and door[-1]["door"] == "locked"
    assert 1 in run.relay() and run.relay()[-1] == 0

    kept = retained(server.port)
    entities = check_discovery({t: p for t, p in kept.items() if t.startswith("homeassistant/")})
    assert set(entities) == {"binary_sensor/door", "sensor/vision", "sensor/last_decision", "sensor/faces",
                             "sensor/fps", "binary_sensor/camera", "binary_sensor/event_log"}, \
        "no lock entity without remote_unlock"
    assert entities["binary_sensor/door"]["device_class"] == "lock"
    assert kept[f"{PREFIX}/availability"] == b"offline"
    assert json.loads(kept[f"{PREFIX}/state"])["last_decision"] == "granted"
    assert f"{PREFIX}/event" not in kept, "events are not retained"


def test_remote_commands_are_not_even_heard_when_remote_unlock_is_off(broker, core, scenes, tmp_path):
    server = broker()
    run = Running(make_config(tmp_path, {"port": server.port}), core, paced([scenes["empty"]] * 4, loop=True))
    watcher = Watcher(server.port)
    try:
        watcher.wait(online, what="online")
        for payload in ("UNLOCK", "UNLOCK"):
            watcher.publish(f"{PREFIX}/door/set", payload)
        time.sleep(1.0)
    finally:
        run.stop()
        watcher.close()
    assert 1 not in run.relay()
    assert not [e for e in EventLog(tmp_path / "state").list() if e.source == "mqtt"]


def test_remote_unlock_over_tls_with_auth_goes_through_the_controller_and_the_event_log(
        broker, core, scenes, tmp_path, tls_files, caplog):
    caplog.set_level(logging.INFO)
    server = broker(users={USER: PASSWORD, "hass": "hass-pw"}, tls=tls_files)
    watcher = Watcher(server.port, tls=tls_files, auth=("hass", "hass-pw"))
    command = f"{PREFIX}/door/set"
    watcher.publish(command, "UNLOCK", retain=True)  # stored before the daemon subscribes: must not open the door
    config = make_config(tmp_path, {"port": server.port, "username": USER, "password": PASSWORD, "remote_unlock": True,
                                    "remote_unlock_seconds": 30, "tls": {"ca_file": str(tls_files["ca"])}})
    run = Running(config, core, paced([scenes["empty"]] * 4, loop=True))
    try:
        watcher.wait(online, what="online")
        watcher.publish(command, "", retain=True)  # clears the stored command
        bad = ["unlock", "OPEN", "", '{"command": "UNLOCK"}', b"\xff\xfe\x00", "UNLOCK" * 20]
        for payload in bad:
            watcher.publish(command, payload)
        time.sleep(1.0)
        assert 1 not in run.relay(), "no bad payload opened the door"

        watcher.publish(command, "UNLOCK")
        run.wait_relay(1)
        assert (run.app.controller.state.layer, run.app.controller.state.who) == ("remote", "mqtt")
        watcher.wait(lambda m: any(t == f"{PREFIX}/door" and b'"remote"' in p for t, p, _ in m), what="door")
        watcher.publish(command, "LOCK")
        run.wait_relay(0)
        watcher.wait(lambda m: sum(t == f"{PREFIX}/event" and b'"override"' in p for t, p, _ in m) >= 2, what="events")
    finally:
        run.stop()
    kept = retained(server.port, tls=tls_files, auth=("hass", "hass-pw"))
    watcher.close()

    rows = [e for e in EventLog(tmp_path / "state").list() if e.outcome == "override"]
    assert [(e.source, e.reason) for e in rows][0] == ("mqtt", f"unlocked: remote unlock ({command})")
    assert len(rows) == 2 and rows[1].reason.startswith("locked: ")
    published = [e for e in watcher.json(f"{PREFIX}/event") if e["outcome"] == "override"]
    assert [(e["source"], e["reason"]) for e in published] == [(e.source, e.reason) for e in rows]
    ignored = [r.getMessage() for r in caplog.records if "mqtt: ignored" in r.getMessage()]
    # the stored command is logged; clearing it and the bad ones follow within 10 s: held back, not a flood
    assert len(ignored) == 1 and "retained command" in ignored[0], ignored
    assert "retained command" in ignored[0]
    entities = check_discovery({t: p for t, p in kept.items() if t.startswith("homeassistant/")})
    assert "lock/door" in entities and "binary_sensor/door" not in entities
    assert PASSWORD not in caplog.text


def test_broker_restart_reconnects_republishes_and_delivers_what_happened_meanwhile(broker, core, scenes, tmp_path):
    server = broker(persist=True)
    watcher = Watcher(server.port, client_id="watcher", persistent=True)
    run = Running(make_config(tmp_path, {"port": server.port}), core, paced([scenes["empty"]] * 4, loop=True))
    try:
        watcher.wait(online, what="online")
        server.stop()
        seen = len(watcher.messages)
        beat = run.app.heartbeat.last
        run.app.controller.request(Unlock(source="operator", who="operator:test", reason="during the outage", seconds=0.3))
        time.sleep(1.5)
        assert run.app.heartbeat.last > beat, "the frame loop ran on with the broker away"
        server.start()
        after = lambda m: m[seen:]  # noqa: E731
        watcher.wait(lambda m: any(t.startswith("homeassistant/") and not r for t, _, r in after(m)), what="discovery")
        watcher.wait(lambda m: any(t.endswith("/availability") and p == b"online" for t, p, _ in after(m)),
                     what="online again")
        watcher.wait(lambda m: sum(t.endswith("/event") and b'"override"' in p for t, p, _ in after(m)) == 2,
                     what="the events from the outage")
    finally:
        run.stop()
        watcher.close()
    unlocked, locked = [e for e in watcher.json(f"{PREFIX}/event") if e["outcome"] == "override"]
    assert (unlocked["source"], unlocked["reason"]) == ("operator:test", "unlocked: during the outage")
    assert locked["reason"].startswith("locked") and locked["time"] > unlocked["time"]


def test_wrong_password_is_one_clear_log_line_and_the_door_keeps_working(broker, core, scenes, tmp_path, caplog):
    server = broker(users={USER: PASSWORD})
    config = make_config(tmp_path, {"port": server.port, "username": USER, "password": "wrong-password"})
    run = Running(config, core, paced([scenes["masked"]] * 70, loop=False))
    run.thread.join(60)
    refused = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refused) == 1, "logged once, not on every retry"
    assert "check mqtt.username and the password" in refused[0]
    assert 1 in run.relay(), "vision unlocked the door all the same"
    assert "wrong-password" not in caplog.text


def test_kill_9_leaves_the_last_will_offline(broker, scenes, tiny_bundles, tmp_path):
    server = broker()
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "masked.png"), scenes["masked"])
    config = tmp_path / "maskgate.yaml"
    config.write_text(yaml.safe_dump({
        "camera": {"backend": "replay", "replay_path": str(frames), "replay_fps": 10, "replay_loop": True},
        "classifier": {"model_dir": str(tiny_bundles["int8"]), "threshold": 0.5},
        "gpio": {"pin_factory": "mock"}, "events": {"state_dir": str(tmp_path / "state")}, "web": {"enabled": False},
        "mqtt": {"enabled": True, "port": server.port, "node_id": NODE}}))
    watcher = Watcher(server.port, topics=(f"{PREFIX}/availability",))
    daemon = subprocess.Popen([sys.executable, "-m", "maskgate", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        watcher.wait(online, timeout=60, what="online")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        watcher.wait(lambda m: m[-1][1] == b"offline", timeout=10, what="the last will")
    finally:
        daemon.kill()
        watcher.close()
    assert retained(server.port)[f"{PREFIX}/availability"] == b"offline"


class SteadyCore:
    """2 ms a frame, no faces: the loop's rate is set by this, not by the machine."""

    classifier = MaskClassifier(None)

    def process(self, image, *, streaming=False):
        time.sleep(0.002)
        return FrameResult(640, 480, (), 2.0, 0.0)


def test_the_frame_loop_runs_on_with_the_broker_down_and_never_talks_to_it(tmp_path, scenes, monkeypatch):
    """MQTT's work happens on its own threads: a dead broker costs the loop nothing. (Rates: maskgate.bench.loop.)"""
    from maskgate.services.mqtt import MqttService

    threads = []
    for name in ("_on_frame", "_on_event", "_deliver"):
        original = getattr(MqttService, name)

        def spy(self, *args, _original=original, **kwargs):
            threads.append(threading.current_thread().name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(MqttService, name, spy)
    app = App(make_config(tmp_path, {"port": free_port()}), core=SteadyCore(), pin_factory=MockFactory(),
              open_source=paced([scenes["empty"]] * 1_000_000, loop=False, fps=1e6))
    frames = []
    app.bus.subscribe(FrameProcessed, lambda m: frames.append(m.time), name="count", maxlen=1_000_000)
    runner = threading.Thread(target=app.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60  # only stops a hung test
        while not (threads and len(frames) >= 300) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(frames) >= 300, "frames flowed with the broker down"
        assert threads and "frame-loop" not in threads, threads
    finally:
        app.stop()
        runner.join(30)


# --- configuration ---------------------------------------------------------------------------------
def write(tmp_path, section: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"mqtt": section}))
    return path


@pytest.mark.parametrize("section, message", [
    ({"remote_unlock": True}, "mqtt: remote_unlock needs broker authentication"),
    ({"remote_unlock": True, "username": "u", "password": PASSWORD}, "mqtt: remote_unlock needs tls"),
    ({"password": PASSWORD}, "mqtt: a password needs a username"),
    ({"username": "u", "password": PASSWORD, "password_file": "/x"}, "set password or password_file, not both"),
    ({"username": "u", "password": PASSWORD, "port": 0}, "mqtt.port: Input should be greater than or equal to 1"),
    ({"username": "u", "password": PASSWORD, "topic_prefix": "a/#"}, "mqtt.topic_prefix: must not contain '#' or '+' nor end with '/'"),
    ({"password": {"nested": PASSWORD}}, "mqtt.password: Input should be a valid string"),
    ({"tls": {"certfile": "/c.pem"}}, "mqtt.tls: certfile and keyfile go together"),
])
def test_bad_mqtt_configs_name_the_key_and_never_show_the_password(tmp_path, monkeypatch, section, message):
    monkeypatch.delenv("MASKGATE_MQTT_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, section))
    assert message in str(exc.value) and PASSWORD not in str(exc.value)


def test_password_sources_and_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("MASKGATE_MQTT_PASSWORD", raising=False)
    config = load_config(write(tmp_path, {"username": "u", "password": PASSWORD})).mqtt
    assert config.resolved_password() == PASSWORD and PASSWORD not in repr(config) + str(config.model_dump())
    assert config.resolved_node_id() == re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
    assert config.resolved_topic_prefix() == f"maskgate/{config.resolved_node_id()}" and config.resolved_port() == 1883
    (tmp_path / "pw").write_text("from-file\nignored\n")
    from_file = load_config(write(tmp_path, {"username": "u", "password_file": str(tmp_path / "pw")})).mqtt
    assert from_file.resolved_password() == "from-file"
    monkeypatch.setenv("MASKGATE_MQTT_PASSWORD", "from-env")
    assert from_file.resolved_password() == "from-env"
    remote = load_config(write(tmp_path, {"username": "u", "remote_unlock": True, "tls": {}})).mqtt
    assert remote.resolved_port() == 8883, "the environment's password counts as authentication"


@pytest.mark.parametrize("section, message", [
    ({"enabled": True, "username": "u", "password_file": "/nonexistent/pw"}, "mqtt.password_file: /nonexistent/pw: cannot read"),
    ({"enabled": True, "tls": {"ca_file": "/nonexistent/ca.pem"}}, "mqtt.tls.ca_file: /nonexistent/ca.pem: no such file"),
])
def test_check_config_refuses_missing_mqtt_files(tmp_path, section, message):
    done = subprocess.run([sys.executable, "-m", "maskgate", "check-config", str(write(tmp_path, section))],
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_shadow_runs_counts_are_published_retained(broker, core, scenes, tiny_bundles, tmp_path):
    from maskgate.cli import main
    from maskgate.vision.bundles import pack

    pack(tiny_bundles["int8"], tmp_path / "b.tar")
    where = ["--state-dir", str(tmp_path / "state")]
    assert main(["model", "install", str(tmp_path / "b.tar"), *where]) == 0
    assert main(["model", "shadow", "--hours", "1", *where]) == 0
    server = broker()
    run = Running(make_config(tmp_path, {"port": server.port}), core, paced([scenes["masked"]] * 20, loop=True))
    try:
        shadow = next(s for s in run.app.services if s.name == "shadow")
        watcher = Watcher(server.port)
        watcher.wait(lambda m: any(t == f"{PREFIX}/model/shadow" for t, _, _ in m), timeout=30, what="shadow counts")
        watcher.close()
        counts = watcher.json(f"{PREFIX}/model/shadow")[-1]
        assert counts["bundle"] == shadow.models.status()["staged"] and counts["frames"] > 0
        assert counts["finished"] is False and set(counts["verdicts"]) <= {"granted", "unsure", "no_mask"}
    finally:
        run.stop()
    assert json.loads(retained(server.port)[f"{PREFIX}/model/shadow"])["finished"] is False
