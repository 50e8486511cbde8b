"""What the pages watch: the preview JPEG, and the live WebSocket for this door or one relayed from another."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from ...config import DoorLink
from .guard import Guard
from .live import Channel, offline_status
from .pages import NO_STORE


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's websockets-sansio protocol logs this error after a correct denial response (our 401)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


logging.getLogger("uvicorn.error").addFilter(_DenialIsNotAnError())


class DoorRelay:
    """Watches another maskgate daemon for the multi-door page, only while someone here watches it."""

    def __init__(self, link: DoorLink, channel: Channel):
        self.link, self.channel = link, channel
        self.url = link.url.rstrip("/").replace("http", "ws", 1) + "/api/v1/live?preview=1"
        self.task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

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


def stream_routes(local: Channel, relays: list[DoorRelay], guard: Guard) -> APIRouter:
    """``local`` is this door's channel; ``relays`` the other doors', by their index on the multi-door page."""
    router = APIRouter()

    @router.get("/api/v1/preview.jpg", responses={200: {"content": {"image/jpeg": {}}}})
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

    @router.websocket("/api/v1/live")
    async def live(websocket: WebSocket, preview: bool = False, door: int | None = None):
        """Status JSON as text messages on every change, JPEG previews as binary ones (``preview=1``)."""
        if (refusal := guard.refusal(websocket)) is not None:
            await websocket.send_denial_response(refusal)
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

    return router


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
