"""Stream servers for the network-camera tests, each run as its own process so a test can kill it.

    python3 stream_servers.py rtsp PORT CLIP.mp4 [USER PASSWORD]
        GStreamer's RTSP server (Debian: python3-gi, gir1.2-gst-rtsp-server-1.0) at rtsp://127.0.0.1:PORT/stream1;
        every client gets the H.264 clip from its start at its real-time rate; prints each SETUP's
        Transport header ("transport: …") so a test can see whether the client asked for TCP or UDP.
    python3 stream_servers.py mjpeg PORT FRAMES_DIR FPS [USER PASSWORD [STALL_AFTER]]
        multipart/x-mixed-replace MJPEG at http://127.0.0.1:PORT/video.mjpg: the directory's JPEGs in name
        order at FPS, from the first for every client; with STALL_AFTER, the connection stays open but
        silent after that many frames (a hung camera).

Both print "ready" once listening and need only the standard library beyond that.
"""

from __future__ import annotations

import base64
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve_rtsp(port: int, clip: str, user: str | None, password: str | None) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! h264parse'
                       ' ! rtph264pay name=pay0 pt=96 config-interval=1 )')
    if user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/stream1", factory)

    def on_setup(client, context):
        _, transport = context.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
        print(f"transport: {transport}", flush=True)

    server.connect("client-connected", lambda _, client: client.connect("setup-request", on_setup))
    if not server.attach(None):
        sys.exit(f"cannot listen on port {port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


def serve_mjpeg(port: int, frames_dir: str, fps: float, user: str | None, password: str | None,
                stall_after: int | None) -> None:
    frames = [p.read_bytes() for p in sorted(Path(frames_dir).glob("*.jpg"))]
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user is not None else None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if expected and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            start = time.monotonic()
            for i, jpeg in enumerate(frames):
                if i == stall_after:
                    time.sleep(3600)
                time.sleep(max(0.0, start + i / fps - time.monotonic()))
                head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                try:
                    self.wfile.write(head + jpeg + b"\r\n")
                except OSError:  # the client went away
                    return

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    kind, port, source, *rest = sys.argv[1:]
    if kind == "rtsp":
        serve_rtsp(int(port), source, *(rest or [None, None]))
    else:
        fps, *auth = rest
        user, password, stall = (auth + [None, None, None])[:3]
        serve_mjpeg(int(port), source, float(fps), user, password, int(stall) if stall else None)
