"""The composition root: builds the daemon from one Config, runs its threads, stops them cleanly.

    FrameLoop thread:   source → core → decider → controller.vision ─► door (relay, LEDs, buzzer)
                                                 └─► bus: FrameProcessed, CameraChanged
    DoorController:     the only code that switches the relay; publishes DoorChanged
    core subscribers:   event log (Recorder) and systemd status, which the services below rely on
    services:           everything else, built only by build_services; each subscribes to the bus and/or
                        sends requests to the controller (console, door inputs, control socket, MQTT, web,
                        collection, shadow model), none touches the loop
    supervisor:         the main thread; feeds systemd's watchdog only while every worker is alive
"""

from __future__ import annotations

import grp
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Protocol

from .access.controller import DoorController
from .access.decider import Decider
from .access.verdict import Rule, decision_rule
from .bus import EventBus
from .config import Config
from .errors import ConfigError, MaskgateError
from .hardware.door import build_door
from .hardware.notify import Notifier, StatusReporter
from .loop import FrameLoop, Heartbeat
from .messages import Lifecycle
from .records import collector
from .records.events import EventLog
from .records.recorder import Recorder
from .services.shadow import Shadow
from .sources import files_or_video, make_source
from .vision.classifier import MaskClassifier, model_files, read_metadata
from .vision.core import InferenceCore, classifier_bundle
from .vision.detector import default_model_path

log = logging.getLogger(__name__)


class Service(Protocol):
    """Something attached to the daemon: started after the core is built, stopped before it closes."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def healthy(self) -> bool: ...


def build_services(config: Config, *, bus: EventBus, controller: DoorController, clock: Callable[[], float],
                   pin_factory, events: EventLog, recorder: Recorder, rule: Rule,
                   classifier: MaskClassifier, console: bool = False) -> list[Service]:
    """The services ``config`` turns on (and ``console``: a line per change of state, for people watching),
    in start order, each given only what it uses. A section that is off costs nothing: its module (and heavy
    dependencies such as paho or FastAPI) is imported only when on."""
    services: list[Service] = []
    if console:
        from .services.console import ConsoleReporter

        services.append(ConsoleReporter(bus, clock=clock))
    input_levels: Callable[[], dict] = dict
    if config.inputs.pins():
        from .hardware.inputs import DoorInputs

        inputs = DoorInputs(config.inputs, controller=controller, bus=bus, pin_factory=pin_factory, clock=clock)
        services.append(inputs)
        input_levels = inputs.levels
    socket_path = config.control.resolved_socket_path()
    if config.control.enabled and socket_path is not None:  # no runtime directory: nowhere to put the socket
        from .services.control import ControlServer

        services.append(ControlServer(socket_path, controller=controller, group=config.control.group,
                                      logged=recorder.flush, max_seconds=config.control.max_override_seconds,
                                      inputs=input_levels))
    mqtt = None
    if config.mqtt.enabled:
        from .services.mqtt import MqttService

        mqtt = MqttService(config.mqtt, bus=bus, controller=controller, clock=clock)
        services.append(mqtt)
    if config.web.enabled:
        from .services.web import WebService

        services.append(WebService(config, bus=bus, controller=controller, events=events, recorder=recorder,
                                   mqtt=mqtt))
    state_dir = config.events.resolved_state_dir()
    # off, collection still applies its retention to what an earlier run kept
    if (collect := collector.build(config.collect, state_dir, bus=bus, rule=rule, classifier=classifier)) is not None:
        services.append(collect)
    services.append(Shadow(state_dir, bus=bus, decision=config.decision, active_rule=rule,
                           rule_for=lambda staged: decision_rule(config, staged)))
    return services


def preflight(config: Config, env: Mapping[str, str]) -> list[str]:
    """Every problem the daemon would refuse at start beyond the schema, in the environment ``env``: model
    files, the replay source, MQTT's files, the state directory, the control socket's directory and group.
    ``check-config`` and ``App`` both run it, so a config check-config passes starts (in the same environment)."""
    problems = _model_problems(config, env)
    detector = config.detector.model_path or default_model_path()
    if not Path(detector).is_file():
        problems.append(f"detector.model_path: {detector}: no such file")
    if config.camera.backend == "replay":
        try:
            files_or_video(config.camera.replay_path)
        except MaskgateError as exc:
            problems.append(str(exc))
    if config.mqtt.enabled:
        problems += config.mqtt.file_problems(env)
    return problems + _directory_problems(config, env)


def _model_problems(config: Config, env: Mapping[str, str]) -> list[str]:
    try:
        bundle = classifier_bundle(config, env)
        metadata = read_metadata(bundle)
    except MaskgateError as exc:
        return [str(exc)]
    problems = [f"classifier.model_dir: {path}: model file not found"
                for path in model_files(bundle, metadata) if not path.is_file()]
    if config.classifier.nose_threshold is not None and metadata.nose_check is None:
        problems.append(f"classifier.nose_threshold: the model bundle {bundle} has no nose check")
    return problems


def _directory_problems(config: Config, env: Mapping[str, str]) -> list[str]:
    """The state directory (a directory this user may write, or one that can be made: systemd makes the default
    one) and the control socket's directory and group."""
    problems = []
    state = config.events.resolved_state_dir(env)
    key = "events.state_dir" if config.events.state_dir else "$STATE_DIRECTORY" if "STATE_DIRECTORY" in env else ""
    if key and (problem := _not_writable(state)):
        problems.append(f"{key}: {state}: {problem}")
    elif not key and state.exists() and (problem := _not_writable(state)):
        problems.append(f"events.state_dir (default {state}): {problem}")
    socket_path = config.control.resolved_socket_path(env)
    if config.control.enabled and socket_path is not None:
        key = "control.socket_path" if config.control.socket_path else "$RUNTIME_DIRECTORY"
        if not socket_path.parent.is_dir():
            problems.append(f"{key}: {socket_path.parent}: no such directory")
        elif not os.access(socket_path.parent, os.W_OK | os.X_OK):
            problems.append(f"{key}: {socket_path.parent}: not writable by this user")
        if config.control.group is not None:
            try:
                grp.getgrnam(config.control.group)
            except KeyError:
                problems.append(f"control.group: no group {config.control.group!r} (systemd/install.sh creates "
                                "maskgate-operators; or set control.group: null)")
    return problems


def _not_writable(directory: Path) -> str | None:
    """Why the daemon could not keep its files in ``directory`` (made if missing), or None."""
    if directory.exists():
        if not directory.is_dir():
            return "not a directory"
        return None if os.access(directory, os.W_OK | os.X_OK) else "not writable by this user"
    parent = next(p for p in directory.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and cannot be made ({parent} is not writable by this user)"
    return None


def check(config: Config, env: Mapping[str, str]) -> None:
    """Raise a ConfigError naming every problem ``preflight`` finds, in one line."""
    if problems := preflight(config, env):
        raise ConfigError("; ".join(problems))


class App:
    """The door daemon. Hardware and the camera are injectable, so the whole of it runs in tests."""

    def __init__(self, config: Config, *, core: InferenceCore | None = None, pin_factory=None,
                 open_source: Callable[[], object] | None = None, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic, console: bool = False):
        check(config, os.environ)
        self._closed = False
        self.config, self.clock = config, clock
        self.bus = EventBus()
        self.pin_factory = pin_factory or config.gpio.make_pin_factory()
        self.door = build_door(config.gpio, pin_factory=self.pin_factory)  # first: no GPIO fails fast, in one line
        try:
            self.core = core or InferenceCore.from_config(config)
        except BaseException:
            self.door.close()
            raise
        self.decider = Decider(config.decision, rule=decision_rule(config, self.core.classifier))
        self.controller = DoorController(self.door, bus=self.bus, clock=clock)
        self.events = EventLog(config.events.resolved_state_dir(), snapshot_denied=config.events.snapshot_denied,
                               snapshot_retention_days=config.events.snapshot_retention_days)
        self.recorder = Recorder(self.events, self.bus)
        self.notifier = notifier or Notifier()
        self.status = StatusReporter(self.notifier, self.bus)
        self.stop_event = threading.Event()
        self.heartbeat = Heartbeat(clock)
        self.loop = FrameLoop(open_source=open_source or (lambda: make_source(self.config.camera)), core=self.core,
                              decider=self.decider, controller=self.controller, bus=self.bus, stop=self.stop_event,
                              heartbeat=self.heartbeat, reconnect_max_seconds=config.camera.reconnect_max_seconds)
        self.services: list[Service] = []
        self.exit_code = 0
        self._loop_thread = threading.Thread(target=self._run_loop, name="frame-loop", daemon=True)
        try:
            self.services = build_services(config, bus=self.bus, controller=self.controller, clock=clock,
                                           pin_factory=self.pin_factory, events=self.events, recorder=self.recorder,
                                           rule=self.decider.rule, classifier=self.core.classifier,
                                           console=console)
        except BaseException:
            self.close()
            raise

    def run(self, *, on_ready: Callable[[], None] = lambda: None) -> int:
        """Start everything (``on_ready`` once the services listen), supervise until stopped or the loop
        ends, then lock and shut down."""
        self.bus.publish(Lifecycle("started", "daemon started", time.time()))
        self.controller.start()
        try:
            for service in self.services:
                service.start()
            on_ready()
            self._loop_thread.start()
            self.notifier.ready("daemon started; door locked")
            self._supervise()
        finally:
            self.close()
        return self.exit_code

    def stop(self) -> None:
        """Ask everything to finish (safe from a signal handler)."""
        self.stop_event.set()

    def problems(self) -> list[str]:
        """Workers that are dead or stuck; empty when the watchdog may be fed."""
        found = []
        if self._loop_thread.is_alive() and self.heartbeat.age() > self.config.daemon.stuck_seconds:
            found.append(f"frame loop silent for {self.heartbeat.age():.0f} s")
        if not self.controller.alive:
            found.append("door controller timer stopped")
        found += [f"bus subscriber {s.name} stopped" for s in self.bus.subscriptions if not s.alive]
        found += [f"service {s.name} unhealthy" for s in self.services if not s.healthy()]
        return found

    def close(self) -> None:
        """Lock the door and release everything (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()
        if self._loop_thread.is_alive():
            self._loop_thread.join(timeout=5.0)
        # The door locks first, then the services stop: MQTT publishes the locked door and "offline"
        # before it disconnects, so what the broker retains is true after every stop.
        self.controller.close("daemon stopped")
        self.bus.publish(Lifecycle("stopped", "door locked, daemon stopped", time.time()))
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        self.bus.close(timeout=5.0)
        self.recorder.close()
        self.events.close()
        self.door.close()
        self.notifier.stopping()

    def _run_loop(self) -> None:
        try:
            self.loop.run()
        except MaskgateError as exc:  # a problem for people (missing package, bad replay): one line
            self._failed(str(exc))
            log.error("%s; door locked", exc)
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            log.exception("frame loop failed; door locked")
        finally:
            self.stop_event.set()

    def _failed(self, detail: str) -> None:
        self.controller.camera_lost(detail)
        self.exit_code = 1
        self.bus.publish(Lifecycle("error", detail, time.time()))

    def _supervise(self) -> None:
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        ping_every = min(watchdog_usec / 4e6, 1.0) if watchdog_usec else 1.0
        reported: list[str] = []
        while not self.stop_event.wait(ping_every):
            problems = self.problems()
            if not problems:
                self.notifier.watchdog()
            elif problems != reported:
                log.error("not feeding the watchdog: %s", "; ".join(problems))
            reported = problems


def run_daemon(config: Config, *, console: bool = False, banner: str = "") -> App:
    """``maskgate run``/``demo``: the App with signal handling; prints its pages' addresses once they listen,
    then ``banner``, then (``console``: for people watching) every change of state. Returns the stopped App."""
    logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = App(config, console=console)

    def ready() -> None:
        for service in app.services:
            if getattr(service, "url", None):
                print(f"kiosk page: {service.url}/  (open it in a browser)", flush=True)
        if banner:
            print(banner, flush=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: app.stop())
    app.run(on_ready=ready)
    return app
