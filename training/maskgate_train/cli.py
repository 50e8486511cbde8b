"""``maskgate-train``: prepare → train → evaluate → export, or all at once; plus ``collect``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from maskgate.vision.classifier import LABELS, default_bundle_dir
from maskgate.errors import MaskgateError

from .errors import DataError
from .imagenet import PORTED_FILE, TFLITE_FILE, run_port
from .recipe import run_evaluate, run_export, run_holdout, run_prepare, run_train, run_train_nose
from .train import Hyperparameters, find_imagenet_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCES = ["scenes", "chandrikadeb7"]  # licensed: may train the shipped model
HELDOUT_SOURCES = ["ilc2021", "dsmasters", "rmfd"]  # research/, no licence: measured, never trained on
DEFAULT_TEMPLATES = REPO_ROOT.parent / "shared" / "data" / "mask-templates"
DEFAULT_IMAGENET_TFLITE = REPO_ROOT.parent / "shared" / "models" / "imagenet" / TFLITE_FILE
BACKBONES = (0.35, 1.0)  # MobileNetV2 widths with offline ImageNet weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskgate-train", description="Train and export maskgate's mask classifier.")
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    _add_recipe_steps(steps)
    _add_measurements(steps)
    _add_collect(steps)
    return parser


def _common(p, *, data=False, model=False):
    """The options every recipe step shares; ``data``: where the photos are; ``model``: how to train."""
    p.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "maskgate-train",
                   help="where crops, manifest and the float model go (default ~/.cache/maskgate-train)")
    p.add_argument("--exclude-source", action="append", default=[], metavar="NAME",
                   help="leave a source out of train and test (e.g. to measure on unseen photos)")
    if data:
        p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                       help="data root with faces/<source>/<class>/ and scenes/ (default ../shared/data)")
        p.add_argument("--sources", nargs="+", default=DEFAULT_SOURCES, metavar="NAME")
        p.add_argument("--heldout-sources", nargs="*", default=HELDOUT_SOURCES, metavar="NAME",
                       help="research/<NAME> sets cropped for measuring only, never for training")
        p.add_argument("--input-size", type=int, default=128, choices=range(64, 225), metavar="PX")
        p.add_argument("--margin", type=float, default=0.2)
    if model:
        p.add_argument("--keras-home", type=Path, default=REPO_ROOT.parent / "shared" / "keras",
                       help="folder with models/<ImageNet .h5> (default ../shared/keras)")
        p.add_argument("--no-imagenet", action="store_true", help="train from scratch (tests only)")
        p.add_argument("--backbone", type=float, default=Hyperparameters.alpha, choices=BACKBONES,
                       help="the face model's MobileNetV2 width: 0.35 (ImageNet .h5 from --keras-home) or 1.0 "
                            "(ImageNet weights ported once from --imagenet-tflite into the work dir; the "
                            "nose check stays 0.35)")
        p.add_argument("--imagenet-tflite", type=Path, default=DEFAULT_IMAGENET_TFLITE,
                       help="int8 MobileNetV2-1.0 ImageNet TFLite model the 1.0 backbone is ported from")
        p.add_argument("--fine-tune-from", default=Hyperparameters.fine_tune_from, metavar="LAYER",
                       help="the face model's backbone is fine-tuned from this layer on "
                            "(default %(default)s; earlier = deeper)")
        p.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES,
                       help="MaskTheFace mask templates for synthetic masks (default ../shared/data/mask-templates)")
        p.add_argument("--head-epochs", type=int, default=Hyperparameters.head_epochs)
        p.add_argument("--fine-tune-epochs", type=int, default=Hyperparameters.fine_tune_epochs)
        p.add_argument("--seed", type=int, default=Hyperparameters.seed,
                       help="training seed (runs differ by several points: compare variants over seeds)")
        p.add_argument("--teachers", type=int, default=Hyperparameters.teachers, choices=range(0, 9), metavar="N",
                       help="train N teacher face models first and distil their mean prediction into the model: "
                            "steadier from run to run, N+1 times the training time (default 0)")
    p.add_argument("--bundle", type=Path, default=default_bundle_dir(), help="model bundle directory to write")


def _add_recipe_steps(steps) -> None:
    """prepare → train → evaluate → export, ``all`` of them, and the steps around them."""
    port = steps.add_parser("port-imagenet", help="port MobileNetV2-1.0 ImageNet weights from TFLite to Keras "
                                                  "(once; train --backbone 1.0 does it when needed)")
    port.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "maskgate-train")
    port.add_argument("--imagenet-tflite", type=Path, default=DEFAULT_IMAGENET_TFLITE)
    port.add_argument("--check-photos", type=Path, metavar="DIR",
                      help="photos both models must give the same ImageNet class (default: test/ beside the model)")
    _common(steps.add_parser("prepare", help="detect and crop faces, dedupe, split, write the manifest"), data=True)
    _common(steps.add_parser("train", help="transfer-train MobileNetV2 on the prepared crops"), model=True)
    _common(steps.add_parser("train-nose", help="train the nose check (is the nose covered?) on nose patches"),
           model=True)
    _common(steps.add_parser("evaluate", help="test-split metrics and the grant threshold"))
    _common(steps.add_parser("export", help="int8 TFLite bundle + report (with any leave-one-source-out results)"))
    everything = steps.add_parser("all", help="prepare, train, evaluate, [holdout] and export in one go")
    _common(everything, data=True, model=True)
    everything.add_argument("--site-data", type=Path, metavar="SITE_TAR",
                            help="a site's labelled faces (maskgate collect export) join training; the bundle is "
                                 "refused if its false grants on the measure-only sources rise above the shipped one's")
    everything.add_argument("--site-weight", type=float, default=2.0, metavar="W",
                            help="each site face counts W times in training (default 2)")
    everything.add_argument("--site-holdout", type=float, default=0.3, metavar="SHARE",
                            help="share of the site's faces held out for its figures (default 0.3)")
    everything.add_argument("--holdout", nargs="*", default=None, metavar="SOURCE",
                            help="sources to leave out one at a time (train without, test on all of it) before the "
                                 "threshold is chosen; default every training source")
    holdout = steps.add_parser("holdout", help="train without one source, test on all of it (unseen-photo figure)")
    _common(holdout, model=True)
    holdout.add_argument("--source", required=True, help="the source to hold out, e.g. scenes")

    _common(steps.add_parser("reference", help="write the bundle's reference embeddings (for maskgate model adapt) "
                                              "from the prepared validation and test photos"))
    measure_adapt = steps.add_parser("measure-adapt", help="what maskgate model adapt gains when a measure-only source "
                                                           "stands in for the site (docs/teach.md)")
    _common(measure_adapt)
    measure_adapt.add_argument("--site", required=True, metavar="SOURCE", help="the measure-only source, e.g. rmfd")
    measure_adapt.add_argument("--counts", nargs="+", type=int, default=[25, 100, 300], metavar="K")
    measure_adapt.add_argument("--draws", type=int, default=5, metavar="N")


def _add_measurements(steps) -> None:
    """The figures in docs/detectors.md: detectors, the whole pipeline next to the peer, the door over streams."""
    detectors = steps.add_parser("detectors", help="compare face detectors on the shared data (docs/detectors.md)")
    detectors.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    detectors.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th photo of each set")
    detectors.add_argument("--folder-every", type=int, metavar="N",
                           help="use every N-th photo of the class folders (default: --every)")
    detectors.add_argument("--json", type=Path, metavar="FILE", help="also write the raw figures here")
    detectors.add_argument("--peer", type=Path, default=REPO_ROOT.parent / "shared" / "peer" / "face_detector",
                           metavar="DIR", help="OpenCV's res10 SSD files, measured side by side when present")
    detectors.add_argument("--only", action="append", metavar="NAME", help="measure only this detector (repeatable)")

    side = steps.add_parser("side-by-side", help="whole-pipeline speed next to the peer recipe (docs/detectors.md)",
                            description="ms per 640x480 frame with one face: the peer recipe (res10 SSD + Keras "
                                        "MobileNetV2-1.0) and maskgate's core, taking turns in one process.")
    side.add_argument("--peer", type=Path, default=REPO_ROOT.parent / "shared" / "peer" / "face_detector",
                      metavar="DIR", help="OpenCV's res10 SSD files (default ../shared/peer/face_detector)")
    side.add_argument("--model", type=Path, metavar="DIR", help="maskgate model bundle (default: the shipped one)")
    side.add_argument("--rounds", type=int, default=5, choices=range(1, 101), metavar="N",
                      help="repeat the measurement N times (default 5)")
    side.add_argument("--frames", type=int, default=120, choices=range(6, 10001), metavar="N",
                      help="frames per round, in blocks of 6 (default 120)")

    streams = steps.add_parser("door-streams", help="the door's decisions over 3 s camera streams of measure-only "
                               "scene photos, per detector first pass (docs/detectors.md)")
    streams.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    streams.add_argument("--first-pass", nargs="+", type=int, default=[0, 160], choices=(0, 128, 160, 192, 224),
                         metavar="PX",
                         help="first pass sizes to compare; 0: the full look on every frame (default: 0 160)")
    streams.add_argument("--model", type=Path, metavar="DIR", help="model bundle (default: the shipped one)")
    streams.add_argument("--seed", type=int, default=0, help="the frames' sway, light and noise")
    streams.add_argument("--every", type=int, default=1, choices=range(1, 1001), metavar="N",
                         help="use every N-th photo")
    streams.add_argument("--json", type=Path, metavar="FILE", help="also write each stream's outcome here")


def _add_collect(steps) -> None:
    collect = steps.add_parser("collect", help="save face crops from a camera or video for retraining")
    collect.add_argument("source", help="camera index (0), /dev/videoN, auto, picamera2, scenes (the demo), "
                                        "or a video file, image folder or glob")
    collect.add_argument("--out", type=Path, required=True)
    collect.add_argument("--label", choices=LABELS, required=True)
    collect.add_argument("--every", type=int, default=10, metavar="N", help="save every N-th frame (headless)")
    collect.add_argument("--count", type=int, default=50, metavar="K", help="stop after K crops")
    collect.add_argument("--size", type=int, default=128)
    collect.add_argument("--margin", type=float, default=0.2)
    collect.add_argument("--show", action="store_true", help="preview window; SPACE saves a crop")


def run(args: argparse.Namespace) -> dict | int | str:
    tool = TOOLS.get(args.step)
    return tool(args) if tool else _run_recipe(args)


def _detectors(args) -> str:
    from .detectors import report

    return report(args.data, every=args.every, folder_every=args.folder_every, json_path=args.json,
                  peer=args.peer, only=args.only)


def _side_by_side(args) -> str:
    from .detectors import side_by_side

    return side_by_side(args.peer, model_dir=args.model, rounds=args.rounds, frames=args.frames)


def _door_streams(args) -> str:
    from .streams import door_streams, markdown

    results = door_streams(args.data, first_pass_sizes=[size or None for size in args.first_pass],
                           model_dir=args.model, seed=args.seed, every=args.every)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return markdown(results)


def _collect(args) -> int:
    from .collect import collect

    return collect(args.source, args.out, label=args.label, every=args.every, count=args.count,
                   size=args.size, margin=args.margin, show=args.show)


def _reference(args) -> str:
    from .dataset import load_prepared
    from .export import write_reference

    prepared = load_prepared(args.work_dir, exclude_sources=("site",))
    splits = [prepared[name] for name in ("val", "test")]
    count = write_reference(args.bundle, np.concatenate([s.images for s in splits]),
                            np.concatenate([s.labels for s in splits]))
    return f"{count} reference faces in {args.bundle}"


def _measure_adapt(args) -> str:
    from .adapt_measure import measure

    return measure(args.work_dir, args.bundle, site=args.site, counts=args.counts, draws=args.draws)


TOOLS = {"detectors": _detectors, "side-by-side": _side_by_side, "door-streams": _door_streams,
         "collect": _collect, "reference": _reference, "measure-adapt": _measure_adapt,
         "port-imagenet": lambda args: port_imagenet(args.imagenet_tflite, args.work_dir, args.check_photos)}


def _training(args) -> tuple[Hyperparameters, Path | None, Path | None]:
    """The hyperparameters, the face model's ImageNet weights and the nose check's (0.35) from the options."""
    nose_weights = None if args.no_imagenet else find_imagenet_weights(args.keras_home)
    weights = nose_weights if args.no_imagenet or args.backbone == 0.35 else (
        args.work_dir / PORTED_FILE if (args.work_dir / PORTED_FILE).is_file()
        else Path(port_imagenet(args.imagenet_tflite, args.work_dir)["weights"]))
    hp = Hyperparameters(alpha=args.backbone, fine_tune_from=args.fine_tune_from, head_epochs=args.head_epochs,
                         fine_tune_epochs=args.fine_tune_epochs, teachers=args.teachers, seed=args.seed)
    if not (args.templates / "masks" / "masks.cfg").is_file():
        raise DataError(f"{args.templates}: mask templates not found (masks/masks.cfg)")
    return hp, weights, nose_weights


def _run_recipe(args) -> dict:
    """One recipe step, or ``all`` of them in order (with a site's photos when given)."""
    excluded = tuple(args.exclude_source)
    if args.step in ("train", "train-nose", "all", "holdout"):
        hp, weights, nose_weights = _training(args)
    if args.step == "holdout":
        return run_holdout(args.work_dir, source=args.source, hp=hp, weights=weights, templates=args.templates).metrics
    result = {}
    site_data = getattr(args, "site_data", None)
    if site_data is not None and args.bundle.resolve() == default_bundle_dir().resolve():
        raise DataError("a site's bundle goes beside the shipped one: give --bundle DIR")
    if args.step in ("prepare", "all"):
        result["prepare"] = run_prepare(args.data, args.work_dir, sources=args.sources, input_size=args.input_size,
                                        margin=args.margin, heldout_sources=args.heldout_sources).to_json()
    if site_data is not None:
        from .site import add_site_data

        result["site"] = add_site_data(args.work_dir, site_data, weight=args.site_weight, holdout=args.site_holdout)
    if args.step in ("train", "all"):
        result["train"] = run_train(args.work_dir, args.bundle, hp=hp, weights=weights, templates=args.templates,
                                    exclude_sources=excluded).to_json()
    if args.step in ("train-nose", "all"):
        result["train-nose"] = run_train_nose(args.work_dir, hp=hp, weights=nose_weights, templates=args.templates,
                                              exclude_sources=excluded).to_json()
    if args.step == "all":
        for source in args.sources if args.holdout is None else args.holdout:
            result[f"holdout-{source}"] = run_holdout(args.work_dir, source=source, hp=hp, weights=weights,
                                                      templates=args.templates).seconds
    if args.step in ("evaluate", "all"):
        result["evaluate"] = {"threshold": run_evaluate(args.work_dir, args.bundle, exclude_sources=excluded).threshold}
    if args.step in ("export", "all"):
        result["export"] = run_export(args.work_dir, args.bundle, exclude_sources=excluded).metrics.parity
    if site_data is not None:
        from .site import check_site_bundle

        result["site-check"] = check_site_bundle(args.work_dir, args.bundle, default_bundle_dir())
    return result


def port_imagenet(tflite: Path, work_dir: Path, check_photos: Path | None = None) -> dict:
    """The ported weights in the work dir, proven on the check photos."""
    folder = check_photos or tflite.parent / "test"
    photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".bmp", ".jpg", ".jpeg", ".png"))
    return run_port(tflite, work_dir / PORTED_FILE, photos)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except MaskgateError as exc:
        print(f"maskgate-train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if isinstance(result, str):
        print(result)
    else:
        print(json.dumps(result, indent=2, default=str) if isinstance(result, dict) else f"saved {result} crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
