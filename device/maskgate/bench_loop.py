"""Benchmark of the whole door loop (``python -m maskgate.bench_loop``): replays the built-in
640×480 one-face scene unpaced through source → core → decider → mock door → event log, and prints
loop FPS, per-stage latency, peak RSS and RSS growth over the run."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import peak_rss_mb
from .vision.classifier import MaskClassifier
from .config import CameraConfig, DecisionConfig, GpioConfig
from .loop import Daemon
from .access.decider import Decider
from .vision.detector import FaceDetector
from .hardware.door import build_door
from .records.events import EventLog
from .vision.core import InferenceCore
from .sources import make_source


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (600 for the record)")
    parser.add_argument("--model", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    core = InferenceCore(FaceDetector(), MaskClassifier(args.model))
    stage: dict[str, list[float]] = {"detect_ms": [], "classify_ms": []}
    rss: list[tuple[float, float]] = []
    start = time.monotonic()
    deadline = start + args.seconds

    with tempfile.TemporaryDirectory() as state, build_door(GpioConfig(pin_factory="mock")) as door:
        daemon = Daemon(core=core, decider=Decider(DecisionConfig(), threshold=core.classifier.threshold), door=door,
                        events=EventLog(Path(state)),
                        open_source=lambda: make_source(CameraConfig(backend="scenes", replay_loop=True), paced=False))

        def observe(decision, result, unlocked):
            stage["detect_ms"].append(result.detect_ms)
            stage["classify_ms"].append(result.classify_ms)
            now = time.monotonic()
            if not rss or now - rss[-1][0] >= 5:
                rss.append((now, current_rss_mb()))
            if now >= deadline:
                daemon.stop()

        daemon.on_decision = observe
        daemon.run()
    frames = len(stage["detect_ms"])
    warm = [r for t, r in rss if t - start >= min(30.0, args.seconds / 4)] or [rss[-1][1]]
    report = {
        "frames": frames,
        "loop_fps": round(frames / (time.monotonic() - start), 1),
        **{k: {"median": round(float(np.median(v)), 3), "p95": round(float(np.percentile(v, 95)), 3)}
           for k, v in stage.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(warm[-1] - warm[0], 2),
        "rss_growth_window_s": round(args.seconds - min(30.0, args.seconds / 4)),
    }
    print(json.dumps(report) if args.json else "\n".join(f"{k:<20} {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
