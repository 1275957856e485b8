"""Demonstrations from recorded bags: an operator (or the policy) searching with the real camera.

A rosbag2 (mcap or sqlite3) of the training topics of ``doc/ros_interface.md`` is read with
``rosbags`` (no ROS install), Kilted message definitions. Per search (from one ``instruction`` to the
next):

* frames: ``camera/image`` (rgb8 or bgr8) joined to ``camera/joint_states`` (pan, tilt rad) by identical
  header stamp;
* decisions of a search the policy made: its ``feedback`` lines (the action, and the stamp of the view
  it was decided on), exactly; the review turns after its STOP (feedback lines with ``review``: ACCEPT
  or REFINE) with the masks they judged, the ``segmentation/mask`` messages stamped with the STOP view
  in bag order (the STOP box's, then one per REFINE). A search whose review answered MOVE went on
  searching after its STOP and is skipped;
* decisions of a teleoperated search (no ``feedback``): every ``camera/move`` (relative, [Δpan, Δtilt]
  rad) and ``camera/look`` (absolute) before the STOP view, in bag-time order; those between two frames
  are summed, and each is snapped to the action lattice (nearest Δθ and Δϕ of core/actions.py; a move
  that snaps to 0, 0 is no decision);
* the STOP view and box: the first ``target`` polygon of the search (view pixels; later ones are the
  alignment's carried boxes) and the frame with its header stamp, or else the bounding box of the first
  ``segmentation/mask`` (the answer to that target) on the frame with the mask's header stamp.

The views after each decision are the recorded ones at their recorded poses, so the Episode stepper
(:func:`.demonstrations.replay`) rebuilds the EgoSphere canvas the policy would have drawn (the bag's
``egosphere/canvas`` is not needed). A bag without a required topic gets one line naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.actions import DPHI_VALUES, DTHETA_VALUES, Action, parse_action, pixels_to_box
from ..core.config import SeekConfig
from ..core.episode import EpisodeResult, Frame
from ..core.geometry import mask_bbox, move_from_joint_delta, pan_tilt_to_pose, wrap_deg
from ..core.instruction import InstructionError, parse_instruction
from .demonstrations import DataError, replay

IMAGE, POSE, INSTRUCTION, MOVE, LOOK, TARGET, MASK, FEEDBACK = (
    "camera/image", "camera/joint_states", "instruction", "camera/move", "camera/look", "target",
    "segmentation/mask", "feedback")
REQUIRED = (IMAGE, POSE, INSTRUCTION, MOVE)  # and TARGET, MASK or FEEDBACK
JOINTS = ("pan", "tilt")


def snap_move(dtheta: float, dphi: float) -> Action | None:
    """The lattice move nearest to (Δθ, Δϕ) degrees (Δθ compared on the circle); None for 0, 0."""
    dt = min(DTHETA_VALUES, key=lambda v: abs(wrap_deg(dtheta - v)))
    dp = min(DPHI_VALUES, key=lambda v: abs(dphi - v))
    return None if (dt, dp) == (0, 0) else Action.move(dt, dp)


def _stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _joints(msg) -> tuple[float, float] | None:
    """(pan, tilt) from a JointState by name, or in that order when unnamed; None for a missing one."""
    names = list(msg.name)
    pos = [float(v) for v in msg.position]
    if names:
        values = dict(zip(names, pos))
        return (values.get("pan"), values.get("tilt"))
    return (pos + [None, None])[0], (pos + [None, None])[1]


def _rgb(msg, topic: str) -> np.ndarray:
    enc = msg.encoding.lower()
    if enc not in ("rgb8", "bgr8", "mono8"):
        raise DataError(f"{topic}: encoding {msg.encoding!r} is not supported; record rgb8, bgr8 or mono8 images")
    channels = 1 if enc == "mono8" else 3
    data = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width * channels]
    img = data.reshape(msg.height, msg.width, channels)
    if enc == "bgr8":
        img = img[..., ::-1]
    return np.ascontiguousarray(img if channels == 3 else img[..., 0])


@dataclass
class _Search:
    instruction: str
    time: int
    events: list = field(default_factory=list)  # (bag time, kind, payload)


def read_bag(path) -> list[_Search]:
    """The searches of a bag: their instruction and time-ordered frames, commands, targets and masks."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise DataError(f"bag {path} does not exist; pass the directory 'panoseeker record --out' wrote")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except Exception as exc:  # rosbags raises several kinds for an unreadable bag
        raise DataError(f"bag {path} cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        f"pass a rosbag2 directory (mcap or sqlite3)") from None
    try:
        topics = {c.topic: c for c in reader.connections}
        images = [t for t in topics if t == "/" + IMAGE or t.endswith("/" + IMAGE)]
        if not images:
            raise DataError(f"bag {path} has no {IMAGE} topic; record the training topics (panoseeker record)")
        ns = images[0][:-len(IMAGE)]
        have = {name: topics.get(ns + name) for name in (IMAGE, POSE, INSTRUCTION, MOVE, LOOK, TARGET, MASK, FEEDBACK)}
        for name in REQUIRED:
            if have[name] is None:
                raise DataError(f"bag {path} has no {ns}{name} topic; record it (panoseeker record records the "
                                f"training topics)")
        if have[TARGET] is None and have[MASK] is None and have[FEEDBACK] is None:
            raise DataError(f"bag {path} has none of {ns}{TARGET}, {ns}{MASK}, {ns}{FEEDBACK}; record one of them "
                            f"for the STOP box")
        kinds = {have[k].topic: k for k in have if have[k] is not None}
        searches: list[_Search] = []
        views: dict[int, tuple[int, np.ndarray]] = {}
        poses: dict[int, tuple[float, float]] = {}
        for conn, t, raw in reader.messages(connections=[topics[n] for n in kinds]):
            kind = kinds[conn.topic]
            msg = reader.deserialize(raw, conn.msgtype)
            if kind == INSTRUCTION:
                searches.append(_Search(_instruction_text(str(msg.data)), t))
                continue
            if not searches:
                continue  # before the first instruction
            search = searches[-1]
            if kind == IMAGE:
                views[_stamp(msg.header)] = (t, _rgb(msg, conn.topic))
            elif kind == POSE:
                pan, tilt = _joints(msg)
                if pan is not None and tilt is not None:
                    poses[_stamp(msg.header)] = (pan, tilt)
            elif kind in (MOVE, LOOK):
                search.events.append((t, kind, _joints(msg)))
            elif kind == TARGET:
                pts = [(float(p.x), float(p.y)) for p in msg.polygon.points]
                search.events.append((t, TARGET, (_stamp(msg.header), pts)))
            elif kind == MASK:
                search.events.append((t, MASK, (_stamp(msg.header), _rgb(msg, conn.topic) > 127)))
            elif kind == FEEDBACK:
                try:
                    line = json.loads(str(msg.data))
                    search.events.append((t, FEEDBACK, (int(line["stamp"]), str(line["action"]),
                                                        "review" in line)))
                except (ValueError, KeyError, TypeError):
                    raise DataError(f"bag {path}: a {conn.topic} message is not the documented JSON "
                                    f"(stamp, action); record the policy node's feedback") from None
            for stamp in [s for s in views if s in poses]:  # a frame is complete when both halves are in
                bag_time, view = views.pop(stamp)
                search.events.append((bag_time, "frame", (stamp, Frame(view, pan_tilt_to_pose(*poses.pop(stamp)),
                                                                      stamp * 1e-9))))
    finally:
        reader.close()
    for s in searches:
        s.events.sort(key=lambda e: e[0])
    return searches


def _instruction_text(data: str) -> str:
    """An ``instruction`` message's text: plain, or the "instruction" of the JSON form (doc/ros_interface.md)."""
    try:
        return parse_instruction(data)[1].strip()
    except InstructionError:
        return data.strip()


def _stop_point(search: _Search, frames: list[tuple[int, int, Frame]], intr) -> tuple[int, Frame, Action] | None:
    """(bag time, frame, STOP action) of the search's box: the first target polygon, else the first mask."""
    by_stamp = {stamp: (t, f) for t, stamp, f in frames}
    for _, kind, payload in search.events:
        if kind == TARGET and len(payload[1]) >= 3 and payload[0] in by_stamp:
            xs, ys = zip(*payload[1])
            t, f = by_stamp[payload[0]]
            return t, f, Action.stop_at(pixels_to_box((min(xs), min(ys), max(xs), max(ys)), intr.width, intr.height))
    for _, kind, payload in search.events:
        if kind == MASK and payload[0] in by_stamp and payload[1].any():
            t, f = by_stamp[payload[0]]
            x1, y1, x2, y2 = mask_bbox(payload[1])
            return t, f, Action.stop_at(pixels_to_box((x1, y1, x2, y2), intr.width, intr.height))
    return None


def bag_demonstrations(path, config: SeekConfig, on_skip=print) -> list[tuple[EpisodeResult, str]]:
    """Every search of the bag that ends in a box, as (replayed result, scene key) pairs; searches
    without a box are skipped with one line through ``on_skip``."""
    intr = config.camera.intrinsics()
    out = []
    for n, search in enumerate(read_bag(path)):
        name = f"{Path(path).name}-{n:03d}"
        frames = [(t, *payload) for t, kind, payload in search.events if kind == "frame"]  # (time, stamp ns, frame)
        if any(kind == FEEDBACK for _, kind, _ in search.events):
            demo = _policy_decisions(search, frames)
            if isinstance(demo, str):
                on_skip(f"bag {path}: search {n} ({search.instruction!r}): {demo}; skipped")
            else:
                views, actions, reviews, masks = demo
                out.append((replay(search.instruction, views, actions, config, name, "", reviews, masks), str(path)))
            continue
        stop = _stop_point(search, frames, intr)
        if stop is None:
            on_skip(f"bag {path}: search {n} ({search.instruction!r}) has no target box or mask on a recorded view; "
                    f"skipped")
            continue
        stop_time, stop_frame, stop_action = stop
        views, actions = [], []
        current, pending = None, [0.0, 0.0]  # the view decided on; the move summed since it
        for t, kind, payload in search.events:
            if t > stop_time:
                break
            if kind == "frame":
                payload = payload[1]
                if current is not None and pending != [0.0, 0.0]:
                    move = snap_move(*pending)
                    if move is not None:
                        views.append(current)
                        actions.append(move)
                    pending = [0.0, 0.0]
                current = payload
            elif kind in (MOVE, LOOK) and current is not None:
                a, b = payload
                if kind == MOVE:
                    dt, dp = move_from_joint_delta(a or 0.0, b or 0.0)
                else:  # absolute: relative to where the camera is heading now
                    here = current.pose.moved(*pending)
                    goal = pan_tilt_to_pose(a if a is not None else -np.radians(here.theta),
                                            b if b is not None else -np.radians(here.phi))
                    dt, dp = wrap_deg(goal.theta - here.theta), goal.phi - here.phi
                pending = [pending[0] + dt, pending[1] + dp]
        if current is not stop_frame:
            on_skip(f"bag {path}: search {n} ({search.instruction!r}): the box is not on the last view; skipped")
            continue
        views.append(stop_frame)
        result = replay(search.instruction, views, actions + [stop_action], config, name, "")
        out.append((result, str(path)))
    return out


def _policy_decisions(search: _Search, frames) -> tuple[list[Frame], list[Action], list[Action], list] | str:
    """The views and actions of the search's ``feedback`` lines and its review turns with the masks they
    judged (module docstring; none when a review answer does not parse or a judged mask was not recorded),
    or why they do not make a demonstration."""
    by_stamp = {stamp: f for _, stamp, f in frames}
    views, actions, reviews, stop_stamp = [], [], [], None
    for stamp, text, review in (p for _, k, p in search.events if k == FEEDBACK):
        if review:
            reviews.append(parse_action(text, "review"))
            if reviews[-1].ok and reviews[-1].action.is_move:
                return "a review turn moved the camera after STOP (the search went on)"
            continue
        if stop_stamp is not None:
            continue  # after STOP only review turns belong to this demonstration
        parsed = parse_action(text)
        if not parsed.ok or stamp not in by_stamp:
            return f"decision {text!r} is not an action on a recorded view"
        views.append(by_stamp[stamp])
        actions.append(parsed.action)
        if parsed.action.stop:
            stop_stamp = stamp
    if not actions or not actions[-1].stop or actions[-1].box is None:
        return "the policy did not stop with a box"
    answers = [r.action for r in reviews if r.ok]
    masks = [p[1] for _, k, p in search.events if k == MASK and p[0] == stop_stamp]
    if len(answers) < len(reviews) or len(masks) < sum(1 for a in answers if a.refine) + 1:
        answers, masks = [], []
    return views, actions, answers, masks
