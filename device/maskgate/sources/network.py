"""Network cameras: RTSP or HTTP MJPEG through OpenCV's FFmpeg backend, with bounded latency.

A reader thread decodes the stream continuously and keeps only the newest frame, so a slow frame
loop sees the present rather than a queue of the past. Credentials never reach a log line or an
error: every text that leaves this module passes through ``redact``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import cv2

from ..config import CameraConfig
from .frame import Frame, SourceError

log = logging.getLogger(__name__)

OPTIONS_VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # read by OpenCV at each open: "key;value|key;value"
_options_lock = threading.Lock()
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")


def mask_url(text: str) -> str:
    """``rtsp://user:pass@host/…`` → ``rtsp://***@host/…`` for every URL in ``text``."""
    return _USERINFO.sub(r"\1***@", text)


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with the given username and/or password (percent-encoded) in place of its own."""
    if username is None and password is None:
        return url
    parts = urlsplit(url)
    user = quote(username, safe="") if username is not None else parts.username or ""
    secret = quote(password, safe="") if password is not None else parts.password
    userinfo = user + (f":{secret}" if secret else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc.rpartition('@')[2]}"))


class NetworkSource:
    """An RTSP or HTTP MJPEG stream. ``read()`` returns a frame newer than the last one returned,
    waiting up to ``timeout`` seconds for it; ``timeout`` also bounds connecting and each decode."""

    name = "network"

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 transport: str = "tcp", timeout: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._url = with_credentials(url, username, password)
        self.label = mask_url(url)
        self.transport, self.timeout, self.clock = transport, timeout, clock
        secrets = {password, urlsplit(self._url).password}
        self._secrets = sorted({form for s in secrets if s for form in (s, unquote(s), quote(s, safe=""))},
                               key=len, reverse=True)
        self._fresh = threading.Condition()
        self._latest: Frame | None = None
        self._count = self._taken = 0
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def redact(self, text: str) -> str:
        """``text`` with URL user info and every form of the password masked."""
        text = mask_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def open(self) -> None:
        timeout_ms = int(self.timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        with _options_lock:  # the variable is process-wide: set it only around this open
            previous = os.environ.get(OPTIONS_VAR)
            os.environ[OPTIONS_VAR] = f"rtsp_transport;{self.transport}"
            try:
                capture = cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, params)
            except cv2.error as exc:
                raise SourceError(self.redact(f"{self.label}: cannot open stream ({exc})")) from None
            finally:
                if previous is None:
                    del os.environ[OPTIONS_VAR]
                else:
                    os.environ[OPTIONS_VAR] = previous
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.label}: cannot open stream (unreachable, refused, wrong path or credentials)")
        self._stop.clear()
        self._error, self._count, self._taken = None, 0, 0
        self._thread = threading.Thread(target=self._reader, args=(capture,), name="network-camera", daemon=True)
        self._thread.start()
        log.info("camera stream %s open (%s)", self.label, self.transport if self.label.startswith("rtsp") else "http")

    def read(self) -> Frame:
        with self._fresh:
            if not self._fresh.wait_for(lambda: self._count > self._taken or self._error, timeout=self.timeout):
                raise SourceError(f"{self.label}: no frame for {self.timeout:g} s")
            if self._count == self._taken:
                raise SourceError(f"{self.label}: {self._error}")
            self._taken = self._count
            return self._latest

    def close(self) -> None:
        """Stop the reader (it releases the stream); waits at most ``timeout`` for a decode in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout)
            self._thread = None

    def _reader(self, capture) -> None:
        try:
            while not self._stop.is_set():
                ok, image = capture.read()
                if not ok or image is None:
                    self._fail("stream ended or stalled")
                    return
                with self._fresh:
                    self._latest = Frame(image, self.clock())
                    self._count += 1
                    self._fresh.notify_all()
        except cv2.error as exc:
            self._fail(self.redact(f"decoding failed ({exc})"))
        finally:
            capture.release()

    def _fail(self, reason: str) -> None:
        with self._fresh:
            self._error = reason
            self._fresh.notify_all()


def network_source(config: CameraConfig, *, clock: Callable[[], float] = time.monotonic) -> NetworkSource:
    username, password = config.credentials()
    return NetworkSource(config.url, username=username, password=password, transport=config.rtsp_transport,
                         timeout=config.stream_timeout_seconds, clock=clock)
