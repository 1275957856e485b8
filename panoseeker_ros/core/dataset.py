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
            "centroid": {"theta": 87.5, "phi": 2.0},           # degrees
            "mask": {"png": "masks/bedroom-001.png"}           # or {"polygons": [[[u, v], ...], ...]}
          }
        }
      ]
    }

Polygons are in ERP pixels of the scene image; a polygon may run past the right or left edge
(u < 0 or u ≥ W) to cross the ±180° seam.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .geometry import Pose

FORMAT = "panoseeker-aprs"
VERSION = 1
CATEGORIES = ("EGO", "UNIQ", "ALLO", "MULTIHOP")


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

    def load_scene(self) -> np.ndarray:
        return load_rgb(self.scene)

    def load_mask(self, width: int, height: int) -> np.ndarray:
        """The target mask as an ERP bool array (height, width)."""
        if "png" in self.mask:
            m = cv2.imread(str(self.mask["png"]), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise DatasetError(f"episode {self.id}: cannot read mask {self.mask['png']}; check the path")
            if m.shape != (height, width):
                raise DatasetError(f"episode {self.id}: mask {self.mask['png']} is {m.shape[1]}x{m.shape[0]}, "
                                   f"the scene is {width}x{height}; save the mask at the scene's size")
            return m > 127
        return rasterize_polygons(self.mask["polygons"], width, height)

    def to_json(self, root: Path) -> dict:
        mask = ({"png": _rel(self.mask["png"], root)} if "png" in self.mask else {"polygons": self.mask["polygons"]})
        return {"id": self.id, "scene": _rel(self.scene, root), "instruction": self.instruction,
                "category": self.category, "initial_pose": self.initial_pose.as_dict(),
                "target": {"name": self.target_name, "centroid": self.target_centroid.as_dict(), "mask": mask},
                **self.extra}


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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise DatasetError(f"{where}.{key} must be a number in degrees, got {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise DatasetError(f"{where}.{key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _pose(obj, where: str) -> Pose:
    theta, phi = _need(obj, "theta", float, where), _need(obj, "phi", float, where)
    if not -180.0 <= theta <= 360.0:
        raise DatasetError(f"{where}.theta = {theta} is out of range; use degrees in [-180, 180)")
    if not -90.0 <= phi <= 90.0:
        raise DatasetError(f"{where}.phi = {phi} is out of range; use degrees in [-90, 90]")
    return Pose(theta, phi).normalized()


def parse_episode(raw: dict, root: Path, where: str) -> EpisodeSpec:
    if not isinstance(raw, dict):
        raise DatasetError(f"{where} must be an object with id, scene, instruction, category, initial_pose, target")
    ep_id = _need(raw, "id", str, where)
    scene = root / _need(raw, "scene", str, where)
    if not scene.is_file():
        raise DatasetError(f"{where}.scene: {scene} does not exist; paths are relative to the dataset file")
    instruction = _need(raw, "instruction", str, where)
    if not instruction.strip():
        raise DatasetError(f"{where}.instruction is empty; write the referring expression, e.g. 'the red chair'")
    category = _need(raw, "category", str, where)
    if category not in CATEGORIES:
        raise DatasetError(f"{where}.category = {category!r}; use one of {', '.join(CATEGORIES)}")
    initial = _pose(_need(raw, "initial_pose", dict, where), f"{where}.initial_pose")
    target = _need(raw, "target", dict, where)
    name = _need(target, "name", str, f"{where}.target")
    centroid = _pose(_need(target, "centroid", dict, f"{where}.target"), f"{where}.target.centroid")
    mask = _need(target, "mask", dict, f"{where}.target")
    if "png" in mask:
        png = root / _need(mask, "png", str, f"{where}.target.mask")
        if not png.is_file():
            raise DatasetError(f"{where}.target.mask.png: {png} does not exist; paths are relative to the dataset file")
        mask = {"png": png}
    elif "polygons" in mask:
        polys = mask["polygons"]
        ok = isinstance(polys, list) and polys and all(
            isinstance(p, list) and len(p) >= 3 and all(isinstance(v, list) and len(v) == 2 and
                                                          all(isinstance(c, (int, float)) for c in v) for v in p)
            for p in polys)
        if not ok:
            raise DatasetError(f"{where}.target.mask.polygons must be a list of polygons, each a list of >= 3 [u, v] "
                               f"pixel pairs")
        mask = {"polygons": polys}
    else:
        raise DatasetError(f"{where}.target.mask needs 'png' (a mask image path) or 'polygons' (ERP pixel polygons)")
    known = {"id", "scene", "instruction", "category", "initial_pose", "target"}
    extra = {k: v for k, v in raw.items() if k not in known}
    return EpisodeSpec(ep_id, scene, instruction.strip(), category, initial, name, centroid, mask, extra)


def load_dataset(path) -> Dataset:
    """Read and validate a dataset file (or a directory holding ``dataset.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist; make one with 'panoseeker make-scenes --out DIR' "
                           f"or pass a dataset.json")
    try:
        doc = json.loads(path.read_text())
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
    episodes, seen = [], set()
    for i, raw in enumerate(raw_eps):
        ep = parse_episode(raw, path.parent, f"{path.name}: episodes[{i}]")
        if ep.id in seen:
            raise DatasetError(f"{path.name}: episodes[{i}].id {ep.id!r} is used twice; ids must be unique")
        seen.add(ep.id)
        episodes.append(ep)
    return Dataset(path, episodes)


def save_dataset(path, episodes: list[EpisodeSpec]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "episodes": [ep.to_json(path.parent) for ep in episodes]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
