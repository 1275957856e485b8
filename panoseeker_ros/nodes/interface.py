"""The graph's interface in one place: topic and service names, message types, QoS, JSON payloads.

Every name is relative, so the whole graph lives under one namespace (default ``/panoseeker``).
Nodes, the operator, the recorder and ``doc/ros_interface.md`` all read this module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

DEFAULT_NAMESPACE = "/panoseeker"

# QoS. Images: only the newest frame matters, but the policy waits for one particular frame, so it is
# delivered reliably (a best-effort subscriber such as an image viewer still connects).
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Commands and per-step records: every message counts, none is replayed to late joiners.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# Latched: a late subscriber gets the last status / result at once.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Status changes: each one counts (a cancel is followed at once by the next search's start), and a
# late subscriber gets the recent ones, the newest last.
STATUS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
QOS = {"image": IMAGE_QOS, "command": COMMAND_QOS, "latched": LATCHED_QOS, "status": STATUS_QOS}
QOS_TEXT = {"image": "reliable, keep last 1, volatile",
            "command": "reliable, keep last 10, volatile",
            "latched": "reliable, keep last 1, transient local",
            "status": "reliable, keep last 10, transient local"}

JOINTS = ("pan", "tilt")  # JointState joint names of the pan-tilt head


@dataclass(frozen=True)
class Topic:
    name: str  # relative to the namespace
    type: str  # ROS type name, e.g. sensor_msgs/msg/Image
    qos: str  # a key of QOS
    publisher: str
    subscribers: str
    meaning: str


IMAGE = "camera/image"
CAMERA_INFO = "camera/camera_info"
POSE = "camera/joint_states"
MOVE = "camera/move"
LOOK = "camera/look"
CANVAS = "egosphere/canvas"
EXPLORED = "egosphere/explored"
INSTRUCTION = "instruction"
STATUS = "status"
FEEDBACK = "feedback"
TARGET = "target"
MASK = "segmentation/mask"
OVERLAY = "segmentation/overlay"
RESULT = "result"
RESULT_POSE = "result/pose"

TOPICS = (
    Topic(IMAGE, "sensor_msgs/msg/Image", "image", "camera_node", "egosphere_node, policy_node, segmentation_node",
          "the current view, rgb8, camera.width × camera.height"),
    Topic(CAMERA_INFO, "sensor_msgs/msg/CameraInfo", "image", "camera_node", "—",
          "pinhole intrinsics of the view (from camera.fov_deg and size), same stamp as the view"),
    Topic(POSE, "sensor_msgs/msg/JointState", "command", "camera_node",
          "egosphere_node, policy_node, segmentation_node",
          "joints pan, tilt (rad, REP-103: pan > 0 turns left, tilt > 0 looks down) where the view was taken; "
          "same stamp as the view"),
    Topic(MOVE, "sensor_msgs/msg/JointState", "command", "policy_node", "camera_node",
          "relative move: position = [Δpan, Δtilt] rad for joints pan, tilt (a missing joint moves 0; all "
          "zero re-captures the view); the result is clamped to the tilt limits"),
    Topic(LOOK, "sensor_msgs/msg/JointState", "command", "segmentation_node", "camera_node",
          "absolute look: position = [pan, tilt] rad (a missing joint keeps its angle); clamped to the limits"),
    Topic(CANVAS, "sensor_msgs/msg/Image", "image", "egosphere_node", "policy_node",
          "EgoSphere canvas with grid, path and crosshair, rgb8 episode.canvas_width × canvas_height; "
          "header of the view it integrated"),
    Topic(EXPLORED, "sensor_msgs/msg/Image", "image", "egosphere_node", "—",
          "mono8 mask of the canvas pixels explored so far (255); header of the view"),
    Topic(INSTRUCTION, "std_msgs/msg/String", "command", "operator", "policy_node",
          "a referring expression; starts a search, pre-empting the current one"),
    Topic(STATUS, "std_msgs/msg/String", "status", "policy_node", "operator",
          "JSON {state, message, instruction, episode}; state: inactive, ready, searching, segmenting, "
          "done, failed, rejected or cancelled"),
    Topic(FEEDBACK, "std_msgs/msg/String", "command", "policy_node", "operator",
          "JSON per decision {episode, instruction, step, pan, tilt, action, text, latency_s, observe_s, stamp}"),
    Topic(TARGET, "geometry_msgs/msg/PolygonStamped", "command", "policy_node", "segmentation_node",
          "the STOP box as 4 corners in view pixels (x right, y down; z = 0), header of the view it was "
          "drawn on; no points: the search ended without a target"),
    Topic(MASK, "sensor_msgs/msg/Image", "image", "segmentation_node", "—",
          "final mask, mono8 (255 = target), header of the view it was segmented on"),
    Topic(OVERLAY, "sensor_msgs/msg/Image", "image", "segmentation_node", "operator",
          "the final view with the mask tinted, rgb8, same header as the mask"),
    Topic(RESULT, "std_msgs/msg/String", "latched", "segmentation_node", "operator, policy_node",
          "JSON {success, found, aligned, pan, tilt, box, mask_pixels, iou, distance, backend, message, "
          "stamp}; iou and distance (rad) only when the scene's ground truth is known"),
    Topic(RESULT_POSE, "sensor_msgs/msg/JointState", "latched", "segmentation_node", "—",
          "the final pose (pan, tilt rad), same header as the mask"),
)
TOPIC_BY_NAME = {t.name: t for t in TOPICS}

# What a training bag must hold: views and their poses, the canvas, the instructions, the moves the
# policy made, the per-step feedback and the results.
TRAINING_TOPICS = (IMAGE, CAMERA_INFO, POSE, CANVAS, INSTRUCTION, MOVE, LOOK, FEEDBACK, STATUS, TARGET, RESULT,
                   RESULT_POSE, MASK)

CAMERA_RESET = "camera/reset"
EGOSPHERE_RESET = "egosphere/reset"
CANCEL = "cancel"
SEGMENTATION_CANCEL = "segmentation/cancel"

SERVICES = (
    (CAMERA_RESET, "std_srvs/srv/Trigger", "camera_node",
     "point the camera at the episode's start pose and publish the view"),
    (EGOSPHERE_RESET, "std_srvs/srv/Trigger", "egosphere_node", "clear the canvas: a new episode starts"),
    (CANCEL, "std_srvs/srv/Trigger", "policy_node", "stop the current search (and its segmentation)"),
    (SEGMENTATION_CANCEL, "std_srvs/srv/Trigger", "segmentation_node", "abandon the segmentation in progress"),
)


def dumps(payload: dict) -> str:
    """The JSON text of a status / feedback / result payload (compact, UTF-8 kept)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> dict | None:
    """A payload back, or None when the text is not a JSON object."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
