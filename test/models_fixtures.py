"""Shared helpers of the model tests: the tiny models, built once per test session, and observations."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SimScene, shoot
from panoseeker_ros.core.episode import Decision


@lru_cache(maxsize=1)
def tiny_model_dirs() -> dict:
    """``{"qwen": Path, "sam3": Path, "sam3_text": Path}`` of tiny random-weight models, built once per session."""
    from panoseeker_ros.models.tiny import build_tiny_models

    root = Path(tempfile.mkdtemp(prefix="panoseeker-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_models(root)


def observations(dataset_path, moves=(Action.move(60, 0), Action.move(-30, 30), Action.move(120, -30))):
    """Observations of every episode of a dataset: the start, then one after each of ``moves``."""
    out = []
    for spec in load_dataset(dataset_path).episodes:
        scene = SimScene(spec)
        episode = scene.episode()
        req = episode.observe(shoot(scene.camera, scene.start(episode)))
        out.append(req.observation)
        for move in moves:
            req = episode.observe(shoot(scene.camera, episode.observe(Decision(move, move.to_text()))))
            out.append(req.observation)
    return out
