"""The event log: real SQLite, nothing committed is ever lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from maskgate.cli import main
from maskgate.records.events import Event, EventLog


def test_records_round_trip(tmp_path):
    log = EventLog(tmp_path)
    faces = ({"label": "without_mask", "confidence": 0.93, "box": [1, 2, 3, 4]},)
    written = log.record(Event(1000.0, "denied", "no mask", 1, faces, 4.2))
    (read,) = log.list()
    assert read == written and read.id == 1 and read.faces == faces
    assert sqlite3.connect(log.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_since_and_limit(tmp_path):
    log = EventLog(tmp_path)
    for t in range(10):
        log.record(Event(float(t), "granted", "mask worn"))
    assert [e.time for e in log.list(since=7.0)] == [7.0, 8.0, 9.0]
    assert [e.time for e in log.list(limit=2)] == [8.0, 9.0]


def test_no_images_unless_snapshots_are_enabled(tmp_path):
    frame = np.zeros((48, 64, 3), np.uint8)
    assert EventLog(tmp_path / "a").record(Event(1.0, "denied", "no mask"), frame=frame).snapshot is None
    assert not (tmp_path / "a" / "snapshots").exists()
    log = EventLog(tmp_path / "b", snapshot_denied=True, snapshot_retention_days=1)
    stale = tmp_path / "b" / "snapshots" / "denied-old.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 3 * 86400,) * 2)
    event = log.record(Event(time.time(), "denied", "no mask"), frame=frame)
    assert (tmp_path / "b" / "snapshots" / event.snapshot).is_file()
    assert not stale.exists(), "snapshots older than the retention are deleted"
    assert log.record(Event(2.0, "granted", "mask worn"), frame=frame).snapshot is None


WRITER = """
import sys, time
from maskgate.records.events import EventLog, Event
log = EventLog(sys.argv[1])
for i in range(100000):
    log.record(Event(float(i), "denied", "no mask"))
    print(i, flush=True)
"""


def test_kill_9_loses_no_committed_event(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 200:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    times = [e.time for e in EventLog(tmp_path).list()]
    assert len(times) >= acknowledged + 1
    assert times[: acknowledged + 1] == [float(i) for i in range(acknowledged + 1)]


def test_events_cli_json_round_trips(tmp_path, capsys):
    log = EventLog(tmp_path)
    written = [log.record(Event(time.time(), "granted", "mask worn", 1,
                                ({"label": "with_mask", "confidence": 0.99, "box": [0, 0, 9, 9]},), 3.5)),
               log.record(Event(time.time(), "denied", "cover your nose", 1, (), 3.1))]
    assert main(["events", "--state-dir", str(tmp_path), "--json"]) == 0
    read = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert read == [e.as_dict() for e in written]
    assert main(["events", "--state-dir", str(tmp_path), "--since", "1h"]) == 0
    assert "cover your nose" in capsys.readouterr().out


def test_events_cli_without_a_log_is_one_line_error(tmp_path, capsys):
    assert main(["events", "--state-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no event log yet" in err


def test_events_cli_text_says_who_and_why(tmp_path, capsys):
    log = EventLog(tmp_path)
    now = time.time()
    log.record(Event(now, "override", "unlocked: delivery", source="operator:alice", until=now + 900))
    log.record(Event(now + 1, "granted", "mask worn", 1, ({"label": "with_mask", "confidence": 0.99,
                                                          "box": [0, 0, 9, 9]},), 3.5, source="vision"))
    log.record(Event(now + 2, "started", "daemon started"))
    assert main(["events", "--state-dir", str(tmp_path)]) == 0
    override, granted, started = capsys.readouterr().out.splitlines()
    ends = time.strftime("%H:%M:%S", time.localtime(now + 900))
    assert override.split()[2:] == ["override", "operator:alice", "unlocked:", "delivery", "until", ends]
    assert granted.split()[2:5] == ["granted", "vision", "mask"] and granted.endswith("[with_mask 99%]")
    assert started.split()[2:4] == ["started", "-"]


def test_a_log_that_cannot_grow_is_a_health_state_and_its_rows_are_written_once_it_can(tmp_path, caplog):
    """SQLite's own "database or disk is full" on a real file (max_page_count), without needing root."""
    import logging

    from maskgate.bus import EventBus
    from maskgate.messages import EventLogChanged, Lifecycle
    from maskgate.records.recorder import Recorder

    caplog.set_level(logging.INFO)
    bus, log = EventBus(), EventLog(tmp_path)
    health: list[bool] = []
    bus.subscribe(EventLogChanged, lambda m: health.append(m.ok), name="test")
    recorder = Recorder(log, bus)
    bus.publish(Lifecycle("started", "started", 1.0))
    assert recorder.flush(5) and health == []
    pages = log._db.execute("PRAGMA page_count").fetchone()[0]
    log._db.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(200):  # rows until the file would have to grow
        bus.publish(Lifecycle("error", f"row {i} " + "x" * 500, 2.0 + i))
    assert not recorder.flush(5) and not recorder.ok
    bus.drain()
    assert health == [False]
    failing = [r for r in caplog.records if r.name == "maskgate.records.recorder"]
    assert len(failing) == 1 and "database or disk is full" in failing[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback"

    log._db.execute("PRAGMA max_page_count = 1000000")
    bus.publish(Lifecycle("stopped", "stopped", 300.0))
    assert recorder.flush(5) and recorder.ok
    bus.close()
    assert health == [False, True]
    assert [e.reason for e in log.list()] == ["started"] + [f"row {i} " + "x" * 500 for i in range(200)] + ["stopped"]
