"""The web server under a hostile client on the LAN (127.0.0.2 and up play other hosts): body floods leave
the daemon's memory bounded, descriptor exhaustion does not kill the accept loop, a page from another
origin (or a rebound DNS name) gets nothing, X-Forwarded-For is believed from trusted proxies only, and
token guesses lock the guesser out for longer each time. Floods run against a real daemon process,
whose peak RSS (VmHWM) is read from /proc."""

from __future__ import annotations

import http.client
import http.server
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from maskgate.config import changed, load_config
from maskgate.errors import ConfigError
from maskgate.services.web.limits import Hosts, Throttle, client_key
from test_kiosk_browser import browser, chromium  # noqa: F401 (the fixture)
from web_rig import TOKEN, SceneCamera, running, wait_for, web_config

API_TOKEN = "api-token-0123456789abcdef"
MB = 1 << 20
# What a flood may make the daemon hold (peak RSS growth): the bodies it admitted, and per open connection what
# arrives before uvicorn pauses its reading (its 64 KB high-water mark plus one 256 KB socket read), plus a margin
# for the interpreter (threads, allocator). A server that read what it is offered would hold hundreds of MB.
PER_CONNECTION = (64 + 256) * 1024
INTERPRETER = 8 * MB


def flood_bound(*, bodies: int, body_bytes: int, connections: int) -> int:
    return bodies * body_bytes + connections * PER_CONNECTION + INTERPRETER
CHUNK = b"\0" * 65536


# --- a daemon process ---------------------------------------------------------------------------------

class Daemon:
    def __init__(self, process: subprocess.Popen, log: Path, port: int):
        self.process, self.log, self.port = process, log, port

    def rss(self, field: str = "VmRSS") -> int:
        """Bytes, from /proc: VmRSS now, VmHWM the peak since ``reset_peak``."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) * 1024

    def settled(self) -> bool:
        before = self.rss()
        time.sleep(2)
        return abs(self.rss() - before) < MB

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def daemon_process(tmp_path, tiny_bundles, *, nofile: int | None = None, **web):
    """``maskgate run`` in a process of its own (mock GPIO, looping demo scenes, the tiny model)."""
    config = {"camera": {"backend": "scenes", "replay_loop": True}, "gpio": {"pin_factory": "mock"},
              "classifier": {"model_dir": str(tiny_bundles["int8"]), "threshold": 0.5},
              "control": {"enabled": False}, "events": {"state_dir": str(tmp_path / "state")},
              "web": {"port": 0, **web}}
    (tmp_path / "maskgate.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "daemon.log"

    def limit_descriptors():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "maskgate.cli", "run", "--config",
                                    str(tmp_path / "maskgate.yaml")], stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=limit_descriptors)
    try:
        found = wait_for(lambda: re.search(r"kiosk page at http://127\.0\.0\.1:(\d+)/", log.read_text())
                         or process.poll() is not None, timeout=120, what="the daemon's web server")
        assert process.poll() is None, log.read_text()
        daemon = Daemon(process, log, int(found.group(1)))
        wait_for(lambda: status(daemon.port) == 200, what="status")
        wait_for(daemon.settled, timeout=90, what="the daemon's memory to settle after its start")
        yield daemon
    finally:
        process.terminate()
        process.wait(30)


def status(port: int, source: str = "127.0.0.1"):
    """GET /api/v1/status: the HTTP status, or the name of the error."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
        conn.request("GET", "/api/v1/status")
        return conn.getresponse().status
    except OSError as exc:
        return type(exc).__name__


def flood(port: int, path: str, size: int, *, headers: dict | None = None, chunked: bool = False) -> bytes:
    """POST ``size`` bytes as fast as the server takes them, reading its answer meanwhile (a server that
    refuses closes before the body is all sent); returns the answer's start, b"" if none came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = {"Host": f"127.0.0.1:{port}", **(headers or {}),
            **({"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(size)})}
    answer = []

    def read():
        try:
            answer.append(sock.recv(64))
        except OSError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in head.items())
                     + b"\r\n")
        sent = 0
        while sent < size and not answer:
            piece = CHUNK[:size - sent]
            sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked and not answer:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server answered and hung up
        pass
    finally:
        reader.join(60)
        sock.close()
    return answer[0] if answer else b""


# --- bounded before read ------------------------------------------------------------------------------

def test_login_body_floods_leave_memory_bounded(tmp_path, tiny_bundles):
    with daemon_process(tmp_path, tiny_bundles, remote={"enabled": True, "token": TOKEN}) as daemon:
        before = daemon.rss()
        daemon.reset_peak()
        assert flood(daemon.port, "/login", 300_000_000, chunked=True).startswith(b"HTTP/1.1 413")
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: flood(daemon.port, "/login", 100_000_000), range(4)))
        assert all(a.startswith(b"HTTP/1.1 413") for a in answers), answers
        assert daemon.rss("VmHWM") - before <= flood_bound(bodies=0, body_bytes=0, connections=5)
        assert status(daemon.port) == 200


def test_classify_floods_take_a_place_before_the_body_and_leave_memory_bounded(tmp_path, tiny_bundles):
    with daemon_process(tmp_path, tiny_bundles, api={"enabled": True, "token": API_TOKEN, "workers": 1,
                                                     "queue": 2, "rate_per_minute": 100_000}) as daemon:
        before = daemon.rss()
        daemon.reset_peak()
        headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "image/jpeg"}
        with ThreadPoolExecutor(100) as pool:  # 100 bodies of 9.5 MB, under max_body_bytes: 950 MB offered
            answers = list(pool.map(lambda _: flood(daemon.port, "/api/v1/classify", 9_500_000, headers=headers),
                                    range(100)))
        codes = [a[9:12].decode() for a in answers]
        assert set(codes) <= {"422", "503"} and "503" in codes, codes  # a body of zeros is no JPEG: 422
        assert daemon.rss("VmHWM") - before <= flood_bound(bodies=1 + 2, body_bytes=9_500_000, connections=100)
        assert status(daemon.port) == 200


def test_every_route_caps_its_body_and_its_pauses(tmp_path, core, scenes):
    config = web_config(tmp_path, remote={"enabled": True, "token": TOKEN}, limits={"header_seconds": 1})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        for path in ("/login", "/api/v1/status", "/nowhere"):
            assert flood(web.port, path, 50 * MB).startswith(b"HTTP/1.1 413"), path
        assert flood(web.port, "/login", 50 * MB, chunked=True).startswith(b"HTTP/1.1 413")
        with socket.create_connection((web.host, web.port), timeout=10) as slow:  # a body that stops coming
            slow.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\ntoken=")
            assert slow.recv(64).startswith(b"HTTP/1.1 408")


# --- bounded connections ------------------------------------------------------------------------------

def half_open(port: int, source: str) -> socket.socket | None:
    """A connection whose request headers never end, or None when it could not be opened."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        return sock
    except OSError:
        return None


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


def test_a_half_open_flood_from_one_host_leaves_others_served(tmp_path, core, scenes):
    config = web_config(tmp_path, limits={"connections_per_client": 20, "header_seconds": 2})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        attackers = [s for s in (half_open(web.port, "127.0.0.2") for _ in range(60)) if s]
        try:
            assert status(web.port) == 200, "this machine is served during the flood"
            assert status(web.port, "127.0.0.3") == 401, "so is another host (asked for its token)"
            shed = sum(closed_by_server(s, 0.5) for s in attackers)
            assert shed >= 60 - 20, "beyond the per-client cap, closed at once"
            assert all(closed_by_server(s, 10) for s in attackers), "the rest when their headers are late"
        finally:
            for sock in attackers:
                sock.close()


def test_descriptor_exhaustion_is_survived_and_logged_once(tmp_path, tiny_bundles):
    with daemon_process(tmp_path, tiny_bundles, limits={"header_seconds": 30}) as daemon:
        spare = 40  # descriptors left to the daemon, with 128 connections coming at it
        limit = daemon.descriptors() + spare
        resource.prlimit(daemon.process.pid, resource.RLIMIT_NOFILE, (limit, limit))
        logged = len(daemon.text())
        attackers = [s for s in (half_open(daemon.port, f"127.0.0.{2 + i // 32}") for i in range(128)) if s]
        try:
            wait_for(lambda: "out of file descriptors" in daemon.text()[logged:], what="descriptors to run out")
            assert len(attackers) > 40
        finally:
            for sock in attackers:
                sock.close()
        wait_for(lambda: status(daemon.port) == 200, timeout=30, what="status answered again")
        assert status(daemon.port, "127.0.0.30") == 401, "another host is answered too (asked for its token)"
        text = daemon.text()[logged:]
        assert text.count("out of file descriptors") == 1 and "Traceback" not in text, text[-3000:]
        assert len(text.splitlines()) <= 5, text[-3000:]
        assert daemon.process.poll() is None


def test_a_flood_of_malformed_requests_is_logged_once(tmp_path, tiny_bundles):
    with daemon_process(tmp_path, tiny_bundles) as daemon:
        logged = len(daemon.text())
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=10, source_address=("127.0.0.2", 0)) as s:
                s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                assert s.recv(64).startswith(b"HTTP/1.1 400")
        assert status(daemon.port) == 200
        wait_for(lambda: "Invalid HTTP request" in daemon.text()[logged:], what="the first one logged")
        assert daemon.text()[logged:].count("Invalid HTTP request") == 1


# --- same origin only ---------------------------------------------------------------------------------

def request(web, path, *, method="GET", headers=None, body=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection(web.host, web.port, timeout=10, source_address=(source, 0))
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def ws_status(web, headers) -> int:
    try:
        with connect(f"ws://{web.host}:{web.port}/api/v1/live", additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_unknown_hosts_and_cross_origin_writes_get_403(tmp_path, core, scenes):
    config = web_config(tmp_path, allowed_hosts=["door1.example"], remote={"enabled": True, "token": TOKEN})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        port = web.port
        for host in ("evil.example", f"evil.example:{port}", "door1.example.evil.example", ""):
            assert request(web, "/api/v1/status", headers={"Host": host})[0] == 403, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "door1.example", f"DOOR1.example:{port}", "[::1]"):
            assert request(web, "/api/v1/status", headers={"Host": host})[0] == 200, host
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "null", f"https://127.0.0.1:{port}"):
            assert request(web, "/login", method="POST", body=f"token={TOKEN}",
                           headers={**form, "Origin": origin})[0] == 403, origin
            assert ws_status(web, {"Origin": origin}) == 403, origin
        assert request(web, "/login", method="POST", body=f"token={TOKEN}",
                       headers={**form, "Origin": f"http://127.0.0.1:{port}"})[0] == 303
        assert ws_status(web, {"Origin": f"http://127.0.0.1:{port}"}) == 101
        assert ws_status(web, {}) == 101, "a client that is no browser sends no Origin"


class AttackerPage(http.server.BaseHTTPRequestHandler):
    """Another origin's page: opens the door's live WebSocket and asks for its status, writing down what
    comes back in ``window.stolen``."""

    target = ""

    def do_GET(self):
        body = f"""<!doctype html><title>evil</title><script>
        window.stolen = {{messages: 0, closed: false, status: null}};
        const ws = new WebSocket("ws://{self.target}/api/v1/live?preview=1");
        ws.onmessage = () => window.stolen.messages++;
        ws.onclose = ws.onerror = () => window.stolen.closed = true;
        fetch("http://{self.target}/api/v1/status").then(r => r.text()).then(t => window.stolen.status = t,
                                                                             e => window.stolen.status = "refused");
        </script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_page_from_another_origin_gets_nothing_in_chromium(chromium, tmp_path, core, scenes):  # noqa: F811
    with running(web_config(tmp_path), core, SceneCamera(scenes, "bare")) as (app, web), browser((800, 480)) as driver:
        AttackerPage.target = f"127.0.0.1:{web.port}"
        evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AttackerPage)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        try:
            driver.get(f"http://127.0.0.1:{evil.server_address[1]}/")
            stolen = wait_for(lambda: (lambda s: s if s["closed"] and s["status"] else None)(
                driver.execute_script("return window.stolen")), what="the attacker's requests to end")
            assert stolen == {"messages": 0, "closed": True, "status": "refused"}
            assert web.feed.channel.viewers == set()

            # The same script on the door's own page: the test can tell a page that gets something.
            driver.get(web.url + "/")
            driver.execute_script(f"""window.stolen = {{messages: 0}};
                new WebSocket("ws://{AttackerPage.target}/api/v1/live?preview=1").onmessage =
                    () => window.stolen.messages++;""")
            wait_for(lambda: driver.execute_script("return window.stolen.messages") >= 2, what="own page's pushes")
        finally:
            evil.shutdown()


def test_a_rebound_dns_name_gets_403_in_chromium(chromium, tmp_path, core, scenes):  # noqa: F811
    """DNS rebinding: evil.example, after its page loaded, resolves to the door; every request says
    ``Host: evil.example``."""
    with running(web_config(tmp_path), core, SceneCamera(scenes, "bare")) as (app, web), \
            browser((800, 480), resolve={"evil.example": "127.0.0.1"}) as driver:
        origin = f"http://evil.example:{web.port}"
        driver.get(origin + "/")
        assert "unknown host" in driver.find_element("css selector", "body").text
        driver.execute_script(f"""window.stolen = {{messages: 0, closed: false, status: null}};
            const ws = new WebSocket("ws://evil.example:{web.port}/api/v1/live?preview=1");
            ws.onmessage = () => window.stolen.messages++;
            ws.onclose = () => window.stolen.closed = true;
            fetch("/api/v1/status").then(r => window.stolen.status = r.status);""")
        stolen = wait_for(lambda: (lambda s: s if s["closed"] and s["status"] else None)(
            driver.execute_script("return window.stolen")), what="the rebound page's requests to end")
        assert stolen == {"messages": 0, "closed": True, "status": 403}
        assert web.feed.channel.viewers == set()


# --- proxies and throttles ----------------------------------------------------------------------------

def test_x_forwarded_for_is_believed_from_trusted_proxies_only(tmp_path, tiny_bundles, core, scenes):
    config = web_config(tmp_path, remote={"enabled": True, "token": TOKEN}, trusted_proxies=["127.0.0.1"],
                        api={"enabled": True, "token": API_TOKEN, "rate_per_minute": 3})
    config = changed(config, classifier={"model_dir": tiny_bundles["int8"]})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        rotated = [request(web, "/api/v1/classify", method="POST", body=b"x", source="127.0.0.2",
                           headers={**bearer, "X-Forwarded-For": f"10.0.0.{i}"})[0] for i in range(6)]
        assert rotated == [422, 422, 422, 429, 429, 429], "an untrusted peer's X-Forwarded-For is ignored"
        assert request(web, "/api/v1/status", source="127.0.0.2", headers={"X-Forwarded-For": "127.0.0.1"})[0] == 401
        behind_proxy = [request(web, "/api/v1/classify", method="POST", body=b"x",
                                headers={**bearer, "X-Forwarded-For": f"10.0.0.{i}"})[0] for i in range(6)]
        assert behind_proxy == [422] * 6, "through the trusted proxy each client has its own allowance"
        assert request(web, "/api/v1/status", headers={"X-Forwarded-For": "10.0.0.9"})[0] == 401, \
            "a remote client behind a local proxy is remote"
        assert request(web, "/api/v1/status")[0] == 200


def test_token_guesses_lock_the_guesser_out_for_longer_each_time(tmp_path, core, scenes):
    config = web_config(tmp_path, remote={"enabled": True, "token": TOKEN})
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    def login(token, source="127.0.0.2"):
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10, source_address=(source, 0))
        conn.request("POST", "/login", body=f"token={token}", headers=form)
        response = conn.getresponse()
        response.read()
        return response.status, int(response.getheader("retry-after") or 0)

    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        assert [login(f"guess-{i}")[0] for i in range(6)] == [401] * 6
        first = login("guess-7")
        assert first[0] == 429 and first[1] >= 1
        assert login(TOKEN)[0] == 429, "locked out: not even the right token is tried"
        wait_for(lambda: login("guess-8")[0] == 401, timeout=first[1] + 10, what="the first lockout to end")
        second = login("guess-9")
        assert second[0] == 429 and second[1] > first[1], (first, second)
        assert login(TOKEN, source="127.0.0.3")[0] == 303, "other clients are not locked out"
        assert request(web, "/api/v1/status", source="127.0.0.2", headers={"Authorization": f"Bearer {TOKEN}"})[0] \
            == 429, "a bearer token is the same guess"

        with ThreadPoolExecutor(30) as pool:  # guesses sent at once count too
            parallel = list(pool.map(lambda i: login(f"p-{i}", source="127.0.0.4")[0], range(30)))
        assert parallel.count(401) == 6 and parallel.count(429) == 24, parallel


def test_an_ipv6_host_counts_as_one_client_across_its_64():
    """A host on IPv6 may use any address of its /64: limits and lockouts count the /64."""
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1" and client_key("::1") == "::1"
    throttle = Throttle(free=1)
    assert throttle.attempt("2001:db8::1") == 0.0 and throttle.attempt("2001:db8::2") == 0.0
    assert throttle.attempt("2001:db8::3") > 0, "the third guess from the same /64 is locked out"
    assert throttle.attempt("2001:db8:0:1::1") == 0.0


@pytest.mark.parametrize("web, message", [
    ("allowed_hosts: ['http://door1.local']", "web.allowed_hosts: 'http://door1.local' is not a host name or address"),
    ("allowed_hosts: ['*']", "web.allowed_hosts: '*' is not a host name or address"),
    ("trusted_proxies: [nginx]", "web.trusted_proxies: 'nginx' is not an address or network"),
    ("limits: {connections: 5}", "web.limits.connections: Input should be greater than or equal to 8"),
])
def test_bad_web_limits_are_refused_in_one_line(tmp_path, web, message):
    path = tmp_path / "maskgate.yaml"
    path.write_text(f"web: {{{web}}}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_the_bound_address_is_a_host_name_but_a_wildcard_bind_names_none():
    assert Hosts([], "192.0.2.5").allows("192.0.2.5") and not Hosts([], "192.0.2.5").allows("192.0.2.6")
    for wildcard in ("0.0.0.0", "::"):
        assert not Hosts([], wildcard).allows(wildcard), "a client must name a host the door was told about"
    assert Hosts(["door1.local"], "::").allows("door1.local") and Hosts([], "::").allows("localhost")
