"""Every kiosk state in a real headless Chromium at the three screen sizes, for the layout test and for
the screenshots in docs/kiosk/ (written by ``python tests/kiosk_views.py``, with the shipped model).

The daemon runs on a scene camera; once its preview shows, the status pushes are taken over so each
state can be shown in turn exactly as the server would send it (``screen()`` gives the words)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from maskgate.config import changed
from maskgate.services.web.live import VIEWS, screen

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "kiosk"
SIZES = {"800x480": (800, 480), "1280x800": (1280, 800), "1920x1080": (1920, 1080)}
# Every state a person at the door can see ("offline" is the multi-door page's), with the scene behind it.
STATES = {key: "masked" if key in ("granted", "closing", "checking", "face_camera", "override_unlocked")
          else "bare" if key in ("denied", "nose", "everyone", "one_person") else "empty"
          for key in VIEWS if key != "offline"}
OPEN = {"granted", "closing", "emergency", "override_unlocked"}


def take_over(app, web) -> None:
    """Stop the daemon's own status pushes (previews keep coming)."""
    for subscription in web.feed.subscriptions[:2]:
        app.bus.unsubscribe(subscription)


def show(app, web, key: str) -> None:
    """Send the kiosk the status the server sends in state ``key``."""
    status = {**web.feed.snapshot(), "fps": round(app.loop.fps, 1)}
    view = screen(key, "", 1)
    unlocked = key in OPEN
    status.update(state=key, view=view, door="unlocked" if unlocked else "locked",
                  seconds_left={"granted": 4.0, "closing": 2.0}.get(key), camera_ok=key != "camera_lost")
    web.feed.channel.publish_status(status)


def visit_every_state(app, web, camera, driver, on_state) -> None:
    """Show each state in ``driver`` (the daemon's pushes taken over) and call ``on_state(key)`` once shown."""
    from web_rig import wait_for

    driver.get(web.url + "/")
    wait_for(lambda: driver.execute_script('return document.querySelector("[data-role=preview]").dataset.frames'),
             what="a preview frame")
    for key, scene in STATES.items():
        camera.show(scene)
        frames = int(driver.execute_script('return document.querySelector("[data-role=preview]").dataset.frames'))
        wait_for(lambda: int(driver.execute_script(
            'return document.querySelector("[data-role=preview]").dataset.frames')) > frames + 1, what="new frames")
        show(app, web, key)
        wait_for(lambda: driver.execute_script('return document.querySelector("[data-role=title]").textContent')
                 == VIEWS[key][3], what=key)
        on_state(key)


def write_docs() -> None:
    """docs/kiosk/<size>-<state>.png with the shipped model, as small palette PNGs."""
    import numpy as np
    from PIL import Image
    from test_kiosk_browser import browser
    from web_rig import SceneCamera, running, web_config

    from maskgate.sources.scenes import door_scene
    from maskgate.vision.core import InferenceCore

    DOCS.mkdir(exist_ok=True)
    scenes = {"masked": door_scene(masked=True), "bare": door_scene(masked=False),
              "empty": np.full((480, 640, 3), 90, np.uint8)}
    with tempfile.TemporaryDirectory() as tmp:
        config = changed(web_config(Path(tmp)), classifier={"threshold": None})
        camera = SceneCamera(scenes, "empty")
        with running(config, InferenceCore.from_config(config), camera) as (app, web):
            take_over(app, web)
            for name, size in SIZES.items():
                with browser(size) as driver:
                    def save(key: str) -> None:
                        path = DOCS / f"{name}-{key}.png"
                        driver.save_screenshot(str(path))
                        Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)

                    visit_every_state(app, web, camera, driver, save)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    write_docs()
