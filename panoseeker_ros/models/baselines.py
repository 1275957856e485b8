"""Baseline policies: ``expert`` (oracle shortest path), ``scan`` (fixed sweep + detector), ``random``, and the
one-shot ``static`` search over views covering the sphere.

Segmentation turns (core/episode.py): on a review turn (``obs.review``) the expert accepts a mask that
matches the target's visible mask (IoU >= ACCEPT_IOU) and otherwise refines to the target's box of the
view (MOVE along its plan when the target is not in the view); scan accepts a box close to its detection
on the view (:func:`review_answer`) and refines to the detection otherwise; random tosses a coin (accept,
or a random box). A
VBR question (``verify``) is answered from the ground truth by the expert (1 on the target's visible mask,
0 off it), from the detection's mask by scan (0.5 when it finds nothing) and by a seeded draw by random.
"""
from __future__ import annotations

import heapq
import zlib

import cv2
import numpy as np

from ..core.actions import Action, lattice_moves
from ..core.episode import Decision, Observation
from ..core.geometry import Pose, dir_to_view_pixel, erp_pixel_to_dir, great_circle_deg, project_erp_mask
from ..core.metrics import box_iou, mask_iou
from .detection import Detection, target_phrase
from .oracle import OracleDetector

_MOVES = lattice_moves()
_DT = np.array([a.dtheta for a in _MOVES])
_DP = np.array([a.dphi for a in _MOVES])


ACCEPT_IOU = 0.8  # a reviewed mask (expert) or box (scan) this close to what a baseline believes in is accepted


def review_answer(obs: Observation, believed) -> Action:
    """A review answer from the box a baseline believes in: ACCEPT when it has none (None) or the reviewed
    box overlaps ``believed`` (0–1000) by at least ACCEPT_IOU, else REFINE to ``believed``."""
    if believed is None or box_iou(obs.review.box, believed) >= ACCEPT_IOU:
        return Action.accept_mask()
    return Action.refine_to(believed)


def points_on(mask: np.ndarray | None, points) -> list[float]:
    """1.0 for each (x, y) view pixel on ``mask``, 0.0 off it; 0.5 each without a mask (no opinion)."""
    if mask is None:
        return [0.5] * len(points)
    h, w = mask.shape
    return [float(mask[min(h - 1, max(0, int(y))), min(w - 1, max(0, int(x)))]) for x, y in points]


def _key(p: Pose) -> tuple[float, float]:
    return round(p.theta % 360.0, 3), round(p.phi, 3)


class ExpertPolicy:
    """Oracle expert: the shortest path on the action lattice to a pose that has the target within
    ``stop_radius_deg``, then STOP with the ground-truth box. Uses the scene's ground truth
    (simulation only).

    Among the lattice poses within the radius, preferring those that see the whole target (so the
    alignment move can centre it), it picks the one that minimises the whole path, moves plus the
    final alignment (great-circle degrees); without such a pose, the nearest one. It replans every step, so it also serves as the SFT
    demonstration generator from any state.
    """

    name = "expert"

    def __init__(self, detector: OracleDetector, target: Pose, tilt_limits=(-90.0, 90.0),
                 stop_radius_deg: float = 30.0, step_cost_deg: float = 0.01):
        self.detector = detector
        self.target = target
        self.tilt_limits = tilt_limits
        self.stop_radius_deg = stop_radius_deg
        self.step_cost_deg = step_cost_deg
        self._outline = _outline_directions(detector.truth.mask) if detector is not None else None

    def _neighbours(self, p: Pose):
        """All lattice moves from ``p`` at once: (theta, phi, step length) arrays of len(_MOVES)."""
        theta = (p.theta + _DT + 180.0) % 360.0 - 180.0
        phi = np.clip(np.clip(p.phi + _DP, -90.0, 90.0), *self.tilt_limits)
        return theta, phi, great_circle_deg(p.theta, p.phi, theta, phi)

    def plan(self, start: Pose) -> list[Action]:
        """Moves from ``start`` to the best stopping pose on the lattice (Dijkstra)."""
        start_key = _key(start)
        dist, prev, poses = {start_key: 0.0}, {}, {start_key: start}
        heap = [(0.0, start_key)]
        while heap:
            cost, k = heapq.heappop(heap)
            if cost > dist[k]:
                continue
            thetas, phis, lengths = self._neighbours(poses[k])
            for i in range(len(_MOVES)):
                q = Pose(float(thetas[i]), float(phis[i]))
                kq = _key(q)
                c = cost + float(lengths[i]) + self.step_cost_deg
                if c < dist.get(kq, np.inf) - 1e-9:
                    dist[kq], prev[kq], poses[kq] = c, (k, _MOVES[i]), q
                    heapq.heappush(heap, (c, kq))
        keys = list(poses)
        to_target = great_circle_deg(np.array([poses[k].theta for k in keys]), np.array([poses[k].phi for k in keys]),
                                     self.target.theta, self.target.phi)
        inside = [i for i in range(len(keys)) if to_target[i] < self.stop_radius_deg]
        whole = [i for i in inside if self._sees_whole_target(poses[keys[i]])]
        inside = whole or inside
        if inside:
            goal = min(inside, key=lambda i: round(dist[keys[i]] + float(to_target[i]), 6))
        else:  # tilt limits keep the target out of reach: get as close as possible
            goal = min(range(len(keys)), key=lambda i: (round(float(to_target[i]), 6), dist[keys[i]]))
        node, moves = keys[goal], []
        while node != start_key:
            node, a = prev[node]
            moves.append(a)
        return moves[::-1]

    def _sees_whole_target(self, pose: Pose) -> bool:
        if self._outline is None:
            return True
        intr = self.detector.intrinsics
        x, y, front = dir_to_view_pixel(self._outline[0], self._outline[1], pose, intr)
        return bool(front.all() and (x >= 0).all() and (x < intr.width).all() and (y >= 0).all()
                    and (y < intr.height).all())

    def act(self, obs: Observation) -> Decision:
        moves = self.plan(obs.pose)
        if obs.review is not None:
            action = self.review(obs, moves)
        else:
            action = moves[0] if moves else Action.stop_at(self.detector.detect(obs.pose))
        return Decision(action, action.to_text())

    def review(self, obs: Observation, moves: list[Action]) -> Action:
        """ACCEPT a mask that matches the target's visible mask, else REFINE to the target's box on this view
        (ACCEPT when that box is the one reviewed: nothing better to offer); MOVE along the plan when the
        target is not in this view."""
        truth = self.detector.detect(obs.pose)
        if truth is None:
            return moves[0] if moves else Action.accept_mask()
        visible = project_erp_mask(self.detector.truth.mask, obs.pose, self.detector.intrinsics)
        if mask_iou(obs.review.mask, visible) >= ACCEPT_IOU or tuple(obs.review.box) == tuple(truth):
            return Action.accept_mask()
        return Action.refine_to(truth)

    def verify(self, view: np.ndarray, pose: Pose, instruction: str, points) -> list[float]:
        """VBR by the ground truth: whether each point lies on the target's visible mask."""
        return points_on(project_erp_mask(self.detector.truth.mask, pose, self.detector.intrinsics), points)


def _outline_directions(mask: np.ndarray, most: int = 256):
    """(θ, ϕ) arrays of up to ``most`` points on the outline of an ERP mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    pts = pts[:: max(1, len(pts) // most)]
    return erp_pixel_to_dir(pts[:, 0], pts[:, 1], mask.shape[1], mask.shape[0])


class ScanPolicy:
    """The fixed heuristic sweep: upper row → equator → lower row, three headings 120° apart (at most
    9 views), stopping on the first view where its detector finds the instruction's target phrase (the
    detector's best match there, with a score of at least ``min_score``); STOP without a box after the
    sweep. Holds no per-episode state: the sweep follows from ``obs.initial_pose`` and ``obs.step``, so
    one object serves any number of episodes at once."""

    name = "scan"
    ROWS_DEG = (60.0, 0.0, -60.0)
    HEADINGS_DEG = (0.0, 120.0, 240.0)

    def __init__(self, detector, min_score: float = 0.0):
        self.detector = detector
        self.min_score = float(min_score)

    @classmethod
    def sweep(cls, initial_pose: Pose) -> list[Pose]:
        """The views after the start, in order: 8 poses (the start view stands for the equator look
        straight ahead, so 1 + 8 = 9 looks at most)."""
        t0 = initial_pose.theta
        start = Pose(t0, 0.0).normalized()
        grid = [Pose(t0 + h, r).normalized() for r in cls.ROWS_DEG for h in cls.HEADINGS_DEG]
        return [p for p in grid if p != start]

    def _found(self, view, pose, instruction) -> Detection | None:
        found = self.detector.find(view, pose, target_phrase(instruction))
        return found if found is not None and found.score >= self.min_score else None

    def verify(self, view: np.ndarray, pose: Pose, instruction: str, points) -> list[float]:
        """VBR by the detector: whether each point lies on the mask of its match (0.5 each without one)."""
        found = self._found(view, pose, instruction)
        return points_on(found.mask if found is not None else None, points)

    def act(self, obs: Observation) -> Decision:
        found = self.detector.find(obs.view, obs.pose, target_phrase(obs.instruction))
        sweep = self.sweep(obs.initial_pose)
        if obs.review is not None:
            ok = found is not None and found.score >= self.min_score
            action = review_answer(obs, found.box if ok else None)
        elif found is not None and found.score >= self.min_score:
            action = Action.stop_at(found.box)
        elif obs.step < len(sweep):  # every earlier decision was a sweep move
            action = _relative_move(obs.pose, sweep[obs.step])
        else:
            action = Action.stop_at(None)
        info = {"score": round(found.score, 6)} if found is not None else {}
        return Decision(action, action.to_text(), info=info)


class StaticSearch:
    """The static one-shot baseline: one decision (AS = 1) over views covering the whole sphere.

    Not a step-by-step policy: :meth:`search` takes a core Camera (``look(θ, ϕ) -> view``, ``pose()``),
    looks at every pose of :attr:`VIEWS`, asks the detector for the instruction's target phrase on each
    and returns the best-scoring match. It stands for a method that sees the full panorama at once, so
    these looks are not counted as moves. Views overlap (60° apart on the equator, 90° apart on the
    ±60° rows, whose 90° vertical field reaches past the poles), so any object up to 60° wide is whole in
    at least one view.
    """

    name = "static"
    VIEWS = tuple([Pose(float(t), 0.0) for t in range(-180, 180, 60)]
                  + [Pose(float(t), phi) for phi in (60.0, -60.0) for t in range(-180, 180, 90)])

    def __init__(self, detector, min_score: float = 0.0):
        self.detector = detector
        self.min_score = float(min_score)

    def search(self, camera, instruction: str) -> tuple[Pose, Detection] | None:
        """(pose of the view, its best detection) with the highest score of at least ``min_score``, or None."""
        phrase = target_phrase(instruction)
        best = None
        for view_pose in self.VIEWS:
            view = camera.look(view_pose.theta, view_pose.phi)
            found = self.detector.find(view, camera.pose(), phrase)
            if found is not None and found.score >= self.min_score and (best is None or found.score > best[1].score):
                best = (camera.pose(), found)
        return best


def _relative_move(src: Pose, dst: Pose) -> Action:
    """The lattice move from ``src`` to ``dst`` (both on the 30° lattice relative to each other)."""
    dt = round(((dst.theta - src.theta + 180.0) % 360.0 - 180.0) / 30.0) * 30
    dt = 180 if dt == -180 else dt
    return Action.move(dt, round((dst.phi - src.phi) / 30.0) * 30)


class RandomPolicy:
    """Uniform random lattice moves; STOPs with probability ``p_stop`` each step, with a random box.
    Seeded per decision from the seed, the instruction, the start pose and the step, so runs repeat
    exactly and episodes sharing the policy do not disturb each other."""

    name = "random"

    def __init__(self, seed: int = 0, p_stop: float = 0.1):
        self.seed = seed
        self.p_stop = p_stop

    def _rng(self, instruction: str, start: Pose, *keys) -> np.random.Generator:
        episode = zlib.crc32(f"{instruction}|{start.theta:.3f}|{start.phi:.3f}".encode())
        return np.random.default_rng([self.seed, episode, *keys])

    def verify(self, view: np.ndarray, pose: Pose, instruction: str, points) -> list[float]:
        """A seeded uniform P(yes) per point (no opinion, made reproducible)."""
        key = zlib.crc32(repr([tuple(round(float(v), 1) for v in p) for p in points]).encode())
        return [float(v) for v in self._rng(instruction, pose, key).random(len(points))]

    def act(self, obs: Observation) -> Decision:
        rng = self._rng(obs.instruction, obs.initial_pose, obs.step,
                        *((obs.review.turn,) if obs.review is not None else ()))
        if obs.review is not None:  # a fair coin: accept, or a random box
            action = Action.accept_mask() if rng.random() < 0.5 else Action.refine_to(_random_box(rng))
        elif rng.random() < self.p_stop:
            action = Action.stop_at(_random_box(rng))
        else:
            action = _MOVES[int(rng.integers(len(_MOVES)))]
        return Decision(action, action.to_text())


def _random_box(rng: np.random.Generator):
    cx, cy = rng.uniform(100, 900, size=2)
    w, h = rng.uniform(50, 400, size=2)
    return np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 1000)


BOX_NOISE = ("shifted", "too-large", "neighbour")  # how a first box goes wrong (:func:`perturb_box`)


def perturb_box(box, kind: str, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A wrong version of a 0–1000 ``box``: ``shifted`` by half to most of its size on both axes,
    ``too-large`` (each side pushed out by 60–120 % of the box's size) or ``neighbour`` (a box of the same
    size beside it, where a neighbouring object would stand), clipped to the view and never empty."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if kind == "shifted":
        dx, dy = rng.uniform(0.5, 0.8) * w * rng.choice([-1, 1]), rng.uniform(0.3, 0.6) * h * rng.choice([-1, 1])
        out = [x1 + dx, y1 + dy, x2 + dx, y2 + dy]
    elif kind == "too-large":
        gx, gy = rng.uniform(0.6, 1.2, size=2)
        out = [x1 - gx * w, y1 - gy * h, x2 + gx * w, y2 + gy * h]
    elif kind == "neighbour":
        side = 1 if (x1 + x2) / 2 < 500 else -1  # towards the side with more room
        dx = side * w * rng.uniform(1.1, 1.4)
        out = [x1 + dx, y1, x2 + dx, y2]
    else:
        raise ValueError(f"unknown box noise {kind!r}; choose one of {', '.join(BOX_NOISE)}")
    x1, y1, x2, y2 = np.clip(np.round(out), 0, 1000)
    x2, y2 = max(x2, min(1000, x1 + 8)), max(y2, min(1000, y1 + 8))
    x1, y1 = min(x1, x2 - 8), min(y1, y2 - 8)
    return int(x1), int(y1), int(x2), int(y2)


class PerturbedStops:
    """A policy whose STOP boxes are made wrong with probability ``rate`` (a seeded draw per episode and
    step): the inner policy's box goes through :func:`perturb_box` with one of ``kinds``. Review turns
    and VBR questions go to the inner policy, which then sees the wrong first mask. What it is for: the
    first boxes a review must recover from (demonstrations, the refinement evidence)."""

    def __init__(self, inner, rate: float = 1.0, kinds=BOX_NOISE, seed: int = 0):
        for kind in kinds:
            if kind not in BOX_NOISE:
                raise ValueError(f"unknown box noise {kind!r}; choose one of {', '.join(BOX_NOISE)}")
        self.inner, self.rate, self.kinds, self.seed = inner, float(rate), tuple(kinds), seed
        self.name = f"{inner.name}+noisy-box"
        if hasattr(inner, "verify"):
            self.verify = inner.verify

    def act(self, obs: Observation) -> Decision:
        decision = self.inner.act(obs)
        action = decision.action
        if obs.review is not None or not action.stop or action.box is None:
            return decision
        start = obs.initial_pose
        key = zlib.crc32(f"{obs.instruction}|{start.theta:.3f}|{start.phi:.3f}".encode())
        rng = np.random.default_rng([self.seed, key, obs.step])
        if rng.random() >= self.rate:
            return decision
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        wrong = Action.stop_at(perturb_box(action.box, kind, rng))
        return Decision(wrong, wrong.to_text(), decision.parse_failures,
                        dict(decision.info, box_noise=kind, intended=action.to_text()))
