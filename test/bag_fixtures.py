"""A teleoperated search written as a rosbag2 with the real message types (rosbags' Writer, Kilted).

The operator of :func:`write_teleop_bag` turns the simulated camera in two nudged moves to the target
and marks it: instruction, then per view ``camera/image`` + ``camera/joint_states`` (same stamp), the
moves on ``camera/move`` and the box on ``target`` (header of the view), and the mask.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from panoseeker_ros.core.actions import Action, pixels_to_box
from panoseeker_ros.core.environment import SimScene, shoot
from panoseeker_ros.core.episode import Look, Move
from panoseeker_ros.core.geometry import joint_delta_from_move, mask_bbox, pose_to_pan_tilt, project_erp_mask

NS = "/panoseeker"
TYPES = {"camera/image": "sensor_msgs/msg/Image", "camera/joint_states": "sensor_msgs/msg/JointState",
         "instruction": "std_msgs/msg/String", "camera/move": "sensor_msgs/msg/JointState",
         "camera/look": "sensor_msgs/msg/JointState", "target": "geometry_msgs/msg/PolygonStamped",
         "segmentation/mask": "sensor_msgs/msg/Image", "feedback": "std_msgs/msg/String"}


def write_teleop_bag(path: Path, spec, config, moves_deg, topics=tuple(TYPES), target: bool = True,
                     policy: bool = False, review: str | None = None) -> Path:
    """Record one search of ``spec``: the start view, then one view after each (Δθ, Δϕ) of ``moves_deg``.

    ``policy``: as the policy node runs it: a view from before the search, the look to the start pose,
    a ``feedback`` line per decision, and the alignment look and carried box after the STOP box.
    ``review`` (with ``policy``): the STOP box is the target's box shifted by its width, its mask the
    target's mask shifted the same, and the review turns follow: "refine" answers REFINE to the target's
    box (its target and mask), then ACCEPT; "move" answers MOVE +60 0."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    scene = SimScene(spec, config)
    clock = [1_796_157_438_328_695_745]  # a real clock's nanoseconds: more digits than a float keeps

    def header(stamp_ns: int):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10 ** 9,
                                                                               nanosec=stamp_ns % 10 ** 9),
                                        frame_id="camera")

    def joints(values, stamp_ns=0):
        return T["sensor_msgs/msg/JointState"](header=header(stamp_ns), name=["pan", "tilt"],
                                               position=np.array(values, np.float64), velocity=np.array([], np.float64),
                                               effort=np.array([], np.float64))

    def image(arr, encoding):
        h, w = arr.shape[:2]
        step = w * (3 if arr.ndim == 3 else 1)
        return T["sensor_msgs/msg/Image"](header=header(clock[0]), height=h, width=w, encoding=encoding, is_bigendian=0,
                                          step=step, data=np.ascontiguousarray(arr).reshape(-1))

    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {t: writer.add_connection(f"{NS}/{t}", TYPES[t], typestore=ts) for t in topics}

        def put(topic, msg):
            clock[0] += 10_000_000
            if topic in conns:
                writer.write(conns[topic], clock[0], ts.serialize_cdr(msg, TYPES[topic]))

        def frame(req):
            f = shoot(scene.camera, req)
            clock[0] += 10_000_000
            stamp = clock[0]
            put("camera/image", image(f.view, "rgb8"))
            put("camera/joint_states", joints(pose_to_pan_tilt(f.pose), stamp))
            return f, stamp

        def feedback(action: str, stamp_ns: int, **review):
            if policy:
                put("feedback", T["std_msgs/msg/String"](data=json.dumps({"step": 0, "action": action,
                                                                          "stamp": stamp_ns, **review})))

        text = json.dumps({"id": "search-1", "instruction": spec.instruction}) if policy else spec.instruction
        put("instruction", T["std_msgs/msg/String"](data=text))  # the JSON form, as the operator sends it
        if policy:  # the camera still shows the last search's view; the episode looks at its start pose
            frame(Look(spec.initial_pose.moved(90, 30)))
            put("camera/look", joints(pose_to_pan_tilt(spec.initial_pose)))
        f, stamp = frame(Look(spec.initial_pose))
        for dt, dp in moves_deg:
            feedback(Action.move(dt, dp).to_text(), stamp)
            put("camera/move", joints(joint_delta_from_move(dt, dp)))
            f, stamp = frame(Move(dt, dp))
        intr = config.camera.intrinsics()
        true_mask = project_erp_mask(scene.truth.mask, f.pose, intr)
        true_box = mask_bbox(true_mask)
        shift = (true_box[2] - true_box[0]) if review else 0
        mask = np.roll(true_mask, shift, axis=1) if review else true_mask

        def segmented(box, m):  # the target (box on the view) and the mask that answered it
            x1, y1, x2, y2 = box
            pts = [T["geometry_msgs/msg/Point32"](x=float(x), y=float(y), z=0.0)
                   for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
            if target:
                put("target", T["geometry_msgs/msg/PolygonStamped"](header=header(stamp), polygon=T[
                    "geometry_msgs/msg/Polygon"](points=pts)))
            put("segmentation/mask", T["sensor_msgs/msg/Image"](
                header=header(stamp), height=m.shape[0], width=m.shape[1], encoding="mono8", is_bigendian=0,
                step=m.shape[1], data=(m.astype(np.uint8) * 255).reshape(-1)))
            return pts

        def in_view(box):
            return pixels_to_box(box, intr.width, intr.height)

        x1, y1, x2, y2 = true_box
        stop_box = (x1 + shift, y1, min(x2 + shift, intr.width - 1), y2)
        feedback(Action.stop_at(in_view(stop_box)).to_text(), stamp)
        pts = segmented(stop_box, mask)
        if review == "refine":
            feedback(Action.refine_to(in_view(true_box)).to_text(), stamp, review=1, mask_pixels=int(mask.sum()))
            pts = segmented(true_box, true_mask)
            feedback("ACCEPT", stamp, review=2, mask_pixels=int(true_mask.sum()))
        elif review == "move":
            feedback("MOVE +60 0", stamp, review=1, mask_pixels=int(mask.sum()))
        if policy:  # alignment: a look, the new view, the carried box
            put("camera/look", joints(pose_to_pan_tilt(f.pose.moved(3, 2))))
            f, stamp = frame(Look(f.pose.moved(3, 2)))
            put("target", T["geometry_msgs/msg/PolygonStamped"](header=header(stamp), polygon=T[
                "geometry_msgs/msg/Polygon"](points=pts[:1] * 4)))
    return path
