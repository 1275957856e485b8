"""A search driven from outside the simulator: the episode bookkeeping of the ROS policy node.

In the simulator :func:`~.environment.run_episode` owns the loop; on a robot the camera and the
EgoSphere live in other processes and observations arrive as messages. :class:`SearchSession` keeps
what the loop kept (the :class:`~.episode.SeekAgent`, the trajectory, the initial pose) and adds the
one rule a remote loop needs: an observation counts only if it was taken *after* the last request
(a move or a reset), so a view in flight from before the request is never mistaken for its answer.

Times are seconds on the caller's clock (the ROS node passes header stamps); poses are degrees.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RewardConfig
from .environment import GroundTruth
from .episode import EMPTY_INSTRUCTION, Decision, Observation, Policy, SeekAgent
from .geometry import Intrinsics, Pose, pose_distance, view_mask_to_erp
from .metrics import mask_iou



class SearchSession:
    """One instruction's search: which observation it waits for and what the agent decided.

    States: ``starting`` (the world is being reset), ``observing`` (waiting for an observation newer
    than :attr:`after`), ``deciding`` (the policy is thinking), ``moving`` (a move was decided, its
    request not yet sent), ``stopped`` (STOP or the step limit:
    the search is over, see :attr:`box`), ``failed`` and ``cancelled``.
    """

    def __init__(self, policy: Policy, instruction: str, max_steps: int = 20, episode: int = 0):
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(EMPTY_INSTRUCTION)
        self.agent = SeekAgent(policy, max_steps)
        self.instruction = instruction.strip()
        self.episode = int(episode)
        self.state = "starting"
        self.after = float("inf")
        self.initial_pose: Pose | None = None
        self.trajectory: list[Pose] = []
        self.last_stamp: float | None = None

    @property
    def active(self) -> bool:
        """Still searching (not stopped, failed or cancelled)."""
        return self.state in ("starting", "observing", "deciding", "moving")

    def expect_after(self, t: float) -> None:
        """Accept the first observation stamped strictly later than ``t`` (the time of a request)."""
        self.after = float(t)
        if self.active:
            self.state = "observing"

    def wants(self, stamp: float) -> bool:
        """Whether an observation stamped ``stamp`` is the one this session waits for."""
        return self.state == "observing" and stamp > self.after

    def decide(self, view: np.ndarray, canvas: np.ndarray, pose: Pose, stamp: float) -> Decision:
        """Run the policy on one observation; the first one fixes the initial pose and starts the agent."""
        if not self.wants(stamp):
            raise RuntimeError(f"observation at {stamp:.6f} is not awaited "
                               f"(state {self.state}, after {self.after:.6f})")
        self.state = "deciding"
        if self.initial_pose is None:
            self.initial_pose = pose
            self.agent.start(self.instruction, pose)
        self.trajectory.append(pose)
        self.last_stamp = stamp
        obs = Observation(view, canvas, pose, self.instruction, self.agent.steps, tuple(self.trajectory),
                          self.initial_pose, stamp)
        try:
            decision = self.agent.decide(obs)
        except BaseException:
            self.state = "failed"
            raise
        self.state = "stopped" if self.agent.done else "moving"
        return decision

    @property
    def box(self):
        """The STOP box (0–1000 view units) when the search ended on a STOP with a box, else None."""
        final = self.agent.final_action
        if self.state != "stopped" or final is None or not final.stop or self.agent.truncated:
            return None
        return final.box

    def end(self, state: str) -> None:
        """Mark the search ``failed`` or ``cancelled`` (a later decision is then ignored)."""
        if state not in ("failed", "cancelled"):
            raise ValueError(f"a session ends as 'failed' or 'cancelled', not {state!r}")
        self.state = state


@dataclass(frozen=True)
class Score:
    """A final mask scored against the simulator's ground truth."""

    iou: float  # ERP-pixel IoU
    distance_deg: float  # final pose to the target centroid
    success: bool  # distance < τ and IoU ≥ the threshold

    def as_dict(self) -> dict:
        return {"iou": self.iou, "distance_deg": self.distance_deg, "success": self.success}


def score_against_truth(mask: np.ndarray, pose: Pose, truth: GroundTruth, intrinsics: Intrinsics,
                        reward: RewardConfig) -> Score:
    """Score a view mask (H, W) bool taken at ``pose`` the way the benchmark does (ERP IoU, τ)."""
    h, w = truth.mask.shape
    iou = mask_iou(view_mask_to_erp(np.asarray(mask, dtype=bool), pose, intrinsics, w, h), truth.mask)
    distance = pose_distance(pose, truth.centroid)
    return Score(iou, distance, bool(distance < reward.tau_deg and iou >= reward.iou_success))
