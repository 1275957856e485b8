"""The learned backends inside the graph: Qwen3-VL policy and SAM-3 segmenter nodes, with tiny random-weight
models on the CPU (real architectures, meaningless outputs), and their lifecycle (unload / reload)."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("transformers")

from geometry_msgs.msg import PolygonStamped  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from models_fixtures import tiny_model_dirs  # noqa: E402
from test_ros_graph import NS, green_dataset, running_graph  # noqa: E402,F401

from panoseeker_ros.core.actions import parse_action  # noqa: E402
from panoseeker_ros.nodes import interface as api  # noqa: E402
from panoseeker_ros.nodes.conversions import (box_to_polygon, header, image_to_mask, pose_to_joint_state,  # noqa: E402
                                              stamp_ns, time_msg)

MAX_STEPS = 3


@pytest.fixture(scope="module")
def tiny_graph(green_dataset, tmp_path_factory):
    models = tiny_model_dirs()
    yield from running_graph(
        tmp_path_factory.mktemp("tiny_graph") / "nodes.log", 90.0,
        shared={"dataset": str(green_dataset), "episode_id": "cube-0", "episode": {"max_steps": MAX_STEPS}},
        per_node={"policy_node": {"backend": "qwen", "model": str(models["qwen"]), "device": "cpu"},
                  "segmentation_node": {"backend": "sam3", "model": str(models["sam3"]), "device": "cpu"}})


def test_qwen_policy_node_searches_step_by_step(tiny_graph):
    g, c, log = tiny_graph
    outcome = c.op.seek("the green face", timeout=90)
    assert outcome.state in ("success", "failure"), f"{outcome.message}\n{log.read_text()}"
    steps = [fb for fb in outcome.feedback if "review" not in fb]
    assert 1 <= len(steps) <= MAX_STEPS
    for i, fb in enumerate(steps, 1):
        assert fb["step"] == i and fb["latency_s"] > 0
        assert parse_action(fb["action"]).ok  # every answer became a legal action
    for fb in outcome.feedback:  # the review turns after a STOP box answer in their own grammar
        if "review" in fb:
            assert parse_action(fb["action"], "review").ok and fb["mask_pixels"] >= 0
    assert outcome.result is not None and outcome.result["stamp"] >= steps[-1]["stamp"]
    assert g.exited() == {}


def test_sam3_segmentation_node_answers_a_target_with_a_mask_stamped_like_its_view(tiny_graph):
    g, c, log = tiny_graph
    masks, views = {}, {}
    c.node.create_subscription(Image, api.MASK, lambda m: masks.__setitem__(stamp_ns(m.header.stamp), m), api.IMAGE_QOS)
    c.node.create_subscription(Image, api.IMAGE, lambda m: views.__setitem__(stamp_ns(m.header.stamp), m),
                               api.IMAGE_QOS)
    t = c.now_ns()
    c.pub_move.publish(c.pub_move.msg_type(name=["pan"], position=[0.0]))  # a fresh view to draw on
    c.pose_after(t)
    stamp = [s for s, _ in c.poses if s > t][-1]
    view = c.spin_until(lambda: views.get(stamp), 10, "the view")
    pub = c.node.create_publisher(PolygonStamped, api.TARGET, api.COMMAND_QOS)
    pub_view = c.node.create_publisher(Image, api.SEGMENTATION_VIEW, api.IMAGE_QOS)
    pub_pose = c.node.create_publisher(JointState, api.SEGMENTATION_POSE, api.COMMAND_QOS)
    c.spin_until(lambda: min(p.get_subscription_count() for p in (pub, pub_view, pub_pose)) > 0, 10,
                 "the segmentation node")
    hdr = header(time_msg(stamp), "camera")
    pub_view.publish(view)  # as the policy node sends it: the view and its pose with the target
    pub_pose.publish(pose_to_joint_state([p for s, p in c.poses if s == stamp][-1], hdr))
    pub.publish(box_to_polygon((312.0, 184.0, 712.0, 584.0), hdr))
    msg = c.spin_until(lambda: masks.get(stamp), 60, "the sam3 mask")
    mask = image_to_mask(msg)
    assert mask.shape == (768, 1024) and msg.header.frame_id == "camera"
    assert g.exited() == {}


def test_deactivate_unloads_the_policy_and_activate_reloads_it(tiny_graph):
    g, c, _ = tiny_graph

    def transition(tid):
        req = ChangeState.Request()
        req.transition.id = tid
        return c.call(f"{NS}/policy_node/change_state", ChangeState, req, timeout=60).success

    assert transition(Transition.TRANSITION_DEACTIVATE)
    assert c.call(f"{NS}/policy_node/get_state", GetState).current_state.label == "inactive"
    rejected = c.op.seek("the green face", timeout=10, ready_timeout=1)
    assert rejected.state in ("rejected", "unreachable") and "not active" in rejected.message
    assert transition(Transition.TRANSITION_ACTIVATE)
    assert c.call(f"{NS}/policy_node/get_state", GetState).current_state.label == "active"
    again = c.op.seek("the green face", timeout=90)
    assert again.state in ("success", "failure"), again.message
    assert g.exited() == {}
