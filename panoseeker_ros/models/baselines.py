"""Baseline policies: ``expert`` (oracle shortest path), ``scan`` (fixed sweep + detector), ``random``, and the
one-shot ``static`` search over views covering the sphere."""
from __future__ import annotations

import heapq
import zlib

import cv2
import numpy as np

from ..core.actions import Action, lattice_moves
from ..core.episode import Decision, Observation
from ..core.geometry import Pose, dir_to_view_pixel, erp_pixel_to_dir, great_circle_deg
from .detection import Detection, target_phrase
from .oracle import OracleDetector

_MOVES = lattice_moves()
_DT = np.array([a.dtheta for a in _MOVES])
_DP = np.array([a.dphi for a in _MOVES])


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
        action = moves[0] if moves else Action.stop_at(self.detector.detect(obs.pose))
        return Decision(action, action.to_text())


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

    def act(self, obs: Observation) -> Decision:
        found = self.detector.find(obs.view, obs.pose, target_phrase(obs.instruction))
        sweep = self.sweep(obs.initial_pose)
        if found is not None and found.score >= self.min_score:
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

    def act(self, obs: Observation) -> Decision:
        start = obs.initial_pose
        episode = zlib.crc32(f"{obs.instruction}|{start.theta:.3f}|{start.phi:.3f}".encode())
        rng = np.random.default_rng([self.seed, episode, obs.step])
        if rng.random() < self.p_stop:
            cx, cy = rng.uniform(100, 900, size=2)
            w, h = rng.uniform(50, 400, size=2)
            box = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 1000)
            action = Action.stop_at(box)
        else:
            action = _MOVES[int(rng.integers(len(_MOVES)))]
        return Decision(action, action.to_text())
