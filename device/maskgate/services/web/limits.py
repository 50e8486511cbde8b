"""What one client may take from the web server: connections, time, body bytes, hosts, origins, guesses.

Every network input is hostile. ``Listener`` keeps the accept loop alive when the process runs out of file
descriptors; ``bounded_h11`` caps connections (in total and per client) and the time a client has to send
its request's headers; ``Hardened`` (the outermost ASGI layer) answers 403 to unknown ``Host`` names and
cross-origin writes and WebSockets, takes the real client from ``X-Forwarded-For`` only when a trusted
proxy sent it, and caps every request body before it is read; ``Throttle`` locks out a client that
keeps guessing the token, for longer each time.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import time
from urllib.parse import urlsplit

from ...logs import Throttled
from ...net import is_local_client, is_loopback

log = logging.getLogger(__name__)

SMALL_BODY_BYTES = 4096  # every route but the classify API (which has web.api.max_body_bytes): the login form
LOCAL_RESERVE = 16  # connections beyond web.limits.connections kept for this machine (the kiosk)
LINGER_SECONDS = 2.0  # after refusing a body: how long the rest of it is read and dropped before closing
LINGER_BYTES = 8 * 1024 * 1024  # ... and how much of it at most (then the connection is reset)
MAX_CLIENTS = 10_000  # per-client records kept before the stale ones are dropped


def client_key(host: str) -> str:
    """The unit a limit counts: the address; for IPv6 its /64 (one host can hold the whole /64)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.version == 6 and not address.is_loopback:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Event-loop errors: one line per kind a minute, never a traceback flood."""
    kinds: dict[str, Throttled] = {}

    def handler(_loop: asyncio.AbstractEventLoop, context: dict) -> None:
        message = context.get("message", "event loop error")
        exc = context.get("exception")
        if message not in kinds:
            kinds[message] = Throttled(log)
        kinds[message]("web: %s%s", message, f" ({exc!r})" if exc else "")

    loop.set_exception_handler(handler)


class Listener(socket.socket):
    """A listening socket that sheds new connections while the process is out of file descriptors.

    asyncio answers ``EMFILE`` from accept() with one traceback per queued connection and a retry timer
    each; here the connection is accepted on a spare descriptor and closed at once (the client sees a
    reset and may retry), one line is logged, and serving goes on as soon as descriptors return.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._out_of_fds = Throttled(log, logging.ERROR)
        self._fds_back = Throttled(log)
        self.shed = 0
        self._spare = self._open_spare()

    def accept(self):
        try:
            accepted = super().accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self._spare = self._spare if self._spare is not None else self._open_spare()
            if self._spare is None:  # not even one descriptor to shed with: asyncio retries in a second
                raise
            self._shed_pending(exc)
            raise BlockingIOError(errno.EAGAIN, "connections shed") from None
        if self.shed:
            self._fds_back("web: file descriptors are back: serving again (%d connections refused meanwhile)",
                           self.shed)
            self.shed = 0
        if self._spare is None:
            self._spare = self._open_spare()
        return accepted

    def _shed_pending(self, exc: OSError) -> None:
        self._out_of_fds("web: out of file descriptors (%s): refusing new connections until some close "
                         "(see web.limits.connections and the unit's LimitNOFILE)",
                         errno.errorcode.get(exc.errno, exc.errno))
        while True:
            os.close(self._spare)
            self._spare = None
            try:
                conn, _ = super().accept()
            except OSError:
                self._spare = self._open_spare()
                return
            conn.close()
            self.shed += 1
            self._spare = self._open_spare()
            if self._spare is None:
                return

    def close(self) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        super().close()

    @staticmethod
    def _open_spare() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None


def bounded_h11(*, connections: int, per_client: int, header_seconds: float, trusted: "Networks"):
    """uvicorn's h11 protocol with a cap on open connections (in total, and per client address but for this
    machine and trusted proxies) and ``header_seconds`` for each request's headers to arrive, first or kept
    alive."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    too_many_logged = Throttled(log)

    class BoundedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            if _over_cap(self.connections, host, connections=connections, per_client=per_client, trusted=trusted):
                too_many_logged("web: too many connections (from %s): new ones are closed at once", host)
                transport.abort()
                return
            # what each request's cycle closes: lingering while a refused body is still on its way
            self.transport = _Lingering(transport, self.loop,
                                        body_unread=lambda: self.conn.their_state is h11.SEND_BODY)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if isinstance(self.transport, _Lingering) and self.transport.lingering:
                self.transport.drop(data)
                return
            super().data_received(data)

        def eof_received(self) -> None:
            if isinstance(self.transport, _Lingering) and self.transport.lingering:
                self.transport.close()
                return
            super().eof_received()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def handle_websocket_upgrade(self, event) -> None:
            self._disarm()
            if isinstance(self.transport, _Lingering):
                self.transport = self.transport._transport  # the WebSocket closes as it always did
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc) -> None:
            self._disarm()
            if isinstance(self.transport, _Lingering):
                self.transport.closed()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_seconds, self._headers_late, self.cycle)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self, cycle) -> None:
            if self.cycle is cycle and not self.transport.is_closing():  # no request began since it was armed
                self.transport.close()

    return BoundedH11


def _over_cap(open_connections: set, host: str, *, connections: int, per_client: int, trusted: "Networks") -> bool:
    """Whether the connection just made from ``host`` (one of ``open_connections``) is one too many: past
    ``connections`` in total (this machine has ``LOCAL_RESERVE`` more), or past ``per_client`` from its
    address (this machine and trusted proxies: no such cap)."""
    local = is_local_client(host)
    if len(open_connections) > connections + (LOCAL_RESERVE if local else 0):
        return True
    if local or trusted.contains(host):
        return False
    key = client_key(host)
    return sum(1 for c in open_connections
               if getattr(c, "client", None) and client_key(c.client[0]) == key) > per_client


class _Lingering:
    """The connection's transport with a lingering close (as web servers do): once the answer is written, the
    write side is shut (FIN) and what the client still sends is read and dropped — at most ``LINGER_SECONDS``
    and ``LINGER_BYTES`` — so a client refused mid-upload reads its 413 instead of a connection reset."""

    def __init__(self, transport, loop: asyncio.AbstractEventLoop, *, body_unread):
        self._transport, self._loop, self._body_unread = transport, loop, body_unread
        self.lingering, self._dropped, self._timer = False, 0, None

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if (self.lingering or self._transport.is_closing() or not self._body_unread()
                or not self._transport.can_write_eof()):
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()
        self._transport.resume_reading()
        self._timer = self._loop.call_later(LINGER_SECONDS, self._transport.close)

    def drop(self, data: bytes) -> None:
        """Input that arrives while lingering: dropped; past ``LINGER_BYTES`` the connection is reset."""
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self._transport.abort()

    def closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class Networks:
    """Addresses and networks, e.g. ``web.trusted_proxies``."""

    def __init__(self, entries: list[str]):
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def contains(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def split_host(value: str) -> tuple[str, int | None]:
    """``"name:8080"``/``"[::1]:8080"``/``"name"`` → (lower-case name without brackets, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    return name.rstrip("."), int(port) if port.isdigit() else None


def _is_wildcard(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


class Hosts:
    """Which ``Host`` names this server answers to (loopback names, the address it binds, ``allowed``),
    and whether an ``Origin`` is this same server."""

    def __init__(self, allowed: list[str], bind_host: str):
        self.names = {split_host(h)[0] for h in allowed}
        if bind_host and not _is_wildcard(bind_host):  # a wildcard bind names no host
            self.names.add(split_host(bind_host)[0])

    def allows(self, name: str) -> bool:
        return name in self.names or is_loopback(name)

    def same_origin(self, origin: str, scheme: str, host: str) -> bool:
        """``origin`` (a browser's ``Origin`` header) is this server, reached by ``scheme`` at ``host`` (the
        ``Host`` header)."""
        parts = urlsplit(origin)
        secure = scheme in ("https", "wss")
        if parts.scheme != ("https" if secure else "http") or not parts.hostname:
            return False
        default = 443 if secure else 80
        try:
            origin_port = parts.port or default
        except ValueError:
            return False
        name, port = split_host(host)
        return parts.hostname.rstrip(".") == name and origin_port == (port or default)


class _Refused(Exception):
    """The request body broke a limit; the answer has been sent."""


class Hardened:
    """The outermost ASGI layer: real client, Host allow-list, same-origin writes, bounded bodies."""

    SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app, *, hosts: Hosts, trusted: Networks, body_limits: dict[str, int | None],
                 body_seconds: float):
        """``body_limits``: path → bytes (None: the route caps its body itself); other paths: SMALL_BODY_BYTES."""
        self.app, self.hosts, self.trusted = app, hosts, trusted
        self.body_limits, self.body_seconds = body_limits, body_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:  # the first of each, as the app reads them
            if key in (b"host", b"origin", b"x-forwarded-for", b"x-forwarded-proto", b"content-length"):
                headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
        scope = self._real_client(scope, headers.get("x-forwarded-for"), headers.get("x-forwarded-proto"))
        host = headers.get("host", "")
        if not self.hosts.allows(split_host(host)[0]):
            return await _deny(scope, send, "unknown host: add it to web.allowed_hosts")
        origin = headers.get("origin")
        writes = scope["type"] == "websocket" or scope["method"] not in self.SAFE_METHODS
        if writes and origin is not None and not self.hosts.same_origin(origin, scope["scheme"], host):
            return await _deny(scope, send, "cross-origin request refused")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.body_limits.get(scope["path"], SMALL_BODY_BYTES)
        length = headers.get("content-length", "")
        if limit is not None and length.isdigit() and int(length) > limit:
            return await _plain(send, 413, f"request body over {limit} bytes")
        await self._bounded(scope, receive, send, limit)

    def _real_client(self, scope, forwarded: str | None, proto: str | None):
        """``X-Forwarded-For``'s nearest untrusted address (and ``X-Forwarded-Proto``'s scheme), when a trusted
        proxy sent the request."""
        client = scope.get("client")
        if not client or not self.trusted.contains(client[0]):
            return scope
        if proto in ("http", "https", "ws", "wss"):
            secure = proto in ("https", "wss")
            scope = {**scope, "scheme": ("wss" if secure else "ws") if scope["type"] == "websocket" else proto}
        for hop in reversed([h.strip() for h in (forwarded or "").split(",") if h.strip()]):
            if not self.trusted.contains(hop):
                try:
                    return {**scope, "client": (str(ipaddress.ip_address(split_host(hop)[0])), 0)}
                except ValueError:
                    return scope  # not an address: the proxy itself stays the client
        return scope

    async def _bounded(self, scope, receive, send, limit: int | None) -> None:
        """The app, with the body cut off past ``limit`` bytes (None: the route caps it) and after a pause
        of ``body_seconds``; once refused, whatever the app still sends is dropped."""
        size, done, started, refused = 0, False, False, False

        async def refuse(status: int, message: str):
            nonlocal refused
            if not started:
                await _plain(send, status, message)
            refused = True
            raise _Refused

        async def receive_bounded():
            nonlocal size, done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_seconds)
            except asyncio.TimeoutError:
                await refuse(408, "request body too slow")
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if limit is not None and size > limit:
                    await refuse(413, f"request body over {limit} bytes")
            return message

        async def send_unless_refused(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_bounded, send_unless_refused)
        except Exception as exc:  # ours, perhaps wrapped by the app's task groups
            if not (refused and _caused_by_refusal(exc)):
                raise


def _caused_by_refusal(exc: BaseException | None) -> bool:
    if exc is None or isinstance(exc, _Refused):
        return exc is not None
    inner = getattr(exc, "exceptions", None)
    if inner:
        return all(_caused_by_refusal(e) for e in inner)
    return _caused_by_refusal(exc.__cause__ or exc.__context__)


async def _deny(scope, send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # before accept: uvicorn answers HTTP 403
        return
    await _plain(send, 403, message)


async def _plain(send, status: int, message: str) -> None:
    body = (message + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
                            (b"connection", b"close"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class Throttle:
    """Token guesses per client: ``free`` attempts, then a lockout that doubles with each failure (up to
    ``most`` seconds); a success forgives, and so does a quiet ``most`` seconds. An attempt counts as failed
    until ``succeeded`` says otherwise, so guesses sent in parallel count too."""

    def __init__(self, *, free: int = 5, most: float = 900.0, clock=time.monotonic):
        self.free, self.most, self.clock = free, most, clock
        self.clients: dict[str, tuple[int, float]] = {}  # key → (failures, locked until or last failure)

    def attempt(self, client: str) -> float:
        """0.0 (the attempt is counted) or the seconds ``client`` stays locked out."""
        key, now = client_key(client), self.clock()
        failures, until = self.clients.get(key, (0, now))
        if until > now:
            return until - now
        if now - until > self.most:
            failures = 0
        failures += 1
        self.clients[key] = (failures, now + min(self.most, 2.0 ** (failures - self.free)) if failures > self.free
                             else now)
        if len(self.clients) > MAX_CLIENTS:
            self.clients = {k: v for k, v in self.clients.items() if now - v[1] <= self.most}
            while len(self.clients) > MAX_CLIENTS:
                self.clients.pop(next(iter(self.clients)))
        return 0.0

    def succeeded(self, client: str) -> None:
        self.clients.pop(client_key(client), None)
