"""`GET /metrics` in the running daemon, scraped and parsed with Prometheus' own text parser."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families
from test_mqtt import Broker, mosquitto  # noqa: F401  (the session fixture that finds the broker binary)
from test_web import get
from web_rig import TOKEN, SceneCamera, running, wait_for, web_config

from maskgate.config import changed
from maskgate.messages import FrameProcessed


def scrape(web, **kwargs) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    code, headers, body = get(web, "/metrics", **kwargs)
    assert code == 200 and headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_metrics_follow_frames_decisions_door_and_health(tmp_path, core, scenes, mosquitto):  # noqa: F811
    broker = Broker(mosquitto, tmp_path / "broker").start()
    config = changed(web_config(tmp_path, remote={"enabled": True, "token": TOKEN}),
                     mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port})
    camera = SceneCamera(scenes, "bare")
    try:
        with running(config, core, camera) as (app, web):
            decided = Counter()
            app.bus.subscribe(FrameProcessed, lambda m: decided.update([(m.decision.outcome, str(m.decision.reason))]),
                              name="test:reasons", when=lambda m: m.decision.outcome is not None)
            wait_for(lambda: decided, what="a denial")
            camera.show("masked")
            wait_for(lambda: any(outcome == "granted" for outcome, _ in decided), what="a grant")
            camera.show("empty")
            app.bus.drain()
            metrics = wait_for(lambda: (m := scrape(web))[("maskgate_mqtt_connected", ())] == 1 and m,
                               what="MQTT connected")

            assert metrics[("maskgate_frames_total", ())] >= sum(decided.values()) * 2
            assert metrics[("maskgate_fps", ())] > 0
            for stage in ("detect", "classify"):
                labels = (("stage", stage),)
                count = metrics[("maskgate_inference_seconds_count", labels)]
                assert count == metrics[("maskgate_inference_seconds_bucket", (("le", "+Inf"), ("stage", stage)))]
                assert count >= 1 and metrics[("maskgate_inference_seconds_sum", labels)] > 0
            logged = {(dict(k[1])["outcome"], dict(k[1])["reason"]): v for k, v in metrics.items()
                      if k[0] == "maskgate_decisions_total"}
            assert logged == dict(decided), "one series per outcome and reason code, counting every decision"
            assert metrics[("maskgate_door_changes_total", (("door", "unlocked"), ("source", "vision")))] >= 1
            assert metrics[("maskgate_camera_ok", ())] == 1 and metrics[("maskgate_events_ok", ())] == 1
            shown = [dict(k[1])["maskgate_door_display"] for k, v in metrics.items()
                     if k[0] == "maskgate_door_display" and v == 1]
            assert shown == [app.controller.state.display] and "maskgate_door_unlocked" in {k[0] for k in metrics}

            assert get(web, "/metrics", source="127.0.0.2")[0] == 401, "another host needs the token"
            assert scrape(web, source="127.0.0.2", headers={"Authorization": f"Bearer {TOKEN}"})
            broker.stop()
            wait_for(lambda: scrape(web)[("maskgate_mqtt_connected", ())] == 0, what="MQTT disconnected")
            camera.show("broken")
            wait_for(lambda: scrape(web)[("maskgate_camera_ok", ())] == 0, what="camera lost")
    finally:
        broker.stop()


def test_without_mqtt_there_is_no_mqtt_gauge(tmp_path, core, scenes):
    with running(web_config(tmp_path), core, SceneCamera(scenes, "empty")) as (app, web):
        metrics = scrape(web)
        assert ("maskgate_door_unlocked", ()) in metrics
        assert not any(name.startswith("maskgate_mqtt") for name, _ in metrics)
