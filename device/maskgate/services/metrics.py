"""Prometheus metrics for ``GET /metrics`` (the web server serves them, behind its local/token rule).

Counters and histograms are fed from the bus on a subscriber thread of their own (never the frame
loop); gauges — the door, the camera, the event log, MQTT — are read when Prometheus scrapes.

    maskgate_frames_total                              frames through detector and classifier
    maskgate_fps                                       the frame loop's rate
    maskgate_inference_seconds{stage}                  histogram: detect, classify
    maskgate_decisions_total{outcome,reason}           decisions, by the decider's reason code
    maskgate_door_unlocked, maskgate_door_display{…}   the lock, and what the door shows (a state set)
    maskgate_door_changes_total{source,door}           changes of the lock or its holder, by the layer now holding it
    maskgate_camera_ok, maskgate_events_ok             health: camera frames, event log writable
    maskgate_mqtt_connected                            only with MQTT on
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

from ..access.controller import DoorController
from ..access.door_state import Display
from ..bus import EventBus
from ..messages import CameraChanged, DoorChanged, FrameProcessed, without_image
from ..records.recorder import Recorder

if TYPE_CHECKING:
    from .mqtt import MqttService

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # seconds: Pi 4 to Pi 5 and beyond


class Metrics:
    """One daemon's metrics in a registry of its own; ``render`` is the scrape's body."""

    def __init__(self, *, bus: EventBus, controller: DoorController, recorder: Recorder,
                 mqtt: MqttService | None = None):
        self.controller, self.recorder, self.mqtt = controller, recorder, mqtt
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.frames = Counter("maskgate_frames", "Frames through the detector and classifier",
                              registry=self.registry)
        self.inference = Histogram("maskgate_inference_seconds", "Inference time per frame, by stage", ["stage"],
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decisions = Counter("maskgate_decisions", "Door decisions, by outcome and reason code",
                                 ["outcome", "reason"], registry=self.registry)
        self.door_changes = Counter("maskgate_door_changes",
                                    "Changes of the lock or of who holds it, by the layer holding it afterwards",
                                    ["source", "door"], registry=self.registry)
        self.registry.register(_Now(self))
        self.fps = 0.0
        self.camera_ok: bool | None = None
        self.subscription = bus.subscribe((FrameProcessed, DoorChanged, CameraChanged), self._on_message,
                                              name="metrics", keep=without_image)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _on_message(self, message) -> None:
        if isinstance(message, FrameProcessed):
            self.frames.inc()
            self.fps, self.camera_ok = message.fps, True
            self.inference.labels("detect").observe(message.result.detect_ms / 1000.0)
            self.inference.labels("classify").observe(message.result.classify_ms / 1000.0)
            decision = message.decision
            if decision.outcome is not None:
                self.decisions.labels(decision.outcome, decision.reason).inc()
        elif isinstance(message, DoorChanged):
            state = message.state
            self.door_changes.labels(state.layer, "unlocked" if state.unlocked else "locked").inc()
        elif isinstance(message, CameraChanged):
            self.camera_ok = message.ok


class _Now:
    """The gauges, read from the daemon at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # read at scrape time only

    def collect(self):
        metrics = self.metrics
        state = metrics.controller.state
        yield GaugeMetricFamily("maskgate_fps", "Frames a second through the frame loop", value=metrics.fps)
        yield GaugeMetricFamily("maskgate_door_unlocked", "1 while the lock is released", value=int(state.unlocked))
        display = StateSetMetricFamily("maskgate_door_display", "What the door shows", labels=[])
        display.add_metric([], {name: name == state.display for name in get_args(Display)})
        yield display
        yield GaugeMetricFamily("maskgate_camera_ok", "1 while frames arrive from the camera",
                                value=int(bool(metrics.camera_ok)))
        yield GaugeMetricFamily("maskgate_events_ok", "1 while the event log accepts writes",
                                value=int(metrics.recorder.ok))
        mqtt = metrics.mqtt
        if mqtt is not None:
            yield GaugeMetricFamily("maskgate_mqtt_connected", "1 while connected to the MQTT broker",
                                    value=int(mqtt.connected))
