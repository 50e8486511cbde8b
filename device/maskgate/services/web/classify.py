"""The classify API: ``POST /api/v1/classify`` answers what ``maskgate classify --json`` prints for the image.

Inference runs on ``web.api.workers`` threads of their own, each with its own InferenceCore (never the
frame loop's), at the lowest CPU priority (nice 19, which Linux keeps per thread and passes on to the
interpreter threads each worker starts), fed by a bounded queue. A request takes a place (a worker's or
the queue's) before its body is read, and is answered 503 at once when none is free: at most
``workers + queue`` bodies are ever held. Every caller needs the API token, from loopback too; every request
counts against its client's rate limit, answered or not. Bad input is a 4xx with ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import email.parser
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import Future
from email.message import Message
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...access.reasons import Reason
from ...errors import FrameError
from ...net import bearer_matches
from ...images import ImageTooLarge
from .limits import client_key

log = logging.getLogger(__name__)

PATH = "/api/v1/classify"
OPENAPI_PATH = "/api/v1/openapi.json"  # the API's description; the API token opens it from afar too
ANSWER_TIMEOUT = 60.0  # seconds a request may wait for its worker before 503
MAX_CLIENTS = 10_000  # rate-limit buckets kept before the full (idle) ones are dropped


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


def busy() -> ApiError:
    return ApiError(503, "busy: every classify worker and queue place is taken", {"Retry-After": "1"})


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal; the connection closes after it, so the body of a refused request is never read."""
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Cache-Control": "no-store", "Connection": "close", **(headers or {})})


class RateLimiter:
    """A token bucket per client address: ``per_minute`` requests a minute, in a burst or spread out."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity, self.rate, self.clock = float(per_minute), per_minute / 60.0, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, when)

    def wait(self, client: str) -> float:
        """0.0 (and the request counted), or the seconds until ``client`` may ask again."""
        now, client = self.clock(), client_key(client)
        tokens, when = self.buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.rate)
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self.buckets[client] = (tokens - 1.0, now)
        if len(self.buckets) > MAX_CLIENTS:
            self.buckets = {c: (t, w) for c, (t, w) in self.buckets.items()
                            if t + (now - w) * self.rate < self.capacity}
        return 0.0


class ClassifyWorkers:
    """Worker threads, each building its own InferenceCore from the config, taking jobs from a bounded queue."""

    def __init__(self, config, *, count: int, queue_size: int, max_pixels: int):
        self.config, self.max_pixels = config, max_pixels
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, name=f"classify-{i}", daemon=True) for i in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def alive(self) -> bool:
        """False once a started worker has died (its models failed to load)."""
        return all(t.is_alive() or not t.ident for t in self.threads)

    def submit(self, name: str, data: bytes) -> Future:
        """A Future of the classify record; ``queue.Full`` when every place in the queue is taken."""
        future: Future = Future()
        self.jobs.put_nowait((name, data, future))
        return future

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=5.0)
        while not self.jobs.empty():
            self.jobs.get_nowait()[2].cancel()

    def _serve(self) -> None:
        from ...access.verdict import classify_record, decision_rule
        from ...vision.core import InferenceCore
        from ...images import decode_image

        _lower_priority()
        try:
            core = InferenceCore.from_config(self.config)
        except Exception:
            log.exception("web: classify worker cannot load its models")
            return
        rule = decision_rule(self.config, core.classifier)
        while not self._stop.is_set():
            try:
                name, data, future = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(classify_record(name, core.process(decode_image(data, max_pixels=self.max_pixels)),
                                                  rule))
            except Exception as exc:
                future.set_exception(exc)


def _lower_priority() -> None:
    """Nice 19 for this thread (Linux keeps it per thread), so the frame loop always comes first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux: the threads keep the daemon's priority
        pass


class ClassifyApi:
    """The API's settings, token check, rate limiter and workers (built only when ``web.api.enabled``)."""

    def __init__(self, config):
        self.settings = api = config.web.api
        self._token = api.token.get_secret_value().encode()
        self.limiter = RateLimiter(api.rate_per_minute)
        self.workers = ClassifyWorkers(config, count=api.workers, queue_size=api.queue, max_pixels=api.max_pixels)
        self.places = asyncio.Semaphore(api.workers + api.queue)  # requests past the token check, bodies held

    def authorized(self, request: Request) -> bool:
        return bearer_matches(request.headers.get("authorization", ""), self._token)

    async def answer(self, request: Request) -> JSONResponse:
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.wait(client)
        if wait:
            raise ApiError(429, f"rate limit: {self.settings.rate_per_minute} requests a minute per client",
                           {"Retry-After": str(math.ceil(wait))})
        if not self.authorized(request):
            raise ApiError(401, "token required: Authorization: Bearer <web.api.token>", {"WWW-Authenticate": "Bearer"})
        if self.places.locked():  # before reading the body: a busy daemon spends nothing on it
            raise busy()
        await self.places.acquire()
        try:
            future = await self._submit(request)
        except BaseException:
            self.places.release()
            raise
        # the place goes with the body: free once a worker is done with it, not when the caller stops waiting
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: _call_soon(loop, self.places.release))
        return await _answer(future)

    async def _submit(self, request: Request) -> Future:
        body = await _read_capped(request, self.settings.max_body_bytes)
        name = request.query_params.get("name") or "upload"
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/"):
            filename, data = multipart_image(body, content_type)
            name = filename or name
        else:
            data = body
        try:
            return self.workers.submit(name, data)
        except queue.Full:
            raise busy() from None


def _call_soon(loop: asyncio.AbstractEventLoop, callback) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop has closed: the server is gone, and its places with it
        pass


async def _answer(future: Future) -> JSONResponse:
    """The worker's record; a caller that stops waiting leaves the job (and its place) to the worker."""
    try:
        record = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), ANSWER_TIMEOUT)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        raise ApiError(503, "busy: no classify worker answered in time", {"Retry-After": "1"}) from None
    except FrameError as exc:
        raise ApiError(413 if isinstance(exc, ImageTooLarge) else 422, str(exc)) from None
    return JSONResponse(record, headers={"Cache-Control": "no-store"})


async def _read_capped(request: Request, limit: int) -> bytearray:
    """The body, at most ``limit`` bytes, in one buffer (sized by Content-Length when there is one)."""
    too_large = ApiError(413, f"request body over {limit} bytes (web.api.max_body_bytes)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    body, size = bytearray(int(length) if length.isdigit() else 0), 0
    async for chunk in request.stream():
        if size + len(chunk) > limit:
            raise too_large
        body[size:size + len(chunk)] = chunk  # in place while within Content-Length
        size += len(chunk)
    del body[size:]
    return body


def multipart_image(body: bytes | bytearray, content_type: str) -> tuple[str | None, bytes | bytearray]:
    """The ``image`` field of a multipart/form-data body: (its filename, its bytes); ApiError 400 if none."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise ApiError(400, "multipart bodies must be multipart/form-data with a boundary")
    parts = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise ApiError(400, "malformed multipart body (no closing boundary)")
    for part in parts[1:-1]:
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise ApiError(400, "malformed multipart body (a part without headers)")
        headers = email.parser.BytesHeaderParser().parsebytes(head.lstrip(b" \t\r\n") + b"\r\n\r\n")
        if headers.get_param("name", header="content-disposition") == "image":
            return headers.get_filename(), content
    raise ApiError(400, "multipart body without an 'image' field")


class ClassifiedFace(BaseModel):
    """One face in the answer: the detector's box and score, the classifier's label and probabilities."""

    box: list[float]  # x1, y1, x2, y2 in image pixels
    score: float  # the detector's
    label: Literal["with_mask", "without_mask", "incorrect_mask"]
    confidence: float
    probs: dict[str, float]


class ClassifyResult(BaseModel):
    image: str
    width: int
    height: int
    faces: list[ClassifiedFace]
    decision: Literal["granted", "denied", "no_face"]
    reason: Reason  # why, as a code (the interface); reason_text is its words
    reason_text: str
    decided_by: int | None  # index into faces of the face that decided; None when no face counts


class ErrorBody(BaseModel):
    error: str


BINARY = {"schema": {"type": "string", "format": "binary"}}
OPENAPI_EXTRA = {
    "parameters": [{"name": "name", "in": "query", "required": False,
                    "schema": {"type": "string", "default": "upload"},
                    "description": "the image's name in the answer, for a raw body (multipart: the filename)"}],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": {"type": "string", "format": "binary"}}}},
        "image/jpeg": BINARY, "image/png": BINARY}},
    "security": [{"bearer": []}],
}
ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in {
    400: "malformed multipart body or no 'image' field", 401: "missing or wrong token",
    413: "body over max_body_bytes, or image over max_pixels",
    422: "not a JPEG or PNG, zero-size, truncated or corrupt",
    429: "rate limit (Retry-After)", 503: "workers and queue full (Retry-After)"}.items()}


def add_routes(app: FastAPI, api: ClassifyApi | None) -> None:
    """``POST /api/v1/classify``: the API when on, else 404 with a JSON error."""
    if api is None:
        @app.post(PATH, include_in_schema=False)
        def classify_off():
            return error(404, "the classify API is off (web.api.enabled: false)")
        return

    components = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}

    @app.post(PATH, response_model=ClassifyResult, responses=ERRORS, openapi_extra=OPENAPI_EXTRA)
    async def classify(request: Request):
        """Detect and classify every face in a JPEG or PNG (multipart field ``image``, or the raw body) and
        judge it by the door's rule: exactly what ``maskgate classify --json`` prints for the same file."""
        try:
            return await api.answer(request)
        except ApiError as exc:
            return error(exc.status, str(exc), exc.headers)

    original = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).update(components)
        return app.openapi_schema

    app.openapi = openapi
