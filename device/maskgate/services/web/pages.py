"""The HTML pages: the kiosk (``/``), the remote view, the multi-door page and the sign-in form."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from .classify import OPENAPI_PATH

STATIC = Path(__file__).parent / "static"
NO_STORE = {"Cache-Control": "no-store"}


def page(name: str) -> FileResponse:
    """A page from ``static/``, never cached (what it shows depends on who may see it)."""
    return FileResponse(STATIC / name, headers=NO_STORE)


def login_page(message: str, status_code: int, headers: dict) -> HTMLResponse:
    """The sign-in form with ``message`` shown above it."""
    form = (STATIC / "login.html").read_text()
    shown = form.replace('data-role="error" hidden></p>', f'data-role="error">{html.escape(message)}</p>', 1)
    return HTMLResponse(shown, status_code=status_code, headers=headers)


def page_routes() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    def openapi_moved():
        return RedirectResponse(OPENAPI_PATH, status_code=308)

    @router.get("/")
    def kiosk():
        return page("kiosk.html")

    @router.get("/remote")
    def remote():
        return page("remote.html")

    @router.get("/doors")
    def doors_page():
        return page("doors.html")

    @router.get("/login")
    def login_form():
        return page("login.html")

    return router
