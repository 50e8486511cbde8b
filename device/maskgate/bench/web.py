"""Cost of watching (``python -m maskgate.bench.web``): the whole daemon as ``bench.loop`` runs it, with
its web server on a free loopback port, first with no viewer, then with ``--viewers`` clients that
each take the live status and JPEG previews in a process of its own; prints loop FPS for both and their ratio."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from ..config import changed
from .loop import bench_config, once_web_listens, print_comparison, soak


VIEWER = """
import sys, time
from websockets.sync.client import connect
url, seconds = sys.argv[1], float(sys.argv[2])
count, end = 0, time.monotonic() + seconds
try:
    with connect(url, max_size=2**23) as ws:
        while time.monotonic() < end:
            try:
                ws.recv(timeout=0.5)
                count += 1
            except TimeoutError:
                pass
except Exception:  # the daemon stopped first
    pass
print(count)
"""


def viewers(count: int, seconds: float, processes: list):
    """A ``soak`` setup: ``count`` preview viewers, each its own process (as a browser would be)."""

    def connect_all(web) -> None:
        url = f"ws://{web.host}:{web.port}/api/v1/live?preview=1"
        processes.extend(subprocess.Popen([sys.executable, "-c", VIEWER, url, str(seconds)], stdout=subprocess.PIPE,
                                          text=True) for _ in range(count))

    def setup(app) -> None:
        once_web_listens(app, connect_all)

    return setup


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="per run (default 30)")
    parser.add_argument("--viewers", type=int, default=3)
    parser.add_argument("--preview-fps", type=float, default=10.0)
    parser.add_argument("--camera-fps", type=float, help="pace the scene like a camera (default: unpaced, flat out)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {}
    for count in (0, args.viewers):
        processes: list[subprocess.Popen] = []
        with tempfile.TemporaryDirectory() as state:
            config = changed(bench_config(Path(state), camera_fps=args.camera_fps),
                             web={"port": 0, "preview_fps": args.preview_fps})
            result = soak(config, seconds=args.seconds, paced=args.camera_fps is not None, setup=viewers(count, args.seconds, processes))
        received = [int(p.communicate(timeout=30)[0] or 0) for p in processes]
        report[f"{count}_viewers"] = {"loop_fps": result["loop_fps"], "messages_per_viewer": received,
                                      "peak_rss_mb": result["peak_rss_mb"]}
    print_comparison(report, loaded=f"{args.viewers}_viewers", idle="0_viewers", as_json=args.json)


if __name__ == "__main__":
    main()
