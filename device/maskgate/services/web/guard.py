"""Who may in: the remote token, the session cookie, the lockout for wrong guesses, and the sign-in form.

Requests from 127.0.0.1 (or ::1) need no token. Any other client — another host, or even another
loopback address such as 127.0.0.2 — needs ``web.remote.enabled`` and the token, as
``Authorization: Bearer …`` or the cookie the login form sets (``/login``). Without it: 401. A client that
keeps sending wrong tokens (form, header or cookie) is locked out with 429, for longer each time.
The classify API (``classify.py``) has a token of its own that every caller needs, loopback included;
that token also opens its OpenAPI description, ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection

from ...net import bearer_matches, is_local_client
from .classify import OPENAPI_PATH, ClassifyApi
from .classify import PATH as CLASSIFY_PATH
from .limits import Throttle
from .pages import NO_STORE, STATIC, login_page
from .status import METRICS_PATH

COOKIE = "maskgate_session"
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")


class Guard:
    """Local clients always; others only with the remote token (compared in constant time), each guess
    counted by ``throttle``."""

    def __init__(self, token: str | None, *, throttle: Throttle | None = None):
        self._token = token.encode() if token else None
        self.session = hmac.new(self._token, b"maskgate-session", hashlib.sha256).hexdigest() if token else None
        self.throttle = throttle or Throttle()

    def refusal(self, conn: HTTPConnection) -> Response | None:
        """None when ``conn`` may in; else its answer: 429 while its client is locked out, else 401."""
        allowed, wait = self._admitted(conn)
        if allowed:
            return None
        path = conn.url.path
        if wait:
            return locked_out(path, wait)
        if path.startswith("/api/") or path == METRICS_PATH:
            return JSONResponse({"detail": "token required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return FileResponse(STATIC / "login.html", status_code=401, headers=NO_STORE)

    def _admitted(self, conn: HTTPConnection) -> tuple[bool, float]:
        """(may in, seconds locked out): a token sent from afar is a guess until it matches, and counts."""
        local = conn.client is not None and is_local_client(conn.client.host)
        if local or not ("authorization" in conn.headers or COOKIE in conn.cookies):
            return local, 0.0
        client = conn.client.host if conn.client else ""
        if wait := self.throttle.attempt(client):
            return False, wait
        if self._allows(conn):
            self.throttle.succeeded(client)
            return True, 0.0
        return False, 0.0

    def _allows(self, conn: HTTPConnection) -> bool:
        if self._token is None:
            return False
        if bearer_matches(conn.headers.get("authorization", ""), self._token):
            return True
        return hmac.compare_digest(conn.cookies.get(COOKIE, "").encode(), self.session.encode())

    def token_matches(self, candidate: str) -> bool:
        return self._token is not None and hmac.compare_digest(candidate.encode(), self._token)


def locked_out(path: str, wait: float) -> Response:
    headers = {**NO_STORE, "Retry-After": str(math.ceil(wait))}
    if path.startswith("/api/"):
        return JSONResponse({"detail": "too many wrong tokens: try again later"}, status_code=429, headers=headers)
    return login_page(f"Too many wrong tokens: try again in {math.ceil(wait)} s.", 429, headers)


def require_token(guard: Guard, api: ClassifyApi | None):
    """The middleware before every HTTP route: the sign-in form, static files and the classify API (which
    checks its own token) are open; the OpenAPI description to the API token too; the rest asks ``guard``."""

    async def middleware(request: Request, call_next):
        path = request.url.path
        if (path.startswith(OPEN_PATHS) or path == CLASSIFY_PATH
                or (path == OPENAPI_PATH and api is not None and api.authorized(request))):
            return await call_next(request)
        refusal = guard.refusal(request)
        return await call_next(request) if refusal is None else refusal

    return middleware


def login_routes(guard: Guard) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/login")
    async def login(request: Request):
        """The remote token as a form field (the body is capped); guesses lock the client out, longer each time."""
        client = request.client.host if request.client else ""
        if wait := guard.throttle.attempt(client):
            return locked_out("/login", wait)
        form = parse_qs((await request.body()).decode(errors="replace"))
        if not guard.token_matches(form.get("token", [""])[0]):
            return login_page("That token was not accepted: check it (web.remote.token) and try again.", 401, NO_STORE)
        guard.throttle.succeeded(client)
        response = RedirectResponse("/remote", status_code=303)
        response.set_cookie(COOKIE, guard.session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    return router
