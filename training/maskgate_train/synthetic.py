"""Synthetic masked faces, for the training split only: MaskTheFace's RGBA mask templates (MIT,
``../shared/data/mask-templates``) warped onto real bare face crops from YuNet's five landmarks.

Six template anchors (cheek/nose-bridge/cheek on top, jaw/chin/jaw below) are mapped by a
least-squares homography onto points estimated from the eyes, nose tip and mouth corners. Placements:
``correct`` (nose bridge to chin → ``with_mask``), ``under_nose`` (top edge just under the nose tip),
``below_nose`` (lower, nose out) and ``chin`` (nose and mouth out), all ``incorrect_mask``. The gas template is only worn correctly. Each result carries a
coverage record (is each landmark under the mask?) so a placement can be checked, not assumed.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskgate.vision.detector import KEYPOINT_NAMES

PLACEMENTS = {"correct": "with_mask", "under_nose": "incorrect_mask", "below_nose": "incorrect_mask",
              "chin": "incorrect_mask"}
KIND_WEIGHTS = {"surgical": 0.35, "cloth": 0.2, "KN95": 0.15, "N95": 0.15, "gas": 0.15}
TEMPLATE_WIDTH = 256  # templates are downscaled once; crops are 128–160 px
TEXTURE_SIZE = 192


@dataclass(frozen=True)
class Template:
    name: str  # e.g. surgical_blue_left
    kind: str  # surgical | cloth | KN95 | N95 | gas
    view: str  # frontal | left | right
    rgba: np.ndarray  # H×W×4 uint8, BGR + alpha
    anchors: np.ndarray  # 6×2 float32: mask_a … mask_f


@dataclass(frozen=True)
class MaskedFace:
    image: np.ndarray  # S×S×3 uint8 BGR
    label: str  # with_mask | incorrect_mask
    placement: str
    template: str
    covered: dict[str, bool]  # landmark name → under the mask (alpha ≥ 0.5)

    @property
    def consistent(self) -> bool:
        """Does the coverage match the placement? (correct: nose and mouth covered; under_nose and
        below_nose: nose out; chin: nose and mouth out)."""
        nose_mouth = [self.covered[k] for k in ("nose", "mouth_right", "mouth_left")]
        if self.placement == "correct":
            return all(nose_mouth)
        return not self.covered["nose"] and (self.placement != "chin" or not any(nose_mouth))


def load_templates(root: Path) -> list[Template]:
    """Every template in ``masks/masks.cfg`` under ``root`` (``mask-templates/``), downscaled."""
    cfg = configparser.ConfigParser()
    if not cfg.read(root / "masks" / "masks.cfg"):
        raise FileNotFoundError(f"{root / 'masks' / 'masks.cfg'}: mask template config not found")
    templates = []
    for name in cfg.sections():
        section = cfg[name]
        if "template" not in section:
            continue  # MaskTheFace's empty/inpaint pseudo-masks
        rgba = cv2.imread(str(root / section["template"]), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"{root / section['template']}: not an RGBA image")
        scale = TEMPLATE_WIDTH / rgba.shape[1]
        rgba = cv2.resize(rgba, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        anchors = np.array([[float(v) for v in section[f"mask_{k}"].split(",")] for k in "abcdef"], np.float32)
        base, _, view = name.rpartition("_") if name.endswith(("_left", "_right")) else (name, "", "frontal")
        templates.append(Template(name, base.split("_")[0], view, rgba, anchors * scale))
    return templates


def load_textures(root: Path) -> list[np.ndarray]:
    """The pattern images in ``masks/textures/*/``, downscaled to TEXTURE_SIZE on the short side."""
    textures = []
    for path in sorted((root / "masks" / "textures").glob("*/*")):
        image = cv2.imread(str(path))
        if image is not None:
            scale = TEXTURE_SIZE / min(image.shape[:2])
            textures.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return textures


class MaskMaker:
    """Puts random templates, colours, textures and light onto bare face crops."""

    def __init__(self, root: Path):
        self.templates = load_templates(root)
        self.textures = load_textures(root)
        self._by = {(t.kind, t.view): [] for t in self.templates}
        for t in self.templates:
            self._by[(t.kind, t.view)].append(t)

    def put_on(self, crop: np.ndarray, landmarks: np.ndarray, placement: str, rng: np.random.Generator,
               kind: str | None = None) -> MaskedFace:
        """``crop`` (S×S BGR) wearing a mask placed per ``placement``; ``landmarks`` 5×2 in crop pixels."""
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r} (expected one of {', '.join(PLACEMENTS)})")
        frame = FaceFrame(np.asarray(landmarks, np.float32))
        kind = kind or self._random_kind(placement, rng)
        if kind == "gas" and placement != "correct":
            raise ValueError("the gas template is only worn correctly")
        options = self._by.get((kind, frame.view)) or self._by[(kind, "frontal")]
        template = options[rng.integers(len(options))]
        size = crop.shape[0]
        target = frame.anchors(template, placement, rng)
        homography, _ = cv2.findHomography(template.anchors, target, 0)
        warped = cv2.warpPerspective(template.rgba, homography, (crop.shape[1], size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = warped[..., 3].astype(np.float32) / 255.0
        mask_bgr = warped[..., :3].astype(np.float32)
        if kind != "gas":
            mask_bgr = self._recolour(mask_bgr, alpha, rng)
        mask_bgr = _relight(mask_bgr, alpha, crop, frame, rng)
        soft = cv2.GaussianBlur(alpha, (3, 3), 0)[..., None]
        image = np.clip(soft * mask_bgr + (1 - soft) * crop.astype(np.float32), 0, 255).astype(np.uint8)
        covered = {name: bool(_sample(alpha, p) >= 0.5) for name, p in zip(KEYPOINT_NAMES, frame.points)}
        return MaskedFace(image, PLACEMENTS[placement], placement, template.name, covered)

    def _random_kind(self, placement: str, rng) -> str:
        kinds = [k for k in KIND_WEIGHTS if placement == "correct" or k != "gas"]
        weights = np.array([KIND_WEIGHTS[k] for k in kinds])
        return kinds[rng.choice(len(kinds), p=weights / weights.sum())]

    def _recolour(self, mask_bgr: np.ndarray, alpha: np.ndarray, rng) -> np.ndarray:
        """Keep the template's colour, or a random solid colour or texture shaded by the template."""
        style = rng.choice(["original", "colour", "texture"], p=[0.3, 0.35, 0.35])
        if style == "original" or not (alpha > 0.5).any():
            return mask_bgr
        gray = mask_bgr.mean(axis=2)
        shading = (gray / max(float(gray[alpha > 0.5].mean()), 1.0))[..., None]
        h, w = alpha.shape
        if style == "colour" or not self.textures:
            paint = np.broadcast_to(rng.uniform(20, 245, 3).astype(np.float32), (h, w, 3))
        else:
            texture = self.textures[rng.integers(len(self.textures))]
            side = int(rng.integers(min(texture.shape[:2]) // 3, min(texture.shape[:2]) + 1))
            y, x = rng.integers(texture.shape[0] - side + 1), rng.integers(texture.shape[1] - side + 1)
            paint = cv2.resize(texture[y:y + side, x:x + side], (w, h), interpolation=cv2.INTER_LINEAR)
        mix = rng.uniform(0.7, 1.0)
        return mix * paint * shading ** rng.uniform(0.5, 1.0) + (1 - mix) * mask_bgr


class FaceFrame:
    """Face geometry from five landmarks: eye-line frame (u across, v down), template target points."""

    def __init__(self, points: np.ndarray):
        if points.shape != (5, 2) or not np.isfinite(points).all():
            raise ValueError("need five finite landmarks (right eye, left eye, nose, mouth right, mouth left)")
        self.points = points
        right_eye, left_eye, nose, mouth_right, mouth_left = points
        self.eye_centre = (right_eye + left_eye) / 2
        self.eye_distance = max(float(np.linalg.norm(left_eye - right_eye)), 1.0)
        self.u = (left_eye - right_eye) / self.eye_distance
        v = np.array([-self.u[1], self.u[0]], np.float32)
        mouth = (mouth_right + mouth_left) / 2
        self.v = v if np.dot(mouth - self.eye_centre, v) >= 0 else -v
        self.nose, self.mouth = self.local(nose), self.local(mouth)
        self.nose[1] = max(self.nose[1], 0.25 * self.eye_distance)
        self.mouth[1] = max(self.mouth[1], self.nose[1] + 0.2 * self.eye_distance)

    @property
    def view(self) -> str:
        """Which template view fits: the nose swung towards image left → ``left``."""
        yaw = self.nose[0] / self.eye_distance
        return "left" if yaw < -0.25 else "right" if yaw > 0.25 else "frontal"

    def local(self, p: np.ndarray) -> np.ndarray:
        d = p - self.eye_centre
        return np.array([np.dot(d, self.u), np.dot(d, self.v)], np.float32)

    def image(self, x: float, y: float) -> np.ndarray:
        return self.eye_centre + x * self.u + y * self.v

    def midline(self, y: float) -> float:
        """x of the face's midline (through nose tip and mouth centre) at height y."""
        (nx, ny), (mx, my) = self.nose, self.mouth
        return float(nx + (mx - nx) * (y - ny) / (my - ny))

    def anchors(self, template: Template, placement: str, rng) -> np.ndarray:
        """Image points for mask_a … mask_f: top edge and chin for the placement, widths from the eyes."""
        ny, my = float(self.nose[1]), float(self.mouth[1])
        gap = my - ny
        chin = my + gap * rng.uniform(1.4, 1.8)
        if placement == "correct":
            top, bottom = ny * rng.uniform(0.35, 0.55), chin + gap * rng.uniform(-0.1, 0.2)
        elif placement == "under_nose":
            top, bottom = ny + gap * rng.uniform(0.0, 0.3), chin + gap * rng.uniform(0.0, 0.4)
        elif placement == "below_nose":
            top, bottom = ny + gap * rng.uniform(0.3, 0.65), chin + gap * rng.uniform(0.0, 0.4)
        else:  # chin: mouth out too
            top, bottom = my + gap * rng.uniform(0.5, 0.9), chin + gap * rng.uniform(0.8, 1.5)
        b, e = template.anchors[1], template.anchors[4]
        height = max(e[1] - b[1], 1.0)
        ts = (template.anchors[:, 1] - b[1]) / height
        offsets = template.anchors[:, 0] - (b[0] + (e[0] - b[0]) * ts)  # across, from the template's b–e line
        scale = 2 * self.eye_distance * rng.uniform(0.95, 1.15) / max(offsets[2] - offsets[0], 1.0)
        # each side reaches past its mouth corner, whatever the template's view
        corners = [self.local(p) for p in self.points[3:]]
        reach = [c[0] - self.midline(c[1]) for c in corners]
        left = max(scale, 1.4 * max(0.0, -min(reach)) / max(-offsets[[0, 3]].min(), 1.0))
        right = max(scale, 1.4 * max(0.0, max(reach)) / max(offsets[[2, 5]].max(), 1.0))

        def at(t, offset):  # the template's own layout around its b–e line, laid along the face's midline
            y = top + (bottom - top) * t
            return self.image(self.midline(y) + offset * (left if offset < 0 else right), y)

        points = [at(t, offset) for t, offset in zip(ts, offsets)]
        return np.array(points, np.float32)


def _relight(mask_bgr: np.ndarray, alpha: np.ndarray, crop: np.ndarray, frame: FaceFrame, rng) -> np.ndarray:
    """Pull the mask's brightness part-way to the face's, with a random side light."""
    inside = alpha > 0.5
    if not inside.any():
        return mask_bgr
    face_level = float(crop[~inside].mean()) if (~inside).any() else 128.0
    mask_level = max(float(mask_bgr[inside].mean()), 1.0)
    gain = (face_level / mask_level) ** rng.uniform(0.2, 0.6) * rng.uniform(0.8, 1.15)
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    across = ((xs - frame.eye_centre[0]) * frame.u[0] + (ys - frame.eye_centre[1]) * frame.u[1]) / (2 * frame.eye_distance)
    light = 1 + rng.uniform(-0.3, 0.3) * across
    return mask_bgr * (gain * light)[..., None]


def _sample(alpha: np.ndarray, point: np.ndarray) -> float:
    x, y = int(round(float(point[0]))), int(round(float(point[1])))
    if not (0 <= y < alpha.shape[0] and 0 <= x < alpha.shape[1]):
        return 0.0
    return float(alpha[y, x])

