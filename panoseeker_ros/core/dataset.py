"""APRS episode datasets: one JSON file, images and masks beside it.

Format (``dataset.json``; paths are relative to the file)::

    {
      "format": "panoseeker-aprs", "version": 1,
      "episodes": [
        {
          "id": "bedroom-001",                       # unique
          "scene": "scenes/bedroom.png",             # ERP image, H×2H, RGB
          "instruction": "the wardrobe next to the mirror",
          "category": "ALLO",                        # EGO | UNIQ | ALLO | MULTIHOP
          "initial_pose": {"theta": 0.0, "phi": 0.0},          # degrees
          "target": {
            "name": "wardrobe",
            "centroid": {"theta": 87.5, "phi": 2.0},           # degrees; optional (from the mask)
            "mask": {"png": "masks/bedroom-001.png"}           # or {"polygons": [[[u, v], ...], ...]}
          }
        }
      ]
    }

Rules checked when the file is loaded (one line naming the episode and the field on failure):

* ``scene`` exists, decodes and is exactly 2:1 (W = 2H); ``initial_pose`` and ``centroid`` have
  θ ∈ [-180, 180] (180 is stored as -180) and ϕ ∈ [-90, 90]; the file is UTF-8.
* Polygons are in ERP pixels of the scene image (u right, v down, the image's top-left corner at
  (0, 0), so u ∈ [0, W] and v ∈ [0, H]). The seam rule: a polygon that crosses the ±180° seam runs
  past the right or left edge instead of being split, by at most W/2 (u ∈ [-W/2, 3W/2]), and spans at
  most W in u; it is rasterised shifted by −W, 0 and +W. Each polygon has >= 3 finite vertices and a
  non-zero area, and the mask (PNG or polygons) covers at least one pixel; a PNG mask has the scene's size.
* ``centroid`` (the area-weighted spherical centroid of the mask) may be left out, and is then
  computed from the mask; when given it must lie within ``CENTROID_TOLERANCE_DEG`` of the mask's.

Every annotated object of a scene, not only the targets, may be listed in an optional top-level
``"objects"`` list (``{"scene": ..., "name": ..., "mask": {"png": ...} | {"polygons": ...}}``, checked
like a target mask). A box-prompted segmenter in simulation answers with the object a box frames best,
so it needs them: each episode's :attr:`EpisodeSpec.objects` holds the other annotated objects of its
scene, from that list and from the targets of the other episodes on the same scene.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from .geometry import Pose, pose_distance, spherical_centroid

FORMAT = "panoseeker-aprs"
VERSION = 1
CATEGORIES = ("EGO", "UNIQ", "ALLO", "MULTIHOP")
CENTROID_TOLERANCE_DEG = 1.0  # a given target centroid may differ this much from its mask's


class DatasetError(ValueError):
    """A dataset problem a user must fix; the message is one line naming the field and the fix."""


@dataclass
class EpisodeSpec:
    id: str
    scene: Path
    instruction: str
    category: str
    initial_pose: Pose
    target_name: str
    target_centroid: Pose
    mask: dict  # {"png": Path} or {"polygons": [...]}
    extra: dict = field(default_factory=dict)
    box_level: ClassVar[bool] = False  # True: the ground truth is a box, not the target's outline (core.aprs)
    objects: list = field(default_factory=list)  # [(name, mask dict)]: the scene's other annotated objects

    def load_scene(self) -> np.ndarray:
        return load_rgb(self.scene)

    def load_mask(self, width: int, height: int) -> np.ndarray:
        """The target mask as an ERP bool array (height, width)."""
        return read_mask(self.mask, width, height, f"episode {self.id}")

    def load_objects(self, width: int, height: int) -> list[tuple[str, np.ndarray]]:
        """The scene's other annotated objects as (name, ERP bool mask (height, width)), each once (an
        object listed twice, or as the target too, is left out)."""
        kept = [self.load_mask(width, height)]
        out = []
        for name, mask in self.objects:
            pixels = read_mask(mask, width, height, f"episode {self.id}: object {name!r}")
            if not any(np.array_equal(pixels, k) for k in kept):
                kept.append(pixels)
                out.append((name, pixels))
        return out

    def to_json(self, root: Path) -> dict:
        mask = ({"png": _rel(self.mask["png"], root)} if "png" in self.mask else {"polygons": self.mask["polygons"]})
        return {"id": self.id, "scene": _rel(self.scene, root), "instruction": self.instruction,
                "category": self.category, "initial_pose": self.initial_pose.as_dict(),
                "target": {"name": self.target_name, "centroid": self.target_centroid.as_dict(), "mask": mask},
                **self.extra}


def read_mask(mask: dict, width: int, height: int, where: str) -> np.ndarray:
    """A parsed mask field (``{"png": Path}`` or ``{"polygons": [...]}``) as an ERP bool array (height, width)."""
    if "png" in mask:
        m = cv2.imread(str(mask["png"]), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise DatasetError(f"{where}: cannot read mask {mask['png']}; check the path")
        if m.shape != (height, width):
            raise DatasetError(f"{where}: mask {mask['png']} is {m.shape[1]}x{m.shape[0]}, "
                               f"the scene is {width}x{height}; save the mask at the scene's size")
        return m > 127
    return rasterize_polygons(mask["polygons"], width, height)


def _rel(path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


@lru_cache(maxsize=8)
def _load_rgb_cached(path: str, mtime: float) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path}; check that it exists and is a PNG or JPEG")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    rgb.setflags(write=False)
    return rgb


def load_rgb(path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), read-only and cached (scenes repeat across episodes)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image {path} does not exist; check the path")
    return _load_rgb_cached(str(path.resolve()), path.stat().st_mtime)


def rasterize_polygons(polygons, width: int, height: int) -> np.ndarray:
    """ERP polygons (lists of [u, v] pixel vertices) → bool mask, wrapping across the seam."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64)
        for shift in (-width, 0, width):
            q = np.round((pts + [shift, 0]) * 8).astype(np.int32)  # 3 fractional bits
            cv2.fillPoly(mask, [q], 1, lineType=cv2.LINE_8, shift=3)
    return mask.astype(bool)


@dataclass
class Dataset:
    path: Path
    episodes: list[EpisodeSpec]
    split: str | None = None  # the official benchmark's split (core.aprs); None for a dataset.json

    def __len__(self) -> int:
        return len(self.episodes)

    def by_id(self, episode_id: str) -> EpisodeSpec:
        for ep in self.episodes:
            if ep.id == episode_id:
                return ep
        raise DatasetError(f"no episode with id {episode_id!r} in {self.path}; ids look like {self.episodes[0].id!r}"
                           if self.episodes else f"{self.path} has no episodes")


def _need(obj: dict, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise DatasetError(f"{where}.{key} is missing; add it (see the dataset format in the README)")
    value = obj[key]
    if kind is float:
        if not _is_number(value):
            raise DatasetError(f"{where}.{key} must be a number in degrees, got {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise DatasetError(f"{where}.{key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and bool(np.isfinite(value))


def _pose(obj, where: str) -> Pose:
    theta, phi = _need(obj, "theta", float, where), _need(obj, "phi", float, where)
    if not -180.0 <= theta <= 180.0:
        raise DatasetError(f"{where}.theta = {theta} is out of range; use degrees in [-180, 180] "
                           f"(180 and -180 are the same heading)")
    if not -90.0 <= phi <= 90.0:
        raise DatasetError(f"{where}.phi = {phi} is out of range; use degrees in [-90, 90]")
    return Pose(theta, phi).normalized()


class _SceneCheck:
    """Opens every scene image once per load (episodes share scenes): its (width, height) or a DatasetError."""

    def __init__(self):
        self.sizes: dict[Path, tuple[int, int]] = {}

    def size(self, scene: Path, where: str) -> tuple[int, int]:
        if scene not in self.sizes:
            if not scene.is_file():
                raise DatasetError(f"{where}.scene: {scene} does not exist; paths are relative to the dataset file")
            img = cv2.imread(str(scene), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise DatasetError(f"{where}.scene: {scene} cannot be decoded; save it as a PNG or JPEG image")
            h, w = img.shape[:2]
            if w != 2 * h:
                raise DatasetError(f"{where}.scene: {scene} is {w}x{h}; an ERP scene must be exactly twice as wide "
                                   f"as it is high (e.g. 2048x1024)")
            self.sizes[scene] = (w, h)
        return self.sizes[scene]


def check_polygons(polys, width: int, height: int, where: str) -> list:
    """Validate ERP polygons of a ``width`` × ``height`` scene (the rules in the module docstring)."""
    if not isinstance(polys, list) or not polys:
        raise DatasetError(f"{where} must be a non-empty list of polygons, each a list of >= 3 [u, v] pixel pairs")
    for k, poly in enumerate(polys):
        at = f"{where}[{k}]"
        if not isinstance(poly, list) or len(poly) < 3:
            raise DatasetError(f"{at} must be a list of >= 3 [u, v] pixel pairs (polygons must be a list of "
                               f"polygons)")
        for j, vertex in enumerate(poly):
            if not (isinstance(vertex, list) and len(vertex) == 2 and all(_is_number(c) for c in vertex)):
                raise DatasetError(f"{at}[{j}] = {vertex!r} must be a pair of finite numbers [u, v] in ERP pixels")
        pts = np.asarray(poly, dtype=np.float64)
        bad = np.flatnonzero((pts[:, 1] < 0) | (pts[:, 1] > height) | (pts[:, 0] < -width / 2)
                             | (pts[:, 0] > 1.5 * width))
        if bad.size:
            j = int(bad[0])
            raise DatasetError(f"{at}[{j}] = {poly[j]!r} is outside the {width}x{height} scene; use u in [0, {width}] "
                               f"(past an edge by at most {width // 2} to cross the seam) and v in [0, {height}]")
        span = float(pts[:, 0].max() - pts[:, 0].min())
        if span > width:
            raise DatasetError(f"{at} spans {span:g} px in u, more than the scene's width {width}; a polygon "
                               f"crossing the seam runs past one edge only")
        x, y = pts[:, 0], pts[:, 1]
        if abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2 <= 0.0:
            raise DatasetError(f"{at} has zero area (its vertices are collinear or repeated); outline the target")
    return polys


def _target_mask(mask: dict, root: Path, width: int, height: int, where: str) -> tuple[dict, np.ndarray]:
    """The parsed mask field and the mask itself, (height, width) bool."""
    if "png" in mask:
        png = root / _need(mask, "png", str, where)
        if not png.is_file():
            raise DatasetError(f"{where}.png: {png} does not exist; paths are relative to the dataset file")
        m = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise DatasetError(f"{where}.png: {png} cannot be decoded; save the mask as a PNG (0 and 255)")
        if m.shape != (height, width):
            raise DatasetError(f"{where}.png: {png} is {m.shape[1]}x{m.shape[0]}, the scene is {width}x{height}; "
                               f"save the mask at the scene's size")
        parsed, pixels = {"png": png}, m > 127
    elif "polygons" in mask:
        parsed = {"polygons": check_polygons(mask["polygons"], width, height, f"{where}.polygons")}
        pixels = rasterize_polygons(parsed["polygons"], width, height)
    else:
        raise DatasetError(f"{where} needs 'png' (a mask image path) or 'polygons' (ERP pixel polygons)")
    if not pixels.any():
        raise DatasetError(f"{where} covers no pixel of the scene; outline the target (mask pixels > 127)")
    return parsed, pixels


def parse_episode(raw: dict, root: Path, where: str, scenes: _SceneCheck | None = None) -> EpisodeSpec:
    """One episode of a dataset file, validated; ``where`` names it in errors (e.g. 'dataset.json: episodes[3]')."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where} must be an object with id, scene, instruction, category, initial_pose, target")
    ep_id = _need(raw, "id", str, where)
    where = f"{where} (id {ep_id!r})"
    scene = root / _need(raw, "scene", str, where)
    width, height = (scenes or _SceneCheck()).size(scene, where)
    instruction = _need(raw, "instruction", str, where)
    if not instruction.strip():
        raise DatasetError(f"{where}.instruction is empty; write the referring expression, e.g. 'the red chair'")
    category = _need(raw, "category", str, where)
    if category not in CATEGORIES:
        raise DatasetError(f"{where}.category = {category!r}; use one of {', '.join(CATEGORIES)}")
    initial = _pose(_need(raw, "initial_pose", dict, where), f"{where}.initial_pose")
    target = _need(raw, "target", dict, where)
    name = _need(target, "name", str, f"{where}.target")
    mask, pixels = _target_mask(_need(target, "mask", dict, f"{where}.target"), root, width, height,
                                f"{where}.target.mask")
    from_mask = spherical_centroid(pixels)
    if "centroid" in target:
        centroid = _pose(_need(target, "centroid", dict, f"{where}.target"), f"{where}.target.centroid")
        off = pose_distance(centroid, from_mask)
        if off > CENTROID_TOLERANCE_DEG:
            raise DatasetError(f"{where}.target.centroid (θ={centroid.theta:g}, ϕ={centroid.phi:g}) is {off:.1f}° from "
                               f"the centroid of its mask (θ={from_mask.theta:.3f}, ϕ={from_mask.phi:.3f}); fix it or "
                               f"leave it out to use the mask's")
    else:
        centroid = Pose(round(from_mask.theta, 4), round(from_mask.phi, 4))
    known = {"id", "scene", "instruction", "category", "initial_pose", "target"}
    extra = {k: v for k, v in raw.items() if k not in known}
    return EpisodeSpec(ep_id, scene, instruction.strip(), category, initial, name, centroid, mask, extra)


def load_dataset(path, split: str | None = None) -> Dataset:
    """Read and validate a dataset file (or a directory holding ``dataset.json``); with ``split``, the
    official APRS benchmark at ``path`` (:mod:`.aprs`).

    Every episode is checked before any runs: its scene image is opened (exists, decodes, 2:1), its
    mask is rasterised and its centroid compared with the mask's. Any problem is one DatasetError line
    naming the file, the episode and the field.
    """
    from . import aprs

    path = Path(path)
    if split is not None:
        return aprs.load_aprs(path, split)
    if path.is_dir() and not (path / "dataset.json").exists() and aprs.is_aprs_root(path):
        raise DatasetError(f"{path} holds the official APRS benchmark; choose its split with --split test or "
                           f"--split train")
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist; make one with 'panoseeker make-scenes --out DIR' "
                           f"or pass a dataset.json")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                           f"fix the syntax there") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DatasetError(f"{path}: field 'format' must be {FORMAT!r}; is this an APRS dataset file?")
    if doc.get("version") != VERSION:
        raise DatasetError(f"{path}: field 'version' is {doc.get('version')!r}, this package reads version {VERSION}")
    raw_eps = doc.get("episodes")
    if not isinstance(raw_eps, list) or not raw_eps:
        raise DatasetError(f"{path}: field 'episodes' must be a non-empty list")
    episodes, seen, scenes = [], set(), _SceneCheck()
    for i, raw in enumerate(raw_eps):
        ep = parse_episode(raw, path.parent, f"{path.name}: episodes[{i}]", scenes)
        if ep.id in seen:
            raise DatasetError(f"{path.name}: episodes[{i}].id {ep.id!r} is used twice; ids must be unique")
        seen.add(ep.id)
        episodes.append(ep)
    attach_scene_objects(episodes, _scene_objects(doc.get("objects", []), path, scenes))
    return Dataset(path, episodes)


def _scene_objects(raw, path: Path, scenes: _SceneCheck) -> list[tuple[Path, str, dict]]:
    """The top-level ``objects`` list, validated: (scene path, name, parsed mask) per entry."""
    if not isinstance(raw, list):
        raise DatasetError(f"{path.name}: field 'objects' must be a list of {{scene, name, mask}} entries")
    out = []
    for i, obj in enumerate(raw):
        where = f"{path.name}: objects[{i}]"
        scene = path.parent / _need(obj, "scene", str, where)
        width, height = scenes.size(scene, where)
        name = _need(obj, "name", str, where)
        mask, _ = _target_mask(_need(obj, "mask", dict, where), path.parent, width, height, f"{where}.mask")
        out.append((scene, name, mask))
    return out


def _mask_key(mask: dict) -> str:
    return str(Path(mask["png"]).resolve()) if "png" in mask else json.dumps(mask["polygons"])


def attach_scene_objects(episodes: list[EpisodeSpec], listed=()) -> None:
    """Fill each episode's ``objects`` with the other annotated objects of its scene: ``listed``
    ((scene, name, mask) entries) and the other episodes' targets, each mask once."""
    by_scene: dict[Path, dict[str, tuple[str, dict]]] = {}
    for scene, name, mask in listed:
        by_scene.setdefault(Path(scene).resolve(), {}).setdefault(_mask_key(mask), (name, mask))
    for ep in episodes:
        by_scene.setdefault(Path(ep.scene).resolve(), {}).setdefault(_mask_key(ep.mask), (ep.target_name, ep.mask))
    for ep in episodes:
        own = _mask_key(ep.mask)
        ep.objects = [v for k, v in by_scene[Path(ep.scene).resolve()].items() if k != own]


def save_dataset(path, episodes: list[EpisodeSpec], objects=()) -> Path:
    """Write ``dataset.json``; ``objects``: (scene path, name, mask dict) of every annotated object
    (the top-level ``objects`` list; optional)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "episodes": [ep.to_json(path.parent) for ep in episodes]}
    if objects:
        doc["objects"] = [{"scene": _rel(scene, path.parent), "name": name,
                           "mask": {"png": _rel(mask["png"], path.parent)} if "png" in mask else mask}
                          for scene, name, mask in objects]
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
