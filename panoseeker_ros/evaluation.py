"""The APRS benchmark runner: every episode of a dataset through the one episode stepper.

``evaluate`` takes a runner (specs → results); :func:`simulate` runs them in-process (in lockstep
batches), ``panoseeker_ros.nodes.ros_eval.through_ros`` runs them through the launched ROS graph.
A result has ``.outcome`` (metrics) and ``.as_dict()`` (its ``episodes.jsonl`` line).

A run directory holds ``episodes.jsonl`` (one record per finished episode, appended and flushed as
each ends) and ``summary.json`` (rewritten after every episode, or batch of them; ``"partial": true``
until every episode of the run's shard is in). So a killed run loses at most the episodes it was in,
``resume`` carries on from the records already there, and :func:`merge_runs` turns the directories of
``--shard I/N`` runs into the summary of the whole dataset. Every number of a summary is computed from
the records alone (:func:`outcome_from_record`), by the same code for a run, a resumed run and a merge.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from .core.actions import Action
from .core.config import SeekConfig
from .core.dataset import Dataset, DatasetError, EpisodeSpec, load_dataset
from .core.environment import SimScene, run_lockstep
from .core.egosphere import EgoSphere
from .core.episode import EpisodeResult, Frame, StepRecord, decode_rle, rotate_view_mask, score
from .core.episode import episode_record as record_line
from .core.geometry import PanoramaRenderer, view_mask_centroid_dir
from .core.metrics import EpisodeOutcome, format_table, summarize
from .core.visualize import episode_picture

EPISODES_FILE, SUMMARY_FILE = "episodes.jsonl", "summary.json"


class RunError(ValueError):
    """A run directory that cannot be resumed or merged; the message is one line naming it and the fix."""


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


# ---------------------------------------------------------------------------------------------
# Episodes.


def run_batch(specs: list[EpisodeSpec], policies: Callable, segmenters: Callable, config: SeekConfig,
              renderers: RendererCache) -> list[EpisodeResult]:
    """Episodes of ``specs`` in lockstep (one alone is exactly ``run_episode``); ``policies`` and
    ``segmenters`` map a scene's ground truth to its backend (``models.registry.per_scene``). A one-shot
    method (``static``: it has ``search`` instead of ``act``) runs each episode with :func:`run_one_shot`."""
    scenes = [SimScene(spec, config, renderers.get(spec)) for spec in specs]
    backends = [policies(s.truth) for s in scenes]
    if all(hasattr(b, "search") for b in backends):
        return [run_one_shot(s, b) for s, b in zip(scenes, backends)]
    return run_lockstep(scenes, backends, [segmenters(s.truth) for s in scenes])


def simulate(policies: Callable, segmenters: Callable, config: SeekConfig) -> Callable[[list[EpisodeSpec]], list]:
    """The in-process runner of :func:`evaluate`."""
    renderers = RendererCache()
    return lambda specs: run_batch(specs, policies, segmenters, config, renderers)


def run_one_shot(scene: SimScene, method) -> EpisodeResult:
    """A static method's episode: ``method.search(camera, instruction)`` → (view pose, Detection) or None.

    One decision (AS = 1) taken at the start pose. The camera then turns once to the centroid of the
    detection's mask (one alignment look, so P = d(start, final pose)) and the mask is carried into that
    view; the result is scored by the episode's own scoring, like every other episode.
    """
    camera, intr, spec = scene.camera, scene.intrinsics, scene.spec
    start_view = camera.look(spec.initial_pose.theta, spec.initial_pose.phi)
    start = camera.pose()
    found = method.search(camera, spec.instruction)
    centre = view_mask_centroid_dir(found[1].mask, found[0], intr) if found and found[1].mask is not None else None
    if centre is None:
        view_pose, box, path, looks, message = start, None, [start], 0, "no view matched the target phrase"
        frame, mask = Frame(start_view, start), np.zeros(start_view.shape[:2], dtype=bool)
    else:
        (view_pose, detection), box, looks = found, found[1].box, 1
        frame = Frame(camera.look(centre.theta, centre.phi), camera.pose())
        mask, path = rotate_view_mask(detection.mask, view_pose, frame.pose, intr), [start, frame.pose]
        message = f"best match (score {detection.score:.3f}) on the view at θ={view_pose.theta:g}, ϕ={view_pose.phi:g}"
    action = Action.stop_at(box)
    record = StepRecord(1, view_pose, action, action.to_text(), 0, 0.0)
    result = EpisodeResult(spec.id, spec.category, spec.instruction, [record], path, view_pose, frame.pose, box,
                           False, looks, frame, mask, message)
    result.score = score(result, scene.truth, scene.config)  # the one scoring of the benchmark rules
    return result


def episode_record(result, spec: EpisodeSpec) -> dict:
    """The line of ``episodes.jsonl`` for a dataset episode (see :func:`core.episode.episode_record`)."""
    return record_line(result, spec.initial_pose, spec.target_centroid)


def outcome_from_record(record: dict) -> EpisodeOutcome:
    """The metrics' view of one ``episodes.jsonl`` record."""
    return EpisodeOutcome(record["category"], int(record["steps"]), float(record["shortest_deg"]),
                          float(record["path_deg"]), float(record["final_distance_deg"]), float(record["iou"]))


# ---------------------------------------------------------------------------------------------
# Runs: shards, records on disk, summaries.


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' → (I, N) with 0 <= I < N; raises ValueError with a one-line message."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r} must look like I/N, e.g. 0/4 (the first of 4 shards)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= I < N (shards are numbered from 0)")
    return i, n


def shard_of(episodes: list, shard: tuple[int, int] | None) -> list:
    """Shard I of N: episodes I, I + N, I + 2N, ... (None: all)."""
    return list(episodes) if shard is None else list(episodes[shard[0]::shard[1]])


def read_records(path: Path) -> list[dict]:
    """The complete records of an ``episodes.jsonl``; a torn last line (a killed run) is dropped."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break  # the line being written when the run stopped
            raise RunError(f"{path} line {k + 1} is not a JSON record; remove that line or start a new --out") from None
    return records


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)  # a reader never sees half a summary


def summary_document(records: list[dict], expected: list[str], dataset: Dataset, config: SeekConfig,
                     run: dict) -> dict:
    """summary.json: the metrics over ``records`` (in the order of ``expected`` ids), marked partial
    while some expected episode has no record."""
    order = {ep_id: k for k, ep_id in enumerate(expected)}
    done = sorted((r for r in records if r["id"] in order), key=lambda r: order[r["id"]])
    summary = summarize([outcome_from_record(r) for r in done], config.reward.tau_deg, config.reward.iou_success)
    levels = sorted({r.get("iou_level", "mask") for r in done})
    return {**summary, "iou_level": "box" if "box" in levels else "mask", "partial": len(done) < len(expected),
            "episodes_done": len(done), "episodes_expected": len(expected), "dataset": str(dataset.path.resolve()),
            "split": dataset.split,
            "tau_deg": config.reward.tau_deg, "iou_success": config.reward.iou_success, "run": run}


def _check_resumable(out: Path, records: list[dict], wanted: dict[str, EpisodeSpec], options: dict) -> None:
    summary_path = out / SUMMARY_FILE
    if summary_path.is_file():
        before = json.loads(summary_path.read_text()).get("run", {})
        changed = sorted(k for k in set(before) | set(options) if before.get(k) != options.get(k))
        if changed:
            k = changed[0]
            raise RunError(f"--resume: {out} was run with {k}={before.get(k)!r}, now {k}={options.get(k)!r}; "
                           f"use the same options or another --out")
    for r in records:
        if r.get("id") not in wanted:
            raise RunError(f"--resume: {out / EPISODES_FILE} holds episode {r.get('id')!r}, which is not in this "
                           f"dataset (shard); use another --out")


def evaluate(dataset: Dataset, run: Callable[[list[EpisodeSpec]], list], config: SeekConfig, out_dir=None,
             progress: bool = True, limit: int | None = None, resume: bool = False,
             shard: tuple[int, int] | None = None, options: dict | None = None,
             batch: int = 1) -> tuple[dict, list[dict]]:
    """Run and score the episodes of ``shard`` (after ``limit``); returns (summary document, records).

    ``run`` gets ``batch`` episodes at a time (:func:`simulate` runs them in lockstep: same results,
    fewer policy calls for a policy that batches). With ``out_dir`` each record is appended to
    ``episodes.jsonl`` as its episode ends and ``summary.json`` is rewritten (also when an episode
    raises or the run is interrupted, marked partial). ``resume`` keeps the records already in
    ``out_dir`` and runs only the missing episodes; ``options`` (what made the run) is stored in the
    summary as ``run`` and must match on resume.
    """
    episodes = shard_of(dataset.episodes[:limit] if limit else dataset.episodes, shard)
    options = {**(options or {}), "shard": f"{shard[0]}/{shard[1]}" if shard else None, "limit": limit}
    wanted = {ep.id: ep for ep in episodes}
    out = Path(out_dir) if out_dir else None
    records: list[dict] = []
    if out:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            records = read_records(out / EPISODES_FILE)
            _check_resumable(out, records, wanted, options)
            (out / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))  # drop a torn line
        elif (out / EPISODES_FILE).is_file() and read_records(out / EPISODES_FILE):
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    done = {r["id"] for r in records}
    todo = [ep for ep in episodes if ep.id not in done]
    lines = open(out / EPISODES_FILE, "a", encoding="utf-8") if out else None

    def write_summary() -> dict:
        doc = summary_document(records, list(wanted), dataset, config, options)
        if out:
            _write_json(out / SUMMARY_FILE, doc)
        return doc

    try:
        bar = tqdm(total=len(todo), desc="episodes", unit="ep", disable=not progress, leave=False)
        for i in range(0, len(todo), batch):
            specs = todo[i:i + batch]
            for spec, result in zip(specs, run(specs)):
                records.append(episode_record(result, spec))
                if lines:
                    lines.write(json.dumps(records[-1]) + "\n")
                    lines.flush()
                bar.update(1)
            if lines:
                write_summary()
        bar.close()
    finally:
        if lines:
            lines.close()
        summary = write_summary()
    return summary, records


def merge_runs(run_dirs, out_dir) -> dict:
    """Combine the run directories of ``--shard I/N`` runs of one dataset into ``out_dir``: one
    ``episodes.jsonl`` in dataset order and the summary of all of them (partial if any episode of the
    dataset is missing). Raises RunError for runs of different datasets or options, or repeated episodes."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise RunError("merge-runs needs at least one run directory")
    docs = []
    for d in dirs:
        if not (d / SUMMARY_FILE).is_file():
            raise RunError(f"{d} has no {SUMMARY_FILE}; pass the --out directories of 'panoseeker eval'")
        docs.append(json.loads((d / SUMMARY_FILE).read_text()))
    first = docs[0]
    for d, doc in zip(dirs[1:], docs[1:]):
        if (doc.get("dataset"), doc.get("split")) != (first.get("dataset"), first.get("split")):
            raise RunError(f"{d} evaluated {doc.get('dataset')}, {dirs[0]} evaluated {first.get('dataset')}; "
                           f"merge runs of one dataset")
        if doc.get("tau_deg") != first.get("tau_deg") or doc.get("iou_success") != first.get("iou_success"):
            raise RunError(f"{d} was scored with other success thresholds than {dirs[0]}; merge runs of one config")
        a, b = ({k: v for k, v in x.get("run", {}).items() if k != "shard"} for x in (first, doc))
        if a != b:
            k = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[0]
            raise RunError(f"{d} was run with {k}={b.get(k)!r}, {dirs[0]} with {k}={a.get(k)!r}; merge runs of "
                           f"one policy and options")
    records, seen = [], {}
    for d in dirs:
        for r in read_records(d / EPISODES_FILE):
            if r["id"] in seen:
                raise RunError(f"episode {r['id']!r} is in both {seen[r['id']]} and {d}; merge disjoint shards")
            seen[r["id"]] = d
            records.append(r)
    try:
        dataset = load_dataset(first["dataset"], first.get("split"))
    except DatasetError as exc:
        raise RunError(f"{dirs[0]}: its dataset cannot be loaded ({exc})") from None
    limit = first.get("run", {}).get("limit")
    expected = [ep.id for ep in (dataset.episodes[:limit] if limit else dataset.episodes)]
    order = {ep_id: k for k, ep_id in enumerate(expected)}
    stray = [r["id"] for r in records if r["id"] not in order]
    if stray:
        raise RunError(f"episode {stray[0]!r} of {seen[stray[0]]} is not in {first['dataset']}; merge runs of one dataset")
    records.sort(key=lambda r: order[r["id"]])
    config = SeekConfig()
    config.reward.tau_deg, config.reward.iou_success = first["tau_deg"], first.get("iou_success", 0.5)
    run = {**first.get("run", {}), "shard": None, "merged_from": [str(d) for d in dirs]}
    doc = summary_document(records, expected, dataset, config, run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / EPISODES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    _write_json(out / SUMMARY_FILE, doc)
    return doc


def episode_png(dataset: Dataset, record: dict, config: SeekConfig):
    """Replay a recorded trajectory in the simulator and draw it with its final mask: RGB image."""
    spec = dataset.by_id(record["id"])
    scene = SimScene(spec, config)
    sphere = EgoSphere(scene.intrinsics, (config.episode.canvas_width, config.episode.canvas_height), "world")
    for pose in record["poses"]:
        sphere.integrate(scene.camera.look(pose["theta"], pose["phi"]), scene.camera.pose())
    mask = decode_rle(record["mask_rle"])
    verdict = "success" if record["success"] else "failure"
    lines = [f"{record['id']} [{record['category']}] {record['instruction']}",
             f"{verdict}: {record['steps']} steps, IoU {record['iou']:.2f}, "
             f"final distance {record['final_distance_deg']:.1f} deg, path {record['path_deg']:.0f} deg",
             "moves: " + "  ".join(s["action"] for s in record["trajectory"])[:150]]
    return episode_picture(sphere, mask, scene.truth.mask, lines)


__all__ = ["evaluate", "simulate", "run_batch", "run_one_shot", "merge_runs", "episode_record", "outcome_from_record", "episode_png",
           "format_table", "RendererCache", "RunError", "parse_shard"]
