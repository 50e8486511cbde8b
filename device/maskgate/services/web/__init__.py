"""The daemon's web server (``web:`` config): kiosk page, status and events API, remote and multi-door views.

FastAPI on uvicorn, in a thread of its own beside the frame loop: FastAPI because it is built on the
pydantic the config already uses and publishes OpenAPI (``/api/v1/openapi.json``) for the classify
API; uvicorn because it runs an ASGI app in-process with WebSockets. The server is one more bus
subscriber (``live.LiveFeed``) and never calls into the frame loop; ``server.py`` composes the app from
one router per concern, all behind ``guard.py``; the classify API (``classify.py``,
``web.api``) runs inference on worker threads with models of their own. ``limits.py`` bounds what any one
client may take: connections, time, body bytes, hosts, origins and token guesses.
"""

from __future__ import annotations

import logging
import resource
import socket
import threading
from typing import TYPE_CHECKING

from ...errors import MaskgateError
from ...net import is_loopback
from .limits import LOCAL_RESERVE, Listener

if TYPE_CHECKING:
    from ...access.controller import DoorController
    from ...bus import EventBus
    from ...config import Config
    from ...records.events import EventLog
    from ...records.recorder import Recorder
    from ..mqtt import MqttService

log = logging.getLogger(__name__)

BACKLOG = 128  # connections waiting for accept()
DESCRIPTORS_BESIDE_WEB = 256  # camera, models and their threads, event log, MQTT, control socket, with headroom
WS_MAX_MESSAGE = 4096  # bytes: the pages send nothing but closes


class WebService:
    """uvicorn in its own thread; once started, ``host``/``port`` are the bound address (port 0: any free one)."""

    name = "web"

    def __init__(self, config: Config, *, bus: EventBus, controller: DoorController, events: EventLog,
                 recorder: Recorder, mqtt: MqttService | None = None):
        import uvicorn

        from ..metrics import Metrics
        from .classify import PATH as CLASSIFY_PATH
        from .classify import ClassifyApi
        from .limits import Hardened, Hosts, Networks, bounded_h11
        from .live import Channel, LiveFeed
        from .server import create_app

        self.config = web = config.web
        self.feed = LiveFeed(Channel(), bus=bus, controller=controller, collecting=config.collect.enabled,
                             preview_fps=web.preview_fps)
        token = web.remote.token.get_secret_value() if web.remote.enabled and web.remote.token else None
        self.api = ClassifyApi(config) if web.api.enabled else None
        self.metrics = Metrics(bus=bus, controller=controller, recorder=recorder, mqtt=mqtt)
        self.faces = _collected_faces(config)
        trusted, limits = Networks(web.trusted_proxies), web.limits
        asgi = Hardened(create_app(self.feed, events, token=token, doors=web.doors, api=self.api,
                                   metrics=self.metrics, faces=self.faces,
                                   state_dir=config.events.resolved_state_dir()),
                        hosts=Hosts(web.allowed_hosts, web.host), trusted=trusted,
                        body_limits={CLASSIFY_PATH: None}, body_seconds=limits.header_seconds)
        http = bounded_h11(connections=limits.connections, per_client=limits.connections_per_client,
                           header_seconds=limits.header_seconds, trusted=trusted)
        self.server = uvicorn.Server(uvicorn.Config(
            asgi, http=http, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
            proxy_headers=False,  # Hardened believes X-Forwarded-For from web.trusted_proxies only
            timeout_keep_alive=limits.keep_alive_seconds, backlog=BACKLOG,
            ws_ping_interval=10, ws_ping_timeout=20, ws_max_size=WS_MAX_MESSAGE, ws_max_queue=4))
        if not is_loopback(web.host) and not web.allowed_hosts:
            log.warning("web: listening beyond loopback with web.allowed_hosts empty: clients that reach this "
                        "door by a name or address (other than %s) get 403", web.host)
        self.sock: socket.socket | None = None
        self.host, self.port = web.host, web.port
        self._thread = threading.Thread()  # replaced by start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind (a MaskgateError if the address is taken), then serve in the background."""
        self.sock = _bind(self.config.host, self.config.port)
        _check_descriptors(self.config.limits.connections)
        self.host, self.port = self.sock.getsockname()[:2]
        if self.api is not None:
            self.api.workers.start()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="web",
                                        daemon=True)
        self._thread.start()
        log.info("web: kiosk page at %s/", self.url)
        if self.api is not None:
            log.info("web: classify API at %s/api/v1/classify (%d workers)", self.url, self.config.api.workers)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self.api is not None:
            self.api.workers.stop()
        if self.sock is not None:
            self.sock.close()
        if self.faces is not None:
            self.faces.close()

    def healthy(self) -> bool:
        """The server thread and, with the classify API on, every API worker alive (or not started yet)."""
        server = self._thread.is_alive() or not self._thread.ident
        return server and (self.api is None or self.api.workers.alive())


def _check_descriptors(connections: int) -> None:
    """Warn when the process's descriptor limit leaves the rest of the daemon too little beside the connections."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + LOCAL_RESERVE + DESCRIPTORS_BESIDE_WEB:
        log.warning("web: %d file descriptors (LimitNOFILE) leave too few beside web.limits.connections (%d): "
                    "raise the limit or lower the connections", soft, connections)


def _collected_faces(config):
    """The collected faces for the review page: while collection is on or some are kept."""
    from ...records.faces import FOLDER, FaceStore

    state_dir = config.events.resolved_state_dir()
    return FaceStore(state_dir) if config.collect.enabled or (state_dir / FOLDER).is_dir() else None


def _bind(host: str, port: int) -> socket.socket:
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = Listener(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        if sock is not None:
            sock.close()  # and its spare descriptor
        raise MaskgateError(f"web: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock
