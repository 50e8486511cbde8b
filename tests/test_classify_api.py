"""The classify API in the running daemon: off by default, the API token from everywhere, exactly the JSON of
``maskgate classify --json``, limits on body size, pixels and rate, bad images refused with a 4xx, and a
burst of 50 requests answered 200 or 503 while the frame loop goes on."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import yaml

from maskgate.access.reasons import Reason
from maskgate.config import Config, load_config
from maskgate.errors import ConfigError
from maskgate.messages import FrameProcessed
from maskgate.sources.scenes import door_scene
from web_rig import TOKEN, SceneCamera, running, wait_for

API_TOKEN = "api-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
BOUNDARY = "maskgate-test-boundary"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A masked PNG and a bare JPEG of the door scene, written to files as a caller would have them."""
    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "masked.png"), door_scene(masked=True, mask_bgr=(255, 60, 0)))
    cv2.imwrite(str(folder / "bare.jpg"), door_scene(masked=False))
    cv2.imwrite(str(folder / "far.png"), door_scene(face_height_px=100))  # under the tests' min_face_px, 150
    return folder


def raw_config(tmp_path, tiny_bundles, **api) -> dict:
    return {
        "camera": {"backend": "scenes"},
        "classifier": {"model_dir": str(tiny_bundles["int8"]), "threshold": 0.5},
        "decision": {"min_face_px": 150},
        "events": {"state_dir": str(tmp_path / "state")},
        "web": {"port": 0, "api": {"enabled": True, "token": API_TOKEN, "rate_per_minute": 1000, **api}},
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_bundles, core):
    """One daemon with the API on (2 MB body limit, 1 MP pixel limit) for the tests that need no other."""
    tmp = tmp_path_factory.mktemp("daemon")
    config = Config.model_validate(raw_config(tmp, tiny_bundles, max_body_bytes=2_000_000, max_pixels=1_000_000))
    with running(config, core, SceneCamera({"empty": np.full((480, 640, 3), 90, np.uint8)}, "empty")) as (app, web):
        yield app, web


def post(web, body=b"", *, headers=None, path="/api/v1/classify", source="127.0.0.1"):
    """POST ``body``; returns (status, headers, parsed JSON)."""
    conn = http.client.HTTPConnection(web.host, web.port, timeout=60, source_address=(source, 0))
    conn.request("POST", path, body=body, headers=headers if headers is not None else BEARER)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data) if data else None


def multipart(filename: str, data: bytes, field: str = "image") -> tuple[bytes, dict]:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {**BEARER, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width: int, height: int, *, bit_depth: int = 8, colour: int = 2, rows: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows, 9))
            + png_chunk(b"IEND", b""))


# --- config -------------------------------------------------------------------------------------------

def test_the_api_is_off_by_default_and_on_only_with_a_long_token(tmp_path):
    api = Config().web.api
    assert (api.enabled, api.token, api.max_pixels, api.workers) == (False, None, 4096 * 4096, 1)
    for text in ("api: {enabled: true}", "api: {enabled: true, token: short-secret}"):
        (tmp_path / "c.yaml").write_text(f"web: {{{text}}}\n")
        with pytest.raises(ConfigError) as exc:
            load_config(tmp_path / "c.yaml")
        assert "web: api.enabled needs api.token of at least 16 characters" in str(exc.value)
        assert "short-secret" not in str(exc.value)
    (tmp_path / "c.yaml").write_text(f"web: {{host: 0.0.0.0, api: {{enabled: true, token: {API_TOKEN}}}}}\n")
    config = load_config(tmp_path / "c.yaml")  # beyond loopback for the API alone: the rest stays local-only
    assert API_TOKEN not in repr(config) and API_TOKEN not in config.model_dump_json()


# --- answers ------------------------------------------------------------------------------------------

def test_answers_are_exactly_what_classify_json_prints(tmp_path, tiny_bundles, core, photos):
    raw = raw_config(tmp_path, tiny_bundles)
    (tmp_path / "maskgate.yaml").write_text(yaml.safe_dump(raw))
    cli = subprocess.run([sys.executable, "-m", "maskgate.cli", "classify", "--json", "--config",
                          str(tmp_path / "maskgate.yaml"), "masked.png", "bare.jpg", "far.png"],
                         cwd=photos, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    with running(Config.model_validate(raw), core, SceneCamera({"e": np.zeros((480, 640, 3), np.uint8)}, "e")) as (
            app, web):
        body, headers = multipart("masked.png", (photos / "masked.png").read_bytes())
        masked = post(web, body, headers=headers)
        bare = post(web, (photos / "bare.jpg").read_bytes(), path="/api/v1/classify?name=bare.jpg",
                     headers={**BEARER, "Content-Type": "image/jpeg"})
        body, headers = multipart("far.png", (photos / "far.png").read_bytes())
        far = post(web, body, headers=headers)
    assert (masked[0], bare[0], far[0]) == (200, 200, 200)
    assert [masked[2], bare[2], far[2]] == expected
    assert (masked[2]["decision"], [f["label"] for f in masked[2]["faces"]]) == ("granted", ["with_mask"])
    assert (bare[2]["decision"], [f["label"] for f in bare[2]["faces"]]) == ("denied", ["without_mask"])
    assert [(r["reason"], r["reason_text"], r["decided_by"]) for r in (masked[2], bare[2], far[2])] == [
        ("granted", "mask worn", 0), ("no_mask", "no mask", 0), ("too_small", Reason.TOO_SMALL.text, None)]
    assert len(far[2]["faces"]) == 1
    assert (bare[2]["width"], bare[2]["height"]) == (640, 480)


def test_a_raw_body_without_a_name_is_called_upload(daemon, photos):
    status, _, record = post(daemon[1], (photos / "bare.jpg").read_bytes())
    assert status == 200 and record["image"] == "upload" and len(record["faces"]) == 1


# --- who may ask --------------------------------------------------------------------------------------

def test_every_caller_needs_the_api_token_loopback_too(tmp_path, tiny_bundles, core, photos):
    raw = raw_config(tmp_path, tiny_bundles)
    raw["web"]["remote"] = {"enabled": True, "token": TOKEN}
    image = (photos / "bare.jpg").read_bytes()
    with running(Config.model_validate(raw), core, SceneCamera({"e": np.zeros((480, 640, 3), np.uint8)}, "e")) as (
            app, web):
        for headers in ({}, {"Authorization": f"Bearer {API_TOKEN[:-1]}X"}, {"Authorization": f"Bearer {TOKEN}"},
                        {"Authorization": API_TOKEN}):
            status, answer_headers, body = post(web, image, headers=headers)
            assert (status, answer_headers["www-authenticate"]) == (401, "Bearer"), headers
            assert "token required" in body["error"] and API_TOKEN not in json.dumps(body)
        assert post(web, image)[0] == 200
        assert post(web, image, source="127.0.0.2")[0] == 200, "another host: the API token is enough"


def test_off_the_api_answers_404_and_is_not_described(tmp_path, core, photos):
    config = Config.model_validate({"camera": {"backend": "scenes"}, "events": {"state_dir": str(tmp_path)},
                                    "web": {"port": 0}})
    with running(config, core, SceneCamera({"e": np.zeros((480, 640, 3), np.uint8)}, "e")) as (app, web):
        status, _, body = post(web, (photos / "bare.jpg").read_bytes())
        assert status == 404 and body == {"error": "the classify API is off (web.api.enabled: false)"}
        conn = http.client.HTTPConnection(web.host, web.port, timeout=10)
        conn.request("GET", "/api/v1/openapi.json")
        assert "/api/v1/classify" not in json.loads(conn.getresponse().read())["paths"]


def test_openapi_description_at_api_v1(daemon):
    web = daemon[1]

    def get(path, source, headers):
        conn = http.client.HTTPConnection(web.host, web.port, timeout=10, source_address=(source, 0))
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("location"), response.read()

    status, _, body = get("/api/v1/openapi.json", "127.0.0.2", BEARER)
    operation = json.loads(body)["paths"]["/api/v1/classify"]["post"]
    assert status == 200 and {"multipart/form-data", "image/jpeg", "image/png"} <= set(
        operation["requestBody"]["content"])
    assert {"200", "401", "413", "422", "429", "503"} <= set(operation["responses"])
    assert get("/api/v1/openapi.json", "127.0.0.2", {})[0] == 401
    assert get("/openapi.json", "127.0.0.1", {})[:2] == (308, "/api/v1/openapi.json")


# --- bad input ----------------------------------------------------------------------------------------

def one_bit_png(side: int) -> bytes:
    """A real, all-black side×side PNG: a few KB on the wire, side² × 3 bytes once decoded."""
    return png(side, side, bit_depth=1, colour=0, rows=(b"\0" * (1 + side // 8 + 1)) * side)


@pytest.mark.parametrize("what, body, status, message", [
    ("not an image", b"GIF89a this is no photo" * 10, 422, "not a JPEG or PNG image"),
    ("nothing at all", b"", 422, "empty: no image data"),
    ("zero-size PNG", png(0, 480), 422, "zero-size image (0×480)"),
    ("truncated JPEG", "bare.jpg:half", 422, "truncated JPEG: no end-of-image marker"),
    ("truncated PNG", "masked.png:half", 422, "truncated PNG: no IEND chunk"),
    ("truncated JPEG, end marker appended", "bare.jpg:half+eoi", 422, "truncated JPEG: the image data ends"),
    ("header claims 100000×100000", png(100_000, 100_000), 413, "image too large: 100000×100000 is 10000.0 MP"),
    ("real 10000×10000 PNG", "one_bit_png", 413, "image too large: 10000×10000 is 100.0 MP, the limit is 1.0 MP"),
    ("body over the limit", b"\xff\xd8\xff" + b"\0" * 2_000_000, 413, "request body over 2000000 bytes"),
])
def test_bad_images_get_a_4xx_with_a_clear_message(daemon, photos, what, body, status, message):
    if body == "one_bit_png":
        body = one_bit_png(10_000)
        assert len(body) < 100_000
    elif isinstance(body, str):
        name, cut = body.split(":")
        body = (photos / name).read_bytes()[: (photos / name).stat().st_size // 2]
        body += b"\xff\xd9" if cut == "half+eoi" else b""
    answer = post(daemon[1], body)
    assert (answer[0], message in answer[2]["error"]) == (status, True), answer
    assert post(daemon[1], (photos / "bare.jpg").read_bytes())[0] == 200, "the workers are fine"


@pytest.mark.parametrize("body, content_type, message", [
    (multipart("x.jpg", b"...", field="photo")[0], f"multipart/form-data; boundary={BOUNDARY}",
     "multipart body without an 'image' field"),
    (multipart("x.jpg", b"...")[0][:-8], f"multipart/form-data; boundary={BOUNDARY}", "no closing boundary"),
    (b"--x--", "multipart/form-data", "with a boundary"),
])
def test_bad_multipart_bodies_are_400(daemon, body, content_type, message):
    status, _, answer = post(daemon[1], body, headers={**BEARER, "Content-Type": content_type})
    assert status == 400 and message in answer["error"]


def test_oversized_bodies_are_refused_before_they_are_read(daemon):
    web = daemon[1]
    conn = http.client.HTTPConnection(web.host, web.port, timeout=10)
    conn.putrequest("POST", "/api/v1/classify")
    for key, value in {**BEARER, "Content-Length": str(50_000_000)}.items():
        conn.putheader(key, value)
    conn.endheaders(b"\xff\xd8\xff" + b"\0" * 1000)  # a 50 MB upload that has barely begun
    response = conn.getresponse()
    assert response.status == 413 and "over 2000000 bytes" in json.loads(response.read())["error"]
    chunked = http.client.HTTPConnection(web.host, web.port, timeout=10)  # no Content-Length: counted as it comes
    chunked.request("POST", "/api/v1/classify", body=(b"\0" * 100_000 for _ in range(30)), headers=BEARER,
                    encode_chunked=True)
    assert chunked.getresponse().status == 413


# --- load ---------------------------------------------------------------------------------------------

def test_rate_limit_per_client_is_429_with_retry_after(tmp_path, tiny_bundles, core, photos):
    config = Config.model_validate(raw_config(tmp_path, tiny_bundles, rate_per_minute=3))
    image = (photos / "bare.jpg").read_bytes()
    with running(config, core, SceneCamera({"e": np.zeros((480, 640, 3), np.uint8)}, "e")) as (app, web):
        assert [post(web, image)[0] for _ in range(3)] == [200, 200, 200]
        status, headers, body = post(web, image)
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 20 and "3 requests a minute" in body["error"]
        assert post(web, image, headers={})[0] == 429, "every request counts, with or without the token"
        assert post(web, image, source="127.0.0.2")[0] == 200, "another client has its own allowance"


def test_50_concurrent_requests_get_200_or_503_and_the_daemon_stays_healthy(tmp_path, tiny_bundles, core, photos):
    config = Config.model_validate(raw_config(tmp_path, tiny_bundles, workers=1, queue=4))
    image = (photos / "masked.png").read_bytes()
    camera = SceneCamera({"bare": door_scene(masked=False)}, "bare", fps=20)
    with running(config, core, camera) as (app, web):
        frames = []
        app.bus.subscribe(FrameProcessed, lambda m: frames.append(m.time), name="test:frames")
        wait_for(lambda: len(frames) > 5, what="frames")
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: post(web, image), range(50)))
        statuses = [a[0] for a in answers]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        assert all(a[1]["retry-after"] == "1" and "busy" in a[2]["error"] for a in answers if a[0] == 503)
        assert all(a[2]["decision"] == "granted" for a in answers if a[0] == 200)
        seen = len(frames)
        time.sleep(1.0)
        assert len(frames) > seen, "the frame loop goes on"
        assert web.healthy() and app.problems() == []
        assert post(web, image)[0] == 200


def test_a_client_refused_mid_upload_reads_its_413_not_a_connection_reset(daemon):
    """After the 413 the server shuts its side and drops the rest of the body for a moment (a lingering close),
    so a client that is still sending reads the answer."""
    body = b"\xff\xd8\xff" + b"\0" * 6_000_000
    answers = [post(daemon[1], body) for _ in range(10)]
    assert [status for status, _, _ in answers] == [413] * 10
    assert all("request body over 2000000 bytes" in answer["error"] for _, _, answer in answers)


def test_a_body_keeps_its_place_until_a_worker_is_done_with_it(tmp_path, tiny_bundles, core, photos, monkeypatch):
    """A caller that stops waiting (the answer timed out) frees no place while its body waits for a worker, so
    at most workers + queue bodies are ever held; once the worker is through them, callers are served again."""
    import maskgate.images
    from maskgate.services.web import classify

    working, stalled, decode = threading.Event(), threading.Event(), maskgate.images.decode_image

    def slow_decode(*args, **kwargs):
        working.set()
        stalled.wait(60)
        return decode(*args, **kwargs)

    monkeypatch.setattr(maskgate.images, "decode_image", slow_decode)
    monkeypatch.setattr(classify, "ANSWER_TIMEOUT", 0.5)
    config = Config.model_validate(raw_config(tmp_path, tiny_bundles, workers=1, queue=2))
    image = (photos / "masked.png").read_bytes()
    with running(config, core, SceneCamera({"empty": np.full((480, 640, 3), 90, np.uint8)}, "empty")) as (app, web):
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(post, web, image)
            assert working.wait(30), "the worker took the first body"
            timed_out = [first.result()] + list(pool.map(lambda _: post(web, image), range(2)))  # … the queue two
        assert [(a[0], "in time" in a[2]["error"]) for a in timed_out] == [(503, True)] * 3
        with socket.create_connection((web.host, web.port), timeout=30) as sock:  # a body announced, never sent
            sock.sendall(f"POST /api/v1/classify HTTP/1.1\r\nHost: {web.host}:{web.port}\r\n"
                         f"Authorization: Bearer {API_TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(4096):  # the server closes after refusing
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"queue place is taken" in answer, \
            "refused before its body is read: the three bodies still hold their places"
        stalled.set()
        assert wait_for(lambda: post(web, image)[0] == 200, what="a place again once the worker is through")
