"""The daemon's web server (``web:`` config): kiosk page, status and events API, remote and multi-door views.

FastAPI on uvicorn, in a thread of its own beside the frame loop: FastAPI because it is built on the
pydantic the config already uses and publishes OpenAPI (``/api/v1/openapi.json``) for the classify
API; uvicorn because it runs an ASGI app in-process with WebSockets. The server is one more bus
subscriber (``live.LiveFeed``) and never calls into the frame loop; the classify API (``classify.py``,
``web.api``) runs inference on worker threads with models of their own.
"""

from __future__ import annotations

import logging
import socket
import threading

from ...errors import MaskgateError

log = logging.getLogger(__name__)


class WebService:
    """uvicorn in its own thread; once started, ``host``/``port`` are the bound address (port 0: any free one)."""

    name = "web"

    def __init__(self, app):
        import uvicorn

        from ..metrics import Metrics
        from .classify import ClassifyApi
        from .live import Channel, LiveFeed
        from .server import create_app

        self.config = web = app.config.web
        self.feed = LiveFeed(app, Channel(), preview_fps=web.preview_fps)
        token = web.remote.token.get_secret_value() if web.remote.enabled and web.remote.token else None
        self.api = ClassifyApi(app.config) if web.api.enabled else None
        self.metrics = Metrics(app)
        self.faces = _collected_faces(app.config)
        asgi = create_app(self.feed, app.events, token=token, doors=web.doors, api=self.api, metrics=self.metrics,
                          faces=self.faces, state_dir=app.config.events.resolved_state_dir())
        self.server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=2, ws_ping_interval=10))
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


def _collected_faces(config):
    """The collected faces for the review page: while collection is on or some are kept."""
    from ...records.faces import FOLDER, FaceStore

    state_dir = config.events.resolved_state_dir()
    return FaceStore(state_dir) if config.collect.enabled or (state_dir / FOLDER).is_dir() else None


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise MaskgateError(f"web: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def build(app) -> WebService | None:
    return WebService(app) if app.config.web.enabled else None
