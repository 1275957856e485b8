"""Simple generated tasks for the training tests, and the small camera the tests run them with.

:func:`simple_task`: every scene holds a red square 120° to the right of the start heading and a blue
circle 120° to the left (both at the horizon, 80° wide, out of the start view); the instruction names
one of them. The expert answers MOVE +120 0 or MOVE -120 0, then STOP with the box of the centred
target: the move depends on the instruction, the room and the start heading vary.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from panoseeker_ros.core.dataset import EpisodeSpec, save_dataset
from panoseeker_ros.core.geometry import Pose, spherical_centroid, wrap_deg
from panoseeker_ros.core.scenes import SceneObject, _save_png, place_object, plain_room

TARGETS = (("red", "square", 120.0), ("blue", "circle", -120.0))

SMALL_CAMERA_YAML = """\
/**:
  ros__parameters:
    camera: {width: 128, height: 96}
    episode: {max_steps: %d, canvas_width: 256, canvas_height: 128}
"""


def small_config(path: Path, max_steps: int = 4, reviews: bool = True) -> Path:
    """A parameter YAML with a 128×96 view and a 256×128 canvas (FoV and rewards as in the method);
    ``reviews=False``: no review turn after STOP (segmentation.max_refinements 0)."""
    path.write_text(SMALL_CAMERA_YAML % max_steps + ("" if reviews else "    segmentation: {max_refinements: 0}\n"))
    return path


def simple_task(root: Path, scenes: int, seed: int, width: int = 512, size: float = 80.0) -> Path:
    """``scenes`` scenes × 2 episodes (one per target) of the simple task; returns dataset.json."""
    rng = np.random.default_rng(seed)
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    specs = []
    for s in range(scenes):
        theta0 = float(rng.choice(np.arange(-180, 180, 30)))
        erp = plain_room(rng, width)
        masks = [place_object(erp, SceneObject(shape, colour, wrap_deg(theta0 + dt), 0.0, size))
                 for colour, shape, dt in TARGETS]
        scene = root / "scenes" / f"scene-{s:03d}.png"
        _save_png(scene, erp)
        for k, ((colour, shape, _), mask) in enumerate(zip(TARGETS, masks)):
            mask_path = root / "scenes" / f"mask-{s:03d}-{k}.png"
            _save_png(mask_path, mask.astype(np.uint8) * 255)
            c = spherical_centroid(mask)
            specs.append(EpisodeSpec(f"t{seed}-s{s:03d}-{colour}", scene, f"the {colour} {shape}", "UNIQ",
                                     Pose(theta0, 0.0), f"{colour} {shape}", Pose(round(c.theta, 4), round(c.phi, 4)),
                                     {"png": mask_path}))
    return save_dataset(root / "dataset.json", specs)
