"""The door decision over time: each face is followed as one person and judged on all of its frames."""

from __future__ import annotations

import numpy as np
import pytest

from maskgate.vision.classifier import LABELS, Prediction
from maskgate.config import DecisionConfig
from maskgate.access.decider import Decider
from maskgate.access.evidence import frontalness
from maskgate.access.reasons import TEXT, Reason
from maskgate.access.tracks import Tracker
from maskgate.access.verdict import Rule
from maskgate.vision.detector import Face
from maskgate.vision.core import FaceResult, FrameResult

MASKED = {"with_mask": 0.97, "without_mask": 0.02, "incorrect_mask": 0.01}
BARE = {"with_mask": 0.03, "without_mask": 0.95, "incorrect_mask": 0.02}
NOSE_OUT = {"with_mask": 0.2, "without_mask": 0.1, "incorrect_mask": 0.7}
UNSURE = {"with_mask": 0.6, "without_mask": 0.3, "incorrect_mask": 0.1}


def landmarks(x, y, size, *, turn=0.0):
    """YuNet's five keypoints for a face box; ``turn``: the nose's offset from the eyes' midpoint, in eye distances."""
    eyes = 0.4 * size
    cx = x + size / 2
    return ((cx - eyes / 2, y + 0.38 * size), (cx + eyes / 2, y + 0.38 * size), (cx + turn * eyes, y + 0.55 * size),
            (cx - 0.3 * eyes, y + 0.75 * size), (cx + 0.3 * eyes, y + 0.75 * size))


def person(probs, *, size=200, x=100, y=50, score=0.9, turn=0.0, nose=None):
    face = Face((x, y, x + size, y + size), score, landmarks(x, y, size, turn=turn))
    return FaceResult(face, Prediction(probs, nose))


def frame(*people):
    return FrameResult(640, 480, tuple(people), 1.0, 1.0)


def config(**overrides):
    base = dict(frames_to_decide=3, unlock_seconds=5, denied_seconds=2, cooldown_seconds=1, min_face_px=80)
    return DecisionConfig(**{**base, **overrides})


def rule(decision: DecisionConfig, nose_threshold: float | None = None) -> Rule:
    return Rule.from_config(decision, threshold=0.9, nose_threshold=nose_threshold)


def decider(**overrides) -> Decider:
    return Decider(config(**overrides), rule=rule(config(**overrides)))


def feed(decider, frames, *, start=0.0, step=0.1):
    return [decider.update(f, start + i * step) for i, f in enumerate(frames)]


def test_masked_person_is_granted_on_clear_frames_then_relocked_after_unlock_seconds():
    door = decider()
    d = feed(door, [frame(person(MASKED))] * 3)
    assert [x.state for x in d] == ["checking", "checking", "granted"]
    assert d[2].outcome == "granted" and d[2].unlocked and d[2].track == 1 and d[2].face == 0
    assert door.update(frame(person(MASKED)), 0.3).outcome is None, "one grant per decision"
    assert door.update(frame(), 4.0).unlocked, "open for unlock_seconds, seen or not"
    after = door.update(frame(person(MASKED)), 5.3)
    assert after.state == "cooldown" and not after.unlocked
    assert door.update(frame(person(MASKED)), 6.2).state == "cooldown"
    regranted = feed(door, [frame(person(MASKED))] * 3, start=6.4)
    assert [d.outcome for d in regranted].count("granted") == 1


@pytest.mark.parametrize("probs, reason", [(BARE, Reason.NO_MASK), (NOSE_OUT, Reason.INCORRECT)])
def test_unmasked_or_incorrect_never_unlocks_and_is_denied_once_while_in_view(probs, reason):
    decisions = feed(decider(), [frame(person(probs))] * 50)
    assert not any(d.unlocked for d in decisions)
    denied = [d for d in decisions if d.outcome == "denied"]
    assert len(denied) == 1 and denied[0].reason is reason and (denied[0].face, denied[0].track) == (0, 1)
    assert {d.state for d in decisions[3:]} == {"denied"}, "refused while in view, not re-decided"


def test_unsure_frames_ask_to_face_the_camera_and_neither_unlock_nor_deny():
    decisions = feed(decider(), [frame(person(UNSURE))] * 100)
    assert {d.state for d in decisions} == {"checking"}
    assert {d.outcome for d in decisions} == {None}
    assert decisions[-1].reason is Reason.UNSURE


def test_a_scripted_walk_up_is_granted_without_a_denial_first():
    """From far (too small) to near, turned at first, unsure while turned, then facing the camera."""
    frames = []
    for i in range(25):
        size = 50 + 7 * i  # 50 → 218 px over 2.4 s
        turn = max(0.45 - 0.04 * i, 0.0)
        probs = UNSURE if turn > 0.2 else MASKED
        frames.append(frame(person(probs, size=size, x=300 - size / 2 + 2 * i, y=200 - size / 2, turn=turn)))
    decisions = feed(decider(), frames)
    assert decisions[0].reason is Reason.TOO_SMALL and decisions[0].state == "idle"
    assert "denied" not in {d.state for d in decisions}
    granted = [d for d in decisions if d.outcome == "granted"]
    assert len(granted) == 1 and granted[0].track == max(d.track or 0 for d in decisions), "one person, one track"
    assert any(d.reason is Reason.UNSURE for d in decisions), "asked to face the camera on the way"


def test_a_streak_of_lucky_frames_inside_a_wrong_mask_track_does_not_open_the_door():
    nose_rule = rule(config(), nose_threshold=0.6)
    wrong = [person(UNSURE, nose=0.9), person(MASKED, nose=0.2)] * 5  # unsure, or the nose check sees the nose
    lucky = [person({"with_mask": 0.95, "without_mask": 0.03, "incorrect_mask": 0.02}, nose=0.9)] * 4
    track = feed(Decider(config(), rule=nose_rule), [frame(p) for p in wrong + lucky + wrong * 4])
    assert not any(d.unlocked for d in track)
    assert [d.outcome for d in track].count("denied") >= 1
    fresh = feed(Decider(config(), rule=nose_rule), [frame(p) for p in lucky])
    assert fresh[-1].unlocked, "the same frames from a new person would open it"


def test_a_masked_person_after_an_unmasked_one_is_not_shown_a_denial():
    door = decider(denied_seconds=3)
    first = feed(door, [frame(person(BARE))] * 8)
    assert first[-1].state == "denied"
    gone = feed(door, [frame()] * 6, start=0.8)  # 0.6 s nobody: the first person has left
    assert gone[-1].state == "idle"
    second = feed(door, [frame(person(MASKED, x=140))] * 5, start=1.4)
    assert "denied" not in {d.state for d in second}, "within denied_seconds of the denial, yet a new person"
    assert second[2].outcome == "granted" and second[2].track != first[-1].track


def test_a_new_face_ends_the_previous_persons_denial_view():
    door = decider(denied_seconds=3)
    feed(door, [frame(person(BARE, x=40, size=170))] * 5)
    both = feed(door, [frame(person(BARE, x=40, size=120), person(MASKED, x=360, size=200))] * 3, start=0.5)
    assert both[0].state == "checking" and both[0].track == 2, "the nearest is someone new: checked afresh"
    assert both[-1].outcome == "granted"


def test_policy_all_one_bare_face_beside_a_masked_one_denies():
    door = decider(policy="all")
    two = frame(person(MASKED, size=220), person(BARE, size=200, x=400))
    decisions = feed(door, [two] * 10)
    assert not any(d.unlocked for d in decisions)
    (denied,) = [d for d in decisions if d.outcome == "denied"]
    assert (denied.reason, denied.face, denied.track, denied.people) == (Reason.NOT_EVERYONE, 1, 2, 2)


def test_policy_all_denies_a_bare_face_beside_an_unsure_one():
    door = decider(policy="all")
    decisions = feed(door, [frame(person(UNSURE, size=220), person(BARE, size=200, x=400))] * 5)
    assert [d.outcome for d in decisions].count("denied") == 1 and decisions[-1].reason is Reason.NOT_EVERYONE


def test_policy_all_grants_when_every_person_is_masked():
    decisions = feed(decider(policy="all"), [frame(person(MASKED, size=220), person(MASKED, size=200, x=400))] * 3)
    assert decisions[-1].outcome == "granted" and decisions[-1].people == 2


def test_policy_nearest_lets_the_largest_face_decide():
    two = frame(person(MASKED, size=220), person(BARE, size=150, x=400))
    granted = feed(decider(policy="nearest"), [two] * 3)[-1]
    assert (granted.outcome, granted.reason, granted.face, granted.track) == ("granted", Reason.GRANTED, 0, 1)


def test_far_small_face_is_ignored():
    far_bare = frame(person(BARE, size=60))
    decisions = feed(decider(min_face_px=120), [far_bare] * 10)
    assert {d.state for d in decisions} == {"idle"}
    assert decisions[0].reason is Reason.TOO_SMALL
    assert decider().update(frame(), 0.0).reason is Reason.NO_FACE
    near_masked_far_bare = frame(person(MASKED, size=240), person(BARE, size=60, x=400))
    assert feed(decider(min_face_px=120, policy="all"), [near_masked_far_bare] * 3)[-1].unlocked


def test_a_person_who_fixes_their_mask_is_let_in():
    door = decider()
    feed(door, [frame(person(NOSE_OUT))] * 5)
    fixed = feed(door, [frame(person(MASKED))] * 60, start=0.5)
    assert fixed[0].state == "denied" and any(d.outcome == "granted" for d in fixed)


def test_a_face_missed_for_a_frame_stays_the_same_person():
    door = decider()
    decisions = feed(door, [frame(person(MASKED)), frame(), frame(person(MASKED, x=104)), frame(person(MASKED, x=108))])
    assert decisions[1].state == "checking" and decisions[-1].outcome == "granted"
    assert {d.track for d in decisions} == {1}


def test_turned_small_and_doubtful_faces_weigh_less():
    judge = rule(config())
    weight = {name: judge.evidence(fr).weight for name, fr in {
        "clear": person(MASKED), "turned": person(MASKED, turn=0.6), "small": person(MASKED, size=90),
        "doubtful": person(MASKED, score=0.6), "unsure": person(UNSURE)}.items()}
    assert weight["clear"] == pytest.approx(1.0)
    assert all(0 < weight[k] < 0.8 for k in ("turned", "small", "doubtful", "unsure")), weight
    assert frontalness(landmarks(0, 0, 100, turn=0.2)) == 1.0 and frontalness(landmarks(0, 0, 100, turn=0.8)) == 0.0


def test_tracks_follow_moving_and_growing_faces_and_end_when_they_leave():
    tracker = Tracker(lost_seconds=0.5)
    a = tracker.update([(100, 100, 200, 200)], 0.0)[0]
    for i in range(1, 10):  # walking closer and to the right: 10 px/frame, growing 8 px/frame
        x, grow = 100 + 10 * i, 8 * i
        tracks = tracker.update([(x, 100, x + 100 + grow, 200 + grow), (500, 50, 560, 110)], i * 0.1)
    assert [t.id for t in tracks][0] == a.id and a.frames == 10 and a.first_seen == 0.0
    assert a.height == pytest.approx(172) and len(tracks) == 2
    tracker.update([], 1.2)
    assert len(tracker.tracks) == 2, "unseen briefly: still there"
    assert tracker.update([], 1.5) == [], "unseen for over lost_seconds: left"
    assert tracker.update([(100, 100, 200, 200)], 1.6)[0].id == 3, "who comes next is someone new"


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


def test_while_the_door_is_open_the_words_follow_someone_unmasked_in_view():
    door = decider()
    granted = feed(door, [frame(person(MASKED))] * 3)[-1]
    meanwhile = feed(door, [frame(person(MASKED), person(BARE, size=150, x=400))] * 6, start=0.3)
    assert all(d.unlocked for d in meanwhile), "the door stays open for the person let in"
    assert (meanwhile[-1].reason, meanwhile[-1].track, meanwhile[-1].face) == (Reason.NOT_EVERYONE, 2, 1)
    assert granted.track == 1 and feed(door, [frame(person(MASKED))] * 3, start=1.0)[-1].reason is Reason.GRANTED


def test_a_mask_pulled_down_after_a_grant_is_not_let_in_again():
    door = decider(unlock_seconds=1, cooldown_seconds=0.5)
    feed(door, [frame(person(MASKED))] * 15)
    pulled_down = feed(door, [frame(person(BARE))] * 30, start=1.5)
    assert not any(d.outcome == "granted" for d in pulled_down)
    assert any(d.outcome == "denied" for d in pulled_down)
