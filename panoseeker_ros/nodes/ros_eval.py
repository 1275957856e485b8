"""``panoseeker eval --through-ros``: every episode through the launched ROS graph instead of in-process.

Per episode the graph is launched on that episode's scene (the camera renders it, the policy node
scores against it), the operator client sends the instruction with an id and waits for the result,
and the graph is stopped. The result carries the episode's record, written by the same
``EpisodeResult.as_dict`` as in-process evaluation, so ``summary.json`` and ``episodes.jsonl`` agree
with an in-process run up to timings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.config import ConfigError
from ..core.dataset import Dataset, EpisodeSpec
from ..core.metrics import EpisodeOutcome
from ..paths import default_params


@dataclass
class RecordedResult:
    """An episode's result as the graph reported it: its record (one ``episodes.jsonl`` line)."""

    record: dict

    @property
    def outcome(self) -> EpisodeOutcome:
        from ..evaluation import outcome_from_record

        return outcome_from_record(self.record)

    def as_dict(self) -> dict:
        return self.record


def graph_choices(args) -> dict[str, dict]:
    """Per-node parameters from ``panoseeker eval``'s backend options."""
    policy = {"backend": args.policy}
    if args.policy == "qwen":
        policy.update({k: v for k, v in (("model", args.model), ("adapter", args.adapter), ("memory", args.memory),
                                         ("decoding", args.decoding)) if v is not None})
    if args.policy == "random":
        policy["seed"] = args.seed
    segmentation = {"backend": args.segmenter}
    if args.segmenter == "sam3" and args.sam_model:
        segmentation["model"] = args.sam_model
    return {"policy_node": policy, "segmentation_node": segmentation}


def through_ros(dataset: Dataset, args, namespace: str | None = None, env: dict | None = None):
    """A runner for :func:`panoseeker_ros.evaluation.evaluate` (specs → results, one graph per episode)."""
    from .launcher import Graph
    from .operator import run_seek

    params = Path(args.config) if args.config else default_params()
    per_node = graph_choices(args)
    namespace = namespace or f"/panoseeker_eval_{os.getpid()}"  # a namespace of its own: no crosstalk

    def run(specs: list[EpisodeSpec]) -> list[RecordedResult]:
        results = []
        for spec in specs:
            shared = {"dataset": str(dataset.path.resolve()), "episode_id": spec.id, "split": dataset.split or ""}
            with Graph(params, namespace, shared, per_node, log_level="warn", env=env):
                outcome = run_seek(spec.instruction, namespace, args.timeout, ready_timeout=60.0,
                                   on_line=lambda line: None)
            record = (outcome.result or {}).get("record")
            if record is None:
                raise ConfigError(f"episode {spec.id}: the graph gave no result ({outcome.state}: {outcome.message})")
            results.append(RecordedResult(record))
        return results

    return run
