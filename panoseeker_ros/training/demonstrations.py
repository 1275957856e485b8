"""Demonstrations as SFT data: one record per decision, JSONL + PNG, browsable by a person.

A data directory holds ``records.jsonl`` and ``images/<episode>/``. Each line is one decision::

    {"id": "s000-e00/1", "episode": "s000-e00", "source": "expert", "scene": "scenes/scene-000.png",
     "category": "UNIQ", "instruction": "the red square", "step": 0,
     "pose": {"theta": -90.0, "phi": 0.0}, "initial_pose": {...}, "trajectory": [{...}, ...],
     "view": "images/s000-e00/01-view.png", "canvas": "images/s000-e00/01-canvas.png", "canvas_style": "official",
     "history": [{"step": 1, "pose": {...}, "action": "MOVE +120 0", "view": "images/.../01-view.png"}],
     "answer": "MOVE +120 0", "success": true}

``view`` is the current view and ``canvas`` the EgoSphere with its prompts, exactly the images of the
:class:`~panoseeker_ros.core.episode.Observation` the policy saw (RGB PNG); ``history`` lists the earlier
decisions of the episode (their views for the visual memory variants, their moves for the text log);
``answer`` is the action text to learn. :func:`record_observation` rebuilds the Observation, so the
prompt at training time comes from the same builder as at inference.

A review turn (core/episode.py, segmentation as an agent) is a record too, after the search's records:
``"turn": "review"`` and ``"review": {"mask": "images/<episode>/r1-mask.png", "box": [...], "turn": 1,
"refinements": 0}`` (the mask it judged, on the STOP ``view``), with an ``answer`` in the review grammar
(``ACCEPT``, ``REFINE [...]``, ``MOVE ...``). With ``box_noise`` the expert's first boxes are made wrong
(``models.baselines.PerturbedStops``: shifted, too large, a neighbour) so that its review turns show how
to recover (REFINE to the right box); the search record keeps the expert's own STOP box as its answer.

Sources: ``expert`` (the oracle expert in the simulator), ``view-graph`` (new start-to-target
demonstrations from a scene's graph of views, :func:`view_graph_demonstrations`), ``bag`` (an operator's
recorded search, :mod:`.bags`). Every demonstration runs through the core Episode stepper
(:func:`replay` drives it with recorded frames), so canvases and histories are those of inference.
"""
from __future__ import annotations

import dataclasses
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.actions import Action, lattice_moves, parse_action
from ..core.config import SeekConfig
from ..core.dataset import Dataset
from ..core.environment import SimScene, run_episode
from ..core.episode import EpisodeResult, Frame, MaskReview, Observation, StepRecord
from ..core.geometry import Pose

RECORDS = "records.jsonl"
START_RELATIVE = ("EGO", "MULTIHOP")  # instructions that name directions from the start pose


class DataError(ValueError):
    """A data directory, bag or option a user must fix; the message is one line naming it and the fix."""


# ---------------------------------------------------------------------------------------------
# Writing and reading records.


def _pose(d: dict) -> Pose:
    return Pose(float(d["theta"]), float(d["phi"]))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise DataError(f"cannot write {path}; check that the output directory is writable")


def _load_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}; the data directory is incomplete, rebuild it with make-sft-data")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class RecordWriter:
    """Appends episodes' decisions to ``out/records.jsonl`` with their images under ``out/images``."""

    def __init__(self, out):
        self.root = Path(out)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lines = open(self.root / RECORDS, "w", encoding="utf-8")
        self.count = 0
        self._ids: set[str] = set()

    def add(self, result: EpisodeResult, source: str, scene: str = "", success: bool = True) -> int:
        """Write every decision of ``result`` (its records carry their observations); returns how many.
        ``success``: whether the search counts as successful (:func:`accepted`), stored on each record."""
        episode = result.id
        if episode in self._ids:
            raise DataError(f"episode id {episode!r} is written twice; demonstrations need unique ids")
        images = (self.root / "images").resolve()
        if not episode or not (images / episode).resolve().is_relative_to(images) or (images / episode).resolve() == images:
            raise DataError(f"episode id {episode!r} would write outside {self.root / 'images'}; give the episode "
                            f"a plain id (no '..', no leading '/')")
        self._ids.add(episode)
        history: list[dict] = []

        def line(rec, name: str, stem: str, **extra) -> dict:
            """The record ``episode/name`` of one decision, its view and canvas written under ``stem``."""
            obs = rec.observation
            view, canvas = f"{stem}-view.png", f"{stem}-canvas.png"
            _save_png(self.root / view, obs.view)
            _save_png(self.root / canvas, obs.canvas)
            return {"id": f"{episode}/{name}", "episode": episode, "source": source,
                    "scene": scene, "category": result.category, "instruction": result.instruction,
                    "step": obs.step, "pose": obs.pose.as_dict(), "initial_pose": obs.initial_pose.as_dict(),
                    "trajectory": [p.as_dict() for p in obs.trajectory], "view": view, "canvas": canvas,
                    "canvas_style": obs.canvas_style, "history": list(history), **extra,
                    "success": bool(success)}

        for rec in result.records:
            record = line(rec, str(rec.step), f"images/{episode}/{rec.step:02d}", answer=demonstrated(rec).to_text())
            self._lines.write(json.dumps(record, ensure_ascii=False) + "\n")
            history.append({"step": rec.step, "pose": rec.pose.as_dict(), "action": record["answer"],
                            "view": record["view"]})
            self.count += 1
        for rec in result.reviews:  # the turns after STOP, each with the mask it judged
            stem, review = f"images/{episode}/r{rec.step}", rec.observation.review
            mask = f"{stem}-mask.png"
            _save_png(self.root / mask, np.repeat(review.mask[..., None].astype(np.uint8) * 255, 3, axis=2))
            shown = {"mask": mask, "box": list(review.box), "turn": review.turn, "refinements": review.refinements}
            record = line(rec, f"r{rec.step}", stem, turn="review", review=shown, answer=rec.action.to_text())
            self._lines.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.count += 1
        return len(result.records) + len(result.reviews)

    def close(self) -> None:
        self._lines.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def accepted(result: EpisodeResult, accept_unscored: bool = False) -> bool:
    """The rule for a search to become SFT targets. Scored (simulation): it succeeded (final pose within
    τ and IoU ≥ the threshold). Unscored (a recorded bag: nobody knows the target's mask): only with the
    operator's confirmation that the bag's searches ended on their targets (``accept_unscored``,
    ``make-sft-data --accept-unscored``), and then only if it ended in STOP with a box."""
    if result.success is not None:
        return bool(result.success)
    last = result.records[-1].action if result.records else None
    return bool(accept_unscored and last is not None and last.stop and last.box is not None and not result.truncated)


def load_records(data_dir) -> list[dict]:
    """The records of a data directory written by ``make-sft-data``; a bad one is one line naming it."""
    path = Path(data_dir) / RECORDS
    if not path.is_file():
        raise DataError(f"{data_dir} has no {RECORDS}; pass a directory written by 'panoseeker make-sft-data'")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{n} is not JSON; rebuild the directory with make-sft-data") from None
        missing = [k for k in ("id", "instruction", "pose", "view", "canvas", "answer") if k not in rec]
        if missing:
            raise DataError(f"{path}:{n} has no {missing[0]!r}; rebuild the directory with make-sft-data")
        parsed = parse_action(rec["answer"], rec.get("turn", "search"))
        if not parsed.ok:
            raise DataError(f"{path}:{n}: answer {rec['answer']!r} is not an action ({parsed.error})")
        records.append(rec)
    if not records:
        raise DataError(f"{path} holds no records; make-sft-data found no demonstrations to write")
    return records


def record_observation(rec: dict, root) -> Observation:
    """The Observation a record was made from (images read from ``root``)."""
    root = Path(root)
    history = tuple(StepRecord(h["step"], _pose(h["pose"]), parse_action(h["action"]).action, h["action"], 0, 0.0,
                               observation=_past_view(root, h)) for h in rec.get("history", []))
    pose = _pose(rec["pose"])
    review = None
    if rec.get("turn") == "review":
        r = rec["review"]
        review = MaskReview(_load_png(root / r["mask"])[..., 0] > 127, tuple(r["box"]), int(r["turn"]),
                            int(r.get("refinements", 0)))
    return Observation(_load_png(root / rec["view"]), _load_png(root / rec["canvas"]), pose, rec["instruction"],
                       int(rec.get("step", len(history))),
                       tuple(_pose(p) for p in rec.get("trajectory", [rec["pose"]])),
                       _pose(rec.get("initial_pose", rec["pose"])), history=history,
                       canvas_style=rec.get("canvas_style", "official"),  # the prompt describes this picture
                       review=review)


def _past_view(root: Path, h: dict) -> Observation:
    """An earlier decision's view as the memory variants read it (its own canvas is not needed)."""
    pose = _pose(h["pose"])
    return Observation(_load_png(root / h["view"]), np.zeros((0, 0, 3), np.uint8), pose, "", h["step"] - 1, (pose,),
                       pose)


def record_action(rec: dict) -> Action:
    return parse_action(rec["answer"], rec.get("turn", "search")).action


def demonstrated(rec: StepRecord) -> Action:
    """The action a search record teaches: the one the policy meant (a STOP box made wrong on purpose by
    the box noise keeps the expert's own box, ``info["intended"]``), else the one it took."""
    intended = rec.info.get("intended") if rec.info else None
    return parse_action(intended).action if intended else rec.action


# ---------------------------------------------------------------------------------------------
# Demonstrations through the Episode stepper.


def expert_demonstrations(dataset: Dataset, config: SeekConfig, box_noise: float = 0.0,
                          seed: int = 0) -> list[tuple[EpisodeResult, str]]:
    """The oracle expert on every episode of ``dataset`` (simulation): (result, scene path) pairs. With
    ``box_noise`` > 0 that share of its STOP boxes is made wrong first (module docstring), so the review
    turns show a recovery; their records come with each result (``EpisodeResult.reviews``)."""
    from ..models.baselines import PerturbedStops
    from ..models.registry import make_policy, make_segmenter

    if not 0.0 <= box_noise <= 1.0:
        raise DataError(f"box noise {box_noise} is not a share; give --box-noise between 0 and 1")
    out = []
    for spec in dataset.episodes:
        scene = SimScene(spec, config)
        expert = make_policy("expert", config, scene.truth)
        policy = PerturbedStops(expert, box_noise, seed=seed) if box_noise > 0 else expert
        result = run_episode(scene, policy, make_segmenter("oracle", config, scene.truth))
        out.append((result, str(spec.scene)))
    return out


class _ReplayCamera:
    """Answers camera requests with recorded frames, in order (the pose is the recorded one)."""

    def __init__(self, frames: list[Frame]):
        self.frames, self.index = frames, -1

    def look(self, theta: float, phi: float) -> np.ndarray:
        self.index += 1
        if self.index >= len(self.frames):
            raise DataError("a demonstration asked for more views than were recorded")
        return self.frames[self.index].view

    def pose(self) -> Pose:
        return self.frames[max(self.index, 0)].pose


class _ScriptedPolicy:
    name = "demonstration"

    def __init__(self, actions: list[Action]):
        self.actions = iter(actions)

    def act(self, obs: Observation):
        from ..core.episode import Decision

        action = next(self.actions)
        return Decision(action, action.to_text())


class _RecordedMasks:
    name = "recorded"

    def __init__(self, masks: list[np.ndarray]):
        self.masks = iter(masks)

    def segment(self, view, box_px, pose):
        mask = next(self.masks, None)
        if mask is None or mask.shape != view.shape[:2]:
            raise DataError("a review turn asked for a mask that was not recorded on its view")
        return mask


class _NoMask:
    name = "none"

    def segment(self, view, box_px, pose):  # the demonstration ends at STOP; no mask is judged
        return np.zeros(view.shape[:2], dtype=bool)


@dataclass
class _ReplayScene:
    """A recorded search as the world of :func:`~panoseeker_ros.core.environment.run_episode`."""

    camera: _ReplayCamera
    instruction: str
    config: SeekConfig
    episode_id: str
    category: str

    def episode(self):
        from ..core.episode import Episode

        return Episode(self.config, None, self.episode_id, self.category)

    def start(self, episode):
        return episode.start(self.instruction, self.camera.frames[0].pose)


def replay(instruction: str, frames: list[Frame], actions: list[Action], config: SeekConfig,
           episode_id: str, category: str = "", reviews: list[Action] = (),
           masks: list[np.ndarray] = ()) -> EpisodeResult:
    """Run the Episode stepper on recorded ``frames`` (the start view, then the view after each move)
    with ``actions`` (the moves, then the final STOP): the records a policy would have seen. ``reviews``:
    the recorded review turns after STOP (ACCEPT or REFINE), judging ``masks`` in order (the STOP box's
    mask, then one per REFINE, on the STOP view); without them the search ends at STOP."""
    moves = sum(1 for a in actions if not a.stop)
    if len(frames) != moves + 1 or not actions or not actions[-1].stop:
        raise DataError(f"demonstration {episode_id}: {len(frames)} views for {moves} moves; a demonstration is "
                        f"the start view plus one view per move, ending in STOP")
    if len(actions) > config.episode.max_steps:
        raise DataError(f"demonstration {episode_id} has {len(actions)} decisions, more than episode.max_steps="
                        f"{config.episode.max_steps}; raise it in the parameter YAML")
    refines = sum(1 for a in reviews if a.refine)
    if any(not (a.refine or a.accept) for a in reviews) or (reviews and len(masks) < refines + 1):
        raise DataError(f"demonstration {episode_id}: review turns must be ACCEPT or REFINE, each REFINE with the "
                        f"mask it asked for ({len(masks)} masks for {refines} refinements)")
    # no mask beyond the recorded ones is judged: the review turns as recorded (the last REFINE's mask is
    # taken without asking), no entropy or VBR points, no alignment
    limit = refines + (1 if reviews and reviews[-1].accept else 0)
    quiet = dataclasses.replace(
        config, segmentation=dataclasses.replace(config.segmentation, max_refinements=limit, point_prompts="none"),
        alignment=dataclasses.replace(config.alignment, enabled=config.alignment.enabled and not reviews))
    scene = _ReplayScene(_ReplayCamera(frames), instruction, quiet, episode_id, category)
    segmenter = _RecordedMasks(list(masks)[:refines + 1]) if reviews else _NoMask()
    return run_episode(scene, _ScriptedPolicy(list(actions) + list(reviews)), segmenter)


# ---------------------------------------------------------------------------------------------
# View-graph augmentation (METHOD.md, "view-graph distillation").


def _node(pose: Pose) -> tuple[int, int]:
    p = pose.normalized()
    return int(round(p.theta)) % 360, int(round(p.phi))  # poses within half a degree are one node


def view_graph_demonstrations(results: list[tuple[EpisodeResult, str]], config: SeekConfig,
                              max_per_instruction: int | None = None,
                              accept_unscored: bool = False) -> list[EpisodeResult]:
    """New demonstrations from each scene's graph of views, successful trajectories or not.

    Nodes: every pose a decision was taken at (its recorded view; poses rounded to 1°), pooled over a
    scene's episodes. Edges: two nodes one lattice move apart. Goals: poses where a successful episode
    stopped with a box, per instruction. From every other node, the fewest-moves path to a goal gives a
    new demonstration (each move's view is a recorded one), replayed through the Episode stepper; it
    stops with the box the goal's search meant (:func:`demonstrated`) and carries that search's review
    turns (their view is the goal's view: a review reads nothing of the path).
    Instructions that refer to the start pose (EGO, MULTIHOP) keep their own start and get none.
    """
    by_scene: dict[str, list[EpisodeResult]] = {}
    for result, scene in results:
        by_scene.setdefault(scene, []).append(result)
    moves = lattice_moves()
    out = []
    for scene, group in by_scene.items():
        frames: dict[tuple[int, int], Frame] = {}
        for r in group:
            for rec in r.records:
                frames.setdefault(_node(rec.pose), Frame(rec.observation.view, rec.pose, rec.stamp))
        goals: dict[tuple[str, str], dict] = {}
        for r in group:
            last = demonstrated(r.records[-1]) if r.records else None
            if accepted(r, accept_unscored) and last is not None and last.stop and last.box is not None and r.category not in START_RELATIVE:
                goals.setdefault((r.instruction, r.category), {})[_node(r.records[-1].pose)] = (last, r)
        for (instruction, category), targets in goals.items():
            starts = {_node(r.records[0].pose) for r in group if r.instruction == instruction and r.records}
            made = 0
            for start in sorted(frames):
                if start in targets or start in starts:
                    continue
                path = _shortest_path(start, targets, frames, moves, config.episode.max_steps - 1)
                if path is None:
                    continue
                nodes, actions = path
                stop, src = targets[nodes[-1]]
                demo_id = f"{src.id}-vg-{start[0]:03d}-{start[1] + 90:03d}"
                demo = replay(instruction, [frames[n] for n in nodes], actions + [stop], config, demo_id, category)
                demo.reviews, demo.refinements = list(src.reviews), src.refinements
                out.append(demo)
                made += 1
                if max_per_instruction and made >= max_per_instruction:
                    break
    return out


def _shortest_path(start, goals, frames, moves, max_moves):
    """Breadth-first: the node path and lattice moves from ``start`` to the nearest goal, or None."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node in goals:
            nodes, actions = [node], []
            while parent[nodes[0]] is not None:
                prev, move = parent[nodes[0]]
                nodes.insert(0, prev)
                actions.insert(0, move)
            return (nodes, actions) if 1 <= len(actions) <= max_moves else None
        here = frames[node].pose
        for move in moves:
            nxt = _node(here.moved(move.dtheta, move.dphi))
            if nxt in frames and nxt not in parent:
                parent[nxt] = (node, move)
                queue.append(nxt)
    return None

