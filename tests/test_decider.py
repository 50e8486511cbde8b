"""The door decision over time: grants need N masked frames, everything else keeps the door locked."""

from __future__ import annotations

import numpy as np
import pytest

from maskgate.vision.classifier import LABELS, Prediction
from maskgate.config import DecisionConfig
from maskgate.access.decider import Decider
from maskgate.access.reasons import TEXT, Reason
from maskgate.access.verdict import Rule
from maskgate.vision.detector import Face
from maskgate.vision.core import FaceResult, FrameResult

MASKED = {"with_mask": 0.97, "without_mask": 0.02, "incorrect_mask": 0.01}
BARE = {"with_mask": 0.03, "without_mask": 0.95, "incorrect_mask": 0.02}
NOSE_OUT = {"with_mask": 0.2, "without_mask": 0.1, "incorrect_mask": 0.7}
UNSURE = {"with_mask": 0.6, "without_mask": 0.3, "incorrect_mask": 0.1}


def person(probs, *, size=200, x=100):
    face = Face((x, 50, x + size, 50 + size), 0.9, ((0, 0),) * 6)
    return FaceResult(face, Prediction(probs))


def frame(*people):
    return FrameResult(640, 480, tuple(people), 1.0, 1.0)


def config(**overrides):
    base = dict(frames_to_decide=3, unlock_seconds=5, denied_seconds=2, cooldown_seconds=1, min_face_px=80)
    return DecisionConfig(**{**base, **overrides})


def rule(decision: DecisionConfig, nose_threshold: float | None = None) -> Rule:
    return Rule.from_config(decision, threshold=0.9, nose_threshold=nose_threshold)


def feed(decider, frames, *, start=0.0, step=0.1):
    return [decider.update(f, start + i * step) for i, f in enumerate(frames)]


def test_masked_person_is_granted_after_n_frames_then_relocked_after_unlock_seconds():
    decider = Decider(config(), rule=rule(config()))
    d = feed(decider, [frame(person(MASKED))] * 3)
    assert [x.state for x in d] == ["checking", "checking", "granted"]
    assert d[2].outcome == "granted" and d[2].unlocked
    assert decider.update(frame(person(MASKED)), 5.1).unlocked  # 0.2 + 5 s: still open
    after = decider.update(frame(person(MASKED)), 5.3)
    assert after.state == "cooldown" and not after.unlocked
    assert decider.update(frame(person(MASKED)), 6.2).state == "cooldown"
    regranted = feed(decider, [frame(person(MASKED))] * 3, start=6.4)
    assert regranted[-1].outcome == "granted"


@pytest.mark.parametrize("probs, reason", [(BARE, Reason.NO_MASK), (NOSE_OUT, Reason.INCORRECT)])
def test_unmasked_or_incorrect_never_unlocks_and_is_denied(probs, reason):
    decider = Decider(config(), rule=rule(config()))
    decisions = feed(decider, [frame(person(probs))] * 50)
    assert not any(d.unlocked for d in decisions)
    denied = [d for d in decisions if d.outcome == "denied"]
    assert denied and denied[0].reason is reason and denied[0].face == 0


def test_unsure_frames_ask_to_face_the_camera_and_neither_unlock_nor_deny():
    decider = Decider(config(), rule=rule(config()))
    decisions = feed(decider, [frame(person(UNSURE))] * 50)
    assert {d.state for d in decisions} == {"checking"}
    assert {d.outcome for d in decisions} == {None}
    assert decisions[-1].reason is Reason.UNSURE


def test_masked_person_walking_up_unsure_is_let_in_without_a_denial_first():
    decider = Decider(config(), rule=rule(config()))
    decisions = feed(decider, [frame(person(UNSURE))] * 4 + [frame(person(MASKED))] * 3)
    assert [d.outcome for d in decisions] == [None] * 6 + ["granted"]


def test_an_unsure_frame_restarts_the_count_of_masked_frames():
    decider = Decider(config(), rule=rule(config()))
    masked, unsure = frame(person(MASKED)), frame(person(UNSURE))
    decisions = feed(decider, [masked, masked, unsure, masked, masked])
    assert not any(d.unlocked for d in decisions)
    assert decider.update(masked, 1.0).outcome == "granted"


def test_policy_all_denies_a_bare_face_beside_an_unsure_one():
    decider = Decider(config(policy="all"), rule=rule(config(policy="all")))
    two = frame(person(UNSURE, size=220), person(BARE, size=150, x=400))
    decisions = feed(decider, [two] * 3)
    assert (decisions[2].outcome, decisions[2].reason, decisions[2].face) == ("denied", Reason.NOT_EVERYONE, 1)


def test_one_unmasked_frame_restarts_the_count():
    decider = Decider(config(), rule=rule(config()))
    decisions = feed(decider, [frame(person(MASKED))] * 2 + [frame(person(BARE))] + [frame(person(MASKED))] * 2)
    assert not any(d.unlocked for d in decisions)


def test_policy_all_denies_when_one_of_two_people_is_unmasked():
    decider = Decider(config(policy="all"), rule=rule(config(policy="all")))
    two = frame(person(MASKED, size=220), person(BARE, size=150, x=400))
    decisions = feed(decider, [two] * 5)
    assert not any(d.unlocked for d in decisions)
    assert (decisions[2].outcome, decisions[2].reason, decisions[2].face) == ("denied", Reason.NOT_EVERYONE, 1)
    assert decisions[2].people == 2


def test_policy_nearest_lets_the_largest_face_decide():
    decider = Decider(config(policy="nearest"), rule=rule(config(policy="nearest")))
    two = frame(person(MASKED, size=220), person(BARE, size=150, x=400))
    granted = feed(decider, [two] * 3)[-1]
    assert (granted.outcome, granted.reason, granted.face) == ("granted", Reason.GRANTED, 0)


def test_far_small_face_is_ignored():
    decider = Decider(config(min_face_px=120), rule=rule(config(min_face_px=120)))
    far_bare = frame(person(BARE, size=60))
    decisions = feed(decider, [far_bare] * 10)
    assert {d.state for d in decisions} == {"idle"}
    assert decisions[0].reason is Reason.TOO_SMALL
    assert Decider(config(), rule=rule(config())).update(frame(), 0.0).reason is Reason.NO_FACE
    near_masked_far_bare = frame(person(MASKED, size=200), person(BARE, size=60, x=400))
    assert feed(Decider(config(min_face_px=120, policy="all"), rule=rule(config(min_face_px=120, policy="all"))), [near_masked_far_bare] * 3)[-1].unlocked


def test_denial_is_shown_for_denied_seconds_then_checks_again():
    decider = Decider(config(), rule=rule(config()))
    feed(decider, [frame(person(BARE))] * 3)
    assert decider.update(frame(person(MASKED)), 2.1).state == "denied"
    assert decider.update(frame(person(MASKED)), 2.3).state == "checking"


def test_nobody_resets_to_idle_and_reset_forgets_a_grant():
    decider = Decider(config(), rule=rule(config()))
    assert decider.update(frame(), 0.0).state == "idle"
    feed(decider, [frame(person(MASKED))] * 3)
    decider.reset()
    assert decider.update(frame(), 0.5).state == "idle"
    assert not decider.update(frame(person(MASKED)), 0.6).unlocked


def test_a_grant_says_how_long_it_lasts():
    decider = Decider(config(), rule=rule(config()))
    granted = feed(decider, [frame(person(MASKED))] * 3)[-1]
    assert granted.outcome == "granted" and granted.seconds_left == pytest.approx(5.0)
    assert decider.update(frame(person(MASKED)), 0.2 + 2.0).seconds_left == pytest.approx(3.0)


def test_nose_check_denies_a_confident_mask_whose_nose_is_out():
    nose_rule = rule(config(), nose_threshold=0.6)
    covered = FaceResult(person(MASKED).face, Prediction(MASKED, nose_covered=0.9))
    nose_out = FaceResult(person(MASKED).face, Prediction(MASKED, nose_covered=0.3))
    assert nose_rule.judge([covered]).outcome == "granted"
    verdict = nose_rule.judge([nose_out])
    assert verdict.outcome == "denied" and verdict.reason is Reason.INCORRECT
    assert rule(config()).judge([nose_out]).outcome == "granted", "a bundle without a nose check ignores it"
    decider = Decider(config(), rule=nose_rule)
    assert not any(d.unlocked for d in feed(decider, [frame(nose_out)] * 20))


def test_the_rule_takes_its_defaults_from_the_decision_config():
    defaults = DecisionConfig()
    built = rule(defaults)
    assert (built.policy, built.min_face_px) == (defaults.policy, defaults.min_face_px)
    with pytest.raises(TypeError):
        Rule(threshold=0.9)  # no second set of defaults


def test_counts_and_the_vectorised_grants_agree_with_judge():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=500)
    nose = np.where(rng.random(500) < 0.1, np.nan, rng.random(500))
    sizes = rng.uniform(40, 200, size=500)
    judged = rule(config(), nose_threshold=0.5)
    grants = judged.grants(probs, nose)
    for row, covered, size, grant in zip(probs, nose, sizes, grants):
        face = FaceResult(person(MASKED, size=size).face,
                          Prediction(dict(zip(LABELS, map(float, row))), None if np.isnan(covered) else float(covered)))
        verdict = judged.judge([face])
        assert judged.counts(face) == (size >= 80)
        if judged.counts(face):
            assert (verdict.outcome == "granted") == grant
            assert (judged.refusal(face) is None) == grant
        else:
            assert (verdict.outcome, verdict.reason) == ("no_face", Reason.TOO_SMALL)
    assert 0 < grants.sum() < len(grants), "both answers occur"


def test_every_reason_code_has_words_and_is_its_string():
    assert set(TEXT) == set(Reason) and all(TEXT[reason] for reason in Reason)
    assert {Reason.NO_MASK: "view"}.get("no_mask") == "view" and f"{Reason.TOO_SMALL}" == "too_small"
