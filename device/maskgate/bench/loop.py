"""Benchmark of the whole daemon (``python -m maskgate.bench.loop``): the App as ``maskgate run`` builds
it — frame loop, controller, mock door, bus, event log, status — on the built-in 640×480 one-face
scene replayed unpaced; prints loop FPS, per-stage latency, peak RSS and RSS over time."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from ..app import App
from ..config import Config, changed
from ..messages import FrameProcessed
from ..sources import make_source
from .latency import peak_rss_mb, stage_line

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES / 2**20


def soak(config: Config, *, seconds: float, rss_every: float = 5.0, setup=None, paced: bool = False) -> dict:
    """Run the App for ``seconds``; ``setup(app)`` may attach more (viewers, a broker) before it starts."""
    # Bounded samples, so the benchmark's own bookkeeping does not show up as the daemon's memory growth.
    stages: dict[str, deque] = {"detect_ms": deque(maxlen=20_000), "classify_ms": deque(maxlen=20_000)}
    rss: list[tuple[float, float]] = []
    app = App(config, open_source=lambda: make_source(config.camera, paced=paced))
    if setup is not None:
        setup(app)

    def observe(message: FrameProcessed) -> None:  # a latest-only subscriber: samples, never slows the loop
        stages["detect_ms"].append(message.result.detect_ms)
        stages["classify_ms"].append(message.result.classify_ms)

    app.bus.subscribe(FrameProcessed, observe, name="bench", latest=True)
    frames = itertools.count()

    def count(_message) -> bool:  # counted in the loop's thread; nothing is queued
        next(frames)
        return False

    app.bus.subscribe(FrameProcessed, lambda m: None, name="bench:count", when=count)
    start = time.monotonic()

    def sample_rss() -> None:
        while not app.stop_event.wait(rss_every):
            rss.append((time.monotonic() - start, current_rss_mb()))
        rss.append((time.monotonic() - start, current_rss_mb()))

    threading.Thread(target=sample_rss, daemon=True).start()
    threading.Timer(seconds, app.stop).start()
    app.run()
    elapsed = time.monotonic() - start
    warm_after = min(30.0, seconds / 4)
    warm = [r for t, r in rss if t >= warm_after] or [rss[-1][1]]
    return {
        "frames": (n := next(frames)),
        "loop_fps": round(n / elapsed, 1),
        **{k: {"median": round(float(np.median(list(v))), 3), "p95": round(float(np.percentile(list(v), 95)), 3)}
           for k, v in stages.items() if v},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(warm[-1] - warm[0], 2),
        "rss_growth_window_s": round(seconds - warm_after),
        "rss_mb_over_time": [(round(t), round(r, 1)) for t, r in rss],
    }


def bench_config(state_dir: Path, *, camera_fps: float | None = None) -> Config:
    """The daemon on the built-in scene: unpaced (as fast as it goes), or paced at ``camera_fps`` like a camera."""
    return Config.model_validate({
        "camera": {"backend": "scenes", "replay_loop": True, "replay_fps": camera_fps or 10.0},
        "gpio": {"pin_factory": "mock"},
        "events": {"state_dir": str(state_dir)},
        "web": {"port": 0},  # the kiosk server runs, as it does by default, on a free port
        "log_level": "warning",
    })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (600 for the record)")
    parser.add_argument("--model", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as state:
        config = changed(bench_config(Path(state)), classifier={"model_dir": args.model})
        report = soak(config, seconds=args.seconds)
    print(json.dumps(report) if args.json else format_report(report, seconds=args.seconds))


def once_web_listens(app: App, start) -> None:
    """``start(web)`` on a thread of its own as soon as the daemon's web server listens (a ``soak`` setup's aid)."""
    web = next(s for s in app.services if s.name == "web")

    def wait() -> None:
        while not web.server.started and not app.stop_event.wait(0.05):
            pass
        start(web)

    threading.Thread(target=wait, daemon=True).start()


def print_comparison(report: dict, *, loaded: str, idle: str, as_json: bool) -> None:
    """``report`` with the ratio of the ``loaded`` run's loop FPS to the ``idle`` one's, as JSON or a line a run."""
    idle_fps = report[idle]["loop_fps"]
    report["ratio"] = round(report[loaded]["loop_fps"] / idle_fps, 3) if idle_fps else None
    print(json.dumps(report) if as_json else "\n".join(f"{k:<12} {v}" for k, v in report.items()))


def format_report(report: dict, *, seconds: float) -> str:
    """The soak's figures for people: rates, latencies, memory, and memory over time (at most 12 samples)."""
    samples = report["rss_mb_over_time"]
    shown = samples[:: max(1, -(-len(samples) // 12))]
    if shown[-1] != samples[-1]:
        shown.append(samples[-1])
    return "\n".join([
        f"{report['frames']} frames in {seconds:g} s: {report['loop_fps']} fps through the whole loop",
        *(stage_line(stage, report[stage]) for stage in ("detect_ms", "classify_ms") if stage in report),
        f"peak RSS  {report['peak_rss_mb']} MB; growth {report['rss_growth_mb']:+.2f} MB over the last "
        f"{report['rss_growth_window_s']} s",
        "RSS over time: " + ", ".join(f"{t} s {mb} MB" for t, mb in shown),
    ])


if __name__ == "__main__":
    main()
