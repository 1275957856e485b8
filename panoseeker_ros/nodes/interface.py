"""The graph's interface in one place: topic and service names, message types, QoS, JSON payloads.

Every name is relative, so the whole graph lives under one namespace (default ``/panoseeker``).
Nodes, the operator, the recorder and ``doc/ros_interface.md`` all read this module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy

from ..core.instruction import InstructionError, echo, parse_instruction  # noqa: F401 - the instruction message's form
from ..core.instruction import json_object as loads  # noqa: F401 - a payload back, or None: not a JSON object
from . import NODES  # noqa: F401 - the graph's processes, named here with everything else of the interface

DEFAULT_NAMESPACE = "/panoseeker"

# QoS. Images: only the newest frame matters, but the policy waits for one particular frame, so it is
# delivered reliably (a best-effort subscriber such as an image viewer still connects).
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Commands and per-step records: every message counts, none is replayed to late joiners.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# Instructions: a burst (an operator script, a test flood) must not overflow the reader's queue, since
# every instruction is answered with a status.
INSTRUCTION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
# Latched: a late subscriber gets the last result / state at once.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Status changes: each one counts (a burst of instructions gives a status each), and a late subscriber
# gets the recent ones, the newest last. Liveliness with a short lease tells a client within seconds
# that the publishing node is gone, also when it was killed (DDS discovery alone takes ~20 s then).
LIVELINESS_LEASE_S = 2.0
STATUS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL, liveliness=LivelinessPolicy.AUTOMATIC,
                        liveliness_lease_duration=Duration(seconds=LIVELINESS_LEASE_S))
# A search's feedback lines: a client whose subscription the publisher matched late (discovery is not
# symmetric, least of all on a loaded machine) still gets the lines published before, the newest last.
HISTORY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
QOS = {"image": IMAGE_QOS, "command": COMMAND_QOS, "instruction": INSTRUCTION_QOS, "latched": LATCHED_QOS,
       "status": STATUS_QOS, "history": HISTORY_QOS}
QOS_TEXT = {"image": "reliable, keep last 1, volatile",
            "command": "reliable, keep last 10, volatile",
            "instruction": "reliable, keep last 100, volatile",
            "latched": "reliable, keep last 1, transient local",
            "status": "reliable, keep last 100, transient local, liveliness lease 2 s",
            "history": "reliable, keep last 100, transient local"}

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
CAMERA_STATUS = "camera/status"
MOVE = "camera/move"
LOOK = "camera/look"
CANVAS = "egosphere/canvas"
INSTRUCTION = "instruction"
STATUS = "status"
FEEDBACK = "feedback"
TARGET = "target"
TRACK = "segmentation/track"
MASK = "segmentation/mask"
SEGMENTATION_STATUS = "segmentation/status"
SEGMENTATION_VIEW = "segmentation/view"
SEGMENTATION_POSE = "segmentation/view_pose"
RESULT = "result"
RESULT_MASK = "result/mask"
RESULT_OVERLAY = "result/overlay"
RESULT_POSE = "result/pose"

TOPICS = (
    Topic(IMAGE, "sensor_msgs/msg/Image", "image", "camera_node", "policy_node",
          "the current view, rgb8, camera.width × camera.height"),
    Topic(CAMERA_INFO, "sensor_msgs/msg/CameraInfo", "image", "camera_node", "—",
          "pinhole intrinsics of the view (from camera.fov_deg and size), same stamp as the view"),
    Topic(POSE, "sensor_msgs/msg/JointState", "command", "camera_node", "policy_node",
          "joints pan, tilt (rad, REP-103: pan > 0 turns left, tilt > 0 looks down) where the view was taken; "
          "same stamp as the view"),
    Topic(CAMERA_STATUS, "std_msgs/msg/String", "latched", "camera_node", "policy_node",
          "JSON {state, message}; state: ready, moving or error (the policy pauses a search while error)"),
    Topic(MOVE, "sensor_msgs/msg/JointState", "command", "policy_node", "camera_node",
          "relative move: position = [Δpan, Δtilt] rad for joints pan, tilt (a missing joint moves 0; all "
          "zero re-captures the view); clamped to the tilt limits; beyond ±2π dropped"),
    Topic(LOOK, "sensor_msgs/msg/JointState", "command", "policy_node", "camera_node",
          "absolute look (alignment): position = [pan, tilt] rad (a missing joint keeps its angle); clamped "
          "to the limits; beyond ±2π dropped"),
    Topic(CANVAS, "sensor_msgs/msg/Image", "image", "policy_node", "—",
          "the EgoSphere canvas each decision saw (grid, path, crosshair), rgb8 episode.canvas_width × "
          "canvas_height; header of the view it integrated"),
    Topic(INSTRUCTION, "std_msgs/msg/String", "instruction", "operator", "policy_node",
          'a referring expression, plain text or JSON {"id": ..., "instruction": ...}, at most 512 characters; '
          'starts a search, pre-empting the current one; plain text gets the id "plain-<start s>-<n>"'),
    Topic(STATUS, "std_msgs/msg/String", "status", "policy_node", "operator",
          "JSON {state, message, id, instruction, episode}; state: inactive, ready, accepted, rejected, "
          "preempted, cancelled, paused, resumed, segmenting, done or failed; every instruction gets "
          "accepted or rejected, and a search ends with exactly one of preempted, cancelled, done, failed"),
    Topic(FEEDBACK, "std_msgs/msg/String", "history", "policy_node", "operator",
          "JSON per decision {id, episode, instruction, step, pan, tilt, action, text, latency_s, observe_s, stamp}"),
    Topic(TARGET, "geometry_msgs/msg/PolygonStamped", "command", "policy_node", "segmentation_node",
          "a box to segment as 4 corners in view pixels (x right, y down; z = 0), header of the view it is "
          "on: the STOP box (and, with alignment.mode carried-box, the box carried over after each look)"),
    Topic(TRACK, "std_msgs/msg/Header", "command", "policy_node", "segmentation_node",
          "alignment.mode track: follow the object of the last target into the view with this header (after "
          "each alignment move); its mask comes back on segmentation/mask with this header"),
    Topic(SEGMENTATION_VIEW, "sensor_msgs/msg/Image", "image", "policy_node", "segmentation_node",
          "the view a target or track request is on (rgb8, its header), sent just before the request: the "
          "segmentation node gets only the views it is asked about"),
    Topic(SEGMENTATION_POSE, "sensor_msgs/msg/JointState", "command", "policy_node", "segmentation_node",
          "where that view was taken (pan, tilt rad), same header"),
    Topic(MASK, "sensor_msgs/msg/Image", "image", "segmentation_node", "policy_node",
          "the mask of each target or track request, mono8 (255 = target), header of the request"),
    Topic(SEGMENTATION_STATUS, "std_msgs/msg/String", "status", "segmentation_node", "policy_node",
          "JSON {state, message, backend[, stamp]}; state: active, inactive, or failed (for the target "
          "stamped stamp [ns])"),
    Topic(RESULT_MASK, "sensor_msgs/msg/Image", "latched", "policy_node", "—",
          "the final mask, mono8, header of the view it is on; published before result"),
    Topic(RESULT_OVERLAY, "sensor_msgs/msg/Image", "latched", "policy_node", "operator",
          "the final view with the mask tinted, rgb8, same header as the final mask; published before result"),
    Topic(RESULT_POSE, "sensor_msgs/msg/JointState", "latched", "policy_node", "—",
          "the final pose (pan, tilt rad), same header as the final mask; published before result"),
    Topic(RESULT, "std_msgs/msg/String", "latched", "policy_node", "operator",
          "JSON {id, instruction, episode, success, found, aligned, looks, steps, pan, tilt, mask_pixels, iou, "
          "distance, message, stamp, record}; iou and distance (rad) only when the scene's ground truth is "
          "known; record is the episode's panoseeker eval line (initial_pose; target_centroid and the scores only "
          "with ground truth)"),
)
TOPIC_BY_NAME = {t.name: t for t in TOPICS}

# What a training bag must hold: views and their poses, the canvas, the instructions, the moves the
# policy made, the per-step feedback, the segmentation requests and answers, and the results.
TRAINING_TOPICS = (IMAGE, CAMERA_INFO, POSE, CANVAS, INSTRUCTION, MOVE, LOOK, FEEDBACK, STATUS, TARGET, MASK,
                   RESULT, RESULT_POSE, RESULT_MASK)

CAMERA_RESET = "camera/reset"
CAMERA_STOP = "camera/stop"
CANCEL = "cancel"

SERVICES = (
    (CAMERA_RESET, "std_srvs/srv/Trigger", "camera_node",
     "point the camera at its start pose and publish the view"),
    (CAMERA_STOP, "std_srvs/srv/Trigger", "camera_node",
     "stop the head now; a look under way ends without a view (the policy node calls it on cancel and shutdown)"),
    (CANCEL, "std_srvs/srv/Trigger", "policy_node", "stop the current search"),
)


def dumps(payload: dict) -> str:
    """The JSON text of a status / feedback / result payload (compact, UTF-8 kept)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
