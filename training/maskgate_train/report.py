"""report.md: the shipped model's figures, on real photos only, one section at a time."""

from __future__ import annotations

from maskgate.access.reasons import Reason
from maskgate.vision.classifier import BundleMetadata

from . import door
from .evaluate import DECISION
from .records import ExportMetrics, ExportSummary, Metrics, Provenance, TrainSummary


def render_report(bundle: BundleMetadata, summary: ExportSummary) -> str:
    metrics, provenance = summary.metrics, summary.provenance
    lines = _header(bundle, provenance)
    if metrics.held_out:
        rule = _rule(bundle)
        lines += _held_out_sources(metrics, rule)
        if bundle.nose_check:
            lines += _nose_check(metrics, rule)
        lines += _targets(metrics.held_out_pooled)
        lines += _threshold(bundle, metrics, rule)
    if metrics.held_out_int8:
        lines += _held_out_int8(metrics)
    if metrics.held_out_int8_door_verdicts:
        lines += _door_verdicts(metrics.held_out_int8_door_verdicts)
    if metrics.held_out_int8_door_over_time:
        lines += door.report_lines(metrics.held_out_int8_door_over_time)
    lines += _test_split(bundle, metrics)
    lines += _training(metrics, provenance)
    return "\n".join(lines)


def pct(value: float | None) -> str:
    """A rate as a percentage; none or NaN → –."""
    return "–" if value is None or value != value else f"{value:.1%}"


def _faces(figures: Metrics) -> int:
    return sum(c["support"] for c in figures["per_class"].values())


def _rule(bundle: BundleMetadata) -> str:
    rule = f"p(with_mask) ≥ {bundle.threshold:.3f}"
    return f"{rule} and p(nose covered) ≥ {bundle.nose_check.threshold:.2f}" if bundle.nose_check else rule


def _header(bundle: BundleMetadata, provenance: Provenance) -> list[str]:
    trained = provenance.training
    return [
        "# Mask classifier — evaluation report",
        "",
        f"Trained {provenance.date} on sources {', '.join(provenance.sources)} (real photos, training split, at most "
        f"{trained.hyperparameters.max_real_per_class} per class) plus synthetic masks; input "
        f"{bundle.input_size} px, crop margin {bundle.crop_margin}, MobileNetV2 alpha "
        f"{trained.hyperparameters.alpha}, {trained.epochs} epochs, int8. Dataset manifest sha256 "
        f"`{provenance.dataset_manifest_sha256[:16]}…`. Measured only, never trained on: "
        f"{', '.join(provenance.measured_only) or 'none'}.",
        "",
        "All figures are on **real photos** (synthetic crops are used for training only).",
        "",
        "Crops come from the device's own face detector (YuNet). How often each detector finds masked, bare and incorrectly masked faces, "
        "by face size, with its time per frame: `docs/detectors.md` (`maskgate-train detectors`).",
    ]


def _held_out_sources(metrics: ExportMetrics, rule: str) -> list[str]:
    """The unseen sources, one row each and pooled, with the shipped rule."""
    lines = ["", "## Held-out sources (the figures that matter)", "",
             "Each licensed source is predicted by a model trained without it (leave one source out; face "
             f"model alone, at its threshold {metrics.threshold_face_only:.3f}); each measure-only source "
             f"by the shipped recipe's models, which never saw it, with the shipped rule: {rule}. Float models. "
             "*pooled*: the measure-only sources.", "",
             "| unseen source | model | faces | masked granted | bare granted | incorrect granted | "
             "incorrect_mask recall | with vs without, balanced | correctly masked vs not, balanced |",
             "|---|---|---|---|---|---|---|---|---|"]
    for source, r in list(metrics.held_out.items()) + [("**pooled**", metrics.held_out_pooled)]:
        model = ("trained without it" if source in metrics.leave_one_source_out
                 else "" if source == "**pooled**" else "shipped recipe")
        lines.append(f"| {source} | {model} | {_faces(r)} | {pct(r['masked_granted_rate'])} | "
                     f"{pct(r['bare_granted_rate'])} | {pct(r['incorrect_granted_rate'])} | "
                     f"{pct(r['per_class']['incorrect_mask']['recall'])} | "
                     f"{pct(r['with_vs_without_balanced_accuracy'])} | {pct(r['masked_vs_not_balanced_accuracy'])} |")
    near = metrics.held_out_pooled_decision_range
    if near:
        lines += ["", f"The same, faces ≥ {DECISION.min_face_px:g} px only (the device's default "
                  "`decision.min_face_px`: "
                  f"smaller faces are never granted): {_faces(near)} faces, masked granted "
                  f"{pct(near['masked_granted_rate'])}, bare {pct(near['bare_granted_rate'])}, incorrect "
                  f"{pct(near['incorrect_granted_rate'])}."]
    return lines


def _nose_check(metrics: ExportMetrics, rule: str) -> list[str]:
    """What the nose check adds to the face model, at its thresholds and at matched false grants."""
    face, pooled = metrics.held_out_pooled_face_only, metrics.held_out_pooled
    lines = ["", "### Nose check", "",
             "A second int8 MobileNetV2 (α 0.35, 96 px) looks only at the nose and upper lip, cut from the face "
             "crop around the detector's nose and mouth keypoints (`maskgate.vision.crop.nose_patch`), and "
             "answers *is the nose covered?* A face is granted only when both models agree. Both thresholds "
             "come from the measure-only sources: the most masked faces let in while bare faces stay ≤ 1 % "
             "granted and faces without a correct mask (bare or incorrect) are granted no more often than "
             "by the face model alone at its own threshold.", "",
             f"Face model alone at {metrics.threshold_face_only:.3f}: masked granted "
             f"{pct(face['masked_granted_rate'])}, bare {pct(face['bare_granted_rate'])}, incorrect "
             f"{pct(face['incorrect_granted_rate'])}; with the nose check ({rule}): "
             f"{pct(pooled['masked_granted_rate'])}, {pct(pooled['bare_granted_rate'])}, "
             f"{pct(pooled['incorrect_granted_rate'])}.", "",
             "Masked faces granted at matched rates of faces without a correct mask granted (measure-only "
             "sources, float):", "", "| bare or incorrect granted | face model alone | with the nose check |",
             "|---|---|---|"]
    return lines + [f"| ≤ {r['not_masked_granted']:.1%} | {pct(r['face_only'])} | {pct(r['with_nose_check'])} |"
                    for r in metrics.nose_check_matched]


def _targets(pooled: Metrics) -> list[str]:
    """The pooled held-out figures against the targets (a figure with no faces to measure misses)."""
    targets = [("masked faces granted", pooled["masked_granted_rate"], "≥ 95 %", lambda v: v >= 0.95),
               ("faces without a correct mask granted", pooled["false_grant_rate"], "≤ 0.5 %", lambda v: v <= 0.005),
               ("incorrect_mask recall", pooled["per_class"]["incorrect_mask"]["recall"], "≥ 85 %", lambda v: v >= 0.85),
               ("correctly masked vs not, balanced", pooled["masked_vs_not_balanced_accuracy"], "≥ 98 %",
                lambda v: v >= 0.98)]
    lines = ["", "Targets on the pooled held-out sources:", "", "| figure | measured | target | |", "|---|---|---|---|"]
    return lines + [f"| {name} | {pct(v)} | {goal} | {'met' if v is not None and met(v) else '**missed**'} |"
                    for name, v, goal, met in targets]


def _threshold(bundle: BundleMetadata, metrics: ExportMetrics, rule: str) -> list[str]:
    """What the threshold was chosen on, whether it holds on a source it was not chosen on, the trade-off."""
    lines = ["", "### Threshold", "",
             f"Chosen on {metrics.threshold_basis} — the lowest p(with_mask) under that limit, so the most "
             "masked faces get in while bare faces are refused. Incorrectly worn masks are not held to it: on "
             "these sources no threshold keeps them under 1 % without refusing most masked people (the "
             "trade-off below), so they are the model's known gap. A random split of the training "
             "sources would flatter the threshold; these sources were never trained on. Whether it holds on a source it was not chosen on (face model alone, threshold from "
             "the other held-out sources only):", "",
             "| source | threshold chosen without it | masked granted | without a correct mask granted |",
             "|---|---|---|---|"]
    for source, r in metrics.held_out_threshold_check.items():
        lines.append(f"| {source} | {r['threshold']:.3f} | {pct(r['masked_granted_rate'])} | "
                     f"{pct(r['false_grant_rate'])} ({r['false_grants']} of {r['negatives']}) |")
    lines += ["", f"Trade-off on the pooled held-out sources ({rule.split(' and ')[1] + ' fixed, ' if bundle.nose_check else ''}"
              "float; the curve in `tradeoff.png`):", "",
              "| threshold | masked granted | bare or incorrect granted | bare granted | incorrect granted |",
              "|---|---|---|---|---|"]
    for r in metrics.tradeoff:
        mark = " (shipped)" if r["threshold"] == bundle.threshold else ""
        lines.append(f"| {r['threshold']:.3f}{mark} | {pct(r['masked_granted'])} | "
                     f"{pct(r['not_masked_granted'])} | {pct(r['bare_granted'])} | {pct(r['incorrect_granted'])} |")
    return lines


def _held_out_int8(metrics: ExportMetrics) -> list[str]:
    """The shipped int8 model on the measure-only sources, and by mask tag."""
    lines = ["", "Shipped int8 model on the measure-only sources:", "",
             "| source | masked granted | bare granted | incorrect granted | incorrect_mask recall | faces |",
             "|---|---|---|---|---|---|"]
    pooled = {"**pooled**": metrics.held_out_int8_pooled} if metrics.held_out_int8_pooled else {}
    for source, r in (metrics.held_out_int8 | pooled).items():
        lines.append(f"| {source} | {pct(r['masked_granted_rate'])} | {pct(r['bare_granted_rate'])} | "
                     f"{pct(r['incorrect_granted_rate'])} | {pct(r['per_class']['incorrect_mask']['recall'])} | "
                     f"{_faces(r)} |")
    lines += ["", "By mask tag (dsmasters file names: `OK`/`NG` is the set's own mask-type tag), int8:", "",
              "| tag | masked granted | faces |", "|---|---|---|"]
    return lines + [f"| {tag} | {pct(r['masked_granted_rate'])} | {r['n']} |"
                    for tag, r in metrics.held_out_int8_by_mask_tag.items()]


def _door_verdicts(verdicts: dict) -> list[str]:
    """What the door tells each face, per true label, as % of that label (decision range in brackets)."""
    every, near = verdicts["all"], verdicts["decision_range"]
    reasons = [r for r in Reason if any(r.value in told for told in every.values())]
    lines = ["", "What the door tells each face (int8, one face per frame, the device's own `Rule`; "
             f"% of each true label; in brackets: faces ≥ {DECISION.min_face_px:g} px, the decision range):", "",
             "| true label | faces | " + " | ".join(f"`{r.value}`: \"{r.text}\"" for r in reasons) + " |",
             "|---|---|" + "---|" * len(reasons)]
    for label, told in every.items():
        n, n_near = sum(told.values()), sum(near[label].values())
        if n:
            lines.append(f"| {label} | {n} ({n_near}) | " + " | ".join(
                f"{100 * told.get(r, 0) / n:.1f} % ({100 * near[label].get(r, 0) / max(n_near, 1):.1f} %)"
                for r in reasons) + " |")
    return lines


def _test_split(bundle: BundleMetadata, metrics: ExportMetrics) -> list[str]:
    """The test split (the training sources' own photos), int8 against float, and its confusion matrix."""
    m, f, p = metrics.test_int8, metrics.test_float, metrics.parity
    lines = ["", "## Test split (same sources as training — flattering)", "",
             "| figure | value |", "|---|---|",
             f"| with_mask vs without_mask faces, balanced accuracy | {pct(m['with_vs_without_balanced_accuracy'])} |",
             f"| correctly masked vs not, balanced accuracy | {pct(m['masked_vs_not_balanced_accuracy'])} |",
             f"| incorrect_mask recall | {pct(m['per_class']['incorrect_mask']['recall'])} "
             f"(of {m['per_class']['incorrect_mask']['support']}) |",
             f"| accuracy (int8 / float) | {pct(m['accuracy'])} / {pct(f['accuracy'])} |",
             f"| int8 vs float: accuracy drop, label agreement | {p['accuracy_drop_points']:.2f} points, "
             f"{pct(p['label_agreement'])} |",
             f"| int8 vs float on the measure-only sources: accuracy drop, masked-granted drop | "
             f"{p.get('held_out_accuracy_drop_points', float('nan')):.2f} / "
             f"{p.get('held_out_masked_granted_drop_points', float('nan')):.2f} points |",
             f"| faces without a correct mask granted | {pct(m['false_grant_rate'])} "
             f"({m['false_grants']} of {m['negatives']}) |",
             f"| masked faces granted | {pct(m['masked_granted_rate'])} |",
             "", "Confusion matrix (rows true, columns predicted: " + ", ".join(bundle.labels) + "):", ""]
    return lines + ["    " + " ".join(f"{n:6d}" for n in row) for row in m["confusion"]]


def _training(metrics: ExportMetrics, provenance: Provenance) -> list[str]:
    """What the models were trained on, and how long each step took."""
    t, nose = provenance.training, provenance.nose_check_training
    holdout_seconds = sum(h.seconds for h in metrics.leave_one_source_out.values())
    return ["", f"Synthetic training crops (training split only; MaskTheFace templates and textures, MIT, warped "
            f"onto real bare faces from the detector's five landmarks): {t.synthetic_incorrect_mask} "
            f"incorrect_mask (below the nose or under the chin), {t.synthetic_with_mask} with_mask "
            f"(nose bridge to chin), {t.synthetic_hand_over_mouth} without_mask (hand over mouth); "
            f"{t.real_train_crops} real training crops."
            + _distillation_note(t)
            + (f" Nose check: {nose.nose_real_patches} real nose patches and {nose.nose_synthetic_patches} from "
               "synthetic masks (each bare training face once worn correctly, once under or below the nose or "
               f"under the chin), trained {nose.seconds:.0f} s." if nose else ""),
            "", f"Wall time: prepare {provenance.prepare_seconds:.0f} s, train {t.seconds:.0f} s, "
            f"leave-one-source-out {holdout_seconds:.0f} s, export {provenance.export_seconds:.0f} s.",
            "", "![trade-off](tradeoff.png) ![confusion](confusion.png) ![curves](curves.png)", ""]


def _distillation_note(trained: TrainSummary) -> str:
    seeds = trained.teacher_seeds
    if not seeds:
        return ""
    return (f" Distilled: the face model's targets are its labels mixed with the mean prediction of {len(seeds)} "
            f"teacher{'s' * (len(seeds) > 1)} (weight {trained.hyperparameters.distillation_weight:g}; the "
            f"same recipe, seeds {', '.join(map(str, seeds))}; the leave-one-source-out models are trained "
            "without teachers).")
