"""Latency benchmark of the inference core (``maskgate bench``)."""

from __future__ import annotations

import itertools
import resource
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import MaskgateError
from ..sources import files_or_video
from ..sources.scenes import door_scene
from ..vision.core import InferenceCore


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
    timings: dict[str, dict[str, list[float]]] = {}  # frame size → stage → milliseconds
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or i < 10:
        image = images[i % len(images)]
        start = time.perf_counter()
        result = core.process(image, streaming=True)
        stages = timings.setdefault(f"{image.shape[1]}x{image.shape[0]}", {"detect_ms": [], "classify_ms": [],
                                                                          "total_ms": []})
        stages["total_ms"].append((time.perf_counter() - start) * 1000.0)
        stages["detect_ms"].append(result.detect_ms)
        stages["classify_ms"].append(result.classify_ms)
        i += 1
    every = {stage: [ms for stages in timings.values() for ms in stages[stage]] for stage in STAGES}
    return {
        "frames": i,
        "frame_size": next(iter(timings)) if len(timings) == 1 else "mixed",
        **{stage: _summary(every[stage]) for stage in STAGES},
        "fps": round(1000.0 / float(np.mean(every["total_ms"])), 1),  # the mean: camera frames' passes vary
        "rss_mb": round(peak_rss_mb(), 1),
        "by_size": {size: {"frames": len(stages["total_ms"]), **{k: _summary(v) for k, v in stages.items()}}
                    for size, stages in sorted(timings.items(), key=lambda item: _pixels(item[0]))},
    }


STAGES = ("detect_ms", "classify_ms", "total_ms")


def _pixels(size: str) -> int:
    width, height = size.split("x")
    return int(width) * int(height)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def stage_line(stage: str, summary: dict) -> str:
    """One stage's latency as a report line: "detect    median   12.30 ms   p95   15.00 ms   mean   12.80 ms"."""
    return (f"{stage.removesuffix('_ms'):<9} median {summary['median']:7.2f} ms   p95 {summary['p95']:7.2f} ms"
            + (f"   mean {summary['mean']:7.2f} ms" if "mean" in summary else ""))


def _summary(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3),
            "mean": round(float(np.mean(values)), 3)}


def format_report(report: dict) -> str:
    sizes = report["by_size"]
    lines = [f"{report['frames']} frames of {report['frame_size']}" if len(sizes) == 1 else
             f"{report['frames']} frames of {len(sizes)} sizes (all of them, then each size)"]
    lines += [stage_line(stage, report[stage]) for stage in STAGES]
    lines.append(f"fps       {report['fps']}")
    lines.append(f"peak RSS  {report['rss_mb']} MB")
    if len(sizes) > 1:
        for size, row in sizes.items():
            lines.append(f"{size:>11}  {row['frames']:5d} frames   " + "   ".join(
                f"{stage[:-3]} {row[stage]['median']:6.2f} ms" for stage in STAGES))
    return "\n".join(lines)
