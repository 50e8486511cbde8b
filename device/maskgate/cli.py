"""The ``maskgate`` command line."""

from __future__ import annotations

import argparse
import json
import math
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
    from .vision.core import InferenceCore

    return InferenceCore.from_config(config, model_dir=args.model, detector_model=args.detector_model,
                                     num_threads=args.threads)


def _config(args: argparse.Namespace):
    from .config import Config, load_config

    return load_config(args.config) if getattr(args, "config", None) else Config()


def cmd_classify(args: argparse.Namespace) -> int:
    from .access.verdict import classify_record, decision_rule
    from .images import IMAGE_SUFFIXES, list_images, read_image

    images, failed = [], False
    for given in args.images:
        found = list_images([given])
        if not found:
            print(f"maskgate: {given}: no images in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})",
                  file=sys.stderr)
            failed = True
        images += found
    if not images:
        return 1
    config = _config(args)
    core = _build_core(args, config)
    rule = decision_rule(config, core.classifier)
    for path in images:
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
            _print_classify_table(record, rule)
    return 1 if failed else 0


def _print_classify_table(record: dict, rule) -> None:
    why = record["reason_text"] + (f" (faces under {rule.min_face_px:g} px do not count)"
                                   if record["reason"] == "too_small" else "")
    decided = "" if record["decided_by"] is None else f"; face {record['decided_by'] + 1} decided"
    print(f"{record['image']}  {record['width']}x{record['height']}  → {record['decision'].upper()}  "
          f"[{record['reason']}: {why}{decided}]")
    for i, face in enumerate(record["faces"]):
        x1, y1, x2, y2 = (int(v) for v in face["box"])
        mark = "*" if i == record["decided_by"] else " "
        print(f" {mark}face {i + 1}: ({x1},{y1})-({x2},{y2})  {y2 - y1} px  detector {face['score']:.2f}  "
              f"{face['label']:<15} {face['confidence']:.1%}"
              + (f"  nose covered {face['nose_covered']:.1%}" if "nose_covered" in face else ""))


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.latency import format_report, run_benchmark

    core = _build_core(args, _config(args))
    report = run_benchmark(core, frames=args.frames, seconds=args.seconds)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .app import run_daemon
    from .config import exposed_secrets, load_config

    config = load_config(args.config)
    for warning in exposed_secrets(config, args.config):
        print(f"maskgate: warning: {warning}", file=sys.stderr)
    return run_daemon(config, console=args.verbose).exit_code


DEMO_PORT = 8080


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.resources
    import tempfile

    from .app import run_daemon
    from .config import changed, load_config

    config = load_config(Path(str(importlib.resources.files("maskgate.configs") / "demo.yaml")))
    serve = sys.stdout.isatty() if args.serve is None else args.serve
    port = args.port if _port_is_free(config.web.host, args.port) else 0
    config = changed(config, camera={"replay_loop": serve}, web={"port": port})
    if port != args.port:
        print(f"maskgate demo: port {args.port} is taken; serving on a free one instead", flush=True)
    banner = ("maskgate demo: the door daemon on a replayed scene (nobody, no mask, nobody, mask) with mock GPIO"
              + ("; Ctrl-C stops it" if serve else "; one pass (--serve keeps it running)"))
    with tempfile.TemporaryDirectory(prefix="maskgate-demo-") as scratch:
        config = changed(config, events={"state_dir": args.state_dir or Path(scratch)})
        app = run_daemon(config, console=True, banner=banner)
        count = _count_events(config.events.state_dir)
    if args.state_dir:
        print(f"door locked; {count} events in {args.state_dir} (maskgate events --state-dir {args.state_dir})")
    else:
        print(f"door locked; {count} events, not kept (--state-dir DIR keeps them for `maskgate events`)")
    return app.exit_code


def _count_events(state_dir: Path) -> int:
    from .records.events import EventLog

    log = EventLog(state_dir)
    try:
        return len(log.list())
    finally:
        log.close()


def _port_is_free(host: str, port: int) -> bool:
    import socket

    if port == 0:
        return True
    try:
        with socket.create_server((host, port)):
            return True
    except OSError:
        return False


def cmd_check_config(args: argparse.Namespace) -> int:
    import os

    from .app import check
    from .config import exposed_secrets, load_config

    config = load_config(args.file, os.environ)
    check(config, os.environ)
    for warning in exposed_secrets(config, args.file):
        print(f"maskgate: warning: {warning}", file=sys.stderr)
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
            print(_event_line(event))
    return 0


def _event_line(event) -> str:
    """One event as text: when, what, who (or what) asked, why, and the faces or the end of a timed change."""
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
    labels = ", ".join(f"{f['label']} {f['confidence']:.0%}" for f in event.faces)
    until = "" if event.until is None else f"  until {time.strftime('%H:%M:%S', time.localtime(event.until))}"
    why = event.reason if not event.code else (
        f"{event.reason} ({event.code}" + ("" if event.track is None else f", person #{event.track}")
        + ("" if event.face is None else f", face {event.face + 1}") + ")")
    return (f"{when}  {event.outcome:<11} {event.source or '-':<18} {why}{until}"
            + (f"  [{labels}]" if labels else ""))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return port


def _duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '7d' → seconds (finite, not negative)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 7d)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 7d)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0: {text!r}")
    return value


def _override_duration(text: str) -> float:
    value = _duration(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 s: {text!r}")
    return value


def cmd_door(args: argparse.Namespace) -> int:
    from .config import Config, load_config
    from .services.control import send

    config = load_config(args.config) if args.config else Config()
    path = args.socket or config.control.resolved_socket_path() or DEFAULT_CONTROL_SOCKET
    if args.seconds is not None and args.action not in ("unlock", "lock"):
        raise MaskgateError(f"--for goes with unlock or lock, not {args.action}")
    if args.seconds is not None and args.seconds > config.control.max_override_seconds:
        raise MaskgateError(f"--for: at most {config.control.max_override_seconds:g} s "
                            "(control.max_override_seconds in the daemon's config)")
    request = {"command": args.action, "seconds": args.seconds, "reason": args.reason}
    reply = send(path, request, group=config.control.group)
    unlogged = reply.get("logged") is False
    if unlogged:
        print("warning: the door changed, but the event log has not recorded it (is the disk full? "
              "see the daemon's log)", file=sys.stderr)
    if args.json:
        print(json.dumps(reply))
        return 1 if unlogged else 0
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
    return 1 if unlogged else 0


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
        p.add_argument("--model", type=Path, metavar="DIR",
                       help="model bundle directory (default: the active one, see maskgate model; else the shipped one)")
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
                               description="No camera, no GPIO: serves the kiosk page and prints each decision "
                                           "and the relay state.")
    serving = demo.add_mutually_exclusive_group()
    serving.add_argument("--serve", action="store_true", default=None,
                         help="replay the scene over and over until Ctrl-C (the default on a terminal)")
    serving.add_argument("--once", dest="serve", action="store_false", help="one pass of the scene, then stop")
    demo.add_argument("--port", type=_port, default=DEMO_PORT, metavar="N",
                      help=f"kiosk page port (default {DEMO_PORT}; a free one if it is taken; 0: any free one)")
    demo.add_argument("--state-dir", type=Path, metavar="DIR",
                      help="keep the event log in DIR (default: a temporary folder, removed at the end)")
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
    door.add_argument("action", choices=["unlock", "lock", "auto", "silence", "status"],
                      help="unlock/lock: override vision (a fire alarm still wins); auto: end the override; "
                           "silence: stop a forced/held-open alarm's buzzer")
    door.add_argument("--for", dest="seconds", type=_override_duration, metavar="DURATION",
                      help="only this long (90s, 15m, 2h; at most control.max_override_seconds, default 24h); "
                           "default: until `maskgate door auto`")
    door.add_argument("--reason", metavar="TEXT", help="why (recorded in the event log)")
    door.add_argument("--config", type=Path, metavar="FILE", help="take the control socket from this config")
    door.add_argument("--socket", type=Path, metavar="PATH", help=f"control socket (default {DEFAULT_CONTROL_SOCKET})")
    door.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    door.set_defaults(handler=cmd_door)

    from .teach import add_commands

    add_commands(commands, duration=_positive_duration)
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
