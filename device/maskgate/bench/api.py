"""Cost of the classify API (``python -m maskgate.bench.api``): the whole daemon as ``bench.loop`` runs it,
with the classify API on, first with no caller, then with ``--api-load`` clients (threads of one process of
their own, at nice 19 as they stand in for other machines) posting the door scene as a JPEG back to back;
prints loop FPS for both, their ratio, and how the API answered (counts by HTTP status, answers a second)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from ..config import changed
from ..sources.scenes import door_scene
from .loop import bench_config, once_web_listens, print_comparison, soak

TOKEN = "bench-token-0123456789"
CLIENTS = """
import collections, http.client, json, os, sys, threading, time
os.nice(19)  # the callers stand in for other machines: they take only CPU the daemon leaves
host, port, token, seconds, count, image = sys.argv[1:7]
body, end = open(image, "rb").read(), time.monotonic() + float(seconds)
statuses = collections.Counter()

def client():
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("POST", "/api/v1/classify", body=body,
                         headers={"Authorization": "Bearer " + token, "Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
            statuses[response.status] += 1
            if response.status == 503:
                time.sleep(0.05)
            conn.close()
        except OSError:  # the daemon stopped first
            return

threads = [threading.Thread(target=client) for _ in range(int(count))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(statuses))
"""


def api_clients(count: int, seconds: float, image: Path, processes: list):
    """A ``soak`` setup: ``count`` clients posting ``image`` for ``seconds``, in a process of their own."""

    def start(web) -> None:
        argv = [sys.executable, "-c", CLIENTS, web.host, str(web.port), TOKEN, str(seconds), str(count), str(image)]
        processes.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))

    def setup(app) -> None:
        if count:
            once_web_listens(app, start)

    return setup


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="per run (default 30)")
    parser.add_argument("--api-load", type=int, default=8, metavar="N", help="concurrent clients (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="web.api.workers (default 1)")
    parser.add_argument("--queue", type=int, default=4, help="web.api.queue (default 4)")
    parser.add_argument("--camera-fps", type=float, help="pace the scene like a camera (default: unpaced, flat out)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "door.jpg"
        cv2.imwrite(str(image), door_scene(masked=False))
        for count in (0, args.api_load):
            processes: list[subprocess.Popen] = []
            config = changed(bench_config(Path(folder) / f"state{count}", camera_fps=args.camera_fps),
                             web={"port": 0, "api": {"enabled": True, "token": TOKEN, "rate_per_minute": 100_000,
                                                     "workers": args.workers, "queue": args.queue}})
            result = soak(config, seconds=args.seconds, paced=args.camera_fps is not None, setup=api_clients(count, args.seconds, image, processes))
            answers = [json.loads(p.communicate(timeout=60)[0] or "{}") for p in processes]
            statuses = {int(k): v for counts in answers for k, v in counts.items()}
            report[f"{count}_clients"] = {"loop_fps": result["loop_fps"], "api_answers": statuses,
                                          "api_200_per_s": round(statuses.get(200, 0) / args.seconds, 1),
                                          "peak_rss_mb": result["peak_rss_mb"]}
    print_comparison(report, loaded=f"{args.api_load}_clients", idle="0_clients", as_json=args.json)


if __name__ == "__main__":
    main()
