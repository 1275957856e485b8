"""The APRS benchmark runner: every episode of a dataset through the one episode stepper.

``evaluate`` takes a runner (specs → results); :func:`simulate` runs them in-process (in lockstep
batches), ``panoseeker_ros.nodes.ros_eval.through_ros`` runs them through the launched ROS graph.
A result has ``.outcome`` (metrics) and ``.as_dict()`` (its ``episodes.jsonl`` line).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .core.config import SeekConfig
from .core.dataset import Dataset, EpisodeSpec
from .core.environment import SimScene, run_lockstep
from .core.episode import EpisodeResult, decode_rle
from .core.geometry import PanoramaRenderer
from .core.metrics import format_table, summarize
from .core.visualize import episode_picture


class RendererCache:
    """One PanoramaRenderer per scene image; consecutive episodes usually share a scene."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: dict[Path, PanoramaRenderer] = {}

    def get(self, spec: EpisodeSpec) -> PanoramaRenderer:
        if spec.scene not in self._items:
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[spec.scene] = PanoramaRenderer(spec.load_scene())
        return self._items[spec.scene]


def run_batch(specs: list[EpisodeSpec], policies: Callable, segmenters: Callable, config: SeekConfig,
              renderers: RendererCache) -> list[EpisodeResult]:
    """Episodes of ``specs`` in lockstep (one alone is exactly ``run_episode``); ``policies`` and
    ``segmenters`` map a scene's ground truth to its backend (``models.registry.per_scene``)."""
    scenes = [SimScene(spec, config, renderers.get(spec)) for spec in specs]
    return run_lockstep(scenes, [policies(s.truth) for s in scenes], [segmenters(s.truth) for s in scenes])


def simulate(policies: Callable, segmenters: Callable, config: SeekConfig) -> Callable[[list[EpisodeSpec]], list]:
    """The in-process runner of :func:`evaluate`."""
    renderers = RendererCache()
    return lambda specs: run_batch(specs, policies, segmenters, config, renderers)


def evaluate(dataset: Dataset, run: Callable[[list[EpisodeSpec]], list], config: SeekConfig,
             out_dir=None, progress: bool = True, limit: int | None = None,
             batch: int = 1) -> tuple[dict, list[EpisodeResult]]:
    """Run, score and (with ``out_dir``) write ``summary.json`` and ``episodes.jsonl``; ``run`` gets
    ``batch`` episodes at a time (:func:`simulate` runs them in lockstep: same results, fewer policy
    calls for a policy that batches)."""
    episodes = dataset.episodes[:limit] if limit else dataset.episodes
    results: list[EpisodeResult] = []
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    lines = open(out / "episodes.jsonl", "w") if out else None
    try:
        bar = tqdm(total=len(episodes), desc="episodes", unit="ep", disable=not progress, leave=False)
        for i in range(0, len(episodes), batch):
            for result in run(episodes[i:i + batch]):
                results.append(result)
                if lines:
                    lines.write(json.dumps(result.as_dict()) + "\n")
                    lines.flush()
                bar.update(1)
        bar.close()
    finally:
        if lines:
            lines.close()
    summary = summarize([r.outcome for r in results], config.reward.tau_deg, config.reward.iou_success)
    if out:
        summary_doc = {**summary, "dataset": str(dataset.path.resolve()), "tau_deg": config.reward.tau_deg}
        (out / "summary.json").write_text(json.dumps(summary_doc, indent=1) + "\n")
    return summary, results


def episode_png(dataset: Dataset, record: dict, config: SeekConfig):
    """Replay a recorded trajectory in the simulator and draw it with its final mask: RGB image."""
    spec = dataset.by_id(record["id"])
    scene = SimScene(spec, config)
    sphere = scene.episode().egosphere
    for pose in record["poses"]:
        sphere.integrate(scene.camera.look(pose["theta"], pose["phi"]), scene.camera.pose())
    mask = decode_rle(record["mask_rle"])
    verdict = "success" if record["success"] else "failure"
    lines = [f"{record['id']} [{record['category']}] {record['instruction']}",
             f"{verdict}: {record['steps']} steps, IoU {record['iou']:.2f}, "
             f"final distance {record['final_distance_deg']:.1f} deg, path {record['path_deg']:.0f} deg",
             "moves: " + "  ".join(s["action"] for s in record["trajectory"])[:150]]
    return episode_picture(sphere, mask, scene.truth.mask, lines)


__all__ = ["evaluate", "simulate", "episode_png", "format_table", "RendererCache"]
