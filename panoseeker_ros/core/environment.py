"""The simulated APRS environment and the episode loop shared by evaluation and training.

``SeekEnv`` is the world side of an episode (camera, EgoSphere, ground truth, rewards);
``run_episode`` drives a :class:`SeekAgent` and a segmenter through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .actions import Action
from .camera import PanoramaCamera
from .config import SeekConfig
from .dataset import EpisodeSpec
from .egosphere import EgoSphere
from .episode import Observation, SeekAgent, Segmenter, segment_with_alignment
from .geometry import PanoramaRenderer, Pose, pose_distance, view_mask_to_erp
from .metrics import EpisodeOutcome, mask_iou, path_length_deg
from .rewards import step_reward, terminal_reward


@dataclass
class GroundTruth:
    """What the simulator knows about the target: its ERP mask (H, 2H) bool and centroid."""

    mask: np.ndarray
    centroid: Pose
    name: str = ""


class SeekEnv:
    """One simulated episode: a panorama, an instruction, a start pose, and the target's ground truth."""

    def __init__(self, spec: EpisodeSpec, config: SeekConfig | None = None,
                 renderer: PanoramaRenderer | None = None):
        self.spec = spec
        self.config = config or SeekConfig()
        self.intrinsics = self.config.camera.intrinsics()
        erp = spec.load_scene()
        self.erp_height, self.erp_width = erp.shape[:2]
        self.camera = PanoramaCamera(erp, self.intrinsics,
                                     (self.config.camera.tilt_min_deg, self.config.camera.tilt_max_deg),
                                     renderer)
        self.truth = GroundTruth(spec.load_mask(self.erp_width, self.erp_height), spec.target_centroid,
                                 spec.target_name)
        self.egosphere = EgoSphere(self.intrinsics, (self.config.episode.canvas_width,
                                                     self.config.episode.canvas_height))
        self.poses: list[Pose] = []
        self.rewards: list[float] = []
        self.view: np.ndarray | None = None

    @property
    def instruction(self) -> str:
        return self.spec.instruction

    @property
    def pose(self) -> Pose:
        return self.camera.pose()

    def reset(self) -> Observation:
        self.egosphere.reset()
        self.poses, self.rewards = [], []
        start = self.spec.initial_pose
        return self._observe(self.camera.look(start.theta, start.phi))

    def _observe(self, view: np.ndarray) -> Observation:
        self.view = view
        pose = self.camera.pose()
        self.poses.append(pose)
        self.egosphere.integrate(view, pose)
        return Observation(view, self.egosphere.render(), pose, self.spec.instruction, len(self.poses) - 1,
                           tuple(self.egosphere.trajectory), self.spec.initial_pose)

    def step(self, action: Action) -> tuple[Observation, float]:
        """Apply a MOVE; returns the next observation and R_eff."""
        if action.stop:
            raise ValueError("STOP ends the episode: call finish() instead of step()")
        prev = self.camera.pose()
        target = prev.moved(action.dtheta, action.dphi)
        obs = self._observe(self.camera.look(target.theta, target.phi))
        reward = step_reward(prev, obs.pose, self.truth.centroid, self.config.reward)
        self.rewards.append(reward)
        return obs, reward


@dataclass
class EpisodeResult:
    """Everything one finished episode reports (what eval writes per line of episodes.jsonl)."""

    id: str
    category: str
    instruction: str
    outcome: EpisodeOutcome
    success: bool
    stop_pose: Pose
    final_pose: Pose
    poses: list[Pose]
    steps: list[dict]
    truncated: bool
    reward: float
    box: tuple | None
    erp_mask: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {"id": self.id, "category": self.category, "instruction": self.instruction, "success": self.success,
                "steps": self.outcome.steps, "truncated": self.truncated, "reward": self.reward,
                "iou": self.outcome.iou, "final_distance_deg": self.outcome.final_distance_deg,
                "shortest_deg": self.outcome.shortest_deg, "path_deg": self.outcome.path_deg,
                "stop_pose": self.stop_pose.as_dict(), "final_pose": self.final_pose.as_dict(),
                "poses": [p.as_dict() for p in self.poses], "box": list(self.box) if self.box else None,
                "trajectory": self.steps, "mask_rle": encode_rle(self.erp_mask)}


def finish_episode(env: SeekEnv, agent: SeekAgent, segmenter: Segmenter) -> EpisodeResult:
    """The STOP phase in the simulator: segment with active alignment, score, reward."""
    final = agent.final_action
    stop_pose = env.pose
    box = final.box if (final is not None and final.stop and not agent.truncated) else None
    seg = segment_with_alignment(env.camera, segmenter, env.view, stop_pose, box, env.intrinsics)
    poses = env.poses + seg.looks
    erp_mask = view_mask_to_erp(seg.mask, seg.pose, env.intrinsics, env.erp_width, env.erp_height)
    iou = mask_iou(erp_mask, env.truth.mask)
    cfg = env.config.reward
    outcome = EpisodeOutcome(env.spec.category, agent.steps, pose_distance(env.spec.initial_pose, env.truth.centroid),
                             path_length_deg(poses), pose_distance(seg.pose, env.truth.centroid), iou)
    stopped = final is not None and final.stop and not agent.truncated
    r_term = terminal_reward(stop_pose, env.truth.centroid, iou, cfg) if stopped else -cfg.r_pen
    return EpisodeResult(env.spec.id, env.spec.category, env.spec.instruction, outcome,
                         outcome.success(cfg.tau_deg, cfg.iou_success), stop_pose, seg.pose, poses,
                         [r.as_dict() for r in agent.records], agent.truncated, float(sum(env.rewards) + r_term),
                         box, erp_mask)


def run_episode(env: SeekEnv, agent: SeekAgent, segmenter: Segmenter) -> EpisodeResult:
    """The one episode loop: observe, decide, move until STOP or T, then segment and score."""
    obs = env.reset()
    agent.start(env.instruction, obs.pose)
    while True:
        decision = agent.decide(obs)
        if agent.done:
            break
        obs, _ = env.step(decision.action)
    return finish_episode(env, agent, segmenter)


def encode_rle(mask: np.ndarray) -> dict:
    """Row-major run-length code of a bool mask: {'size': [H, W], 'counts': [zeros, ones, zeros, ...]}."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def decode_rle(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    return np.repeat(values, rle["counts"]).reshape(h, w)
