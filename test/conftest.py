"""Shared fixtures: the shipped panoramas and a tiny dataset built from the labelled cube panorama."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from panoseeker_ros.core.dataset import EpisodeSpec, load_rgb, save_dataset
from panoseeker_ros.core.geometry import Pose, spherical_centroid

ROOT = Path(__file__).resolve().parents[1]
# Test data ships with the repository (credits: test/data/SOURCES.md, sim/bedroom/SOURCES.md).
CUBE = ROOT / "test" / "data" / "cube_faces_1024x512.png"
BEDROOM = ROOT / "sim" / "bedroom" / "bedroom_1024x512.png"


@pytest.fixture(scope="session")
def cube_erp() -> np.ndarray:
    return load_rgb(CUBE)


@pytest.fixture(scope="session")
def bedroom_erp() -> np.ndarray:
    return load_rgb(BEDROOM)


def label_mask(erp: np.ndarray) -> np.ndarray:
    """The white '+X' label on the green face (about 25° × 15°, centred near θ = +90°)."""
    white = (erp.min(axis=2) > 200)
    return white & cv2.dilate(green_face_mask(erp).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def green_face_mask(erp: np.ndarray) -> np.ndarray:
    """The '+X' face of the cube panorama (green), the label letters included."""
    green = (erp[..., 1] > 200) & (erp[..., 0] < 150) & (erp[..., 2] < 100)
    filled = np.zeros(green.shape, np.uint8)
    contours, _ = cv2.findContours(green.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(filled, [max(contours, key=cv2.contourArea)], -1, 1, -1)
    return filled.astype(bool)


@pytest.fixture(scope="session")
def cube_dataset(tmp_path_factory, cube_erp) -> Path:
    """Four UNIQ episodes on the cube panorama; the target is the white '+X' label (θ ≈ +90°)."""
    root = tmp_path_factory.mktemp("cube_ds")
    mask = label_mask(cube_erp)
    cv2.imwrite(str(root / "green.png"), mask.astype(np.uint8) * 255)
    scene = root / "cube.png"
    scene.write_bytes(CUBE.read_bytes())
    centroid = spherical_centroid(mask)
    specs = [EpisodeSpec(f"cube-{i}", scene, "the label on the green face", "UNIQ", Pose(t, 0.0), "+X label", centroid,
                         {"png": root / "green.png"}) for i, t in enumerate((-90.0, 180.0, -150.0, 150.0))]
    return save_dataset(root / "dataset.json", specs)


# The longest files start first, so that `pytest -n 2 --dist loadfile` (make test) ends with the short ones.
SLOW_FIRST = ("test_learning_ladder.py", "test_ros_graph.py", "test_console_browser.py", "test_training_sft.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: the rest keep their order
