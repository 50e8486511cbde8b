"""The ``maskgate`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import MaskgateError

DEFAULT_CONTROL_SOCKET = Path("/run/maskgate/control.sock")  # systemd's RuntimeDirectory=maskgate


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _build_core(args: argparse.Namespace, config):
    from .app import build_detector
    from .vision.classifier import MaskClassifier
    from .vision.core import InferenceCore

    return InferenceCore(
        build_detector(config, model_path=args.detector_model, num_threads=args.threads),
        MaskClassifier(args.model or config.classifier.model_dir, num_threads=args.threads),
    )


def _config(args: argparse.Namespace):
    from .config import Config, load_config

    return load_config(args.config) if getattr(args, "config", None) else Config()


def cmd_classify(args: argparse.Namespace) -> int:
    from .access.verdict import classify_record
    from .app import decision_rule
    from .vision.frames import list_images, read_image

    config = _config(args)
    core = _build_core(args, config)
    rule = decision_rule(config, core.classifier)
    failed = False
    for path in list_images(args.images):
        try:
            result = core.process(read_image(path))
        except MaskgateError as exc:
            print(f"maskgate: {exc}", file=sys.stderr)
            failed = True
            continue
        record = classify_record(str(path), result, rule)
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
              f"{face['label']:<15} {face['confidence']:.1%}"
              + (f"  nose covered {face['nose_covered']:.1%}" if "nose_covered" in face else ""))


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_report, run_benchmark

    core = _build_core(args, _config(args))
    report = run_benchmark(core, frames=args.frames, seconds=args.seconds)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .app import run_daemon
    from .config import load_config

    return run_daemon(load_config(args.config), console=args.verbose)


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.resources
    import tempfile

    from .app import run_daemon
    from .config import load_config

    config = load_config(Path(str(importlib.resources.files("maskgate.configs") / "demo.yaml")))
    with tempfile.TemporaryDirectory(prefix="maskgate-demo-") as state_dir:
        config.events.state_dir = Path(state_dir)
        print("maskgate demo: the door daemon on a replayed scene (nobody, no mask, nobody, mask) with mock GPIO")
        return run_daemon(config, console=True)


def cmd_check_config(args: argparse.Namespace) -> int:
    from .app import preflight
    from .config import load_config

    preflight(load_config(args.file))
    print(f"{args.file}: OK")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    import time

    from .config import Config, load_config
    from .records.events import open_existing

    config = load_config(args.config) if args.config else Config()
    log = open_existing(args.state_dir or config.events.resolved_state_dir())
    since = time.time() - args.since if args.since is not None else None
    for event in log.list(since=since, limit=args.limit):
        if args.json:
            print(json.dumps(event.as_dict()))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
            labels = ", ".join(f"{f['label']} {f['confidence']:.0%}" for f in event.faces)
            print(f"{when}  {event.outcome:<11} {event.reason}" + (f"  [{labels}]" if labels else ""))
    return 0


def _duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '7d' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 7d)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0: {text!r}")
    return value


def cmd_door(args: argparse.Namespace) -> int:
    from .config import Config, load_config
    from .services.control import send

    config = load_config(args.config) if args.config else Config()
    path = args.socket or config.control.resolved_socket_path() or DEFAULT_CONTROL_SOCKET
    if args.seconds is not None and args.action not in ("unlock", "lock"):
        raise MaskgateError(f"--for goes with unlock or lock, not {args.action}")
    request = {"command": args.action, "seconds": args.seconds, "reason": args.reason}
    reply = send(path, request, group=config.control.group)
    if args.json:
        print(json.dumps(reply))
        return 0
    door = reply["door"]
    left = "" if door["seconds_left"] is None else f", {door['seconds_left']:.0f} s left"
    print(f"door {door['door']} ({door['display']}) by {door['who'] or door['layer']}: {door['reason']}{left}")
    for claim in reply["overrides"]:
        left = "until `maskgate door auto`" if claim["seconds_left"] is None else f"{claim['seconds_left']:.0f} s left"
        print(f"  {claim['layer']}: {'unlocked' if claim['unlock'] else 'locked'} by {claim['who']} ({left}): "
              f"{claim['reason']}")
    if not reply["overrides"]:
        print("  no override: vision decides")
    if reply["inputs"]:
        names = {True: "active", False: "inactive", None: "unknown"}
        print("  inputs: " + ", ".join(f"{name} {names[level]}" for name, level in reply["inputs"].items()))
    wanted = {"unlock": "manual_unlock", "lock": "manual_lock"}.get(args.action)
    if wanted and door["layer"] != wanted:
        print(f"note: {door['layer']} outranks this override; it applies once that ends", file=sys.stderr)
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr (and exit 2), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="maskgate", description="Face-mask access control: grants entry only when a mask is worn."
    )
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, metavar="DIR", help="model bundle directory (default: the shipped model)")
        p.add_argument("--detector-model", type=Path, metavar="FILE", help="face detector model (default: the shipped one)")
        p.add_argument("--config", type=Path, metavar="FILE",
                       help="take the decision rule (policy, min face size, threshold) and models from this config")
        p.add_argument("--threads", type=int, default=2, choices=range(1, 65), metavar="N", help="inference threads (default 2)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    classify = commands.add_parser("classify", help="find faces in images and say who wears a mask",
                                   description="Detect and classify every face; one line (or JSON object) per image.")
    classify.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    model_options(classify)
    classify.set_defaults(handler=cmd_classify)

    bench = commands.add_parser("bench", help="measure detector + classifier latency",
                                description="Per-stage latency (median, p95), FPS and peak RSS.")
    bench.add_argument("--frames", type=Path, metavar="DIR_OR_VIDEO",
                       help="images or a video to run on (default: a built-in 640x480 scene with one real face)")
    bench.add_argument("--seconds", type=_positive_float, default=10.0, metavar="N", help="how long to run (default 10)")
    model_options(bench)
    bench.set_defaults(handler=cmd_bench)

    run = commands.add_parser("run", help="run the door daemon", description="Camera → faces → decision → door relay.")
    run.add_argument("--config", type=Path, required=True, metavar="FILE", help="YAML config (see config/maskgate.yaml)")
    run.add_argument("--verbose", action="store_true", help="print every change of state and the relay")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="the daemon on a built-in replayed scene with mock GPIO",
                               description="No camera, no GPIO: prints each decision and the relay state.")
    demo.set_defaults(handler=cmd_demo)

    check = commands.add_parser("check-config", help="validate a config file and name any bad key")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=cmd_check_config)

    events = commands.add_parser("events", help="list logged decisions")
    events.add_argument("--since", type=_duration, metavar="AGE", help="only the last AGE (90s, 15m, 2h, 7d)")
    events.add_argument("--limit", type=int, metavar="N", help="at most the last N events")
    events.add_argument("--config", type=Path, metavar="FILE", help="take the state directory from this config")
    events.add_argument("--state-dir", type=Path, metavar="DIR", help="state directory holding events.sqlite3")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(handler=cmd_events)

    door = commands.add_parser("door", help="unlock or lock the door by hand, hand it back, or show who holds it",
                               description="Talks to the running daemon over its control socket (operators: "
                                           "members of the maskgate-operators group). Overrides are logged "
                                           "with your user name and --reason.")
    door.add_argument("action", choices=["unlock", "lock", "auto", "status"],
                      help="unlock/lock: override vision (a fire alarm still wins); auto: end the override")
    door.add_argument("--for", dest="seconds", type=_positive_duration, metavar="DURATION",
                      help="only this long (90s, 15m, 2h); default: until `maskgate door auto`")
    door.add_argument("--reason", metavar="TEXT", help="why (recorded in the event log)")
    door.add_argument("--config", type=Path, metavar="FILE", help="take the control socket from this config")
    door.add_argument("--socket", type=Path, metavar="PATH", help=f"control socket (default {DEFAULT_CONTROL_SOCKET})")
    door.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    door.set_defaults(handler=cmd_door)
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
