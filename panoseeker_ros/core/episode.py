"""The one episode implementation: what a policy sees, what it answers, and the loop around it.

The same objects run inside the ROS policy node, ``panoseeker eval`` and GRPO rollouts:

* :class:`SeekAgent` turns observations into decisions for one episode (step count, the T limit,
  step records). It never touches the world.
* :class:`ActiveAlignment` turns a STOP box into a final mask: segment, move so the mask centroid
  reaches the optical centre, re-segment with the box carried over.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from .actions import Action, box_to_pixels
from .geometry import Intrinsics, Pose, camera_rotation, mask_bbox, pose_distance, view_mask_centroid_dir


EMPTY_INSTRUCTION = "the instruction is empty; give a sentence naming the target, e.g. 'the chair next to the bed'"


@dataclass
class Observation:
    """What the policy sees at one step.

    view: (H, W, 3) uint8 RGB; canvas: EgoSphere with prompts (Hc, Wc, 3) uint8;
    trajectory: visited poses, the current one last; step: decisions made so far.
    """

    view: np.ndarray
    canvas: np.ndarray
    pose: Pose
    instruction: str
    step: int
    trajectory: tuple[Pose, ...]
    initial_pose: Pose
    stamp: float = 0.0  # seconds; the source image's time on a robot


@dataclass
class Decision:
    """A policy's answer: the action, the raw text it came from and bookkeeping for the step record."""

    action: Action
    text: str = ""
    parse_failures: int = 0  # answers that did not parse before this one (see the policy's retry rule)
    info: dict = field(default_factory=dict)


class Policy(Protocol):
    name: str

    def reset(self, instruction: str, initial_pose: Pose) -> None: ...

    def act(self, obs: Observation) -> Decision: ...


class Segmenter(Protocol):
    """Box → mask on one view. ``box_px`` is (x1, y1, x2, y2) in view pixels; returns (H, W) bool."""

    name: str

    def segment(self, view: np.ndarray, box_px, pose: Pose) -> np.ndarray: ...


@dataclass
class StepRecord:
    step: int
    pose: Pose
    action: Action
    text: str
    parse_failures: int
    latency_s: float

    def as_dict(self) -> dict:
        return {"step": self.step, "pose": self.pose.as_dict(), "action": self.action.to_text(),
                "text": self.text, "parse_failures": self.parse_failures, "latency_s": round(self.latency_s, 6)}


class SeekAgent:
    """Runs one policy through one episode of at most ``max_steps`` decisions.

    The episode ends at STOP or after ``max_steps`` decisions; in the second case it is truncated
    and ends without a box (a failure), whatever the last answer was.
    """

    def __init__(self, policy: Policy, max_steps: int = 20):
        self.policy = policy
        self.max_steps = int(max_steps)
        self.records: list[StepRecord] = []
        self.instruction = ""
        self.done = True
        self.truncated = False

    def start(self, instruction: str, initial_pose: Pose) -> None:
        if not instruction or not instruction.strip():
            raise ValueError(EMPTY_INSTRUCTION)
        self.instruction = instruction.strip()
        self.records = []
        self.done = False
        self.truncated = False
        self.policy.reset(self.instruction, initial_pose)

    @property
    def steps(self) -> int:
        return len(self.records)

    @property
    def final_action(self) -> Action | None:
        return self.records[-1].action if self.records else None

    def decide(self, obs: Observation) -> Decision:
        if self.done:
            raise RuntimeError("the episode has ended; call start() for a new one")
        t0 = time.perf_counter()
        decision = self.policy.act(obs)
        latency = time.perf_counter() - t0
        self.records.append(StepRecord(len(self.records) + 1, obs.pose, decision.action, decision.text,
                                       decision.parse_failures, latency))
        if decision.action.stop:
            self.done = True
        elif len(self.records) >= self.max_steps:
            self.done, self.truncated = True, True
        return decision


def rotate_view_mask(mask: np.ndarray, src: Pose, dst: Pose, intr: Intrinsics) -> np.ndarray:
    """A view mask taken at ``src`` as it appears in the view at ``dst`` (pure rotation homography)."""
    k = intr.matrix.copy()
    flip = np.diag([1.0, -1.0, 1.0])  # image y is down, camera y is up
    rel = camera_rotation(dst).T @ camera_rotation(src)
    h = k @ flip @ rel @ flip @ np.linalg.inv(k)
    return cv2.warpPerspective(mask.astype(np.uint8), h, (intr.width, intr.height), flags=cv2.INTER_NEAREST) > 0


class ActiveAlignment:
    """Segment the STOP box, centre the mask centroid, re-segment with the box carried over.

    Split in calls so a remote camera (the ROS graph) can move between them: ``start`` returns the
    pose to look at (None when the first mask is empty: nothing to align); ``finish`` takes the view
    taken there and returns the mask. When that mask is still cut by the view border and its centroid
    is more than ``tolerance_deg`` off the optical axis (a target larger than the view, or one only
    partly seen at STOP), ``next_look`` holds one more pose to look at, up to ``max_looks`` looks in
    all; call ``finish`` again with the view taken there. ``final_mask`` is the last mask.
    """

    def __init__(self, segmenter: Segmenter, intrinsics: Intrinsics, max_looks: int = 3,
                 tolerance_deg: float = 2.0):
        self.segmenter = segmenter
        self.intrinsics = intrinsics
        self.max_looks = int(max_looks)
        self.tolerance_deg = float(tolerance_deg)
        self.first_mask: np.ndarray | None = None
        self.carried_box_px = None
        self.final_mask: np.ndarray | None = None
        self.next_look: Pose | None = None
        self.looks = 0
        self._last: tuple[np.ndarray, Pose] | None = None

    def start(self, view: np.ndarray, pose: Pose, box_px) -> Pose | None:
        self.final_mask, self.carried_box_px, self.looks = None, None, 0
        self.first_mask = np.asarray(self.segmenter.segment(view, box_px, pose), dtype=bool)
        self._last = (self.first_mask, pose)
        self.next_look = view_mask_centroid_dir(self.first_mask, pose, self.intrinsics)
        if self.next_look is None:
            self.final_mask = self.first_mask
        return self.next_look

    def finish(self, view: np.ndarray, pose: Pose) -> np.ndarray:
        if self._last is None:
            raise RuntimeError("ActiveAlignment.finish called before start")
        self.looks += 1
        self.next_look = None
        box = carried_box(*self._last, pose, self.intrinsics)
        if box is None:  # the target left the view (tilt limits): keep what we had
            self.final_mask = self._last[0]
            return self.final_mask
        self.carried_box_px = box
        self.final_mask = np.asarray(self.segmenter.segment(view, box, pose), dtype=bool)
        self._last = (self.final_mask, pose)
        if self.looks < self.max_looks and _touches_border(self.final_mask):
            centre = view_mask_centroid_dir(self.final_mask, pose, self.intrinsics)
            if centre is not None and pose_distance(centre, pose) > self.tolerance_deg:
                self.next_look = centre
        return self.final_mask


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def carried_box(mask: np.ndarray, src: Pose, dst: Pose, intr: Intrinsics):
    """The box of a view mask from ``src`` carried into the view at ``dst``: (x1, y1, x2, y2) pixels or None.

    Where the mask touched the border of the ``src`` view the object may continue beyond what was
    seen, so the box grows by its own extent on that side (clipped to the new view).
    """
    moved = rotate_view_mask(mask, src, dst, intr)
    box = mask_bbox(moved)
    if box is None:
        return None
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    grow = {"left": mask[:, 0].any(), "right": mask[:, -1].any(), "top": mask[0].any(), "bottom": mask[-1].any()}
    # which side of the new view each border of the old one faces: follow the border's midpoint
    footprint = rotate_view_mask(np.ones_like(mask), src, dst, intr)
    fb = mask_bbox(footprint) or (0, 0, intr.width, intr.height)
    if grow["left"] and fb[0] > 0:
        x1 = max(0, x1 - w)
    if grow["right"] and fb[2] < intr.width:
        x2 = min(intr.width, x2 + w)
    if grow["top"] and fb[1] > 0:
        y1 = max(0, y1 - h)
    if grow["bottom"] and fb[3] < intr.height:
        y2 = min(intr.height, y2 + h)
    return x1, y1, x2, y2


@dataclass
class Segmentation:
    """The outcome of the STOP phase on one view: where the camera ended and the mask it saw."""

    pose: Pose
    view: np.ndarray
    mask: np.ndarray  # (H, W) bool, empty when nothing was segmented
    looks: list[Pose] = field(default_factory=list)  # alignment poses, in order (the last is ``pose``)

    @property
    def aligned(self) -> bool:
        return bool(self.looks)


def segment_with_alignment(camera, segmenter: Segmenter, view: np.ndarray, pose: Pose, box,
                           intrinsics: Intrinsics) -> Segmentation:
    """In-process STOP phase: ``box`` is the policy's 0–1000 box (None: no target, empty mask)."""
    if box is None:
        return Segmentation(pose, view, np.zeros(view.shape[:2], dtype=bool))
    aligner = ActiveAlignment(segmenter, intrinsics)
    target = aligner.start(view, pose, box_to_pixels(box, intrinsics.width, intrinsics.height))
    looks = []
    while target is not None:
        view = camera.look(target.theta, target.phi)
        pose = camera.pose()
        looks.append(pose)
        aligner.finish(view, pose)
        target = aligner.next_look
    return Segmentation(pose, view, aligner.final_mask, looks)
