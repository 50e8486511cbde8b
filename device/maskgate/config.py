"""The daemon's configuration: one typed schema, loaded from YAML, every key checked at start."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(Section):
    backend: Literal["auto", "picamera2", "opencv", "replay", "scenes"] = "auto"
    device: Union[int, str] = Field(0, description="OpenCV camera index or /dev/video path")
    width: int = Field(640, gt=0)
    height: int = Field(480, gt=0)
    replay_path: str | None = Field(None, description="video file, image folder or glob (backend replay)")
    replay_fps: float = Field(10.0, gt=0)
    replay_loop: bool = False
    reconnect_max_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _replay_needs_a_path(self) -> "CameraConfig":
        if self.backend == "replay" and not self.replay_path:
            raise ValueError("backend replay needs replay_path (a video file, an image folder or a glob)")
        return self


class DetectorConfig(Section):
    model_path: Path | None = None
    score_threshold: float = Field(0.5, gt=0, lt=1)
    num_threads: int = Field(2, ge=1, le=16)


class ClassifierConfig(Section):
    model_dir: Path | None = None
    threshold: float | None = Field(None, gt=0, lt=1, description="override the bundle's grant threshold")
    num_threads: int = Field(2, ge=1, le=16)


class DecisionConfig(Section):
    policy: Literal["nearest", "all"] = "nearest"
    min_face_px: float = Field(80, ge=0)
    frames_to_decide: int = Field(3, ge=1, le=100)
    unlock_seconds: float = Field(5.0, gt=0, le=300)
    denied_seconds: float = Field(3.0, gt=0, le=300)
    cooldown_seconds: float = Field(2.0, ge=0, le=300)


class PinConfig(Section):
    pin: Union[int, str]
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


class EventsConfig(Section):
    state_dir: Path | None = Field(None, description="default: $STATE_DIRECTORY, else /var/lib/maskgate")
    snapshot_denied: bool = False
    snapshot_retention_days: float = Field(7.0, gt=0)

    def resolved_state_dir(self) -> Path:
        return self.state_dir or Path(os.environ.get("STATE_DIRECTORY", "/var/lib/maskgate").split(":")[0])


class DaemonConfig(Section):
    stuck_seconds: float = Field(10.0, ge=1, le=300, description="a worker silent this long is stuck: "
                                 "systemd's watchdog stops being fed and restarts the daemon")


class Config(Section):
    camera: CameraConfig = CameraConfig()
    detector: DetectorConfig = DetectorConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    decision: DecisionConfig = DecisionConfig()
    gpio: GpioConfig = GpioConfig()
    events: EventsConfig = EventsConfig()
    daemon: DaemonConfig = DaemonConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _pins_are_unique(self) -> "Config":
        seen: dict[str, str] = {}
        for key, pin in pins_in_use(self).items():
            if pin in seen:
                raise ValueError(f"pin {pin} is used twice: {seen[pin]} and {key}")
            seen[pin] = key
        return self


def pins_in_use(config: Config) -> dict[str, str]:
    """Every configured GPIO pin (BCM number; "GPIO17" and 17 are one pin) → the key that uses it."""
    return {f"gpio.{name}": re.sub(r"^(GPIO|BCM)", "", str(pin.pin).upper())
            for name, pin in config.gpio.outputs().items()}


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; any problem is a ConfigError naming the file and key path."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = "unknown key (check spelling)" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {key}: {message}{more}") from None
