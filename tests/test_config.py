"""Config: the shipped files validate, the commented default is the schema's default, and any
bad YAML is one line naming the key."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import shutil
from pathlib import Path

import pytest
import yaml

from maskgate.config import Config, load_config
from maskgate.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
TINY_BUNDLES = Path(__file__).resolve().parent / "fixtures" / "tiny_bundles"


@pytest.mark.parametrize("name", ["maskgate.yaml", "demo.yaml"])
def test_shipped_configs_validate(name):
    load_config(CONFIG_DIR / name)


def test_commented_default_is_exactly_the_schema_default():
    assert load_config(CONFIG_DIR / "maskgate.yaml") == Config()
    written = yaml.safe_load((CONFIG_DIR / "maskgate.yaml").read_text())
    assert written == Config().model_dump(mode="json"), "every key, with its default, is documented"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("camera:\n  backend: usb\n", "camera.backend: Input should be"),
        ("gpio:\n  relay: {pin: 17, activ_high: true}\n", "gpio.relay.activ_high: unknown key"),
        ("decison:\n  policy: all\n", "decison: unknown key"),
        ("decision:\n  unlock_seconds: -1\n", "decision.unlock_seconds: Input should be greater than 0"),
        ("decision:\n  frames_to_decide: many\n", "decision.frames_to_decide: Input should be a valid number"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("camera: [\n", "not valid YAML at line 2"),
        ("camera:\n  backend: replay\n", "camera: backend replay needs replay_path"),
        ("camera:\n  backend: network\n", "camera: backend network needs url"),
        ("camera:\n  url: ftp://cam/live\n", "camera: url must start with rtsp://"),
        ("camera:\n  rtsp_transport: sctp\n", "camera.rtsp_transport: Input should be 'tcp' or 'udp'"),
        ("camera: {backend: network, url: 'rtsp://cam/1', stream_timeout_seconds: 12}\n",
         "camera.stream_timeout_seconds must be shorter than daemon.stuck_seconds"),
        ("gpio:\n  buzzer: {pin: 27}\n", "pin 27 is used twice: gpio.green_led and gpio.buzzer"),
        ("gpio:\n  amber_led: {pin: GPIO17}\n", "pin 17 is used twice: gpio.relay and gpio.amber_led"),
        ("inputs:\n  fire_alarm: {pin: 17}\n", "pin 17 is used twice: gpio.relay and inputs.fire_alarm"),
        ("inputs:\n  request_to_exit: {pin: 5}\n  door_contact: {pin: BCM5}\n",
         "pin 5 is used twice: inputs.request_to_exit and inputs.door_contact"),
        ("inputs:\n  door_contact: {pin: 13, bounce_seconds: -0.1}\n",
         "inputs.door_contact.bounce_seconds: Input should be greater than or equal to 0"),
        ("inputs:\n  rex: {pin: 6}\n", "inputs.rex: unknown key"),
        ("control:\n  socket: /run/x.sock\n", "control.socket: unknown key"),
        ("detector:\n  first_pass_size: 320\n",
         "detector: first_pass_size (320) must be smaller than input_size (320), or null"),
        ("detector:\n  input_size: 224\n  first_pass_size: 256\n", "first_pass_size (256) must be smaller"),
        ("detector:\n  first_pass_size: 32\n", "detector.first_pass_size: Input should be greater than or equal to 64"),
        ("detector:\n  input_size: 4000\n", "detector.input_size: Input should be less than or equal to 1920"),
        ("detector:\n  centre_zoom: sometimes\n", "detector.centre_zoom: Input should be a valid boolean"),
        ("detector:\n  full_pass_every: 4\n",
         "detector.full_pass_every (4) must not exceed decision.frames_to_decide (3)"),
        ("detector:\n  full_pass_every: 0\n", "detector.full_pass_every: Input should be greater than or equal to 1"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("camera", [
    {"backend": "network", "url": "ftp://admin:hunter2@cam/live"},
    {"backend": "network", "url": "rtsp://admin:hunter2@cam/live", "password": ["hunter2"]},
    {"backend": "network", "url": "rtsp://admin:hunter2@cam/live", "rtsp_transport": "hunter2"},
    {"backend": "network", "url": "rtsp://admin:hunter2@cam/live", "stream_timeout_seconds": 99},
])
def test_camera_config_errors_never_quote_the_password(tmp_path, camera):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, yaml.safe_dump({"camera": camera})))
    assert "camera" in str(exc.value) and "hunter2" not in str(exc.value)


def test_stream_credentials_come_from_the_environment_else_the_config(monkeypatch):
    written = Config.model_validate({"camera": {"url": "rtsp://cam/live", "username": "u", "password": "p"}})
    assert written.camera.credentials() == ("u", "p")
    assert "'p'" not in repr(written) and written.model_dump(mode="json")["camera"]["password"] == "**********"
    monkeypatch.setenv("MASKGATE_CAMERA_USERNAME", "env-user")
    monkeypatch.setenv("MASKGATE_CAMERA_PASSWORD", "env-pass")
    assert written.camera.credentials() == ("env-user", "env-pass")
    assert Config().camera.credentials() == ("env-user", "env-pass")
    monkeypatch.delenv("MASKGATE_CAMERA_USERNAME")
    monkeypatch.delenv("MASKGATE_CAMERA_PASSWORD")
    assert Config().camera.credentials() == (None, None)


def test_empty_file_means_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")


def random_yaml(rng: random.Random, depth=0):
    keys = ["camera", "gpio", "relay", "pin", "decision", "policy", "backend", "x", "unlock_seconds", "events"]
    leaves = [None, True, 3, -2.5, "all", "17", [], [1, "a"], "\x00", "{", 1e309]
    if depth > 2 or rng.random() < 0.3:
        return rng.choice(leaves)
    return {rng.choice(keys): random_yaml(rng, depth + 1) for _ in range(rng.randint(1, 3))}


def test_fuzzed_configs_are_valid_or_one_line_errors(tmp_path):
    rng = random.Random(7)
    for i in range(300):
        doc = random_yaml(rng)
        text = yaml.safe_dump(doc) if rng.random() < 0.8 else yaml.safe_dump(doc)[: rng.randint(0, 20)] + rng.choice(["[", ":", "\t", "'"])
        path = write(tmp_path, text)
        try:
            load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))


def test_check_config_cli_exit_codes(tmp_path):
    bad = write(tmp_path, "camera:\n  backend: usb\n")
    for path, code in ((CONFIG_DIR / "maskgate.yaml", 0), (bad, 2)):
        done = subprocess.run([sys.executable, "-m", "maskgate.cli", "check-config", str(path)],
                              capture_output=True, text=True)
        assert done.returncode == code and "Traceback" not in done.stderr


def check_config(*args):
    return subprocess.run([sys.executable, "-m", "maskgate", "check-config", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("text, message", [
    ("camera:\n  backend: replay\n", "camera: backend replay needs replay_path"),
    ("camera:\n  backend: network\n  rtsp_transport: udp\n", "camera: backend network needs url"),
    ("camera:\n  backend: replay\n  replay_path: /nonexistent/clip.mp4\n", "replay source not found"),
    ("classifier:\n  model_dir: /nonexistent/bundle\n", "model metadata not found"),
    ("detector:\n  model_path: /nonexistent/face.tflite\n", "detector.model_path: /nonexistent/face.tflite"),
    (f"classifier:\n  model_dir: {TINY_BUNDLES / 'int8'}\n  nose_threshold: 0.5\n",
     "classifier.nose_threshold: the model bundle"),
])
def test_check_config_rejects_what_the_daemon_would_reject_at_start(tmp_path, text, message):
    path = write(tmp_path, text)
    checked = check_config(path)
    assert checked.returncode == 2 and message in checked.stderr and checked.stderr.count("\n") == 1
    started = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 2 and started.stderr == checked.stderr


def check_and_run(path, env: dict[str, str]):
    """``check-config`` and ``run`` on the same file in the same environment (``env`` added to this one's)."""
    environ = {**os.environ, **env}
    checked = subprocess.run([sys.executable, "-m", "maskgate", "check-config", str(path)], capture_output=True,
                             text=True, env=environ)
    started = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(path)], capture_output=True,
                             text=True, timeout=60, env=environ)
    return checked, started


def test_check_config_names_every_problem_at_once_as_run_does(tmp_path):
    path = write(tmp_path, f"camera:\n  backend: replay\n  replay_path: /nonexistent/clip.mp4\n"
                           f"detector:\n  model_path: /nonexistent/face.tflite\n"
                           f"classifier:\n  model_dir: {TINY_BUNDLES / 'int8'}\n  nose_threshold: 0.5\n")
    checked, started = check_and_run(path, {})
    for problem in ("replay source not found", "detector.model_path: /nonexistent/face.tflite",
                    "classifier.nose_threshold: the model bundle"):
        assert problem in checked.stderr
    assert checked.returncode == started.returncode == 2 and started.stderr == checked.stderr
    assert checked.stderr.count("\n") == 1 and "Traceback" not in checked.stderr


@pytest.mark.parametrize("text, env, message", [
    ("gpio:\n  pin_factory: mock\n", {"STATE_DIRECTORY": "{file}"}, "$STATE_DIRECTORY: {file}: not a directory"),
    ("gpio:\n  pin_factory: mock\nevents:\n  state_dir: {file}\n", {}, "events.state_dir: {file}: not a directory"),
    ("gpio:\n  pin_factory: mock\ncontrol:\n  group: null\n", {"RUNTIME_DIRECTORY": "/nonexistent/run"},
     "$RUNTIME_DIRECTORY: /nonexistent/run: no such directory"),
    ("gpio:\n  pin_factory: mock\ncontrol:\n  group: no-such-group-here\n", {"RUNTIME_DIRECTORY": "{dir}"},
     "control.group: no group 'no-such-group-here'"),
    ("gpio:\n  pin_factory: mock\nweb:\n  api:\n    enabled: true\n", {},
     "api.enabled needs api.token of at least 16 characters"),
])
def test_check_config_refuses_in_this_environment_what_run_refuses(tmp_path, text, env, message):
    """The environment counts as systemd sets it: the directories, the secrets from variables."""
    occupied = tmp_path / "a-file"
    occupied.write_text("")
    fill = {"{file}": str(occupied), "{dir}": str(tmp_path)}
    for key, value in fill.items():
        text, message = text.replace(key, value), message.replace(key, value)
        env = {name: setting.replace(key, value) for name, setting in env.items()}
    path = write(tmp_path, text)
    checked, started = check_and_run(path, {**env, "MASKGATE_API_TOKEN": ""})
    assert checked.returncode == started.returncode == 2, checked.stderr + started.stderr
    assert message in checked.stderr and started.stderr == checked.stderr and checked.stderr.count("\n") == 1


def test_an_api_token_from_the_environment_passes_check_config(tmp_path):
    path = write(tmp_path, "web:\n  api:\n    enabled: true\n")
    checked = subprocess.run([sys.executable, "-m", "maskgate", "check-config", str(path)], capture_output=True,
                             text=True, env={**os.environ, "MASKGATE_API_TOKEN": "from-the-environment-01"})
    assert checked.returncode == 0, checked.stderr


def test_sections_are_frozen_and_changed_validates_again():
    from pydantic import ValidationError

    from maskgate.config import changed

    config = Config()
    with pytest.raises(ValidationError, match="frozen"):
        config.web.port = 1
    moved = changed(config, web={"port": 0}, collect={"enabled": True})
    assert (moved.web.port, moved.collect.enabled) == (0, True) and (config.web.port, config.collect.enabled) == (8080, False)
    with pytest.raises(ConfigError, match="web.port: "):
        changed(config, web={"port": 70000})
    with pytest.raises(ConfigError, match="web.prot: unknown key"):
        changed(config, web={"prot": 1})
    with pytest.raises(ConfigError, match="is used twice"):
        changed(config, inputs={"fire_alarm": {"pin": config.gpio.relay.pin}})


def test_check_config_names_a_model_file_the_bundle_metadata_promises(tmp_path):
    bundle = shutil.copytree(TINY_BUNDLES / "nose", tmp_path / "bundle")
    (bundle / "nose.tflite").unlink()
    checked = check_config(write(tmp_path, f"classifier:\n  model_dir: {bundle}\n"))
    assert checked.returncode == 2 and checked.stderr.count("\n") == 1
    assert f"classifier.model_dir: {bundle / 'nose.tflite'}: model file not found" in checked.stderr


def test_nose_threshold_override_reaches_the_door_rule():
    from maskgate.access.verdict import decision_rule
    from maskgate.vision.classifier import MaskClassifier

    classifier = MaskClassifier(TINY_BUNDLES / "nose")
    assert decision_rule(Config(), classifier).nose_threshold == 0.5
    off = Config.model_validate({"classifier": {"nose_threshold": 0}})
    assert decision_rule(off, classifier).nose_threshold == 0


def test_check_config_names_both_keys_of_a_pin_used_twice(tmp_path):
    path = write(tmp_path, "gpio:\n  buzzer: {pin: 24}\ninputs:\n  request_to_exit: {pin: GPIO24}\n")
    checked = check_config(path)
    assert checked.returncode == 2 and checked.stderr.count("\n") == 1
    assert "pin 24 is used twice: gpio.buzzer and inputs.request_to_exit" in checked.stderr


def test_check_config_accepts_the_shipped_configs():
    for name in ("maskgate.yaml", "demo.yaml"):
        assert check_config(CONFIG_DIR / name).returncode == 0


def test_detector_options_reach_the_detector_and_the_command_line_overrides_only_what_it_names():
    from maskgate.vision.core import InferenceCore
    from maskgate.vision.detector import default_model_path

    def build_detector(config, **overrides):
        return InferenceCore.from_config(config, **overrides).detector

    config = Config.model_validate({"detector": {"input_size": 288, "first_pass_size": 192, "centre_zoom": False,
                                                 "score_threshold": 0.6, "full_pass_every": 2},
                                    "decision": {"min_face_px": 100}})
    detector = build_detector(config, detector_model=default_model_path(), num_threads=1)
    assert (detector.input_size, detector.first_pass_size, detector.centre_zoom, detector.score_threshold,
            detector.full_pass_every, detector.first_pass_min_px) == (288, 192, False, 0.6, 2, 100)
    assert build_detector(Config.model_validate({"detector": {"first_pass_size": None}})).first_pass_size is None
    by_decision = build_detector(Config.model_validate({"decision": {"frames_to_decide": 2}}))
    assert by_decision.full_pass_every == 2, "by default every decision's frames include a full look"


@pytest.mark.parametrize("text, lines", [
    ("web:\n  port: 8080\ngpio:\n  pin_factory: mock\nweb:\n  host: 127.0.0.1\n", "'web' at lines 1 and 5"),
    ("gpio:\n  pin_factory: mock\n  relay: {pin: 17}\n  pin_factory: default\n", "'pin_factory' at lines 2 and 4"),
    ("web: {port: 1, port: 2}\n", "'port' twice at line 1"),
])
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, text, lines):
    path = tmp_path / "maskgate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"duplicate key {lines}"):
        load_config(path)


SECRET = "s3cret-token-0123456789"


@pytest.mark.parametrize("section, env, read", [
    ({"web": {"remote": {"enabled": True, "token_file": "{file}"}}}, "MASKGATE_REMOTE_TOKEN",
     lambda c: c.web.remote.token),
    ({"web": {"api": {"enabled": True, "token_file": "{file}"}}}, "MASKGATE_API_TOKEN", lambda c: c.web.api.token),
    ({"web": {"doors": [{"name": "Back", "url": "http://127.0.0.2:8080", "token_file": "{file}"}]}}, None,
     lambda c: c.web.doors[0].token),
    ({"camera": {"password_file": "{file}"}}, None, lambda c: c.camera.password),
])
def test_secrets_come_from_a_file_or_the_environment(tmp_path, monkeypatch, section, env, read):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\nignored second line\n")
    path = tmp_path / "maskgate.yaml"
    path.write_text(yaml.safe_dump(section).replace("'{file}'", str(secret_file)).replace("{file}", str(secret_file)))
    assert read(load_config(path)).get_secret_value() == SECRET
    if env:
        monkeypatch.setenv(env, "from-the-environment-0123")
        assert read(load_config(path)).get_secret_value() == "from-the-environment-0123"
    secret_file.unlink()
    with pytest.raises(ConfigError, match="_file: .*secret: cannot read") as refused:
        load_config(path) if not env else (monkeypatch.delenv(env), load_config(path))
    assert SECRET not in str(refused.value)


def test_a_secret_and_its_file_together_are_refused(tmp_path):
    path = tmp_path / "maskgate.yaml"
    path.write_text(f"web:\n  remote: {{token: {SECRET}, token_file: /etc/hostname}}\n")
    with pytest.raises(ConfigError, match="web.remote: set token or token_file, not both") as refused:
        load_config(path)
    assert SECRET not in str(refused.value)


def test_check_config_warns_when_a_file_with_secrets_is_world_readable(tmp_path):
    secret_file = tmp_path / "remote.token"
    secret_file.write_text(SECRET)
    path = tmp_path / "maskgate.yaml"
    path.write_text(yaml.safe_dump({"web": {"remote": {"enabled": True, "token_file": str(secret_file)}},
                                    "mqtt": {"username": "door", "password": "broker-pw"}}))

    def check() -> list[str]:
        done = subprocess.run([sys.executable, "-m", "maskgate", "check-config", str(path)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr.splitlines()

    for f in (path, secret_file):
        f.chmod(0o644)
    warned = check()
    assert len(warned) == 2 and f"{secret_file} holds web.remote.token" in warned[0], warned
    assert f"{path} holds mqtt.password and every user on this machine may read it" in warned[1]
    assert SECRET not in "\n".join(warned) and "broker-pw" not in "\n".join(warned)
    for f in (path, secret_file):
        f.chmod(0o640)
    assert check() == []


def test_every_problem_is_named_in_words_on_one_line(tmp_path):
    path = write(tmp_path, "camera: 5\ngpio:\n  relay: {pin: 99}\n  red_led: {pin: BOARD11}\n"
                           "mqtt:\n  node_id: 'door 1'\nweb:\n  doors: [{name: Back, url: 'http://door2/x'}]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message
    assert message == (f"{path}: camera: must be a section of keys (key: value lines below it); "
                       "gpio.relay.pin: 99 is not a GPIO pin: give its BCM number, 0 to 27 (e.g. 17 or GPIO17); "
                       "gpio.red_led.pin: 'BOARD11' is not a GPIO pin: give its BCM number, 0 to 27 (e.g. 17 or GPIO17); "
                       "mqtt.node_id: may hold only letters, digits, '_' and '-'; "
                       "web.doors.0.url: must be http://host:port or https://host:port, with no path")
    assert "Config" not in message and "^" not in message, "no class names, no regular expressions"


@pytest.mark.parametrize("pin", [0, 26, "GPIO26", "bcm4", "16"])
def test_bcm_pins_0_to_27_are_accepted(pin):
    assert Config.model_validate({"inputs": {"door_contact": {"pin": pin}}}).inputs.door_contact.pin == pin


def test_yaml_errors_say_where_and_why(tmp_path):
    path = write(tmp_path, "camera:\n  backend: [replay\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: not valid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'"
