"""The APRS benchmark runner: every episode of a dataset through the shared episode loop."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .core.config import SeekConfig
from .core.dataset import Dataset, EpisodeSpec
from .core.environment import EpisodeResult, SeekEnv, decode_rle, run_episode
from .core.episode import SeekAgent
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


def evaluate(dataset: Dataset, policy_factory: Callable, segmenter_factory: Callable, config: SeekConfig,
             out_dir=None, progress: bool = True, limit: int | None = None) -> tuple[dict, list[EpisodeResult]]:
    """Run, score and (with ``out_dir``) write ``summary.json`` and ``episodes.jsonl``."""
    episodes = dataset.episodes[:limit] if limit else dataset.episodes
    renderers = RendererCache()
    results: list[EpisodeResult] = []
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    lines = open(out / "episodes.jsonl", "w") if out else None
    try:
        for spec in tqdm(episodes, desc="episodes", unit="ep", disable=not progress, leave=False):
            env = SeekEnv(spec, config, renderers.get(spec))
            result = run_episode(env, SeekAgent(policy_factory(env), config.episode.max_steps), segmenter_factory(env))
            results.append(result)
            if lines:
                lines.write(json.dumps(result.as_dict()) + "\n")
                lines.flush()
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
    env = SeekEnv(spec, config)
    for pose in record["poses"]:
        env.egosphere.integrate(env.camera.look(pose["theta"], pose["phi"]), env.camera.pose())
    mask = decode_rle(record["mask_rle"])
    verdict = "success" if record["success"] else "failure"
    lines = [f"{record['id']} [{record['category']}] {record['instruction']}",
             f"{verdict}: {record['steps']} steps, IoU {record['iou']:.2f}, "
             f"final distance {record['final_distance_deg']:.1f} deg, path {record['path_deg']:.0f} deg",
             "moves: " + "  ".join(s["action"] for s in record["trajectory"])[:150]]
    return episode_picture(env.egosphere, mask, env.truth.mask, lines)


__all__ = ["evaluate", "episode_png", "format_table", "RendererCache"]
