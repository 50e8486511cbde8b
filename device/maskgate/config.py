"""The daemon's configuration: one typed schema, loaded from YAML, every key checked at start."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal, Mapping, Union
from urllib.parse import urlsplit

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from .errors import ConfigError
from .net import is_loopback

# The face detector's defaults (vision/detector.py reads them from here; see docs/detectors.md)
INPUT_SIZE = 320  # the frame's longer side is scaled to this in the full pass
FIRST_PASS_SIZE = None  # in a stream, a cheaper first pass (longer side, e.g. 160); off by default
MIN_SIDE = 64  # thinner inputs are padded: YuNet returns garbage boxes (inf, 1e26) on a 32 px side


class Section(BaseModel):
    """A config section: unknown keys refused, and frozen once validated (``changed`` makes a new one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(path: Path, key: str) -> str:
    """The first line of a secret file (never quoted in an error)."""
    try:
        return next(iter(Path(path).read_text(encoding="utf-8").splitlines()), "")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(f"{key}: {path}: cannot read ({reason})") from None


Env = Mapping[str, str]


def environment(info: ValidationInfo) -> Env:
    """The environment a validator sees: the one ``load_config`` was given (none when a section is built in code)."""
    return (info.context or {}).get("env", {})


def secret_from(data: object, key: str, *, env: str | None = None, environ: Env | None = None) -> object:
    """A section's raw ``key`` taken from ``$env`` in ``environ`` (wins) or from the first line of ``<key>_file``,
    so the YAML itself need not hold the secret (a before-validator's helper)."""
    if not isinstance(data, dict):
        return data
    file_key = f"{key}_file"
    already_read = isinstance(data.get(key), SecretStr)  # a validated section validated again (``changed``)
    if data.get(key) is not None and data.get(file_key) is not None and not already_read:
        raise ValueError(f"set {key} or {file_key}, not both")
    if env and environ and environ.get(env):
        return {**data, key: environ[env]}
    if data.get(file_key) is not None:
        return {**data, key: read_secret(data[file_key], file_key)}
    return data


class CameraConfig(Section):
    backend: Literal["auto", "picamera2", "opencv", "replay", "scenes", "network"] = "auto"
    device: Union[int, str] = Field(0, description="OpenCV camera index or /dev/video path")
    width: int = Field(640, gt=0)
    height: int = Field(480, gt=0)
    replay_path: str | None = Field(None, description="video file, image folder or glob (backend replay)")
    replay_fps: float = Field(10.0, gt=0)
    replay_loop: bool = False
    reconnect_max_seconds: float = Field(30.0, gt=0)
    url: str | None = Field(None, description="backend network: rtsp://… or http://… (MJPEG)")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    username: str | None = Field(None, description="or $MASKGATE_CAMERA_USERNAME (wins)")
    password: SecretStr | None = Field(None, description="or password_file, or $MASKGATE_CAMERA_PASSWORD (wins)")
    password_file: Path | None = None
    stream_timeout_seconds: float = Field(5.0, gt=0, le=60, description="connecting, or waiting for a frame")

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: object) -> object:
        return secret_from(data, "password")

    @model_validator(mode="after")
    def _replay_needs_a_path(self) -> "CameraConfig":
        if self.backend == "replay" and not self.replay_path:
            raise ValueError("backend replay needs replay_path (a video file, an image folder or a glob)")
        return self

    @model_validator(mode="after")
    def _network_needs_a_url(self) -> "CameraConfig":  # the messages never quote the URL: it may hold a password
        if self.backend == "network" and not self.url:
            raise ValueError("backend network needs url (rtsp://… or http://…)")
        if self.url and not re.match(r"(?i)(rtsps?|https?)://[^/\s]", self.url):
            raise ValueError("url must start with rtsp://, rtsps://, http:// or https:// and a host")
        return self

    def credentials(self) -> tuple[str | None, str | None]:
        """The stream's username and password: from the environment (as for MQTT), else this config."""
        password = self.password.get_secret_value() if self.password else None
        return (os.environ.get("MASKGATE_CAMERA_USERNAME") or self.username or None,
                os.environ.get("MASKGATE_CAMERA_PASSWORD") or password or None)


class DetectorConfig(Section):
    model_path: Path | None = None
    score_threshold: float = Field(0.5, gt=0, lt=1)
    num_threads: int = Field(2, ge=1, le=16)
    input_size: int = Field(INPUT_SIZE, ge=MIN_SIDE, le=1920, description="the frame's longer side in the full pass")
    first_pass_size: int | None = Field(FIRST_PASS_SIZE, ge=MIN_SIDE, description=(
        "camera frames: a cheaper first pass at this size (longer side), the full pass when it finds no face "
        "of decision.min_face_px; null = the full pass on every frame"))
    full_pass_every: int | None = Field(None, ge=1, le=100, description=(
        "camera frames: the full pass on every N-th frame whatever the first pass finds; "
        "null = decision.frames_to_decide"))
    centre_zoom: bool = Field(True, description="when no pass finds a face, look again at the frame's centre ×2")

    @model_validator(mode="after")
    def _first_pass_is_smaller(self) -> "DetectorConfig":
        if self.first_pass_size is not None and self.first_pass_size >= self.input_size:
            raise ValueError(f"first_pass_size ({self.first_pass_size}) must be smaller than input_size "
                             f"({self.input_size}), or null")
        return self


class ClassifierConfig(Section):
    model_dir: Path | None = None
    threshold: float | None = Field(None, gt=0, lt=1, description="override the bundle's grant threshold")
    nose_threshold: float | None = Field(None, ge=0, lt=1,
                                         description="override the bundle's nose-check threshold (0: check off)")
    num_threads: int = Field(2, ge=1, le=16)


class DecisionConfig(Section):
    policy: Literal["nearest", "all"] = "nearest"
    min_face_px: float = Field(80, ge=0)
    frames_to_decide: float = Field(3, ge=1, le=100, description="a decision needs the evidence of this many clear "
                                    "frames (near, frontal, confidently detected; others count less)")
    grant_margin: float = Field(0.5, ge=0, le=4, description="let a person in when their frames' weighted mean "
                                "log-odds above the grant thresholds reaches this")
    deny_margin: float = Field(1.0, gt=0, le=4, description="refuse a person when that mean falls to minus this")
    evidence_half_life_seconds: float = Field(1.5, gt=0, le=60, description="a person's older frames fade: "
                                              "one this old counts half")
    track_lost_seconds: float = Field(0.5, gt=0, le=10, description="a face unseen this long has left: its track ends")
    unlock_seconds: float = Field(5.0, gt=0, le=300)
    denied_seconds: float = Field(3.0, gt=0, le=300)
    cooldown_seconds: float = Field(2.0, ge=0, le=300)


def bcm_pin(pin: object) -> int | str:
    """A GPIO pin by its BCM number, 0–27: 17, "17", "GPIO17" or "BCM17" (kept as given)."""
    match = re.fullmatch(r"(?:GPIO|BCM)?(\d{1,2})", str(pin).strip().upper()) if isinstance(pin, (int, str)) else None
    if isinstance(pin, bool) or match is None or int(match.group(1)) > 27:
        raise ValueError(f"{pin!r} is not a GPIO pin: give its BCM number, 0 to 27 (e.g. 17 or GPIO17)")
    return pin


GpioPin = Annotated[Union[int, str], BeforeValidator(bcm_pin)]


class PinConfig(Section):
    pin: GpioPin
    active_high: bool = True


class GpioConfig(Section):
    pin_factory: Literal["default", "mock"] = "default"
    relay: PinConfig | None = PinConfig(pin=17)
    green_led: PinConfig | None = PinConfig(pin=27)
    red_led: PinConfig | None = PinConfig(pin=22)
    amber_led: PinConfig | None = None
    buzzer: PinConfig | None = None

    def outputs(self) -> dict[str, PinConfig]:
        return {name: pin for name in ("relay", "green_led", "red_led", "amber_led", "buzzer")
                if (pin := getattr(self, name)) is not None}

    def make_pin_factory(self):
        """A MockFactory for ``mock`` (no hardware), else None: gpiozero picks the Pi's own."""
        if self.pin_factory != "mock":
            return None
        from gpiozero.pins.mock import MockFactory

        return MockFactory()


class InputPinConfig(Section):
    pin: GpioPin
    active_high: bool = Field(False, description="active when the pin reads high; false: when pulled to ground")
    pull_up: bool | None = Field(True, description="internal pull-up (true) or pull-down (false); null: external")
    bounce_seconds: float = Field(0.05, ge=0, le=1, description="a level counts once it has held this long")


class InputsConfig(Section):
    fire_alarm: InputPinConfig | None = None
    request_to_exit: InputPinConfig | None = None
    door_contact: InputPinConfig | None = None
    rex_seconds: float = Field(5.0, gt=0, le=300)
    held_open_seconds: float = Field(30.0, gt=0, le=3600)
    relock_on_close: bool = True
    chatter_changes: int = Field(20, ge=3, le=1000, description="this many edges within chatter_seconds: wiring fault")
    chatter_seconds: float = Field(1.0, gt=0, le=60)

    def pins(self) -> dict[str, InputPinConfig]:
        return {name: pin for name in ("fire_alarm", "request_to_exit", "door_contact")
                if (pin := getattr(self, name)) is not None}


class ControlConfig(Section):
    enabled: bool = True
    socket_path: Path | None = Field(None, description="default: $RUNTIME_DIRECTORY/control.sock (systemd); "
                                     "with neither, no socket")
    group: str | None = Field("maskgate-operators", description="may use the socket; null: the daemon's user only")
    max_override_seconds: float = Field(86400.0, ge=1, le=31 * 86400,
                                        description="longest `maskgate door unlock|lock --for` (default 24 h)")

    def resolved_socket_path(self, env: Env = os.environ) -> Path | None:
        runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
        return self.socket_path or (Path(runtime) / "control.sock" if runtime else None)


DEFAULT_STATE_DIR = "/var/lib/maskgate"


class EventsConfig(Section):
    state_dir: Path | None = Field(None, description="default: $STATE_DIRECTORY, else /var/lib/maskgate")
    snapshot_denied: bool = False
    snapshot_retention_days: float = Field(7.0, gt=0)

    def resolved_state_dir(self, env: Env = os.environ) -> Path:
        return self.state_dir or Path(env.get("STATE_DIRECTORY", DEFAULT_STATE_DIR).split(":")[0])


class CollectConfig(Section):
    """Keeps face crops at this door, with the model's answer, for an operator to label (off by default)."""

    enabled: bool = False
    keep: Literal["unsure", "denied", "all"] = Field(
        "unsure", description="unsure: the mask was not clearly seen; denied: those and every refusal; all: every face")
    retention_days: float = Field(14.0, gt=0, le=365, description="older crops are deleted, labelled or not")
    max_images: int = Field(2000, ge=1, le=100_000, description="beyond this the oldest unlabelled crops go first")
    every_seconds: float = Field(1.0, ge=0, le=3600, description="at most one frame's faces kept this often")
    site: str | None = Field(None, max_length=100, description="names the site in exports; null = the host name")


class DaemonConfig(Section):
    stuck_seconds: float = Field(10.0, ge=1, le=300, description="a worker silent this long is stuck: "
                                 "systemd's watchdog stops being fed and restarts the daemon")


REMOTE_TOKEN_ENV, API_TOKEN_ENV = "MASKGATE_REMOTE_TOKEN", "MASKGATE_API_TOKEN"


class RemoteConfig(Section):
    enabled: bool = False
    token: SecretStr | None = Field(None, description="bearer token for /remote and the API from other hosts; "
                                    f"or token_file, or ${REMOTE_TOKEN_ENV} (wins)")
    token_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _token_from_file_or_environment(cls, data: object, info: ValidationInfo) -> object:
        return secret_from(data, "token", env=REMOTE_TOKEN_ENV, environ=environment(info))


class DoorLink(Section):
    """Another maskgate daemon shown on the multi-door page (/doors)."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://[^/\s]+/?$", description="e.g. http://door2.local:8080")
    token: SecretStr | None = Field(None, description="or token_file")
    token_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: object) -> object:
        return secret_from(data, "token")


class ApiConfig(Section):
    """The classify API (``POST /api/v1/classify``, docs/integrators.md)."""

    enabled: bool = False
    token: SecretStr | None = Field(None, description="bearer token every caller sends, from loopback too; "
                                    f"or token_file, or ${API_TOKEN_ENV} (wins)")
    token_file: Path | None = None
    max_body_bytes: int = Field(10_000_000, ge=1024, le=100_000_000)
    max_pixels: int = Field(4096 * 4096, ge=64 * 64, le=100_000_000, description="width × height")
    rate_per_minute: int = Field(60, ge=1, le=100_000, description="requests per client address")
    workers: int = Field(1, ge=1, le=8, description="inference threads, each with its own models")
    queue: int = Field(2, ge=1, le=100, description="requests waiting for a worker; beyond: 503 (workers + queue "
                       "bodies of up to max_body_bytes are held at most)")

    @model_validator(mode="before")
    @classmethod
    def _token_from_file_or_environment(cls, data: object, info: ValidationInfo) -> object:
        return secret_from(data, "token", env=API_TOKEN_ENV, environ=environment(info))


class WebLimitsConfig(Section):
    """What one client may hold: connections and the time it takes to send a request."""

    connections: int = Field(200, ge=8, le=2000, description="open connections (WebSockets included); beyond, "
                             "new ones are closed at once (this machine keeps a few more): well under LimitNOFILE")
    connections_per_client: int = Field(32, ge=2, le=10_000, description="per client address (IPv6: per /64); "
                                        "a trusted proxy is exempt")
    header_seconds: float = Field(10.0, gt=0, le=300, description="to send a request's headers; also the longest "
                                  "pause while sending its body")
    keep_alive_seconds: int = Field(5, ge=1, le=300, description="an idle connection between requests is closed then")


class WebConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0: any free port")
    preview_fps: float = Field(10.0, gt=0, le=30, description="most JPEG previews a second, while someone watches")
    allowed_hosts: list[str] = Field([], description="names and addresses browsers reach this server by, beyond "
                                     "loopback and web.host (the Host header); any other gets 403")
    trusted_proxies: list[str] = Field([], description="reverse proxies (addresses or networks) whose "
                                       "X-Forwarded-For names the client; nobody else's is believed")
    limits: WebLimitsConfig = WebLimitsConfig()
    remote: RemoteConfig = RemoteConfig()
    doors: list[DoorLink] = []
    api: ApiConfig = ApiConfig()

    @field_validator("allowed_hosts")
    @classmethod
    def _bare_host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not re.fullmatch(r"[A-Za-z0-9.-]+|\[?[0-9A-Fa-f:.]+\]?", host):
                raise ValueError(f"{host!r} is not a host name or address (no scheme, port or *)")
        return [h.strip("[]").lower() for h in hosts]

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an address or network") from None
        return proxies

    @model_validator(mode="after")
    def _remote_rules(self) -> "WebConfig":
        token = self.remote.token.get_secret_value() if self.remote.token else ""
        if self.remote.enabled and len(token) < 16:
            raise ValueError("remote.enabled needs remote.token of at least 16 characters")
        if self.api.enabled and len(self.api.token.get_secret_value() if self.api.token else "") < 16:
            raise ValueError("api.enabled needs api.token of at least 16 characters")
        if not is_loopback(self.host) and not (self.remote.enabled or self.api.enabled):
            raise ValueError(f"host {self.host} is beyond loopback: set remote.enabled (with a token) first, "
                             "or api.enabled for the classify API alone")
        return self


MQTT_PASSWORD_ENV = "MASKGATE_MQTT_PASSWORD"


class MqttTlsConfig(Section):
    ca_file: Path | None = Field(None, description="CA that signed the broker's certificate; null = the system's CAs")
    certfile: Path | None = Field(None, description="client certificate (with keyfile), if the broker asks for one")
    keyfile: Path | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> "MqttTlsConfig":
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together")
        return self


class MqttConfig(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535, description="null = 8883 with TLS, 1883 without")
    tls: MqttTlsConfig | None = None
    username: str | None = None
    password: SecretStr | None = Field(None, description=f"or password_file, or ${MQTT_PASSWORD_ENV} (wins)")
    password_file: Path | None = None
    client_id: str | None = Field(None, description="null = maskgate-<node_id>")
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="null = the host name")
    topic_prefix: str | None = Field(None, pattern=r"^[^#+]*[^#+/]$", description="null = maskgate/<node_id>")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+]*[^#+/]$")
    keepalive: int = Field(30, ge=5, le=3600)
    remote_unlock: bool = False
    remote_unlock_seconds: float = Field(5.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _remote_unlock_needs_auth_and_tls(self, info: ValidationInfo) -> "MqttConfig":
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        has_password = self.password is not None or self.password_file is not None or MQTT_PASSWORD_ENV in environment(info)
        if self.remote_unlock and not (self.username and has_password):
            raise ValueError("remote_unlock needs broker authentication: set username and password "
                             f"(or password_file, or ${MQTT_PASSWORD_ENV})")
        if self.remote_unlock and self.tls is None:
            raise ValueError("remote_unlock needs tls, so credentials and door commands never travel in clear")
        return self

    def resolved_node_id(self) -> str:
        return self.node_id or re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "maskgate"

    def resolved_topic_prefix(self) -> str:
        return self.topic_prefix or f"maskgate/{self.resolved_node_id()}"

    def resolved_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)

    def resolved_password(self, env: Env = os.environ) -> str | None:
        """$MASKGATE_MQTT_PASSWORD, else password_file's first line, else password (never logged)."""
        if MQTT_PASSWORD_ENV in env:
            return env[MQTT_PASSWORD_ENV]
        if self.password_file is not None:
            try:
                return read_secret(self.password_file, "mqtt.password_file")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return self.password.get_secret_value() if self.password is not None else None

    def file_problems(self, env: Env) -> list[str]:
        """What the daemon refuses at start beyond the schema: an unreadable password file, missing TLS files."""
        problems = []
        try:
            self.resolved_password(env)
        except ConfigError as exc:
            problems.append(str(exc))
        for key in ("ca_file", "certfile", "keyfile"):
            path = getattr(self.tls, key, None)
            if path is not None and not Path(path).is_file():
                problems.append(f"mqtt.tls.{key}: {path}: no such file")
        return problems


class Config(Section):
    camera: CameraConfig = CameraConfig()
    detector: DetectorConfig = DetectorConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    decision: DecisionConfig = DecisionConfig()
    gpio: GpioConfig = GpioConfig()
    inputs: InputsConfig = InputsConfig()
    control: ControlConfig = ControlConfig()
    events: EventsConfig = EventsConfig()
    collect: CollectConfig = CollectConfig()
    daemon: DaemonConfig = DaemonConfig()
    mqtt: MqttConfig = MqttConfig()
    web: WebConfig = WebConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _pins_are_unique(self) -> "Config":
        seen: dict[str, str] = {}
        for key, pin in pins_in_use(self).items():
            if pin in seen:
                raise ValueError(f"pin {pin} is used twice: {seen[pin]} and {key}")
            seen[pin] = key
        return self

    @model_validator(mode="after")
    def _every_decision_sees_a_full_pass(self) -> "Config":
        detector, frames = self.detector, self.decision.frames_to_decide
        if detector.full_pass_every is not None and detector.full_pass_every > frames:
            raise ValueError(f"detector.full_pass_every ({detector.full_pass_every}) must not exceed "
                             f"decision.frames_to_decide ({frames}): every decision must see a full pass")
        return self

    @model_validator(mode="after")
    def _stream_waits_are_not_stuck(self) -> "Config":
        # the frame loop does not beat its heartbeat while it waits on the stream
        if self.camera.backend == "network" and self.camera.stream_timeout_seconds >= self.daemon.stuck_seconds:
            raise ValueError("camera.stream_timeout_seconds must be shorter than daemon.stuck_seconds")
        return self


def pins_in_use(config: Config) -> dict[str, str]:
    """Every configured GPIO pin (BCM number; "GPIO17" and 17 are one pin) → the key that uses it."""
    pins = {**{f"gpio.{name}": pin for name, pin in config.gpio.outputs().items()},
            **{f"inputs.{name}": pin for name, pin in config.inputs.pins().items()}}
    return {key: re.sub(r"^(GPIO|BCM)", "", str(pin.pin).upper()) for key, pin in pins.items()}


class DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor names it
                continue
            if first is not None:
                where = f"twice at line {line}" if first == line else f"at lines {first} and {line}"
                raise DuplicateKey(f"duplicate key {key!r} {where}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def changed(config: Config, env: Env = os.environ, **sections: dict) -> Config:
    """``config`` with keys of some sections changed (``changed(config, web={"port": 0})``), validated again as a
    whole: a ConfigError names a key that is unknown or a value the schema refuses."""
    unknown = sorted(set(sections) - set(Config.model_fields))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: unknown section")
    data = config.model_dump()
    for name, keys in sections.items():
        data[name] = {**data[name], **keys}
    try:
        return Config.model_validate(data, context={"env": env})
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(error) for error in exc.errors())) from None


def load_config(path: str | Path, env: Env = os.environ) -> Config:
    """Read and validate a YAML config, secrets from ``env`` (the process's environment); any problem is a
    ConfigError naming the file and key path."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{path}: not valid YAML{at}" + (f": {problem}" if problem else "")) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw, context={"env": env})
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_problem(error) for error in exc.errors())) from None


# What a key's pattern asks for, in words (the schema's regular expressions are not for people).
PATTERN_WORDS = {
    r"^https?://[^/\s]+/?$": "must be http://host:port or https://host:port, with no path",
    r"^[A-Za-z0-9_-]+$": "may hold only letters, digits, '_' and '-'",
    r"^[^#+]*[^#+/]$": "must not contain '#' or '+' nor end with '/'",
}
SECTION_ERRORS = {"model_type", "model_attributes_type", "dict_type"}


def _problem(error: dict) -> str:
    """One schema error as "key.path: what is wrong", in words (no class names, no regular expressions)."""
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (check spelling)"
    elif kind in SECTION_ERRORS:
        message = "must be a section of keys (key: value lines below it)"
    elif kind == "string_pattern_mismatch":
        message = PATTERN_WORDS.get(error["ctx"]["pattern"], "is not in the expected form")
    else:
        message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}"


def exposed_secrets(config: Config, path: Path, env: Env = os.environ) -> list[str]:
    """Warnings for files that hold this config's secrets and that every user on the machine may read."""
    web, mqtt = config.web, config.mqtt
    held = [  # (key, the secret or None, the file that holds it: its own *_file, else the config itself)
        ("web.remote.token", web.remote.token, web.remote.token_file, REMOTE_TOKEN_ENV),
        ("web.api.token", web.api.token, web.api.token_file, API_TOKEN_ENV),
        *((f"web.doors.{i}.token", d.token, d.token_file, None) for i, d in enumerate(web.doors)),
        ("mqtt.password", mqtt.password or mqtt.password_file, mqtt.password_file, MQTT_PASSWORD_ENV),
        ("mqtt.tls.keyfile", mqtt.tls and mqtt.tls.keyfile, mqtt.tls and mqtt.tls.keyfile, None),
        ("camera.password", config.camera.password, config.camera.password_file, "MASKGATE_CAMERA_PASSWORD"),
        ("camera.url", urlsplit(config.camera.url or "").password, None, None),  # rtsp://user:password@…
    ]
    files: dict[Path, list[str]] = {}
    for key, secret, file, variable in held:
        if secret and not (variable and env.get(variable)):
            files.setdefault(Path(file or path), []).append(key)
    warnings = []
    for file, keys in files.items():
        try:
            readable = file.stat().st_mode & 0o004
        except OSError:
            continue
        if readable:
            warnings.append(f"{file} holds {', '.join(keys)} and every user on this machine may read it "
                            "(chmod 640; chown root:maskgate)")
    return warnings
