"""The HTTP side: pages, the status/events API, live WebSocket pushes, remote access, door relays.

Requests from 127.0.0.1 (or ::1) need no token. Any other client — another host, or even another
loopback address such as 127.0.0.2 — needs ``web.remote.enabled`` and the token, as
``Authorization: Bearer …`` or the cookie the login form sets (``/login``). Without it: 401. A client that
keeps sending wrong tokens (form, header or cookie) is locked out with 429, for longer each time.
The classify API (``classify.py``) has a token of its own that every caller needs, loopback included;
that token also opens its OpenAPI description, ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import HTTPConnection

from ...config import DoorLink
from ...logs import OncePerMinute
from ...net import bearer_matches, is_local_client
from .classify import PATH as CLASSIFY_PATH
from .classify import ClassifyApi, add_routes
from .review import add_model_route
from .review import add_routes as add_review_routes
from ..metrics import Metrics
from .limits import Throttle, quiet_loop_errors
from .live import Channel, LiveFeed, offline_status

log = logging.getLogger(__name__)


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's websockets-sansio protocol logs this error after a correct denial response (our 401)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


logging.getLogger("uvicorn.error").addFilter(_DenialIsNotAnError())
logging.getLogger("uvicorn.error").addFilter(OncePerMinute())  # one garbage request a line, else a log flood

STATIC = Path(__file__).parent / "static"
COOKIE = "maskgate_session"
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
OPENAPI_PATH = "/api/v1/openapi.json"
METRICS_PATH = "/metrics"
NO_STORE = {"Cache-Control": "no-store"}


class Guard:
    """Who may in: local clients always; others only with the remote token (compared in constant time)."""

    def __init__(self, token: str | None):
        self._token = token.encode() if token else None
        self.session = hmac.new(self._token, b"maskgate-session", hashlib.sha256).hexdigest() if token else None

    @staticmethod
    def local(conn: HTTPConnection) -> bool:
        return conn.client is not None and is_local_client(conn.client.host)

    @staticmethod
    def presents_token(conn: HTTPConnection) -> bool:
        return "authorization" in conn.headers or COOKIE in conn.cookies

    def allows(self, conn: HTTPConnection) -> bool:
        if self.local(conn):
            return True
        if self._token is None:
            return False
        if bearer_matches(conn.headers.get("authorization", ""), self._token):
            return True
        return hmac.compare_digest(conn.cookies.get(COOKIE, "").encode(), self.session.encode())

    def token_matches(self, candidate: str) -> bool:
        return self._token is not None and hmac.compare_digest(candidate.encode(), self._token)


class DoorRelay:
    """Watches another maskgate daemon for the multi-door page, only while someone here watches it."""

    def __init__(self, link: DoorLink, channel: Channel):
        self.link, self.channel = link, channel
        self.url = link.url.rstrip("/").replace("http", "ws", 1) + "/api/v1/live?preview=1"
        self.task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        headers = {"Authorization": f"Bearer {self.link.token.get_secret_value()}"} if self.link.token else {}
        backoff = 1.0
        while self.channel.viewers:
            try:
                async with connect(self.url, additional_headers=headers, open_timeout=5, max_size=2**23) as ws:
                    backoff = 1.0
                    async for message in ws:
                        if isinstance(message, bytes):
                            self.channel.put(None, message)
                        else:
                            self.channel.put(message, None)
                        if not self.channel.viewers:
                            return
            except InvalidStatus as exc:
                code = exc.response.status_code
                self.channel.publish_status(offline_status("token refused" if code in (401, 403) else f"HTTP {code}"))
            except (OSError, asyncio.TimeoutError) as exc:
                self.channel.publish_status(offline_status(f"no answer ({type(exc).__name__})"))
            except Exception as exc:  # a closed connection, a bad frame: try again
                self.channel.publish_status(offline_status(f"connection lost ({type(exc).__name__})"))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


def login_page(message: str, status_code: int, headers: dict) -> HTMLResponse:
    """The sign-in form with ``message`` shown above it."""
    form = (STATIC / "login.html").read_text()
    shown = form.replace('data-role="error" hidden></p>', f'data-role="error">{html.escape(message)}</p>', 1)
    return HTMLResponse(shown, status_code=status_code, headers=headers)


def create_app(feed: LiveFeed, events, *, token: str | None, doors: list[DoorLink],
               api: ClassifyApi | None = None, metrics: Metrics | None = None, faces=None, state_dir=None) -> FastAPI:
    """The web app; ``feed.channel`` is the local door, ``doors`` the ones on the multi-door page, ``api`` the
    classify API (None: off), ``metrics`` what ``/metrics`` serves (None: no such page), ``faces`` the
    collected faces the review page shows (None: no such page), ``state_dir`` where installed models are
    (None: no ``/api/v1/model``)."""
    guard = Guard(token)
    throttle = Throttle()
    local = feed.channel
    relays = [DoorRelay(link, Channel()) for link in doors]

    @asynccontextmanager
    async def lifespan(_app):
        loop = asyncio.get_running_loop()
        quiet_loop_errors(loop)
        for channel in [local] + [r.channel for r in relays]:
            channel.loop = loop
        local.publish_status(feed.snapshot())
        yield
        for relay in relays:
            if relay.task is not None:
                relay.task.cancel()

    app = FastAPI(title="maskgate", version="1", docs_url=None, redoc_url=None, openapi_url=OPENAPI_PATH,
                  lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def admitted(conn: HTTPConnection) -> tuple[bool, float]:
        """(may in, seconds locked out): a token sent from afar is a guess until it matches, and counts."""
        if guard.local(conn) or not guard.presents_token(conn):
            return guard.local(conn), 0.0
        client = conn.client.host if conn.client else ""
        if wait := throttle.attempt(client):
            return False, wait
        if guard.allows(conn):
            throttle.succeeded(client)
            return True, 0.0
        return False, 0.0

    def locked_out(path: str, wait: float) -> Response:
        headers = {**NO_STORE, "Retry-After": str(math.ceil(wait))}
        if path.startswith("/api/"):
            return JSONResponse({"detail": "too many wrong tokens: try again later"}, status_code=429, headers=headers)
        return login_page(f"Too many wrong tokens: try again in {math.ceil(wait)} s.", 429, headers)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        path = request.url.path
        if (path.startswith(OPEN_PATHS) or path == CLASSIFY_PATH
                or (path == OPENAPI_PATH and api is not None and api.authorized(request))):
            return await call_next(request)
        allowed, wait = admitted(request)
        if allowed:
            return await call_next(request)
        if wait:
            return locked_out(path, wait)
        if path.startswith("/api/") or path == METRICS_PATH:
            return JSONResponse({"detail": "token required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return FileResponse(STATIC / "login.html", status_code=401, headers=NO_STORE)

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC / name, headers=NO_STORE)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_moved():
        return RedirectResponse(OPENAPI_PATH, status_code=308)

    @app.get("/", include_in_schema=False)
    def kiosk():
        return page("kiosk.html")

    @app.get("/remote", include_in_schema=False)
    def remote():
        return page("remote.html")

    @app.get("/doors", include_in_schema=False)
    def doors_page():
        return page("doors.html")

    @app.get("/login", include_in_schema=False)
    def login_form():
        return page("login.html")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        """The remote token as a form field (the body is capped); guesses lock the client out, longer each time."""
        client = request.client.host if request.client else ""
        if wait := throttle.attempt(client):
            return locked_out("/login", wait)
        form = parse_qs((await request.body()).decode(errors="replace"))
        if not guard.token_matches(form.get("token", [""])[0]):
            return login_page("That token was not accepted: check it (web.remote.token) and try again.", 401, NO_STORE)
        throttle.succeeded(client)
        response = RedirectResponse("/remote", status_code=303)
        response.set_cookie(COOKIE, guard.session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @app.get("/api/v1/status")
    def status():
        """The door now: state, reason, door (locked/unlocked), faces, fps, camera_ok, time, and the kiosk's words."""
        return JSONResponse(feed.snapshot(), headers=NO_STORE)

    @app.get("/api/v1/events")
    def events_list(since: float | None = Query(None, description="unix time"),
                    limit: int = Query(100, ge=1, le=1000)):
        """Logged events, oldest first: the last ``limit`` at or after ``since``."""
        return JSONResponse({"events": [e.as_dict() for e in events.list(since=since, limit=limit)]},
                            headers=NO_STORE)

    @app.get("/api/v1/preview.jpg", responses={200: {"content": {"image/jpeg": {}}}})
    async def preview():
        """The newest preview frame with face boxes (waits up to 1 s for a fresh one)."""
        seen = local.jpegs
        local.demand_until = time.monotonic() + 3.0
        deadline = time.monotonic() + 1.0
        while local.jpegs == seen and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if local.jpeg is None:
            return JSONResponse({"detail": "no frame yet"}, status_code=503)
        return Response(local.jpeg, media_type="image/jpeg", headers=NO_STORE)

    @app.get("/api/v1/doors")
    def door_list():
        """The doors of the multi-door page (index, name)."""
        return [{"index": i, "name": r.link.name} for i, r in enumerate(relays)]

    @app.websocket("/api/v1/live")
    async def live(websocket: WebSocket, preview: bool = False, door: int | None = None):
        """Status JSON as text messages on every change, JPEG previews as binary ones (``preview=1``)."""
        allowed, wait = admitted(websocket)
        if not allowed:
            await websocket.send_denial_response(locked_out("/api/", wait) if wait else
                                                 JSONResponse({"detail": "token required"}, status_code=401))
            return
        if door is not None and not 0 <= door < len(relays):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        channel = local if door is None else relays[door].channel
        serving = asyncio.create_task(channel.serve(websocket.send_text, websocket.send_bytes, preview=preview))
        if door is not None:
            relays[door].ensure_running()
        listening = asyncio.create_task(_until_closed(websocket))
        done, pending = await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if serving in done and serving.exception() is None and listening not in done:
            await _close_quietly(websocket)  # it stopped reading

    if metrics is not None:
        @app.get(METRICS_PATH, include_in_schema=False)
        def prometheus_metrics():
            """The daemon's Prometheus metrics (text exposition format)."""
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)

    add_routes(app, api)
    add_review_routes(app, faces, page)
    if state_dir is not None:
        add_model_route(app, state_dir)
    return app


async def _until_closed(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return


async def _close_quietly(websocket: WebSocket) -> None:
    try:
        await asyncio.wait_for(websocket.close(code=1013), 1.0)
    except Exception:
        pass
