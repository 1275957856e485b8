"""The one episode implementation: a stepper that asks the world for what it needs.

An :class:`Episode` owns everything one search knows: the decisions and the T limit, the EgoSphere,
the path, active alignment, scoring against ground truth when known, and the rewards. It never
touches the world; it returns *requests*, and whoever drives it answers them::

    req = episode.start(instruction, initial_pose)   # Look (or Capture)
    while not isinstance(req, Done):                 # Decide | Move | Look | Segment | Track | Verify
        req = episode.observe(answer(req))           # Frame | Decision | mask | confidences

The simulator answers in-process (:mod:`.environment`), the ROS policy node over topics, and the
lockstep driver answers N episodes together (a GRPO group, a batch of evaluation episodes).

Answers: a :class:`Frame` for :class:`Look`, :class:`Move` and :class:`Capture`; a
:class:`Decision` for :class:`Decide`; an (H, W) bool mask in view pixels for :class:`Segment` and
:class:`Track`; one P(yes) per point for :class:`Verify`.
Angles are degrees; stamps are seconds on the driver's clock.

Segmentation as an agent (``config.segmentation``): with ``point_prompts: vbr`` the first mask of the
STOP box is followed by :class:`Verify` rounds (core/verification.py) and, when the policy is sure of some
points, a second :class:`Segment` with the box and those points. Then, while fewer than
``max_refinements`` refinements were made, the policy reviews the mask: a :class:`Decide` whose
observation carries a :class:`MaskReview` (the mask and its box on the STOP view), answered ACCEPT (the
mask goes to the alignment), REFINE [box] (segment that box on the STOP view, and review again) or MOVE
(the target is elsewhere: the search goes on from the new view). Review turns are kept apart from the
search decisions (``EpisodeResult.reviews``; ``steps`` and T count search decisions only); each
refinement costs ``refinement_cost`` of the return.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Union

import cv2
import numpy as np

from .actions import Action, box_to_pixels
from .config import SeekConfig
from .egosphere import EgoSphere
from .geometry import Intrinsics, Pose, camera_rotation, dir_to_view_pixel, mask_bbox, pose_distance, \
    project_erp_mask, view_mask_centroid_dir, view_mask_to_erp
from .metrics import EpisodeOutcome, box_iou, mask_iou, path_length_deg
from .rewards import step_reward, terminal_reward
from .verification import PointVotes, candidate_points
from .visualize import review_picture

EMPTY_INSTRUCTION = "the instruction is empty; give a sentence naming the target, e.g. 'the chair next to the bed'"


# ---------------------------------------------------------------------------- what a policy sees

@dataclass
class Observation:
    """What the policy sees at one step.

    view: (H, W, 3) uint8 RGB; canvas: EgoSphere with prompts (Hc, Wc, 3) uint8; trajectory: the poses
    of every decision so far, the current one last; history: the earlier decisions' records (their
    views and answers, for the memory variants); step: decisions made so far.
    """

    view: np.ndarray
    canvas: np.ndarray
    pose: Pose
    instruction: str
    step: int
    trajectory: tuple[Pose, ...]
    initial_pose: Pose
    stamp: float = 0.0  # seconds; the source image's time on a robot
    history: tuple["StepRecord", ...] = ()
    canvas_style: str = "official"  # how ``canvas`` is drawn (core.egosphere), for the prompt's description
    review: "MaskReview | None" = None  # a review turn (ACCEPT | REFINE | MOVE) instead of a search turn

    @property
    def turn(self) -> str:
        """``search`` (answer MOVE or STOP) or ``review`` (answer ACCEPT, REFINE or MOVE): core/actions.py."""
        return "search" if self.review is None else "review"


@dataclass
class MaskReview:
    """What a review turn shows: the mask (H, W) bool on the observation's view (the STOP view) and the box
    (0–1000) it was segmented from; ``turn`` counts review turns from 1, ``refinements`` those that
    changed the mask so far."""

    mask: np.ndarray = field(repr=False)
    box: tuple
    turn: int
    refinements: int

    def picture(self, view: np.ndarray) -> np.ndarray:
        """The view with the mask tinted and its box drawn: what the policy judges."""
        return review_picture(view, self.mask, self.box)


@dataclass
class Decision:
    """A policy's answer: the action, the raw text it came from and bookkeeping for the step record.

    ``info`` holds backend details (e.g. sampled token ids and log-probabilities for training);
    ``latency_s`` is filled by whoever ran the policy.
    """

    action: Action
    text: str = ""
    parse_failures: int = 0  # answers that did not parse before this one (see the policy's retry rule)
    info: dict = field(default_factory=dict)
    latency_s: float = 0.0


class Policy(Protocol):
    """Decides one step from one observation. Everything episode-specific is in the observation, so
    one policy object can serve many episodes at once; a policy that can batch also has
    ``act_batch(observations) -> decisions``."""

    name: str

    def act(self, obs: Observation) -> Decision: ...


class Segmenter(Protocol):
    """Box → mask on one view. ``box_px`` is (x1, y1, x2, y2) in view pixels; returns (H, W) bool.

    A segmenter that can track (the official alignment) also has ``track(view, pose)``: the mask of the
    object of its last ``segment`` call on a later view (empty when it is lost)."""

    name: str

    def segment(self, view: np.ndarray, box_px, pose: Pose) -> np.ndarray: ...


@dataclass
class GroundTruth:
    """What the simulator knows about the target: its ERP mask (H, 2H) bool and centroid. ``box_level``:
    the mask is the target's ERP box (the official benchmark files carry no outline), so IoU is box-level.
    ``objects``: the scene's other annotated objects as (name, ERP mask) pairs (what a box may frame instead)."""

    mask: np.ndarray
    centroid: Pose
    name: str = ""
    box_level: bool = False
    objects: tuple = ()


# ---------------------------------------------------------------------------- requests and answers

@dataclass(frozen=True)
class Frame:
    """A view and the pose it was taken at (the camera's read-back), answering a camera request."""

    view: np.ndarray
    pose: Pose
    stamp: float = 0.0


@dataclass(frozen=True)
class Look:
    """Point the camera at an absolute pose (the camera clamps to its limits) and answer a Frame.
    ``purpose`` is ``start`` (the episode's start pose) or ``align`` (an alignment look)."""

    pose: Pose
    purpose: str = "start"


@dataclass(frozen=True)
class Capture:
    """Answer a fresh Frame where the camera points now (an episode that starts where it is)."""


@dataclass(frozen=True)
class Move:
    """Turn by the policy's relative move (degrees; elevation saturates) and answer a Frame."""

    dtheta: float
    dphi: float


@dataclass(frozen=True)
class Decide:
    """Answer the policy's Decision on this observation."""

    observation: Observation


@dataclass(frozen=True)
class Segment:
    """Answer the (H, W) bool mask of ``box_px`` (x1, y1, x2, y2 view pixels) on ``frame``'s view.
    ``look`` is 0 for the STOP view and k for the view after the k-th alignment look. ``points`` ((x, y)
    view pixels) with ``labels`` (1 on the object, 0 off it) prompt the segmenter beside the box (VBR)."""

    frame: Frame
    box_px: tuple
    look: int = 0
    points: tuple = ()
    labels: tuple = ()


@dataclass(frozen=True)
class Verify:
    """VBR: answer one confidence P(yes) in [0, 1] per point of ``points`` ((x, y) pixels on ``frame``'s
    view): does the point lie on the object ``instruction`` refers to? The policy answers, from the view
    with the point marked (core.verification.draw_marker)."""

    frame: Frame
    points: tuple
    instruction: str


@dataclass(frozen=True)
class Track:
    """Answer the (H, W) bool mask of the object segmented at STOP (the last Segment) on ``frame``'s view,
    tracked from the first mask (empty: the object is lost). ``look`` is the alignment move k it follows."""

    frame: Frame
    look: int


@dataclass(frozen=True)
class Done:
    result: "EpisodeResult"


CameraRequest = Union[Look, Capture, Move]
Request = Union[Look, Capture, Move, Decide, Segment, Track, Verify, Done]


# ---------------------------------------------------------------------------- records and results

@dataclass
class StepRecord:
    """One decision: where it was taken, what the policy saw and answered."""

    step: int
    pose: Pose
    action: Action
    text: str
    parse_failures: int
    latency_s: float
    stamp: float = 0.0
    reward: float = 0.0  # R_eff of the move this decision made (0 for STOP, and without ground truth)
    observation: Observation | None = field(default=None, repr=False)
    info: dict = field(default_factory=dict, repr=False)

    @property
    def view(self) -> np.ndarray:
        return self.observation.view

    def as_dict(self) -> dict:
        d = {"step": self.step, "pose": self.pose.as_dict(), "action": self.action.to_text(),
             "text": self.text, "parse_failures": self.parse_failures, "latency_s": round(self.latency_s, 6)}
        review = self.observation.review if self.observation is not None else None
        if review is not None:  # a review turn: what it judged
            d.update(turn=review.turn, box=list(review.box), mask_pixels=int(review.mask.sum()),
                     **{k: v for k, v in self.info.items() if k == "mask_iou"})
        return d


@dataclass
class Score:
    """The final mask judged against the ground truth (benchmark rules: ERP-pixel IoU, τ)."""

    outcome: EpisodeOutcome
    success: bool
    reward: float  # Σ R_eff + R_term, R_term judged at the final (aligned) pose like success
    erp_mask: np.ndarray = field(repr=False)
    iou_level: str = "mask"  # "box": IoU of boxes (a ground truth without an outline)


@dataclass
class EpisodeResult:
    """Everything one finished episode reports; ``score`` is None without ground truth (a robot)."""

    id: str
    category: str
    instruction: str
    records: list[StepRecord]
    path: list[Pose]  # every pose the camera took, alignment looks included (P sums it)
    stop_pose: Pose
    final_pose: Pose
    box: tuple | None  # the STOP box, 0–1000 view units; None: no target (or truncated)
    truncated: bool
    looks: int  # alignment looks made
    frame: Frame  # the view the final mask is on (at ``final_pose``, or before it when the object was lost)
    mask: np.ndarray = field(repr=False)  # (H, W) bool, the final mask in view pixels (empty: nothing found)
    message: str = ""
    score: Score | None = None
    alignment: list = field(default_factory=list)  # one dict per alignment move: from, to, the offset that made it
    final_offset_deg: tuple | None = None  # the final mask's centroid off the centre of its view (h, v) [deg]
    reviews: list = field(default_factory=list)  # StepRecords of the review turns, in order
    refinements: int = 0  # review answers that changed the mask (REFINE, MOVE)
    verification: list = field(default_factory=list)  # VBR: one PointVotes.as_dict() per verified box

    @property
    def steps(self) -> int:
        return len(self.records)

    @property
    def found(self) -> bool:
        return bool(self.mask.any())

    @property
    def success(self) -> bool | None:
        return self.score.success if self.score is not None else None

    @property
    def outcome(self) -> EpisodeOutcome | None:
        return self.score.outcome if self.score is not None else None

    @property
    def reward(self) -> float | None:
        return self.score.reward if self.score is not None else None

    def as_dict(self) -> dict:
        """One line of ``episodes.jsonl``."""
        d = {"id": self.id, "category": self.category, "instruction": self.instruction, "success": self.success,
             "steps": self.steps, "truncated": self.truncated, "looks": self.looks, "message": self.message,
             "stop_pose": self.stop_pose.as_dict(), "final_pose": self.final_pose.as_dict(),
             "poses": [p.as_dict() for p in self.path], "box": [float(v) for v in self.box] if self.box else None,
             "mask_pixels": int(self.mask.sum()), "trajectory": [r.as_dict() for r in self.records],
             "alignment": self.alignment,
             "final_offset_deg": [round(float(v), 4) for v in self.final_offset_deg] if self.final_offset_deg else None,
             "reviews": [r.as_dict() for r in self.reviews], "refinements": self.refinements,
             "verification": self.verification}
        if self.score is not None:
            o = self.score.outcome
            d.update(reward=self.score.reward, iou=o.iou, iou_level=self.score.iou_level, final_distance_deg=o.final_distance_deg,
                     shortest_deg=o.shortest_deg, path_deg=o.path_deg, mask_rle=encode_rle(self.score.erp_mask))
        return d


# ---------------------------------------------------------------------------- the stepper

class Episode:
    """One search from instruction to result, driven by requests and answers (module docstring).

    ``truth`` (simulation) adds scoring and rewards; ``episode_id`` and ``category`` only label the
    result. States: ``new`` → ``observing`` ⇄ ``deciding`` → (``segmenting`` ⇄ ``aligning``) → ``done``.
    """

    def __init__(self, config: SeekConfig | None = None, truth: GroundTruth | None = None,
                 episode_id: str = "", category: str = ""):
        self.config = config or SeekConfig()
        self.intrinsics: Intrinsics = self.config.camera.intrinsics()
        self.truth = truth
        self.id, self.category = episode_id, category
        self.egosphere = EgoSphere(self.intrinsics, (self.config.episode.canvas_width,
                                                     self.config.episode.canvas_height), self.config.episode.canvas_style)
        self.state = "new"
        self.instruction = ""
        self.initial_pose: Pose | None = None
        self.records: list[StepRecord] = []
        self.path: list[Pose] = []
        self.frame: Frame | None = None  # the newest frame
        self.truncated = False
        self.looks = 0
        self.alignment: list[dict] = []  # the alignment moves made (EpisodeResult.alignment)
        self.result: EpisodeResult | None = None
        self.reviews: list[StepRecord] = []  # review turns (module docstring)
        self.refinements = 0
        self.verification: list[dict] = []
        self._pending: Request | None = None
        self._mask: tuple[np.ndarray, Frame] | None = None  # the newest non-empty mask and the frame it is on
        self._mover: StepRecord | None = None  # the decision whose move the next frame answers (R_eff)
        self._box: tuple | None = None  # the 0–1000 box the newest STOP-view mask was segmented from
        self._votes: PointVotes | None = None  # VBR: the points asked about the newest box ...
        self._unasked: list = []  # ... and those still to ask
        self._first: np.ndarray | None = None  # VBR: the box-only mask, kept while points are asked

    # -- driving -----------------------------------------------------------------------------

    @property
    def pending(self) -> Request | None:
        """The request the episode waits an answer to (None before start and after Done)."""
        return self._pending

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def steps(self) -> int:
        return len(self.records)

    def start(self, instruction: str, initial_pose: Pose | None = None) -> Look | Capture:
        """Begin: look at ``initial_pose`` (None: start wherever the camera points)."""
        if self.state != "new":
            raise RuntimeError("an Episode runs once; make a new one for the next search")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(EMPTY_INSTRUCTION)
        self.instruction = instruction.strip()
        self.state = "observing"
        return self._ask(Capture() if initial_pose is None else Look(initial_pose, "start"))

    def observe(self, answer) -> Request:
        """Take the answer to :attr:`pending`; return the next request."""
        req = self._pending
        if isinstance(req, (Look, Capture, Move)):
            if not isinstance(answer, Frame):
                raise TypeError(f"{type(req).__name__} is answered with a Frame, not {type(answer).__name__}")
            return self._on_alignment_frame(answer) if self.state == "aligning" else self._on_frame(answer)
        if isinstance(req, Decide):
            if not isinstance(answer, Decision):
                raise TypeError(f"Decide is answered with a Decision, not {type(answer).__name__}")
            return self._on_decision(req.observation, answer)
        if isinstance(req, (Segment, Track)):
            mask = np.asarray(answer, dtype=bool)
            if mask.shape != req.frame.view.shape[:2]:
                raise ValueError(f"the mask is {mask.shape}, the view {req.frame.view.shape[:2]}; "
                                 f"a segmenter answers one bool per view pixel")
            return self._on_mask(req, mask) if isinstance(req, Segment) else self._on_tracked(req, mask)
        if isinstance(req, Verify):
            return self._on_votes(req, answer)
        raise RuntimeError("the episode waits for nothing: call start() first" if req is None
                           else "the episode has ended; make a new Episode for the next search")

    def _ask(self, req: Request) -> Request:
        self._pending = req
        return req

    # -- the search ----------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> Request:
        self.frame = frame
        reward = 0.0
        if self.initial_pose is None:
            self.initial_pose = frame.pose
        elif self.truth is not None:  # the answer to a Move: R_eff for the decision that made it
            reward = step_reward(self.path[-1], frame.pose, self.truth.centroid, self.config.reward, len(self.records))
            self._mover.reward = reward
        self.path.append(frame.pose)
        self.egosphere.integrate(frame.view, frame.pose)
        obs = Observation(frame.view, self.egosphere.render(), frame.pose, self.instruction, len(self.records),
                          tuple(self.egosphere.trajectory), self.initial_pose, frame.stamp, tuple(self.records),
                          self.egosphere.style)
        self.state = "deciding"
        return self._ask(Decide(obs))

    def _on_decision(self, obs: Observation, decision: Decision) -> Request:
        action = decision.action
        record = StepRecord(len(self.records) + 1, obs.pose, action, decision.text, decision.parse_failures,
                            decision.latency_s, obs.stamp, observation=obs, info=decision.info)
        self._mover = record
        if obs.review is not None:
            return self._on_review(obs, record)
        self.records.append(record)
        if action.stop:
            if action.box is None:
                return self._finish(self._empty(), self.frame, "the policy stopped without finding the target")
            return self._segment_box(action.box)
        if len(self.records) >= self.config.episode.max_steps:
            self.truncated = True
            return self._finish(self._empty(), self.frame,
                                f"step limit T={self.config.episode.max_steps} reached without STOP")
        self.state = "observing"
        return self._ask(Move(action.dtheta, action.dphi))

    # -- segmentation as an agent: verify points by looking, review the mask ------------------------

    def _segment_box(self, box) -> Request:
        """Segment a 0–1000 ``box`` on the current (STOP) view, by the box alone first."""
        self._box, self._votes = tuple(int(b) for b in box), None
        self.state = "segmenting"
        return self._ask(Segment(self.frame, box_to_pixels(box, self.intrinsics.width, self.intrinsics.height)))

    def _on_first_mask(self, req: Segment, mask: np.ndarray) -> Request:
        """A mask of the STOP view: verify points (vbr, after the box-only pass), then review or align."""
        seg = self.config.segmentation
        if seg.point_prompts == "vbr" and self._votes is None:
            self._votes = PointVotes(seg.vbr_threshold)
            self._unasked = candidate_points(mask, req.box_px, seg.vbr_candidates)
            self._first = mask
            if self._unasked:
                return self._ask_votes()
        if seg.point_prompts == "vbr" and not req.points:
            mask = self._first  # no point was sure enough: the box-only mask stands
        if self.refinements < seg.max_refinements:
            return self._ask_review(mask, req.frame)
        return self._align(mask, req.frame)

    def _ask_votes(self) -> Request:
        batch, self._unasked = self._unasked[:self.config.segmentation.vbr_batch], \
            self._unasked[self.config.segmentation.vbr_batch:]
        self.state = "verifying"
        return self._ask(Verify(self.frame, tuple(batch), self.instruction))

    def _on_votes(self, req: Verify, confidences) -> Request:
        self._votes.add(req.points, [float(c) for c in confidences])
        if self._unasked and not self._votes.enough:
            return self._ask_votes()
        self.verification.append({"box": list(self._box), **self._votes.as_dict()})
        points, labels = self._votes.chosen()
        self.state = "segmenting"
        if not points:
            return self._on_first_mask(Segment(req.frame, box_to_pixels(self._box, self.intrinsics.width,
                                                                        self.intrinsics.height)), self._first)
        return self._ask(Segment(req.frame, box_to_pixels(self._box, self.intrinsics.width, self.intrinsics.height),
                                 0, tuple(points), tuple(labels)))

    def _ask_review(self, mask: np.ndarray, frame: Frame) -> Request:
        self._mask = (mask, frame)
        review = MaskReview(mask, self._box, len(self.reviews) + 1, self.refinements)
        obs = Observation(frame.view, self.egosphere.render(), frame.pose, self.instruction, len(self.records),
                          tuple(self.egosphere.trajectory), self.initial_pose, frame.stamp, tuple(self.records),
                          self.egosphere.style, review)
        self.state = "reviewing"
        return self._ask(Decide(obs))

    def _on_review(self, obs: Observation, record: StepRecord) -> Request:
        """ACCEPT: align the mask; REFINE: segment the new box on the same view; MOVE: search on. Any other
        answer (a STOP from a policy that ignores the turn) accepts the mask."""
        record.step = len(self.reviews) + 1
        if self.truth is not None:  # what the mask under review was worth (evaluation only)
            record.info = dict(record.info, mask_iou=round(self._view_iou(obs.review.mask, self.frame), 6))
        self.reviews.append(record)
        action = record.action
        if action.refine:
            self.refinements += 1
            return self._segment_box(action.box)
        if action.is_move:
            self.refinements += 1
            self.state = "observing"
            return self._ask(Move(action.dtheta, action.dphi))
        mask, frame = self._mask
        return self._align(mask, frame)

    def _view_iou(self, mask: np.ndarray, frame: Frame) -> float:
        h, w = self.truth.mask.shape
        if self.truth.box_level:
            return box_iou(mask_bbox(mask), mask_bbox(project_erp_mask(self.truth.mask, frame.pose, self.intrinsics)))
        return mask_iou(view_mask_to_erp(mask, frame.pose, self.intrinsics, w, h), self.truth.mask)

    # -- active alignment: segment, centre the mask; then track it (official) or carry the box ----

    def _on_mask(self, req: Segment, mask: np.ndarray) -> Request:
        if req.look == 0:
            return self._on_first_mask(req, mask)
        self._mask = (mask, req.frame)
        centre = view_mask_centroid_dir(mask, req.frame.pose, self.intrinsics)
        if centre is None:
            return self._finish(mask, req.frame, "the mask after the alignment look is empty")
        align = self.config.alignment
        # a mask still cut by the view border and off centre: the target is larger than the view, or
        # was only partly seen; look again, up to max_looks looks in all
        # (carried-box)
        if (self.looks < align.max_looks and touches_border(mask)
                and pose_distance(centre, req.frame.pose) > align.tolerance_deg):
            return self._look_at(centre, mask, req.frame)
        return self._finish(mask, req.frame, "aligned")

    def _align(self, mask: np.ndarray, frame: Frame) -> Request:
        """The accepted mask of the STOP view: centre it (the alignment) or, disabled, it is final."""
        self._mask = (mask, frame)
        align = self.config.alignment
        centre = view_mask_centroid_dir(mask, frame.pose, self.intrinsics)
        if centre is None:
            return self._finish(mask, frame, "empty mask: nothing to align")
        moves = align.centering_moves + 1 if align.mode == "track" else align.max_looks
        if not align.enabled or moves < 1:
            return self._finish(mask, frame, "segmented without alignment")
        return self._look_at(centre, mask, frame)

    def _on_tracked(self, req: Track, mask: np.ndarray) -> Request:
        """The official centring loop: stop when the centroid is within the tolerance on both axes, the
        object is lost (keep the last good mask) or the moves are spent."""
        align = self.config.alignment
        offset = centroid_offset_deg(mask, req.frame.pose, self.intrinsics)
        if offset is None:
            last, on = self._mask
            return self._finish(last, on, f"the object was lost after alignment move {req.look}; kept the mask "
                                          f"of the view before")
        self._mask = (mask, req.frame)
        if abs(offset[0]) < align.tolerance_deg and abs(offset[1]) < align.tolerance_deg:
            return self._finish(mask, req.frame, f"aligned in {self.looks} move{'s' if self.looks > 1 else ''}")
        if self.looks >= align.centering_moves + 1:
            return self._finish(mask, req.frame, f"aligned: {self.looks} moves made, the centroid is still "
                                                 f"{max(map(abs, offset)):.1f}° off")
        return self._look_at(view_mask_centroid_dir(mask, req.frame.pose, self.intrinsics), mask, req.frame)

    def _look_at(self, pose: Pose, mask: np.ndarray, on: Frame) -> Request:
        """An alignment move to ``pose`` (the centroid of ``mask`` on ``on``), recorded with the offset that made it."""
        offset = centroid_offset_deg(mask, on.pose, self.intrinsics)
        self.alignment.append({"move": len(self.alignment) + 1, "from": on.pose.as_dict(), "to": pose.as_dict(),
                               "offset_deg": [round(float(v), 4) for v in offset]})
        self.state = "aligning"
        return self._ask(Look(pose, "align"))

    def _on_alignment_frame(self, frame: Frame) -> Request:
        self.frame = frame
        self.looks += 1
        self.path.append(frame.pose)
        self.alignment[-1]["to"] = frame.pose.as_dict()  # where the camera went (its limits may clamp)
        if self.config.alignment.mode == "track":
            self.state = "segmenting"
            return self._ask(Track(frame, self.looks))
        mask, src = self._mask
        box = carried_box(mask, src.pose, frame.pose, self.intrinsics)
        if box is None:  # the target left the view (tilt limits): keep what we had
            return self._finish(mask, src, "the target left the view after the alignment look; kept the last mask")
        self.state = "segmenting"
        return self._ask(Segment(frame, box, self.looks))

    # -- the end -------------------------------------------------------------------------------

    def _empty(self) -> np.ndarray:
        return np.zeros(self.frame.view.shape[:2], dtype=bool)

    def _finish(self, mask: np.ndarray, on: Frame, message: str) -> Done:
        final = self.records[-1].action
        box = self._box if final.stop and final.box is not None else None  # the box of the accepted mask
        stop_pose = self.records[-1].pose
        if self.refinements:
            message += f" ({self.refinements} refinement{'s' if self.refinements > 1 else ''})"
        result = EpisodeResult(self.id, self.category, self.instruction, self.records, self.path, stop_pose,
                               self.frame.pose, box, self.truncated, self.looks, on, mask, message, None,
                               self.alignment, centroid_offset_deg(mask, on.pose, self.intrinsics), self.reviews,
                               self.refinements, self.verification)
        if self.truth is not None:
            result.score = score(result, self.truth, self.config)
        self.state, self.result = "done", result
        return self._ask(Done(result))

def score(r: EpisodeResult, truth: GroundTruth, config: SeekConfig) -> Score:
    """Judge a result by the benchmark's rules: the final mask back-projected to the scene's ERP, IoU
    against the ground truth, success (distance < τ and IoU ≥ the threshold) and the return
    Σ R_eff + R_term − refinement_cost · refinements, R_term judged at the final pose like success (its α·IoU
    is the final mask's); R_eff of review turns that moved count too; L is from ``r.path[0]`` (the start)."""
    cfg = config.reward
    h, w = truth.mask.shape
    intr = config.camera.intrinsics()
    erp_mask = view_mask_to_erp(r.mask, r.frame.pose, intr, w, h)
    if truth.box_level:  # the box of the final mask against the target's ERP box as seen from that view
        iou = box_iou(mask_bbox(r.mask), mask_bbox(project_erp_mask(truth.mask, r.frame.pose, intr)))
    else:
        iou = mask_iou(erp_mask, truth.mask)
    outcome = EpisodeOutcome(r.category, r.steps, pose_distance(r.path[0], truth.centroid),
                             path_length_deg(r.path), pose_distance(r.final_pose, truth.centroid), iou)
    stopped = r.records[-1].action.stop and not r.truncated
    r_term = terminal_reward(r.final_pose, truth.centroid, iou, cfg) if stopped else -cfg.r_pen
    reward = float(sum(rec.reward for rec in r.records) + sum(rec.reward for rec in r.reviews) + r_term
                   - config.segmentation.refinement_cost * r.refinements)
    return Score(outcome, outcome.success(cfg.tau_deg, cfg.iou_success), reward, erp_mask,
                 "box" if truth.box_level else "mask")


# ---------------------------------------------------------------------------- alignment geometry

def centroid_offset_deg(mask: np.ndarray, pose: Pose, intr: Intrinsics) -> tuple[float, float] | None:
    """How far the (solid-angle weighted) centroid of a view mask is off the view centre, along the view's
    axes: (horizontal, vertical) degrees, right and up positive; None for an empty mask."""
    centre = view_mask_centroid_dir(mask, pose, intr)
    if centre is None:
        return None
    x, y, _ = dir_to_view_pixel(centre.theta, centre.phi, pose, intr)
    return (float(np.degrees(np.arctan((x - intr.cx) / intr.fx))),
            float(np.degrees(np.arctan((intr.cy - y) / intr.fy))))


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def rotate_view_mask(mask: np.ndarray, src: Pose, dst: Pose, intr: Intrinsics) -> np.ndarray:
    """A view mask taken at ``src`` as it appears in the view at ``dst`` (pure rotation homography)."""
    k = intr.matrix.copy()
    flip = np.diag([1.0, -1.0, 1.0])  # image y is down, camera y is up
    rel = camera_rotation(dst).T @ camera_rotation(src)
    h = k @ flip @ rel @ flip @ np.linalg.inv(k)
    return cv2.warpPerspective(mask.astype(np.uint8), h, (intr.width, intr.height), flags=cv2.INTER_NEAREST) > 0


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


# ---------------------------------------------------------------------------- mask records

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


def episode_record(result: EpisodeResult, initial_pose: Pose, target_centroid: Pose | None = None) -> dict:
    """The line of ``episodes.jsonl`` (and the ``record`` of the graph's result): the result's fields (among
    them L* = ``shortest_deg`` and P = ``path_deg`` in degrees, and ``looks``) plus what an independent scorer
    needs: the start pose and, when the ground truth is known, the target centroid. Without ground truth (a
    robot) ``target_centroid`` and the scored fields (``iou``, ``final_distance_deg``, ``shortest_deg``,
    ``path_deg``, ``reward``, ``mask_rle``) are left out and ``success`` is null."""
    record = result.as_dict()
    record["initial_pose"] = initial_pose.as_dict()
    if target_centroid is not None:
        record["target_centroid"] = target_centroid.as_dict()
    return record
