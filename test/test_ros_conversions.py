"""Message ↔ core conversions of the ROS nodes (no processes, no DDS traffic)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_msgs.msg import PolygonStamped
from sensor_msgs.msg import Image, JointState

from panoseeker_ros.core.geometry import Intrinsics, Pose
from panoseeker_ros.nodes import conversions as cv
from panoseeker_ros.nodes.interface import TOPIC_BY_NAME, TRAINING_TOPICS, dumps, loads
from panoseeker_ros.nodes.sync import ExactTimeSync


def _rgb(h=6, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb8_round_trip_keeps_pixels_and_header():
    img = _rgb()
    hdr = cv.header(cv.time_msg(1_700_000_000_123_456_789), "camera")
    msg = cv.rgb_to_image(img, hdr)
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", 8, 6, 24)
    assert cv.stamp_ns(msg.header.stamp) == 1_700_000_000_123_456_789 and msg.header.frame_id == "camera"
    back = cv.image_to_rgb(msg, (8, 6))
    np.testing.assert_array_equal(back, img)
    assert not back.flags.writeable  # a view of the message's buffer, not a copy


def test_bgr8_is_converted_to_rgb():
    img = _rgb()
    msg = cv.rgb_to_image(img[..., ::-1].copy(), cv.header(None, ""))
    msg.encoding = "bgr8"
    np.testing.assert_array_equal(cv.image_to_rgb(msg), img)


def test_padded_rows_are_read_by_step():
    img = _rgb(4, 5)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :15] = img.reshape(4, 15)
    msg = Image(height=4, width=5, encoding="rgb8", step=16, data=padded.tobytes())
    np.testing.assert_array_equal(cv.image_to_rgb(msg), img)


@pytest.mark.parametrize("encoding", ["mono8", "bgra8", "16UC1", "yuv422"])
def test_other_encodings_are_refused_with_the_fix(encoding):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    with pytest.raises(cv.MessageError, match="publish rgb8 or bgr8") as err:
        cv.image_to_rgb(msg)
    assert encoding in str(err.value) and "\n" not in str(err.value)


def test_wrong_size_and_short_data_are_refused():
    msg = cv.rgb_to_image(_rgb(6, 8), cv.header(None, ""))
    with pytest.raises(cv.MessageError, match="8x6, the graph expects 1024x768"):
        cv.check_image(msg, (1024, 768))
    short = Image(height=6, width=8, encoding="rgb8", step=24, data=bytes(100))
    with pytest.raises(cv.MessageError, match="too few"):
        cv.image_to_rgb(short)


def test_mask_mono8_round_trip():
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    msg = cv.mask_to_image(mask, cv.header(None, "camera"))
    assert msg.encoding == "mono8" and max(msg.data) == 255
    np.testing.assert_array_equal(cv.image_to_mask(msg), mask)


def test_camera_info_carries_the_core_intrinsics():
    intr = Intrinsics.from_fov((120.0, 90.0), (1024, 768))
    info = cv.camera_info(intr, cv.header(None, "camera"))
    assert (info.width, info.height) == (1024, 768)
    assert info.k[0] == pytest.approx(512 / math.tan(math.radians(60)))
    assert info.k[4] == pytest.approx(384.0)  # fy = (H/2) / tan(45°)
    assert (info.k[2], info.k[5]) == (pytest.approx(511.5), pytest.approx(383.5))
    assert list(info.d) == [0.0] * 5


def test_joint_state_follows_rep103():
    # turning right (θ > 0) is a negative pan; looking up (ϕ > 0) is a negative tilt
    msg = cv.pose_to_joint_state(Pose(90.0, 30.0), cv.header(None, ""))
    assert list(msg.name) == ["pan", "tilt"]
    assert msg.position[0] == pytest.approx(-math.pi / 2) and msg.position[1] == pytest.approx(-math.pi / 6)
    back = cv.joint_state_to_pose(msg)
    assert (back.theta, back.phi) == (pytest.approx(90.0), pytest.approx(30.0))


def test_moves_by_name_by_order_and_partial():
    by_name = JointState(name=["tilt", "pan"], position=[-math.pi / 6, -math.pi / 3])
    assert cv.joint_state_to_move(by_name) == (pytest.approx(60.0), pytest.approx(30.0))
    by_order = JointState(position=[math.pi, 0.0])
    assert cv.joint_state_to_move(by_order) == (pytest.approx(-180.0), pytest.approx(0.0))
    pan_only = JointState(name=["pan"], position=[-math.pi / 6])
    assert cv.joint_state_to_move(pan_only) == (pytest.approx(30.0), 0.0)
    msg = cv.move_to_joint_state(30.0, -60.0, cv.header(None, ""))
    assert cv.joint_state_to_move(msg) == (pytest.approx(30.0), pytest.approx(-60.0))


def test_look_keeps_the_joint_left_out():
    current = Pose(45.0, 20.0)
    pose = cv.joint_state_to_pose(JointState(name=["tilt"], position=[0.0]), current)
    assert (pose.theta, pose.phi) == (pytest.approx(45.0), pytest.approx(0.0))


@pytest.mark.parametrize("msg, match", [
    (JointState(name=["pan"], position=[float("nan")]), "finite"),
    (JointState(name=["roll"], position=[0.1]), "joints are pan, tilt"),
    (JointState(name=["pan", "tilt"], position=[0.1]), "one position per name"),
    (JointState(), "no positions"),
    (JointState(position=[0.1, 0.2, 0.3]), "no names"),
])
def test_malformed_joint_states_are_refused(msg, match):
    with pytest.raises(cv.MessageError, match=match):
        cv.joint_state_to_move(msg)


def test_box_polygon_round_trip_and_empty():
    msg = cv.box_to_polygon((10.5, 20.0, 300.0, 400.25), cv.header(None, "camera"))
    assert len(msg.polygon.points) == 4
    assert cv.polygon_to_box(msg) == (10.5, 20.0, 300.0, 400.25)
    assert cv.polygon_to_box(cv.box_to_polygon(None, cv.header(None, ""))) is None
    flat = PolygonStamped()
    flat.polygon.points = cv.box_to_polygon((5, 5, 5, 9), cv.header(None, "")).polygon.points
    with pytest.raises(cv.MessageError, match="empty"):
        cv.polygon_to_box(flat)


def test_point_prompts_ride_after_the_box_corners():
    msg = cv.box_to_polygon((10.0, 20.0, 300.0, 400.0), cv.header(None, "camera"), [(50.5, 60.0), (70.0, 80.0)], [1, 0])
    assert [p.z for p in msg.polygon.points] == [0, 0, 0, 0, 1, -1]
    assert cv.polygon_to_box(msg) == (10.0, 20.0, 300.0, 400.0)  # the points do not widen the box
    assert cv.polygon_points(msg) == ([(50.5, 60.0), (70.0, 80.0)], [1, 0])
    assert cv.polygon_points(cv.box_to_polygon((1, 2, 3, 4), cv.header(None, ""))) == ([], [])
    msg.polygon.points[4].x = float("nan")
    with pytest.raises(cv.MessageError, match="non-finite"):
        cv.polygon_points(msg)


def test_exact_time_sync_pairs_by_stamp_in_any_order():
    got = []
    sync = ExactTimeSync(2, lambda stamp, a, b: got.append((stamp, a.name[0], b.name[0])))

    def js(ns, tag):
        return JointState(header=cv.header(cv.time_msg(ns), ""), name=[tag])

    sync.add(0, js(100, "a100"))
    sync.add(1, js(200, "b200"))
    sync.add(0, js(200, "a200"))  # completes 200; 100 can no longer be the newest and is dropped
    sync.add(1, js(100, "b100"))
    assert got == [(200, "a200", "b200")]


def test_interface_tables_are_consistent():
    assert set(TRAINING_TOPICS) <= set(TOPIC_BY_NAME)
    for t in TOPIC_BY_NAME.values():
        assert not t.name.startswith("/")  # relative: the namespace decides
    assert loads(dumps({"a": "ϕ"})) == {"a": "ϕ"} and loads("[1]") is None and loads("{") is None


def test_the_interface_document_covers_every_topic_service_and_parameter():
    from pathlib import Path

    import re as _re

    from panoseeker_ros.nodes.interface import SERVICES, TOPICS

    root = Path(__file__).resolve().parents[1]
    doc = (root / "doc" / "ros_interface.md").read_text()
    for t in TOPICS:
        assert f"| `{t.name}` | {t.type.replace('/msg/', '/')}" in doc, t.name
    for name, kind, _, _ in SERVICES:
        assert f"| `{name}` | {kind.replace('/srv/', '/')}" in doc, name
    declared = set()
    for path in (root / "panoseeker_ros" / "nodes").glob("*_node.py"):
        declared |= set(_re.findall(r'declare\(self, "([a-z_]+)"', path.read_text()))
    assert {"backend", "model", "autostart", "driver", "min_step_period_s", "frame_id"} <= declared
    for name in declared:
        assert f"`{name}`" in doc, name
