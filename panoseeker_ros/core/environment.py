"""The simulated world: a panorama scene that answers an :class:`~.episode.Episode`'s requests in-process.

``SimScene`` is one dataset episode's world (a panorama camera and the target's ground truth);
``answer`` executes one request; ``run_episode`` drives one episode and ``run_lockstep`` drives N
together, handing the policy the N observations of a step in one call when it can batch.
"""
from __future__ import annotations

import time
from typing import Sequence

from .camera import Camera, PanoramaCamera
from .config import SeekConfig
from .dataset import EpisodeSpec
from .episode import (Capture, Decide, Decision, Done, Episode, EpisodeResult, Frame, GroundTruth, Look, Move,
                      Observation, Policy, Request, Segment, Segmenter, Track, Verify)
from .geometry import PanoramaRenderer


class SimScene:
    """One dataset episode's world: the panorama camera, the start pose and the target's ground truth."""

    def __init__(self, spec: EpisodeSpec, config: SeekConfig | None = None,
                 renderer: PanoramaRenderer | None = None):
        self.spec = spec
        self.config = config or SeekConfig()
        self.intrinsics = self.config.camera.intrinsics()
        erp = renderer.erp if renderer is not None else spec.load_scene()
        h, w = erp.shape[:2]
        self.camera = PanoramaCamera(erp, self.intrinsics,
                                     (self.config.camera.tilt_min_deg, self.config.camera.tilt_max_deg), renderer)
        self.truth = GroundTruth(spec.load_mask(w, h), spec.target_centroid, spec.target_name, spec.box_level,
                                 tuple(spec.load_objects(w, h)))

    def episode(self) -> Episode:
        """A fresh stepper for this scene, scored against its ground truth."""
        return Episode(self.config, self.truth, self.spec.id, self.spec.category)

    def start(self, episode: Episode) -> Request:
        return episode.start(self.spec.instruction, self.spec.initial_pose)


def shoot(camera: Camera, req: Look | Capture | Move, stamp: float = 0.0) -> Frame:
    """Execute a camera request on an in-process camera."""
    if isinstance(req, Look):
        view = camera.look(req.pose.theta, req.pose.phi)
    elif isinstance(req, Move):
        target = camera.pose().moved(req.dtheta, req.dphi)
        view = camera.look(target.theta, target.phi)
    elif isinstance(req, Capture):
        here = camera.pose()
        view = camera.look(here.theta, here.phi)
    else:
        raise TypeError(f"{type(req).__name__} is not a camera request")
    return Frame(view, camera.pose(), stamp)


def decide(policy: Policy, observations: Sequence[Observation]) -> list[Decision]:
    """The policy's decisions on ``observations``: one batched call when it has ``act_batch``."""
    t0 = time.perf_counter()
    batch = getattr(policy, "act_batch", None)
    if batch is not None:
        decisions = list(batch(list(observations)))
        latency = (time.perf_counter() - t0) / len(observations)
        for d in decisions:
            d.latency_s = latency
        return decisions
    decisions = []
    for obs in observations:
        t = time.perf_counter()
        d = policy.act(obs)
        d.latency_s = time.perf_counter() - t
        decisions.append(d)
    return decisions


def answer(req: Request, camera: Camera, policy: Policy, segmenter: Segmenter):
    """Execute one request in-process: the Frame, Decision or mask it asks for."""
    if isinstance(req, Decide):
        return decide(policy, [req.observation])[0]
    if isinstance(req, Segment):
        return segment(segmenter, req.frame.view, req.box_px, req.frame.pose, req.points, req.labels)
    if isinstance(req, Track):
        return track(segmenter, req.frame.view, req.frame.pose)
    if isinstance(req, Verify):
        return verify(policy, req)
    return shoot(camera, req)


def segment(segmenter: Segmenter, view, box_px, pose, points=(), labels=()):
    """The segmenter's mask of ``box_px`` on ``view``, with point prompts (VBR) when there are any."""
    if not points:
        return segmenter.segment(view, box_px, pose)
    if len(points) != len(labels):
        raise ValueError(f"{len(points)} point prompts came with {len(labels)} labels; give one label (1 on the "
                         f"object, 0 off it) per point")
    return segmenter.segment(view, box_px, pose, points=list(points), labels=list(labels))


def verify(policy: Policy, req: Verify) -> list[float]:
    """The policy's P(yes) for each point of a Verify request (one batched call); 0.5 each (no opinion, so
    no point is chosen) from a policy that cannot verify."""
    ask = getattr(policy, "verify", None)
    if ask is None:
        return [0.5] * len(req.points)
    confidences = [float(c) for c in ask(req.frame.view, req.frame.pose, req.instruction, list(req.points))]
    if len(confidences) != len(req.points):
        raise ValueError(f"policy {getattr(policy, 'name', type(policy).__name__)} answered {len(confidences)} "
                         f"confidences for {len(req.points)} points; answer one P(yes) per point")
    return confidences


def track(segmenter: Segmenter, view, pose):
    """The segmenter's mask of the object it segmented last, on ``view`` taken at ``pose`` (a Track's answer)."""
    follow = getattr(segmenter, "track", None)
    if follow is None:
        raise ValueError(f"segmenter {getattr(segmenter, 'name', type(segmenter).__name__)} cannot track an object; "
                         f"set alignment.mode: carried-box or use a segmenter that tracks (oracle, sam3)")
    return follow(view, pose)


def run_episode(scene: SimScene, policy: Policy, segmenter: Segmenter) -> EpisodeResult:
    """Drive one episode of ``scene`` to its result."""
    episode = scene.episode()
    req = scene.start(episode)
    while not isinstance(req, Done):
        req = episode.observe(answer(req, scene.camera, policy, segmenter))
    return req.result


def run_lockstep(scenes: Sequence[SimScene], policies: Sequence[Policy],
                 segmenters: Sequence[Segmenter]) -> list[EpisodeResult]:
    """Drive N episodes together, one decision each per round.

    ``policies[i]`` and ``segmenters[i]`` serve ``scenes[i]``; episodes that share one policy object
    have their observations of a round decided in one :func:`decide` call (a GRPO group, a batch of
    evaluation episodes). Camera and segmentation requests run per episode in between. Results come
    back in the order of ``scenes``; each is what :func:`run_episode` would give.
    """
    if not (len(scenes) == len(policies) == len(segmenters)):
        raise ValueError("run_lockstep needs one policy and one segmenter per scene")
    episodes = [s.episode() for s in scenes]
    reqs: list[Request] = [s.start(e) for s, e in zip(scenes, episodes)]
    while not all(isinstance(r, Done) for r in reqs):
        for i, req in enumerate(reqs):  # the world's work until each episode waits for a decision
            while not isinstance(req, (Decide, Done)):
                req = episodes[i].observe(answer(req, scenes[i].camera, policies[i], segmenters[i]))
            reqs[i] = req
        groups: dict[int, list[int]] = {}
        for i, req in enumerate(reqs):
            if isinstance(req, Decide):
                groups.setdefault(id(policies[i]), []).append(i)
        for members in groups.values():
            decisions = decide(policies[members[0]], [reqs[i].observation for i in members])
            for i, d in zip(members, decisions):
                reqs[i] = episodes[i].observe(d)
    return [r.result for r in reqs]
