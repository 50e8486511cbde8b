"""MQTT and Home Assistant: the door's state, decisions and availability on a broker; optional remote lock/unlock.

Topics (``<prefix>`` is mqtt.topic_prefix, by default ``maskgate/<node_id>``):

    <prefix>/availability  online | offline      retained; "offline" is also the last will (a killed daemon)
    <prefix>/door          the door's state JSON  retained, on every change of the lock or of who holds it
    <prefix>/state         vision JSON            retained: current state, last decision and reason, faces, fps, camera
    <prefix>/event         an event-log row JSON  QoS 1, not retained: decisions, door, camera and input changes
    <prefix>/door/set      LOCK | UNLOCK          subscribed to only with remote_unlock
    <discovery>/status     online                 Home Assistant (re)started: discovery is published again

Threads: paho's network loop (connects and reconnects with backoff) and two bus subscriptions; the
frame loop only offers messages to bounded bus queues, so a dead broker cannot slow it. Events wait in
their bus queue while the broker is away (``EVENT_QUEUE_LIMIT``, the oldest dropped beyond it) and leave
it only once the broker has acknowledged them (QoS 1). Retained state keeps only the newest values and
is published in full (QoS 0) after every reconnect, so a stale value resent later can never win.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from .. import __version__
from ..access.controller import Auto, DoorController, Unlock
from ..access.reasons import Reason
from ..bus import EventBus
from ..config import MqttConfig
from ..errors import ConfigError
from ..logs import Throttled
from ..messages import (AlarmSilenced, CameraChanged, DoorChanged, EventLogChanged, FrameProcessed, InputChanged,
                        ShadowCounted, is_event, without_image)
from ..records.recorder import as_event

log = logging.getLogger(__name__)

EVENT_QUEUE_LIMIT = 1000  # events held while the broker is away; beyond that the oldest are dropped
STATE_EVERY = 5.0  # seconds: the state (fps) is refreshed at least this often while nothing else changes
RECONNECT_MAX_SECONDS = 60
PUBLISHER = "mqtt"  # `who` of remote requests, in the controller and the event log


class _QuietReconnects(logging.Filter):
    """paho logs an error for every attempt while the broker is away; the service logs one warning instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


PAHO_LOG = logging.getLogger(f"{__name__}.paho")
PAHO_LOG.addFilter(_QuietReconnects())


class MqttService:
    """Publishes the daemon to a broker and, with ``remote_unlock``, takes LOCK/UNLOCK to the door controller."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, bus: EventBus, controller: DoorController,
                 clock: Callable[[], float] = time.monotonic):
        import paho.mqtt.client as mqtt

        self.config, self.bus, self.controller, self.clock = config, bus, controller, clock
        self.node_id = config.resolved_node_id()
        prefix = config.resolved_topic_prefix()
        self.availability_topic, self.door_topic = f"{prefix}/availability", f"{prefix}/door"
        self.state_topic, self.event_topic = f"{prefix}/state", f"{prefix}/event"
        self.command_topic = f"{prefix}/door/set"
        self.shadow_topic = f"{prefix}/model/shadow"
        self.status_topic = f"{config.discovery_prefix}/status"
        self.where = f"{config.host}:{config.resolved_port()}"
        self._lock = threading.RLock()
        self._connection = threading.Condition(self._lock)
        self._connected = False
        self._stopping = threading.Event()
        self._problems: set[str] = set()  # logged once per outage
        self._refused = Throttled(log, every=10.0)  # commands it did not carry out: a flood is a few lines
        self._vision = {"state": "idle", "reason": "no_face", "reason_text": Reason.NO_FACE.text, "face": None,
                        "track": None, "faces": 0, "fps": 0.0, "camera_ok": None, "last_decision": None,
                        "last_reason": None, "last_reason_text": None, "last_face": None, "last_track": None,
                        "last_decision_at": None, "events_ok": True}
        self._frame_key: tuple | None = None
        self._frame_at = float("-inf")

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or f"maskgate-{self.node_id}")
        client.enable_logger(PAHO_LOG)
        client.suppress_exceptions = True  # a bug in a callback is logged; the network loop carries on
        client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        if config.username:
            client.username_pw_set(config.username, config.resolved_password())
        if config.tls is not None:
            tls = config.tls
            try:
                client.tls_set(ca_certs=tls.ca_file and str(tls.ca_file), certfile=tls.certfile and str(tls.certfile),
                               keyfile=tls.keyfile and str(tls.keyfile))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"mqtt.tls: cannot load the certificates ({exc})") from None
        client.reconnect_delay_set(1, RECONNECT_MAX_SECONDS)
        client.on_connect, client.on_connect_fail = self._on_connect, self._on_connect_fail
        client.on_disconnect, client.on_message = self._on_disconnect, self._on_message
        self.client = client
        self._subscriptions = [
            bus.subscribe(FrameProcessed, self._on_frame, name="mqtt-state", when=self._frame_matters, latest=True),
            bus.subscribe((FrameProcessed, DoorChanged, CameraChanged, InputChanged, AlarmSilenced), self._on_event,
                          name="mqtt-events", when=is_event, maxlen=EVENT_QUEUE_LIMIT, keep=without_image),
            bus.subscribe(EventLogChanged, self._on_log, name="mqtt-health"),
            bus.subscribe(ShadowCounted, self._on_shadow, name="mqtt-shadow", latest=True),
        ]

    # --- Service ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in paho's own thread; an unreachable broker is retried there, with backoff."""
        self.client.connect_async(self.config.host, self.config.resolved_port(), self.config.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Hand over queued events (≤ 1 s each queue), say "offline", disconnect."""
        for subscription in self._subscriptions:
            self.bus.unsubscribe(subscription)
        self._stopping.set()
        with self._lock:
            connected = self._connected
        if connected:
            info = self.client.publish(self.availability_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass  # the connection dropped meanwhile: the broker publishes the will instead
        self.client.loop_stop()  # before disconnect(): paho's loop would log an error for the closed socket
        self.client.disconnect()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def healthy(self) -> bool:
        """Always: a broker outage is logged and retried, never a reason for the watchdog to restart the door."""
        return True

    # --- paho callbacks (paho's thread) ----------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            hint = " (check mqtt.username and the password)" if reason_code.value in (4, 5, 134, 135) else ""
            self._problem(f"broker {self.where} refused the connection: {reason_code}{hint}; retrying with backoff, "
                          "the door keeps working")
            return
        with self._lock:
            self._connected = True
            self._problems.clear()
            self._connection.notify_all()
        log.info("mqtt: connected to %s, publishing under %s", self.where, self.door_topic.rsplit("/", 1)[0])
        topics = [(self.status_topic, 1)] + ([(self.command_topic, 1)] if self.config.remote_unlock else [])
        client.subscribe(topics)
        self._announce()

    def _on_connect_fail(self, client, userdata) -> None:
        self._problem(f"cannot reach broker {self.where}; retrying with backoff (≤ {RECONNECT_MAX_SECONDS} s), "
                      "the door keeps working")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was and not self._stopping.is_set():
            self._problem(f"lost the connection to {self.where} ({reason_code}); reconnecting with backoff")

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.status_topic:
            if message.payload == b"online":
                self._announce()
        elif message.topic == self.command_topic:
            self._command(message)

    def _problem(self, text: str) -> None:
        with self._lock:
            if text in self._problems:
                return
            self._problems.add(text)
        log.warning("mqtt: %s", text)

    # --- remote commands -------------------------------------------------------------------------
    def _command(self, message) -> None:
        """LOCK or UNLOCK, to the door controller (which logs the change like any other); anything else is ignored."""
        if message.retain:
            self._refused("mqtt: ignored a retained command on %s: a stored command must never open the door",
                        message.topic)
            return
        payload = message.payload.decode("utf-8", "replace").strip() if len(message.payload) <= 64 else "(too long)"
        if payload == "UNLOCK":
            seconds = self.config.remote_unlock_seconds
            state = self.controller.request(Unlock(source="mqtt", who=PUBLISHER, seconds=seconds,
                                                   reason=f"remote unlock ({message.topic})"))
            if not state.unlocked:
                self._refused("mqtt: UNLOCK outranked: the door stays locked by %s (%s)", state.who, state.reason)
        elif payload == "LOCK":
            self.controller.request(Auto(source="mqtt", who=PUBLISHER, reason=f"remote lock ({message.topic})"))
        else:
            self._refused("mqtt: ignored command %r on %s: expected LOCK or UNLOCK", payload, message.topic)

    # --- publishing ------------------------------------------------------------------------------
    def _announce(self) -> None:
        """Discovery, availability and the current state: after every (re)connect and when Home Assistant restarts."""
        for topic, config in self.discovery().items():
            self.client.publish(topic, json.dumps(config) if config else "", retain=True)
        self.client.publish(self.availability_topic, "online", retain=True)
        self._publish_door()
        self._publish_state()

    def _publish_door(self) -> None:
        with self._lock:
            if self._connected:
                door = self.controller.state.as_dict(self.controller.clock())
                self.client.publish(self.door_topic, json.dumps(door), retain=True)

    def _publish_state(self) -> None:
        with self._lock:
            if self._connected:
                self.client.publish(self.state_topic, json.dumps(self._vision), retain=True)

    def _frame_matters(self, message: FrameProcessed) -> bool:
        """Bus filter, in the frame loop's thread: only frames that change the state, or refresh its fps."""
        key = (message.decision.state, message.decision.reason, message.decision.track, len(message.result.faces))
        if key == self._frame_key and message.time - self._frame_at < STATE_EVERY:
            return False
        self._frame_key, self._frame_at = key, message.time
        return True

    def _on_frame(self, message: FrameProcessed) -> None:
        with self._lock:
            decision = message.decision
            self._vision.update(state=decision.state, reason=decision.reason.value, reason_text=decision.reason.text,
                                face=decision.face, track=decision.track, faces=len(message.result.faces),
                                fps=round(message.fps, 1))
        self._publish_state()

    def _on_log(self, message: EventLogChanged) -> None:
        with self._lock:
            self._vision["events_ok"] = message.ok
        self._publish_state()

    def _on_shadow(self, message: ShadowCounted) -> None:
        """A shadow run's counts (``maskgate model shadow``), retained: the newest is what matters."""
        with self._lock:
            if self._connected:
                self.client.publish(self.shadow_topic, json.dumps(message.result), qos=1, retain=True)

    def _on_event(self, message) -> None:
        """One event: state first (retained), then the event itself, acknowledged by the broker."""
        if isinstance(message, DoorChanged):
            self._publish_door()
        elif isinstance(message, (CameraChanged, FrameProcessed)):
            with self._lock:
                if isinstance(message, CameraChanged):
                    self._vision["camera_ok"] = message.ok
                else:
                    decision = message.decision
                    self._vision.update(last_decision=decision.outcome, last_reason=decision.reason.value,
                                        last_reason_text=decision.reason.text, last_face=decision.face,
                                        last_track=decision.track,
                                        last_decision_at=datetime.fromtimestamp(message.time, timezone.utc).isoformat())
            self._publish_state()
        event, _ = as_event(message)
        self._deliver(self.event_topic, json.dumps(event.as_dict()))

    def _deliver(self, topic: str, payload: str) -> None:
        """Publish with QoS 1 and return once the broker has it (waits out outages; gives up only when stopping)."""
        while not self._stopping.is_set():
            with self._lock:
                if not self._connected:
                    self._connection.wait(timeout=0.5)
                    continue
            info = self.client.publish(topic, payload, qos=1)
            try:
                while not self._stopping.is_set():
                    info.wait_for_publish(timeout=0.5)
                    if info.is_published():
                        return
            except (RuntimeError, ValueError):
                continue  # not handed over (the connection just dropped): again once reconnected

    # --- Home Assistant discovery ----------------------------------------------------------------
    def discovery(self) -> dict[str, dict | None]:
        """``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` → payload (None: remove the entity)."""
        device = {"identifiers": [f"maskgate_{self.node_id}"], "name": f"maskgate {self.node_id}",
                  "manufacturer": "maskgate", "model": "face-mask door", "sw_version": __version__}
        common = {"availability_topic": self.availability_topic, "device": device,
                  "origin": {"name": "maskgate", "sw_version": __version__}}
        door_lock = {"name": "Door", "state_topic": self.door_topic, "value_template": "{{ value_json.door }}",
                     "state_locked": "locked", "state_unlocked": "unlocked", "command_topic": self.command_topic,
                     "payload_lock": "LOCK", "payload_unlock": "UNLOCK", "qos": 1,
                     "json_attributes_topic": self.door_topic}
        door_sensor = {"name": "Door", "device_class": "lock", "state_topic": self.door_topic,
                       "value_template": "{{ 'ON' if value_json.door == 'unlocked' else 'OFF' }}",
                       "json_attributes_topic": self.door_topic}
        entities: dict[tuple[str, str], dict | None] = {
            ("lock", "door"): door_lock if self.config.remote_unlock else None,
            ("binary_sensor", "door"): None if self.config.remote_unlock else door_sensor,
            ("sensor", "vision"): {"name": "Vision", "state_topic": self.state_topic, "icon": "mdi:face-mask",
                                   "value_template": "{{ value_json.state }}",
                                   "json_attributes_topic": self.state_topic},
            ("sensor", "last_decision"): {
                "name": "Last decision", "state_topic": self.state_topic,
                "value_template": "{{ value_json.last_decision or 'none' }}",
                "json_attributes_topic": self.state_topic,
                "json_attributes_template": "{{ {'reason': value_json.last_reason, "
                                            "'reason_text': value_json.last_reason_text, "
                                            "'at': value_json.last_decision_at} | tojson }}"},
            ("sensor", "faces"): {"name": "Faces", "state_topic": self.state_topic, "state_class": "measurement",
                                  "icon": "mdi:account-multiple", "value_template": "{{ value_json.faces }}"},
            ("sensor", "fps"): {"name": "Frame rate", "state_topic": self.state_topic, "unit_of_measurement": "fps",
                                "state_class": "measurement", "entity_category": "diagnostic",
                                "value_template": "{{ value_json.fps }}"},
            ("binary_sensor", "camera"): {"name": "Camera", "device_class": "connectivity",
                                          "entity_category": "diagnostic", "state_topic": self.state_topic,
                                          "value_template": "{{ 'ON' if value_json.camera_ok else 'OFF' }}"},
            ("binary_sensor", "event_log"): {"name": "Event log", "device_class": "problem",
                                             "entity_category": "diagnostic", "state_topic": self.state_topic,
                                             "value_template": "{{ 'OFF' if value_json.events_ok else 'ON' }}"},
        }
        prefix = self.config.discovery_prefix
        return {f"{prefix}/{component}/{self.node_id}/{object_id}/config":
                None if payload is None else {**payload, "unique_id": f"maskgate_{self.node_id}_{object_id}", **common}
                for (component, object_id), payload in entities.items()}
