"""Installing a model bundle safely: hashes and format checked, staged, activated, rolled back, shadowed."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.app import App
from maskgate.cli import main
from maskgate.errors import ModelError
from maskgate.records.events import EventLog
from maskgate.services.shadow import REQUEST, RESULT, read_json
from maskgate.teach import current_user
from maskgate.vision.bundles import Models, bundle_id, pack
from maskgate.vision.classifier import default_bundle_dir
from maskgate.vision.core import classifier_bundle
from test_daemon import InTurn, make_config, replay


@pytest.fixture
def bundle_tar(tiny_bundles, tmp_path):
    out = tmp_path / "bundle.tar"
    pack(tiny_bundles["nose"], out)
    return out


def rewrite(tar_path, out, change):
    """A copy of a bundle tar with ``change(files)`` applied to its {name: bytes}."""
    with tarfile.open(tar_path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    change(files)
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_install_verifies_and_stages_a_bundle(bundle_tar, tmp_path, capsys):
    assert main(["model", "install", str(bundle_tar), "--state-dir", str(tmp_path / "state")]) == 0
    models = Models(tmp_path / "state")
    staged = models.path("staged")
    assert sorted(p.name for p in staged.iterdir()) == ["SHA256SUMS", "classifier.tflite", "metadata.json",
                                                        "nose.tflite"]
    assert staged.name == bundle_id(staged)
    assert models.status() == {"active": None, "staged": staged.name, "previous": None}
    event = EventLog(tmp_path / "state").list()[-1]
    assert event.outcome == "model" and event.source == f"operator:{current_user()}"


def test_a_tampered_bundle_is_refused(bundle_tar, tmp_path, capsys):
    def tamper(files):
        model = bytearray(files["classifier.tflite"])
        model[len(model) // 2] ^= 0xFF
        files["classifier.tflite"] = bytes(model)

    tampered = rewrite(bundle_tar, tmp_path / "tampered.tar", tamper)
    assert main(["model", "install", str(tampered), "--state-dir", str(tmp_path / "state")]) == 2
    assert "classifier.tflite does not match its sha256 in SHA256SUMS: refused" in capsys.readouterr().err
    assert Models(tmp_path / "state").status()["staged"] is None
    assert not (tmp_path / "state" / "models" / "bundles").exists(), "nothing unpacked"


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("SHA256SUMS"), "no SHA256SUMS"),
    (lambda f: f.update({"extra.bin": b"x"}), "does not match the files"),
    (lambda f: f.pop("nose.tflite"), "does not match the files"),
    (lambda f: f.update({"../escape": b"x"}), "only plain top-level files"),
])
def test_a_bundle_that_is_not_what_it_claims_is_refused(bundle_tar, tmp_path, change, message):
    with pytest.raises(ModelError, match=message):
        Models(tmp_path).install(rewrite(bundle_tar, tmp_path / "bad.tar", change))


def test_a_bundle_with_consistent_hashes_but_a_broken_model_is_refused(tiny_bundles, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("metadata.json", "classifier.tflite"):
        (broken / name).write_bytes((tiny_bundles["int8"] / name).read_bytes())
    (broken / "classifier.tflite").write_bytes(b"not a model")
    pack(broken, tmp_path / "broken.tar")
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        Models(tmp_path / "state").install(tmp_path / "broken.tar")
    assert list((tmp_path / "state" / "models" / "bundles").iterdir()) == [], "its scratch copy is gone"


def test_the_publishers_sha256_is_checked_when_given(bundle_tar, tmp_path):
    digest = pack(default_bundle_dir(), tmp_path / "shipped.tar")
    Models(tmp_path).install(tmp_path / "shipped.tar", sha256=digest.upper())
    with pytest.raises(ModelError, match="not the .* expected: refused"):
        Models(tmp_path).install(bundle_tar, sha256=digest)


def test_activate_and_rollback_switch_the_doors_model_and_are_logged(bundle_tar, tiny_bundles, tmp_path, capsys):
    state = tmp_path / "state"
    config = make_config(tmp_path)
    where = ["--state-dir", str(state)]
    assert classifier_bundle(config) == default_bundle_dir()
    assert main(["model", "rollback", *where]) == 2, "nothing to roll back to"
    assert main(["model", "install", str(bundle_tar), *where]) == 0
    first = Models(state).status()["staged"]
    assert main(["model", "activate", *where]) == 0
    assert classifier_bundle(config).name == first
    assert Models(state).status() == {"active": first, "staged": None, "previous": "shipped"}

    pack(tiny_bundles["int8"], tmp_path / "second.tar")
    assert main(["model", "install", str(tmp_path / "second.tar"), *where]) == 0
    second = Models(state).status()["staged"]
    assert main(["model", "activate", *where]) == 0
    assert Models(state).status() == {"active": second, "staged": None, "previous": first}
    assert main(["model", "rollback", *where]) == 0
    assert Models(state).status() == {"active": first, "staged": None, "previous": second}
    assert main(["model", "rollback", *where]) == 0, "a second rollback undoes the first"
    assert classifier_bundle(config).name == second
    assert os.path.islink(state / "models" / "active")

    reasons = [e.reason for e in EventLog(state).list() if e.outcome == "model"]
    assert reasons[-5:] == [f"model: activated bundle {first} (was shipped)",
                            f"model: staged bundle {second} from second.tar",
                            f"model: activated bundle {second} (was {first})",
                            f"model: rolled back to bundle {first} (was {second})",
                            f"model: rolled back to bundle {second} (was {first})"]
    who = {e.source for e in EventLog(state).list() if e.outcome == "model"}
    assert who == {f"operator:{current_user()}"}


def test_classify_judges_with_the_doors_active_bundle(tiny_bundles, astronaut, tmp_path, capsys):
    import cv2

    state = tmp_path / "state"
    models = Models(state)
    pack(tiny_bundles["int8"], tmp_path / "b.tar")
    models.install(tmp_path / "b.tar")
    models.activate()
    cv2.imwrite(str(tmp_path / "a.png"), astronaut)
    (tmp_path / "c.yaml").write_text(f"events: {{state_dir: {state}}}\n")
    assert main(["classify", str(tmp_path / "a.png"), "--json", "--config", str(tmp_path / "c.yaml")]) == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    assert "nose_covered" not in face, "the tiny bundle (no nose check) answered, not the shipped one"


def test_the_daemon_loads_the_active_bundle(bundle_tar, core, scenes, tmp_path):
    state = tmp_path / "state"
    models = Models(state)
    models.install(bundle_tar)
    models.activate()
    app = App(make_config(tmp_path), pin_factory=MockFactory(), open_source=replay([scenes["masked"]] * 2))
    try:
        assert app.core.classifier.bundle_dir == models.path("active")
        assert app.core.classifier.nose_threshold is not None, "the tiny nose bundle, not the shipped one"
    finally:
        app.close()


def test_shadow_counts_how_the_staged_model_would_change_verdicts(tiny_bundles, core, scenes, tmp_path, capsys):
    # the staged bundle names its classes in another order: what the active model calls masked it calls bare
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "classifier.tflite").write_bytes((tiny_bundles["int8"] / "classifier.tflite").read_bytes())
    metadata = json.loads((tiny_bundles["int8"] / "metadata.json").read_text())
    metadata["labels"] = ["without_mask", "with_mask", "incorrect_mask"]
    (swapped / "metadata.json").write_text(json.dumps(metadata))
    pack(swapped, tmp_path / "swapped.tar")
    state = tmp_path / "state"
    where = ["--state-dir", str(state)]
    assert main(["model", "install", str(tmp_path / "swapped.tar"), *where]) == 0
    assert main(["model", "shadow", "--hours", "1", *where]) == 0
    request = read_json(state / "models" / REQUEST)
    assert request["bundle"] == Models(state).status()["staged"] and request["until"] > request["started"]

    frames = [scenes["masked"]] * 40 + [scenes["empty"]] * 10 + [scenes["bare"]] * 40
    in_turn = InTurn(frames)
    app = App(make_config(tmp_path), core=core, pin_factory=MockFactory(), open_source=replay(in_turn))
    in_turn.bus = app.bus
    shadow = next(s for s in app.services if s.name == "shadow")
    shadow.sample_seconds = 0.0  # judge every frame it is handed: the replay runs faster than real time
    assert app.run() == 0
    result = read_json(state / "models" / RESULT)
    assert result["bundle"] == request["bundle"] and result["frames"] > 0
    verdicts = result["verdicts"]
    assert set(verdicts) <= {"granted", "no_mask"}
    assert set(verdicts.get("granted", {})) == {"no_mask"}, "every masked frame the staged model would refuse"
    assert set(verdicts.get("no_mask", {})) <= {"granted"}
    assert result["changed"] == result["frames"] == sum(n for row in verdicts.values() for n in row.values())
    assert result["decisions"]["active"].get("granted", 0) > 0 and result["decisions"]["staged"].get("granted", 0) > 0
    assert shadow.run is not None, "still running: its hour is not over"

    assert main(["model", "status", *where]) == 0
    out = capsys.readouterr().out
    assert f"shadow run of {request['bundle']} (running" in out and "granted" in out and "no_mask" in out


def test_an_active_bundle_that_is_gone_stops_the_daemon_with_a_clear_error(bundle_tar, tmp_path, capsys):
    import shutil

    state = tmp_path / "state"
    models = Models(state)
    models.install(bundle_tar)
    models.activate()
    shutil.rmtree(models.path("active"))
    (tmp_path / "c.yaml").write_text(f"events: {{state_dir: {state}}}\n")
    assert main(["check-config", str(tmp_path / "c.yaml")]) == 2
    assert "which is gone: maskgate model rollback" in capsys.readouterr().err
    assert main(["model", "rollback", "--state-dir", str(state)]) == 0
    assert main(["check-config", str(tmp_path / "c.yaml")]) == 0, "back on the shipped bundle"
