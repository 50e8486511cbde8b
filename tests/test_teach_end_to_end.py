"""Teaching a door end to end, as an operator would: the daemon collects the faces it is unsure of from
a replay, the operator labels them with the CLI, adapts the model on the device, runs it in shadow,
activates it (the door now lets those masks in) and rolls it back."""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from maskgate.app import App
from maskgate.cli import main
from maskgate.config import Config
from maskgate.records.events import EventLog
from maskgate.records.faces import FaceStore
from maskgate.services.shadow import RESULT, read_json
from maskgate.sources.scenes import door_scene
from maskgate.vision.bundles import Models
from test_adapt import bundle  # noqa: F401  (the fixture: the tiny bundle with reference embeddings)
from test_daemon import InTurn, replay

FAINT = (220, 110, 40)  # BGR: a mask the tiny model calls with_mask at p ≈ 0.5, below the bundle's 0.8: "unsure"


def door(tmp_path, bundle_dir, frames, **sections):
    in_turn = InTurn(frames)
    config = Config.model_validate({
        "camera": {"backend": "scenes"}, "classifier": {"model_dir": str(bundle_dir)},
        "decision": {"frames_to_decide": 3, "unlock_seconds": 1.0, "denied_seconds": 0.5, "cooldown_seconds": 0.5,
                     "min_face_px": 150},
        "events": {"state_dir": str(tmp_path / "state")}, "web": {"enabled": False}, **sections})
    app = App(config, pin_factory=MockFactory(), open_source=replay(in_turn))
    in_turn.bus = app.bus
    return app


def outcomes(tmp_path) -> list[str]:
    return [e.outcome for e in EventLog(tmp_path / "state").list() if e.outcome in ("granted", "denied")]


def test_collect_label_adapt_shadow_activate_and_roll_back(bundle, tmp_path, capsys):  # noqa: F811
    faint, bare = door_scene(masked=True, mask_bgr=FAINT), door_scene(masked=False)
    state = tmp_path / "state"
    where = ["--state-dir", str(state)]

    # 1. the door is unsure of the faint masks: it never lets them in, and keeps their faces
    app = door(tmp_path, bundle, [faint] * 30 + [bare] * 30,
               collect={"enabled": True, "keep": "denied", "every_seconds": 0})
    assert app.run() == 0
    assert "granted" not in outcomes(tmp_path)
    store = FaceStore(state)
    kept = store.list()
    assert {f.reason for f in kept} == {"unsure", "no_mask"}

    # 2. the operator labels them (here from what the replay showed)
    for reason, label in (("unsure", "masked"), ("no_mask", "no_mask")):
        ids = [str(f.id) for f in kept if f.reason == reason]
        assert main(["collect", "label", *ids, "--as", label, *where]) == 0
    assert store.counts()["unlabelled"] == 0

    # 3. adapt on the device: a new last layer, staged
    config = ["--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text(f"events: {{state_dir: {state}}}\nclassifier: {{model_dir: {bundle}}}\n")
    assert main(["model", "adapt", *config]) == 0, capsys.readouterr().err
    models = Models(state)
    staged = models.status()["staged"]
    assert staged

    # 4. shadow: the staged model judges the same frames beside the active one
    assert main(["model", "shadow", "--hours", "1", *where]) == 0
    app = door(tmp_path, bundle, [faint] * 30 + [bare] * 30)
    next(s for s in app.services if s.name == "shadow").sample_seconds = 0.0
    assert app.run() == 0
    result = read_json(state / "models" / RESULT)
    assert result["verdicts"]["unsure"].get("granted", 0) > 0, "faint masks would now be let in"
    assert set(result["verdicts"]["no_mask"]) == {"no_mask"}, "bare faces stay refused"
    assert result["decisions"]["staged"].get("granted", 0) > 0 == result["decisions"]["active"].get("granted", 0)

    # 5. activate: the door lets the faint masks in, and still refuses bare faces
    assert main(["model", "activate", *where]) == 0
    assert models.status()["active"] == staged
    before = len(outcomes(tmp_path))
    app = door(tmp_path, models.path("active"), [faint] * 15 + [bare] * 15)
    assert app.run() == 0
    assert outcomes(tmp_path)[before:][:2] == ["granted", "denied"]

    # 6. roll back: the model before it again
    assert main(["model", "rollback", *where]) == 0
    assert models.status()["active"] == "shipped" and models.status()["previous"] == staged
    reasons = [e.reason for e in EventLog(state).list() if e.outcome == "model"]
    assert reasons[-1].startswith("model: rolled back") and any(r.startswith("model: adapted") for r in reasons)
