"""The web app: the routers of each concern behind one guard — pages and sign-in (``pages.py``,
``guard.py``), the status/events/doors API and metrics (``status.py``), the preview and live WebSocket
(``stream.py``), the review page and model status (``review.py``), and the classify API (``classify.py``)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ...config import DoorLink
from ...logs import OncePerMinute
from ..metrics import Metrics
from .classify import OPENAPI_PATH, ClassifyApi
from .classify import add_routes as add_classify_routes
from .guard import Guard, login_routes, require_token
from .limits import quiet_loop_errors
from .live import Channel, LiveFeed
from .pages import STATIC, page_routes
from .review import model_routes, review_routes
from .status import metrics_routes, status_routes
from .stream import DoorRelay, stream_routes

if TYPE_CHECKING:
    from ...records.events import EventLog
    from ...records.faces import FaceStore

logging.getLogger("uvicorn.error").addFilter(OncePerMinute())  # one garbage request a line, else a log flood


def create_app(feed: LiveFeed, events: EventLog, *, token: str | None, doors: list[DoorLink],
               api: ClassifyApi | None = None, metrics: Metrics | None = None, faces: FaceStore | None = None,
               state_dir: Path | None = None) -> FastAPI:
    """The web app; ``feed.channel`` is the local door, ``doors`` the ones on the multi-door page, ``api`` the
    classify API (None: off), ``metrics`` what ``/metrics`` serves (None: no such page), ``faces`` the
    collected faces the review page shows (None: no such page), ``state_dir`` where installed models are
    (None: no ``/api/v1/model``)."""
    guard = Guard(token)
    relays = [DoorRelay(link, Channel()) for link in doors]
    app = FastAPI(title="maskgate", version="1", docs_url=None, redoc_url=None, openapi_url=OPENAPI_PATH,
                  lifespan=_lifespan(feed, relays))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.middleware("http")(require_token(guard, api))
    app.include_router(page_routes())
    app.include_router(login_routes(guard))
    app.include_router(status_routes(feed, events, doors))
    app.include_router(stream_routes(feed.channel, relays, guard))
    if metrics is not None:
        app.include_router(metrics_routes(metrics))
    add_classify_routes(app, api)
    if faces is not None:
        app.include_router(review_routes(faces))
    if state_dir is not None:
        app.include_router(model_routes(state_dir))
    return app


def _lifespan(feed: LiveFeed, relays: list[DoorRelay]):
    """Hands every door's channel the server's event loop and the local door's first status; stops the relays."""

    @asynccontextmanager
    async def lifespan(_app):
        loop = asyncio.get_running_loop()
        quiet_loop_errors(loop)
        for channel in [feed.channel] + [r.channel for r in relays]:
            channel.loop = loop
        feed.channel.publish_status(feed.snapshot())
        yield
        for relay in relays:
            relay.stop()

    return lifespan
