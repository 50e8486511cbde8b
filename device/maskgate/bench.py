"""Latency benchmark of the inference core (``maskgate bench``)."""

from __future__ import annotations

import itertools
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .errors import MaskgateError
from .vision.core import InferenceCore
from .sources.scenes import door_scene
from .sources import files_or_video


def benchmark_frames(source: Path | None) -> list[np.ndarray]:
    """The frames to cycle through: the built-in scene, or up to 300 from images or a video."""
    if source is None:
        return [door_scene()]
    frames = list(itertools.islice(files_or_video(str(source))(), 300))
    if not frames:
        raise MaskgateError(f"{source}: no frames found")
    return frames


def run_benchmark(core: InferenceCore, *, frames: Path | None, seconds: float) -> dict:
    images = benchmark_frames(frames)
    for image in images[:3]:  # warm-up: XNNPACK packs weights on first invoke
        core.process(image, streaming=True)
    detect, classify, total = [], [], []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or i < 10:
        start = time.perf_counter()
        result = core.process(images[i % len(images)], streaming=True)
        total.append((time.perf_counter() - start) * 1000.0)
        detect.append(result.detect_ms)
        classify.append(result.classify_ms)
        i += 1
    median_total = float(np.median(total))
    return {
        "frames": i,
        "frame_size": f"{images[0].shape[1]}x{images[0].shape[0]}",
        "detect_ms": _summary(detect),
        "classify_ms": _summary(classify),
        "total_ms": _summary(total),
        "fps": round(1000.0 / median_total, 1),
        "rss_mb": round(peak_rss_mb(), 1),
    }


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _summary(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3)}


def format_report(report: dict) -> str:
    lines = [f"{report['frames']} frames of {report['frame_size']}"]
    for stage in ("detect_ms", "classify_ms", "total_ms"):
        s = report[stage]
        lines.append(f"{stage[:-3]:<9} median {s['median']:7.2f} ms   p95 {s['p95']:7.2f} ms")
    lines.append(f"fps       {report['fps']}")
    lines.append(f"peak RSS  {report['rss_mb']} MB")
    return "\n".join(lines)
