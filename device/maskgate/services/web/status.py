"""What the daemon reports to readers: the door's status, the event log, the door list, Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .pages import NO_STORE

if TYPE_CHECKING:
    from ...config import DoorLink
    from ...records.events import EventLog
    from ..metrics import Metrics
    from .live import LiveFeed

METRICS_PATH = "/metrics"


def status_routes(feed: LiveFeed, events: EventLog, doors: list[DoorLink]) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/status")
    def status():
        """The door now: state, reason, door (locked/unlocked), faces, fps, camera_ok, time, and the kiosk's words."""
        return JSONResponse(feed.snapshot(), headers=NO_STORE)

    @router.get("/api/v1/events")
    def events_list(since: float | None = Query(None, description="unix time"),
                    limit: int = Query(100, ge=1, le=1000)):
        """Logged events, oldest first: the last ``limit`` at or after ``since``."""
        return JSONResponse({"events": [e.as_dict() for e in events.list(since=since, limit=limit)]},
                            headers=NO_STORE)

    @router.get("/api/v1/doors")
    def door_list():
        """The doors of the multi-door page (index, name)."""
        return [{"index": i, "name": link.name} for i, link in enumerate(doors)]

    return router


def metrics_routes(metrics: Metrics) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(METRICS_PATH)
    def prometheus_metrics():
        """The daemon's Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)

    return router
