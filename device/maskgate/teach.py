"""``maskgate collect …`` and ``maskgate model …``: teach this door with its own faces, and switch models safely."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import socket
import time
from pathlib import Path

from .errors import MaskgateError

DEFAULT_CONFIG = Path("/etc/maskgate/maskgate.yaml")  # what systemd/install.sh installs
KEYS = {"m": "masked", "n": "no_mask", "w": "worn_wrongly", "f": "not_a_face", "s": "skip"}


def current_user() -> str:
    """Who runs this command (the user behind sudo, when run with sudo)."""
    return os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name


def _config(args: argparse.Namespace):
    from .config import Config, changed, load_config

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load_config(path) if path else Config()  # the daemon's retention, not a default, applies
    if args.state_dir:
        config = changed(config, events={"state_dir": args.state_dir})
    return config


def _store(config):
    from .records.faces import FaceStore

    store = FaceStore(config.events.resolved_state_dir())
    store.enforce(retention_days=config.collect.retention_days, max_images=config.collect.max_images)
    return store


def _log(config, reason: str) -> None:
    """One row in the event log, with the user: every model switch and every purge is recorded."""
    from .records.events import Event, EventLog

    log = EventLog(config.events.resolved_state_dir())
    log.record(Event(time.time(), "model" if reason.startswith("model") else "collect", reason,
                     source=f"operator:{current_user()}"))
    log.close()


def cmd_collect(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config)
    try:
        return COLLECT[args.action](args, config, store)
    finally:
        store.close()


def _collect_status(args, config, store) -> int:
    counts = store.counts()
    state = "on" if config.collect.enabled else "off"
    print(f"collection {state} (keep {config.collect.keep}, {config.collect.retention_days:g} days, at most "
          f"{config.collect.max_images}) in {store.root}")
    print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _collect_list(args, config, store) -> int:
    for face in store.list(unlabelled=args.unlabelled):
        if args.json:
            print(json.dumps(face.as_dict()))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(face.time))
            print(f"{face.id:>6}  {when}  {face.model_label:<15} {face.probs[face.model_label]:.0%}  "
                  f"{face.reason:<40}  {face.label or '-':<12} {store.crops / face.file}")
    return 0


def _collect_label(args, config, store) -> int:
    who = f"operator:{current_user()}"
    if args.ids:
        if args.label is None:
            raise MaskgateError("give the label with --as (masked, no_mask, worn_wrongly, not_a_face, skip)")
        for face_id in args.ids:
            store.label(face_id, args.label, by=who)
        print(f"{len(args.ids)} labelled {args.label}")
        return 0
    keys = "  ".join(f"[{k}] {v.replace('_', ' ')}" for k, v in KEYS.items()) + "  [q] quit"
    done = 0
    for face in store.list(unlabelled=True):
        print(f"#{face.id}  model: {face.model_label} {face.probs[face.model_label]:.0%} ({face.reason})  "
              f"{store.crops / face.file}")
        while (answer := input(f"{keys}: ").strip().lower()) not in KEYS and answer != "q":
            print("one of m, n, w, f, s or q")
        if answer == "q":
            break
        store.label(face.id, KEYS[answer], by=who)
        done += 1
    print(f"{done} labelled; {store.counts()['unlabelled']} left")
    return 0


def _collect_export(args, config, store) -> int:
    site = config.collect.site or socket.gethostname()
    manifest = store.export(args.out, site=site)
    print(f"{args.out}: {sum(manifest['counts'].values())} faces from {site} "
          f"({', '.join(f'{k} {v}' for k, v in manifest['counts'].items())}), {manifest['first']} to {manifest['last']}")
    print("the images belong to the site: move and keep them as its privacy rules say")
    return 0


def _collect_purge(args, config, store) -> int:
    if not args.yes:
        raise MaskgateError("purge deletes every collected face and label: add --yes")
    count = store.purge()
    _log(config, f"collect: purged {count} collected faces")
    print(f"deleted {count} collected faces from {store.root}")
    return 0


COLLECT = {"status": _collect_status, "list": _collect_list, "label": _collect_label, "export": _collect_export,
           "purge": _collect_purge}


def cmd_model(args: argparse.Namespace) -> int:
    from .vision.bundles import Models

    config = _config(args)
    return MODEL[args.action](args, config, Models(config.events.resolved_state_dir()))


def _model_pack(args, config, models) -> int:
    from .vision.bundles import pack

    if args.dir is None or args.out is None:
        raise MaskgateError("pack needs the bundle directory and --out bundle.tar")
    digest = pack(args.dir, args.out)
    print(f"{args.out}: sha256 {digest}")
    return 0


def _model_install(args, config, models) -> int:
    if args.dir is None:
        raise MaskgateError("install needs the bundle tar: maskgate model install bundle.tar")
    bundle = models.install(args.dir, sha256=args.sha256)
    _log(config, f"model: staged bundle {bundle} from {args.dir.name}")
    print(f"staged bundle {bundle}; try it beside the active one with `maskgate model shadow --hours 24`, "
          "then `maskgate model activate`")
    return 0


def _model_activate(args, config, models) -> int:
    new, old = models.activate()
    _log(config, f"model: activated bundle {new} (was {old})")
    print(f"bundle {new} is active (was {old}); restart the daemon to load it: sudo systemctl restart maskgate"
          + ("\nnote: classifier.model_dir in the config overrides it" if config.classifier.model_dir else ""))
    return 0


def _model_rollback(args, config, models) -> int:
    new, old = models.rollback()
    _log(config, f"model: rolled back to bundle {new} (was {old})")
    print(f"bundle {new} is active again (was {old}); restart the daemon to load it: sudo systemctl restart maskgate")
    return 0


def _model_shadow(args, config, models) -> int:
    from .services.shadow import REQUEST, RESULT, write_json

    if args.stop:
        (models.root / REQUEST).unlink(missing_ok=True)
        print("shadow run stopped (the daemon notices within seconds)")
        return 0
    if args.hours is None:
        return _model_status(args, config, models)
    staged = models.target("staged")
    if staged is None:
        raise MaskgateError("no staged bundle: install one first (maskgate model install bundle.tar)")
    now = time.time()
    bundle = staged.rsplit("/", 1)[-1]
    (models.root / RESULT).unlink(missing_ok=True)
    write_json(models.root / REQUEST, {"bundle": bundle, "started": now, "until": now + args.hours * 3600,
                                       "by": f"operator:{current_user()}"})
    _log(config, f"model: shadow run of bundle {bundle} for {args.hours:g} h")
    print(f"bundle {bundle} will judge live frames beside the active one for {args.hours:g} h "
          "(the running daemon picks it up within seconds); see `maskgate model status`")
    return 0


def _model_adapt(args, config, models) -> int:
    import tempfile

    from .vision.adapt import adapt, current_head, read_reference, write_bundle
    from .vision.bundles import pack
    from .vision.classifier import read_metadata
    from .vision.core import classifier_bundle

    if config.classifier.threshold is not None:
        raise MaskgateError("classifier.threshold in the config would override the threshold adaptation chooses: "
                            "remove it first")
    base = classifier_bundle(config)
    metadata = read_metadata(base)
    embedder, head = current_head(base)
    reference = read_reference(base, metadata.labels, embedder.size)
    store = _store(config)
    try:
        site = _site_embeddings(store, embedder, metadata)
    finally:
        store.close()
    started = time.monotonic()
    adaptation = adapt(head, metadata.labels, metadata.threshold, reference, site, site_weight=args.site_weight,
                       max_false_grants=args.max_false_grants)
    seconds = time.monotonic() - started
    site_name = config.collect.site or socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="maskgate-adapt-") as scratch:
        bundle = write_bundle(base, Path(scratch) / "bundle", adaptation, site=site_name)
        pack(bundle, Path(scratch) / "bundle.tar")
        new = models.install(Path(scratch) / "bundle.tar")
    figures = adaptation.figures
    _log(config, f"model: adapted bundle {new} staged from {len(site[1])} labelled faces")
    print(f"adapted in {seconds:.1f} s on {figures['fitted']['site']} site faces and {figures['fitted']['reference']} "
          f"reference faces; held out: {figures['held_out']}")
    for side in ("before", "after"):
        f = figures[side]
        print(f"  {side:<6} threshold {f['threshold']:.3f}: false grants {f['negatives']:.1%} "
              f"(target {figures['target_false_grants']:.1%}), masked site faces let in {f['site_masked']:.0%}, "
              f"reference masked {f['reference_masked']:.0%}")
    print(f"staged bundle {new}: `maskgate model shadow --hours 24`, then `maskgate model activate`")
    return 0


def _site_embeddings(store, embedder, metadata):
    """The labelled collected faces (skip and not_a_face left out) as embeddings and class indices."""
    import cv2
    import numpy as np

    from .records.faces import LABELS
    from .vision.crop import normalise

    faces = [f for f in store.list() if f.label is not None and LABELS[f.label] is not None]
    crops, classes = [], []
    size = metadata.input_size
    for face in faces:
        image = cv2.imread(str(store.crops / face.file))
        if image is None:
            continue
        crops.append(image if image.shape[:2] == (size, size) else cv2.resize(image, (size, size)))
        classes.append(metadata.labels.index(LABELS[face.label]))
    if not crops:
        return np.zeros((0, embedder.size)), np.zeros(0, np.int64)
    batch = normalise(np.stack(crops), metadata.normalisation, rgb=metadata.colour_order == "RGB")
    return embedder.embed(batch), np.array(classes, np.int64)


def _model_status(args, config, models) -> int:
    from .services.shadow import RESULT, read_json

    links = models.status()
    result = read_json(models.root / RESULT)
    if args.json:
        print(json.dumps({**links, "shadow": result}))
        return 0
    print(f"active: {links['active'] or 'shipped'}   staged: {links['staged'] or '-'}   "
          f"previous: {links['previous'] or '-'}")
    if result is None:
        print("no shadow run yet")
        return 0
    state = "finished" if result["finished"] else "running"
    print(f"shadow run of {result['bundle']} ({state}, by {result.get('by', '?')}): {result['frames']} frames judged "
          f"twice, {result['changed']} verdicts changed")
    for side in ("active", "staged"):
        decisions = result["decisions"][side]
        print(f"  {side:<7} decisions: granted {decisions.get('granted', 0)}, denied {decisions.get('denied', 0)}")
    rows = sorted(((a, s, n) for a, row in result["verdicts"].items() for s, n in row.items()), key=lambda r: -r[2])
    if rows:
        print(f"  {'active verdict':<48} {'staged verdict':<48} frames")
        for active, staged, n in rows:
            print(f"  {active:<48} {staged:<48} {n}" + ("" if active == staged else "  *"))
    return 0


MODEL = {"pack": _model_pack, "install": _model_install, "adapt": _model_adapt, "activate": _model_activate, "rollback": _model_rollback,
         "shadow": _model_shadow, "status": _model_status}


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _positive(text) if text.strip() not in ("0", "0.0") else 0.0
    if value >= 1:
        raise argparse.ArgumentTypeError(f"a rate from 0 to below 1 (e.g. 0.02), got {text!r}")
    return value


def add_commands(commands, *, duration) -> None:
    """The ``collect`` and ``model`` subcommands of ``maskgate``."""

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, metavar="FILE",
                       help=f"take the state directory and collect: from this config (default {DEFAULT_CONFIG})")
        p.add_argument("--state-dir", type=Path, metavar="DIR", help="the daemon's state directory")

    collect = commands.add_parser(
        "collect", help="faces kept at this door: list, label, export, purge",
        description="Faces kept by the collect: config section. Labels: masked, no_mask, worn_wrongly, "
                    "not_a_face, skip. Without IDs, label asks for each unlabelled face in turn.")
    collect.add_argument("action", choices=list(COLLECT))
    collect.add_argument("ids", nargs="*", type=int, metavar="ID", help="label: these faces (with --as)")
    collect.add_argument("--as", dest="label", choices=list(KEYS.values()), help="label: the label for the IDs")
    collect.add_argument("--unlabelled", action="store_true", help="list: only faces without a label")
    collect.add_argument("--out", type=Path, metavar="FILE", help="export: the tar to write (e.g. site.tar)")
    collect.add_argument("--yes", action="store_true", help="purge: yes, delete everything")
    collect.add_argument("--json", action="store_true", help="list: one JSON object per line")
    where(collect)
    collect.set_defaults(handler=cmd_collect)

    model = commands.add_parser(
        "model", help="install, shadow, activate or roll back a model bundle",
        description="install verifies a bundle.tar and stages it; adapt refits the active model's last layer on the "
                    "labelled collected faces and stages the result; shadow runs it beside the active model on live "
                    "frames; activate switches to it; rollback switches back. Every switch is logged with your user.")
    model.add_argument("action", choices=list(MODEL))
    model.add_argument("dir", nargs="?", type=Path, metavar="PATH", help="install: bundle.tar; pack: bundle directory")
    model.add_argument("--out", type=Path, metavar="FILE", help="pack: the tar to write")
    model.add_argument("--sha256", metavar="HEX", help="install: the sha256 the tar must have (from its publisher)")
    model.add_argument("--hours", type=lambda t: duration(t + "h") / 3600, metavar="N",
                       help="shadow: run this many hours")
    model.add_argument("--stop", action="store_true", help="shadow: end the run now")
    model.add_argument("--site-weight", type=_positive, default=1.0, metavar="W",
                       help="adapt: the site's faces together weigh W times the bundle's reference faces (default 1)")
    model.add_argument("--max-false-grants", type=_fraction, metavar="RATE",
                       help="adapt: false-grant target on held-out negatives (default: the active model's own rate)")
    model.add_argument("--json", action="store_true", help="status: as JSON")
    where(model)
    model.set_defaults(handler=cmd_model)

