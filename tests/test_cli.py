"""`maskgate classify` and `maskgate bench` as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import pytest
from conftest import ASTRONAUT_FACE

from maskgate.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, no_face_photo):
    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "astronaut.png"), astronaut)
    cv2.imwrite(str(folder / "rocket.jpg"), no_face_photo)
    return folder


def classify_json(capsys, *args):
    code = main(["classify", "--json", *map(str, args)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_astronaut_has_one_face_and_rocket_none(capsys, photos, tiny_bundles):
    code, records, _ = classify_json(capsys, photos, "--model", tiny_bundles["int8"])
    assert code == 0
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in records}
    astronaut, rocket = by_name["astronaut.png"], by_name["rocket.jpg"]
    assert (astronaut["width"], astronaut["height"]) == (512, 512)
    (face,) = astronaut["faces"]
    assert all(abs(a - b) <= 12 for a, b in zip(face["box"], ASTRONAUT_FACE))
    assert face["label"] in face["probs"] and face["confidence"] == max(face["probs"].values())
    assert astronaut["decision"] in ("granted", "denied")
    assert rocket["faces"] == [] and rocket["decision"] == "no_face"


def test_unreadable_image_is_reported_and_the_rest_still_processed(capsys, photos, tiny_bundles, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    code, records, err = classify_json(capsys, broken, photos / "astronaut.png", tmp_path / "missing.png",
                                       "--model", tiny_bundles["int8"])
    assert code == 1
    assert [r["image"].rsplit("/", 1)[-1] for r in records] == ["astronaut.png"]
    assert "broken.jpg: not a readable image" in err and "missing.png: no such file" in err


def test_readable_table_without_json(capsys, photos, tiny_bundles):
    assert main(["classify", str(photos / "astronaut.png"), "--model", str(tiny_bundles["int8"])]) == 0
    out = capsys.readouterr().out
    assert "astronaut.png  512x512" in out and "face 1:" in out


def test_bad_model_dir_is_one_line_error(capsys, photos, tmp_path):
    assert main(["classify", str(photos), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metadata.json: model metadata not found" in err


def test_bench_json_reports_every_figure(capsys, tiny_bundles):
    assert main(["bench", "--json", "--seconds", "0.5", "--model", str(tiny_bundles["int8"])]) == 0
    report = json.loads(capsys.readouterr().out)
    for stage in ("detect_ms", "classify_ms", "total_ms"):
        assert 0 < report[stage]["median"] <= report[stage]["p95"]
    assert report["fps"] > 0 and report["rss_mb"] > 10 and report["frame_size"] == "640x480"


def test_bench_on_a_folder_of_frames(capsys, photos, tiny_bundles):
    assert main(["bench", "--frames", str(photos), "--seconds", "0.2", "--model", str(tiny_bundles["int8"])]) == 0
    assert "fps" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["bench", "--seconds", "-1"], ["classify"], ["frobnicate"], ["classify", "x", "--threads", "0"]])
def test_bad_arguments_exit_with_usage_not_traceback(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_console_script_version_and_help():
    version = subprocess.run([sys.executable, "-m", "maskgate.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("maskgate ")
    helptext = subprocess.run([sys.executable, "-m", "maskgate.cli", "classify", "--help"], capture_output=True, text=True)
    assert "--model DIR" in helptext.stdout


def test_classify_says_why_and_which_face_decided(capsys, scenes, tiny_bundles, tmp_path):
    for name in ("masked", "bare", "far"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), scenes[name])
    code, records, _ = classify_json(capsys, tmp_path, "--model", tiny_bundles["int8"])
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in records}
    answers = {name: (r["decision"], r["reason"], r["decided_by"]) for name, r in by_name.items()}
    assert answers == {"masked.png": ("granted", "granted", 0), "bare.png": ("denied", "no_mask", 0),
                       "far.png": ("no_face", "too_small", None)}
    assert len(by_name["far.png"]["faces"]) == 1, "a face was seen, too small to count"
    assert by_name["bare.png"]["reason_text"] == "no mask"
    assert main(["classify", str(tmp_path / "far.png"), str(tmp_path / "bare.png"),
                 "--model", str(tiny_bundles["int8"])]) == 0
    out = capsys.readouterr().out
    assert "→ NO_FACE  [too_small: faces too far away to judge: step closer (faces under 80 px do not count)]" in out
    assert "→ DENIED  [no_mask: no mask; face 1 decided]" in out and " *face 1:" in out


def door(*args) -> int:
    """``maskgate door …`` as the shell runs it: the exit code, whether argparse or the command refused."""
    try:
        return main(["door", *args])
    except SystemExit as exited:
        return exited.code


@pytest.mark.parametrize("duration, error", [
    ("1e308", "at most 86400 s"), ("25h", "at most 86400 s"), ("5e-324", "must be at least 1 s"),
    ("0.5s", "must be at least 1 s"), ("nan", "not a duration"), ("inf", "not a duration"), ("-1h", "negative"),
])
def test_door_for_is_bounded_before_anything_is_sent(duration, error, capsys, tmp_path):
    code = door("unlock", f"--for={duration}", "--socket", str(tmp_path / "none.sock"))
    err = capsys.readouterr().err
    assert code == 2 and error in err and len(err.strip().splitlines()) == 1, err
    assert "no control socket" not in err, "refused before connecting"


def test_door_for_maximum_comes_from_the_config(capsys, tmp_path):
    config = tmp_path / "maskgate.yaml"
    config.write_text("control: {max_override_seconds: 3600}\n")
    code = door("lock", "--for", "2h", "--config", str(config), "--socket", str(tmp_path / "none.sock"))
    assert code == 2 and "at most 3600 s (control.max_override_seconds" in capsys.readouterr().err


def test_classify_on_an_empty_folder_says_so_and_fails(capsys, tmp_path, photos, tiny_bundles):
    (tmp_path / "notes.txt").write_text("no photos here")
    assert main(["classify", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"{tmp_path}: no images in this folder (looked for .bmp, .jpeg, .jpg, .png" in captured.err
    code, records, err = classify_json(capsys, tmp_path, photos / "astronaut.png", "--model", tiny_bundles["int8"])
    assert code == 1 and len(records) == 1 and "no images in this folder" in err, "the rest is still classified"


def test_bench_on_frames_of_mixed_sizes_reports_each_size(capsys, photos, tiny_bundles, astronaut, tmp_path):
    cv2.imwrite(str(tmp_path / "a-small.png"), cv2.resize(astronaut, (320, 240)))
    cv2.imwrite(str(tmp_path / "b-large.png"), astronaut)
    args = ["bench", "--frames", str(tmp_path), "--seconds", "0.2", "--model", str(tiny_bundles["int8"])]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frame_size"] == "mixed" and list(report["by_size"]) == ["320x240", "512x512"]
    assert sum(row["frames"] for row in report["by_size"].values()) == report["frames"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("frames of 2 sizes (all of them, then each size)")
    assert out[-2].split()[0] == "320x240" and out[-1].split()[0] == "512x512"


def test_bench_loop_prints_sentences_not_raw_dicts(capsys):
    from maskgate.bench import loop as bench_loop

    bench_loop.main(["--seconds", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert "fps through the whole loop" in lines[0] and lines[1].startswith("detect    median")
    assert lines[3].startswith("peak RSS") and re.fullmatch(r"RSS over time: \d+ s [\d.]+ MB(, \d+ s [\d.]+ MB)*", lines[4])
    assert not any(c in "".join(lines) for c in "{}[]"), lines


def test_commands_do_not_print_the_runtimes_xnnpack_notice(photos, tmp_path):
    done = subprocess.run([sys.executable, "-m", "maskgate.cli", "classify", str(photos / "astronaut.png"),
                           str(tmp_path / "missing.png")], capture_output=True, text=True)
    assert "astronaut.png" in done.stdout and "XNNPACK" not in done.stderr + done.stdout
    assert done.stderr.strip().endswith("missing.png: no such file"), "other messages still get through"
