"""The review page (``/review``): the collected faces in a grid, one click or key per label; and
``/api/v1/model``: the installed bundles and the shadow run's counts, for the remote view.

Behind the same guard as the remote view (local clients, or the remote token); there only while the
state directory holds collected faces or collection is on. A label is recorded with where it came
from (``web:<client address>``).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from ...errors import MaskgateError
from ...records.faces import LABELS, FaceStore
from .pages import NO_STORE, page

MAX_BODY = 256


def model_routes(state_dir) -> APIRouter:
    from ..shadow import RESULT, read_json
    from ...vision.bundles import Models

    models = Models(state_dir)
    router = APIRouter()

    @router.get("/api/v1/model")
    def model():
        """The installed bundles (active, staged, previous; active null: the shipped one) and the last shadow
        run's counts: frames judged twice, verdicts by reason code (active → staged), decisions per side."""
        return JSONResponse({**models.status(), "shadow": read_json(models.root / RESULT)}, headers=NO_STORE)

    return router


def review_routes(faces: FaceStore) -> APIRouter:
    router = APIRouter()

    @router.get("/review", include_in_schema=False)
    def review():
        return page("review.html")

    @router.get("/api/v1/collect/faces")
    def collected(unlabelled: bool = True, limit: int = Query(60, ge=1, le=500)):
        """Collected faces, oldest first, with the model's answer; and how many there are per label."""
        found = faces.list(unlabelled=unlabelled, limit=limit)
        return JSONResponse({"faces": [{k: v for k, v in f.as_dict().items() if k != "keypoints"} for f in found],
                             "counts": faces.counts(), "labels": list(LABELS)}, headers=NO_STORE)

    @router.get("/api/v1/collect/faces/{face_id}/crop.jpg", responses={200: {"content": {"image/jpeg": {}}}})
    def crop(face_id: int):
        """One collected face crop."""
        try:
            face = faces.get(face_id)
        except MaskgateError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return FileResponse(faces.crops / face.file, media_type="image/jpeg", headers=NO_STORE)

    @router.post("/api/v1/collect/faces/{face_id}/label")
    async def label(face_id: int, request: Request):
        """Label one face: body ``{"label": "masked" | "no_mask" | "worn_wrongly" | "not_a_face" | "skip"}``."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"detail": f"body over {MAX_BODY} bytes"}, status_code=413)
        try:
            given = json.loads(body)
            name = given["label"]
        except (ValueError, TypeError, KeyError):
            return JSONResponse({"detail": 'send {"label": "…"}'}, status_code=400)
        if not isinstance(name, str) or name not in LABELS:
            return JSONResponse({"detail": f"label must be one of {', '.join(LABELS)}"}, status_code=400)
        who = f"web:{request.client.host if request.client else 'unknown'}"
        try:
            face = faces.label(face_id, name, by=who)
        except MaskgateError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return JSONResponse({"id": face.id, "label": face.label, "counts": faces.counts()}, headers=NO_STORE)

    return router
