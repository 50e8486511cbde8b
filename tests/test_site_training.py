"""A site's exported faces in the training recipe: joined with a weight, partly held out, and the guard
that refuses a bundle letting in more people without a mask on the general measure-only sources."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, fields

import numpy as np
import pytest

from maskgate.records.faces import FaceStore
from maskgate.vision.classifier import LABELS
from maskgate.vision.bundles import Models
from maskgate_train.dataset import load_prepared
from maskgate_train.errors import DataError
from maskgate_train.prepare import CropRecord
from maskgate_train.site import add_site_data, check_site_bundle, read_site_tar

BLUE, RED = (230, 60, 40), (40, 60, 230)  # BGR: the tiny model's masked and bare faces


def crops(bgr, n, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.array(bgr) + rng.normal(0, 6, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def work_dir(tmp_path, rows_and_crops):
    """A prepared work dir (crops.npz, manifest.csv, prepare.json) holding the given (split, source, label, crops)."""
    work = tmp_path / "work"
    work.mkdir()
    images, rows = [], []
    for split, source, label, batch in rows_and_crops:
        for i, crop in enumerate(batch):
            images.append(crop)
            rows.append(asdict(CropRecord(source, f"{source}/{label}/{i}.jpg", label, f"{source}-{label}-{i}",
                                          "detector", 200.0, split=split)))
    np.savez(work / "crops.npz", images=np.stack(images))
    with open(work / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(CropRecord)])
        writer.writeheader()
        writer.writerows(rows)
    (work / "prepare.json").write_text(json.dumps({"input_size": 32, "margin": 0.2}))
    return work


def site_tar(tmp_path, faces):
    """A site export made the way a door makes it: collected, labelled, exported."""
    store = FaceStore(tmp_path / "door")
    for bgr, label, n in faces:
        for crop in crops(bgr, n, seed=n):
            face = store.add(crop, when=time.time(), outcome="denied", reason="no mask",
                             probs={"with_mask": 0.5, "without_mask": 0.5, "incorrect_mask": 0.0}, nose_covered=None,
                             keypoints=np.tile([16.0, 16.0], (5, 1)), model="test")
            store.label(face.id, label, by="operator:test")
    store.export(tmp_path / "site.tar", site="Front door")
    return tmp_path / "site.tar"


def test_site_faces_join_training_with_their_weight_and_a_held_out_part(tmp_path):
    work = work_dir(tmp_path, [("train", "general", "with_mask", crops(BLUE, 4)),
                               ("heldout", "ilc", "without_mask", crops(RED, 4))])
    tar = site_tar(tmp_path, [(BLUE, "masked", 10), (RED, "no_mask", 10), (RED, "not_a_face", 3)])
    manifest, faces = read_site_tar(tar)
    assert manifest["site"] == "Front door" and len(faces) == 20, "not-a-face crops stay out"
    summary = add_site_data(work, tar, weight=2.0, holdout=0.3)
    assert summary["faces"] == {"train": {"with_mask": 7, "without_mask": 7}, "test": {"with_mask": 3, "without_mask": 3}}
    splits = load_prepared(work)
    site_train = [r for r in splits["train"].rows if r["source"] == "site"]
    assert len(site_train) == 28, "each training face twice"
    site_test = [r for r in splits["test"].rows if r["source"] == "site"]
    assert len(site_test) == 6 and not {r["group"] for r in site_test} & {r["group"] for r in site_train}
    assert all(len(r["landmarks"].split()) == 10 for r in site_train)
    assert len(splits["heldout"].labels) == 4 and all(r["source"] == "ilc" for r in splits["heldout"].rows)
    assert json.loads((work / "prepare.json").read_text())["site_data"]["weight"] == 2.0
    with pytest.raises(DataError, match="already added"):
        add_site_data(work, tar, weight=2.0)


def test_a_file_that_is_not_a_site_export_is_named(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="x.tar: not a readable site export"):
        read_site_tar(tmp_path / "x.tar")


def swapped_bundle(tiny_bundles, tmp_path):
    """The tiny model with its classes renamed: it lets bare (red) faces in."""
    out = tmp_path / "new"
    out.mkdir()
    (out / "classifier.tflite").write_bytes((tiny_bundles["int8"] / "classifier.tflite").read_bytes())
    metadata = json.loads((tiny_bundles["int8"] / "metadata.json").read_text())
    metadata["labels"] = ["without_mask", "with_mask", "incorrect_mask"]
    (out / "metadata.json").write_text(json.dumps(metadata))
    return out


def general_and_site(tmp_path):
    return work_dir(tmp_path, [("heldout", "ilc", "with_mask", crops(BLUE, 8)),
                               ("heldout", "ilc", "without_mask", crops(RED, 8)),
                               ("test", "site", "with_mask", crops(BLUE, 4, seed=1))])


def test_a_site_bundle_that_lets_in_more_bare_faces_is_refused_and_removed(tiny_bundles, tmp_path):
    work, new = general_and_site(tmp_path), swapped_bundle(tiny_bundles, tmp_path)
    with pytest.raises(DataError, match=r"rose from 0.0% \(shipped\) to 100.0%"):
        check_site_bundle(work, new, tiny_bundles["int8"])
    assert not new.exists() and not new.with_suffix(".tar").exists()


def test_a_site_bundle_that_holds_the_shipped_rule_is_packed_with_its_figures(tiny_bundles, tmp_path):
    work = general_and_site(tmp_path)
    new = tmp_path / "new"
    new.mkdir()
    for name in ("classifier.tflite", "metadata.json"):
        (new / name).write_bytes((tiny_bundles["int8"] / name).read_bytes())
    figures = check_site_bundle(work, new, tiny_bundles["int8"])
    assert figures["general_measure"]["new"] == {"false_grants": 0.0, "masked_granted": 1.0, "negatives": 8, "masked": 8}
    assert figures["site_held_out"]["new"]["masked"] == 4
    assert json.loads((new / "site.json").read_text())["site_held_out"]["new"]["masked_granted"] == 1.0
    assert Models(tmp_path / "state").install(new.with_suffix(".tar")), "the device accepts the packed bundle"
    assert LABELS[0] == "with_mask"
