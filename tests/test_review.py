"""The review page and its API: collected faces behind the remote token, labelled by click or key;
and the kiosk's notice while collection is on (real server, real Chromium)."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np

from maskgate.config import changed
from maskgate.records.faces import FaceStore
from test_kiosk_browser import browser, chromium  # noqa: F401  (the fixture)
from test_web import get
from web_rig import TOKEN, SceneCamera, running, wait_for, web_config

RIGHT = {"Authorization": f"Bearer {TOKEN}"}


def keep_faces(tmp_path, n=3) -> list[int]:
    store = FaceStore(tmp_path / "state")
    ids = [store.add(np.full((64, 64, 3), 40 * i, np.uint8), when=time.time(), outcome="denied", reason="unsure",
                     probs={"with_mask": 0.6, "without_mask": 0.3, "incorrect_mask": 0.1}, nose_covered=None,
                     keypoints=np.zeros((5, 2)), model="test").id for i in range(n)]
    store.close()
    return ids


def test_review_api_needs_the_token_and_labels_faces(tmp_path, core, scenes):
    ids = keep_faces(tmp_path)
    config = web_config(tmp_path, remote={"enabled": True, "token": TOKEN})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web):
        remote = "127.0.0.2"
        label = {"Content-Type": "application/json", **RIGHT}
        for path in ("/review", "/api/v1/collect/faces", f"/api/v1/collect/faces/{ids[0]}/crop.jpg"):
            assert get(web, path, source=remote)[0] == 401, path
        assert get(web, f"/api/v1/collect/faces/{ids[0]}/label", source=remote, method="POST",
                   body='{"label": "masked"}', headers={"Content-Type": "application/json"})[0] == 401

        code, _, body = get(web, "/api/v1/collect/faces", source=remote, headers=RIGHT)
        listed = json.loads(body)
        assert code == 200 and [f["id"] for f in listed["faces"]] == ids
        assert listed["faces"][0]["model_label"] == "with_mask" and "keypoints" not in listed["faces"][0]
        code, headers, jpeg = get(web, f"/api/v1/collect/faces/{ids[1]}/crop.jpg", source=remote, headers=RIGHT)
        assert code == 200 and headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)

        code, _, body = get(web, f"/api/v1/collect/faces/{ids[0]}/label", source=remote, method="POST",
                            body='{"label": "worn_wrongly"}', headers=label)
        assert code == 200 and json.loads(body)["counts"]["worn_wrongly"] == 1
        face = FaceStore(tmp_path / "state").get(ids[0])
        assert (face.label, face.labelled_by) == ("worn_wrongly", "web:127.0.0.2")
        remaining = json.loads(get(web, "/api/v1/collect/faces", source=remote, headers=RIGHT)[2])["faces"]
        assert [f["id"] for f in remaining] == ids[1:]

        for body, status in (('{"label": "maybe"}', 400), ("not json", 400), ('{"label": 3}', 400),
                             ('{"label": "masked", "pad": "' + "x" * 300 + '"}', 413)):
            assert get(web, f"/api/v1/collect/faces/{ids[1]}/label", source=remote, method="POST", body=body,
                       headers=label)[0] == status, body
        assert get(web, "/api/v1/collect/faces/999/label", source=remote, method="POST",
                   body='{"label": "masked"}', headers=label)[0] == 404
        assert get(web, "/api/v1/collect/faces/999/crop.jpg", source=remote, headers=RIGHT)[0] == 404


def test_without_collected_faces_there_is_no_review_page(tmp_path, core, scenes):
    with running(web_config(tmp_path), core, SceneCamera(scenes, "empty")) as (app, web):
        assert get(web, "/review")[0] == 404 and get(web, "/api/v1/collect/faces")[0] == 404


def test_review_page_labels_with_one_key_and_the_kiosk_shows_the_collection_notice(tmp_path, core, scenes, chromium):
    ids = keep_faces(tmp_path)
    config = changed(web_config(tmp_path), collect={"enabled": True})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web), browser((1280, 800)) as driver:
        from selenium.webdriver.common.by import By

        driver.get(f"{web.url}/")
        notice = driver.find_element(By.CSS_SELECTOR, '[data-role="notice"]')
        wait_for(notice.is_displayed, what="the collection notice")
        assert "Pictures of faces at this door are kept" in notice.text

        driver.get(f"{web.url}/review")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".face")) == 3, what="three faces")
        focused = driver.switch_to.active_element
        assert focused.get_attribute("data-id") == str(ids[0])
        focused.send_keys("m")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".face")) == 2, what="one face labelled")
        driver.find_element(By.CSS_SELECTOR, f'.face[data-id="{ids[2]}"] button[data-label="not_a_face"]').click()
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".face")) == 1, what="a click labels")
        store = FaceStore(tmp_path / "state")
        assert [f.label for f in store.list()] == ["masked", None, "not_a_face"]
        assert store.get(ids[0]).labelled_by == "web:127.0.0.1"



def test_remote_view_shows_the_installed_models_and_the_shadow_counts(tmp_path, core, scenes, tiny_bundles, chromium):
    from maskgate.services.shadow import RESULT, write_json
    from maskgate.vision.bundles import Models, pack

    models = Models(tmp_path / "state")
    pack(tiny_bundles["int8"], tmp_path / "b.tar")
    staged = models.install(tmp_path / "b.tar")
    write_json(models.root / RESULT, {"bundle": staged, "started": 0, "until": 1, "by": "operator:test",
                                      "finished": True, "frames": 7, "changed": 5,
                                      "verdicts": {"unsure": {"granted": 5}, "no_mask": {"no_mask": 2}},
                                      "decisions": {"active": {"denied": 1}, "staged": {"granted": 1, "denied": 1}}})
    config = web_config(tmp_path, remote={"enabled": True, "token": TOKEN})
    with running(config, core, SceneCamera(scenes, "empty")) as (app, web), browser((1280, 800)) as driver:
        from selenium.webdriver.common.by import By

        assert get(web, "/api/v1/model", source="127.0.0.2")[0] == 401
        code, _, body = get(web, "/api/v1/model", source="127.0.0.2", headers=RIGHT)
        model = json.loads(body)
        assert code == 200 and (model["active"], model["staged"]) == (None, staged)
        assert model["shadow"]["verdicts"]["unsure"] == {"granted": 5}

        driver.get(f"{web.url}/remote")
        text = driver.find_element(By.ID, "model")
        wait_for(lambda: "shadow run of" in text.text, what="the model line")
        assert f"staged: {staged}" in text.text and "5 verdicts changed" in text.text
        rows = driver.find_elements(By.CSS_SELECTOR, "#shadow tbody tr")
        assert [r.text for r in rows] == ["unsure granted 5", "no_mask no_mask 2"]
        assert rows[0].get_attribute("class") == "changed"
