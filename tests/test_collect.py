"""Collection at the site: the daemon keeps chosen faces, retention and the cap hold, labels, export, purge."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tarfile
import time

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.app import App
from maskgate.cli import main
from maskgate.records.events import EventLog
from maskgate.records.faces import FaceStore
from maskgate.sources.scenes import door_scene
from maskgate.teach import current_user
from test_daemon import make_config, replay


def run_daemon(core, tmp_path, frames, **sections):
    app = App(make_config(tmp_path, **sections), core=core, pin_factory=MockFactory(), open_source=replay(frames))
    status = {}
    web = next((s for s in app.services if s.name == "web"), None)
    assert app.run() == 0
    if web is not None:
        status = web.feed.snapshot()
    return app, status


def add_face(store: FaceStore, when: float, p_mask: float = 0.6) -> int:
    crop = np.full((32, 32, 3), 128, np.uint8)
    return store.add(crop, when=when, outcome="denied", reason="no_mask",
                     probs={"with_mask": p_mask, "without_mask": 1 - p_mask, "incorrect_mask": 0.0},
                     nose_covered=None, keypoints=np.zeros((5, 2)), model="test").id


def test_collection_is_off_by_default_and_keeps_nothing(core, scenes, tmp_path):
    _, status = run_daemon(core, tmp_path, [scenes["bare"]] * 8)
    assert status["collecting"] is False
    assert not (tmp_path / "state" / "collect").exists()


def test_denied_faces_are_kept_as_model_crops_with_the_models_answer(core, scenes, tmp_path):
    frames = [scenes["masked"]] * 6 + [scenes["bare"]] * 6
    _, status = run_daemon(core, tmp_path, frames,
                           collect={"enabled": True, "keep": "denied", "every_seconds": 0})
    assert status["collecting"] is True, "the kiosk is told to show its notice"
    store = FaceStore(tmp_path / "state")
    faces = store.list()
    assert 1 <= len(faces) <= 6, "the bare frames only (at most one per frame)"
    assert {f.outcome for f in faces} == {"denied"} and {f.model_label for f in faces} == {"without_mask"}
    for face in faces:
        path = store.crops / face.file
        assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o640
        assert len(face.keypoints) == 5 and face.label is None
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o750


def test_unsure_keeps_only_frames_where_the_mask_was_not_clearly_seen(core, scenes, tmp_path):
    faint = door_scene(masked=True, mask_bgr=(230, 100, 30))  # with_mask, p ≈ 0.85: below 0.95, so unsure
    run_daemon(core, tmp_path, [scenes["bare"]] * 6 + [faint] * 6,
               collect={"enabled": True, "keep": "unsure", "every_seconds": 0}, classifier={"threshold": 0.95})
    faces = FaceStore(tmp_path / "state").list()
    assert faces and {f.model_label for f in faces} == {"with_mask"}
    assert {f.reason for f in faces} == {"unsure"}


def test_every_seconds_spaces_what_is_kept(core, scenes, tmp_path):
    run_daemon(core, tmp_path, [scenes["bare"]] * 10, collect={"enabled": True, "keep": "all", "every_seconds": 3600})
    assert len(FaceStore(tmp_path / "state").list()) == 1


def test_retention_deletes_old_crops_labelled_or_not(tmp_path):
    store = FaceStore(tmp_path)
    now = time.time()
    old = [add_face(store, now - 10 * 86400) for _ in range(3)]
    store.label(old[0], "masked", by="operator:test")
    fresh = add_face(store, now - 3600)
    files = {f.id: store.crops / f.file for f in store.list()}
    assert store.enforce(retention_days=7, max_images=100) == 3
    assert [f.id for f in store.list()] == [fresh]
    assert not any(files[i].exists() for i in old) and files[fresh].exists()


def test_the_size_cap_drops_the_oldest_unlabelled_first(tmp_path):
    store = FaceStore(tmp_path)
    now = time.time()
    ids = [add_face(store, now - 100 + i) for i in range(6)]
    store.label(ids[0], "no_mask", by="operator:test")
    store.label(ids[1], "masked", by="operator:test")
    assert store.enforce(retention_days=7, max_images=4) == 2
    assert [f.id for f in store.list()] == [ids[0], ids[1], ids[4], ids[5]]
    assert len(list(store.crops.iterdir())) == 4


def test_the_daemon_applies_retention_at_start_even_with_collection_off(core, scenes, tmp_path):
    store = FaceStore(tmp_path / "state")
    add_face(store, time.time() - 30 * 86400)
    kept = add_face(store, time.time())
    store.close()
    run_daemon(core, tmp_path, [scenes["empty"]] * 2, collect={"enabled": False, "retention_days": 7})
    assert [f.id for f in FaceStore(tmp_path / "state").list()] == [kept]


def test_label_flow_from_the_command_line(tmp_path, monkeypatch, capsys):
    store = FaceStore(tmp_path)
    ids = [add_face(store, time.time()) for _ in range(5)]
    where = ["--state-dir", str(tmp_path)]
    assert main(["collect", "label", str(ids[0]), str(ids[1]), "--as", "masked", *where]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("x\nw\nf\ns\n"))
    assert main(["collect", "label", *where]) == 0  # asks for each unlabelled face; 'x' is asked again
    assert "3 labelled; 0 left" in capsys.readouterr().out
    faces = {f.id: f for f in store.list()}
    assert [faces[i].label for i in ids] == ["masked", "masked", "worn_wrongly", "not_a_face", "skip"]
    assert {f.labelled_by for f in faces.values()} == {f"operator:{current_user()}"}
    assert main(["collect", "list", "--unlabelled", "--json", *where]) == 0
    assert capsys.readouterr().out == ""
    assert main(["collect", "label", "999", "--as", "masked", *where]) == 2
    assert "no collected face 999" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["collect", "label", str(ids[0]), "--as", "maybe", *where])
    assert exited.value.code == 2 and "invalid choice: 'maybe'" in capsys.readouterr().err


def test_export_writes_images_labels_and_a_manifest_that_says_whose_data_it_is(tmp_path, capsys):
    store = FaceStore(tmp_path / "state")
    ids = [add_face(store, 1_800_000_000 + i * 3600) for i in range(5)]
    for face_id, label in zip(ids, ["masked", "masked", "no_mask", "skip", "worn_wrongly"]):
        store.label(face_id, label, by="operator:test")
    (tmp_path / "c.yaml").write_text(f"events: {{state_dir: {tmp_path / 'state'}}}\ncollect: {{site: Front door}}\n")
    out = tmp_path / "site.tar"
    assert main(["collect", "export", "--out", str(out), "--config", str(tmp_path / "c.yaml")]) == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        rows = list(csv.DictReader(io.TextIOWrapper(tar.extractfile("labels.csv"))))
    assert manifest["format"] == "maskgate-site-data/1" and manifest["site"] == "Front door"
    assert manifest["counts"] == {"masked": 2, "no_mask": 1, "worn_wrongly": 1}, "skipped faces stay out"
    assert manifest["first"] == "2027-01-15T08:00:00Z" and manifest["last"] == "2027-01-15T12:00:00Z"
    assert "Front door" in manifest["ownership"] and "belong to the site" in manifest["ownership"]
    assert [r["label"] for r in rows] == ["masked", "masked", "no_mask", "worn_wrongly"]
    assert [r["class"] for r in rows] == ["with_mask", "with_mask", "without_mask", "incorrect_mask"]
    assert sorted(n for n in names if n.startswith("crops/")) == sorted(r["file"] for r in rows)


def test_export_with_nothing_labelled_is_a_clear_error(tmp_path, capsys):
    add_face(FaceStore(tmp_path), time.time())
    assert main(["collect", "export", "--out", str(tmp_path / "x.tar"), "--state-dir", str(tmp_path)]) == 2
    assert "label some collected faces first" in capsys.readouterr().err
    assert not (tmp_path / "x.tar").exists()


def test_purge_deletes_every_crop_and_label_and_is_logged_with_the_user(tmp_path, capsys):
    store = FaceStore(tmp_path)
    ids = [add_face(store, time.time()) for _ in range(3)]
    store.label(ids[0], "masked", by="operator:test")
    assert main(["collect", "purge", "--state-dir", str(tmp_path)]) == 2, "asks for --yes"
    assert len(store.list()) == 3
    assert main(["collect", "purge", "--yes", "--state-dir", str(tmp_path)]) == 0
    assert store.list() == [] and list(store.crops.iterdir()) == []
    assert store.counts() == {"total": 0, "unlabelled": 0}
    event = EventLog(tmp_path).list()[-1]
    assert (event.outcome, event.reason, event.source) == ("collect", "collect: purged 3 collected faces",
                                                           f"operator:{current_user()}")
    assert not os.listdir(store.crops)
