"""The ROS graph end to end: four node processes on real rclpy/FastDDS, a client in this process.

One graph (a random ROS_DOMAIN_ID, localhost discovery only) serves every test of this module; the
scene is the cube panorama (1024×512) whose green '+X' face is the target. Node processes are
stopped in the fixture's teardown whatever happens.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.srv import GetState  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from panoseeker_ros.core.config import SeekConfig  # noqa: E402
from panoseeker_ros.core.dataset import EpisodeSpec, load_dataset, load_rgb, save_dataset  # noqa: E402
from panoseeker_ros.core.environment import SeekEnv  # noqa: E402
from panoseeker_ros.core.geometry import Pose, pan_tilt_to_pose, pose_distance, spherical_centroid  # noqa: E402
from panoseeker_ros.core.session import score_against_truth  # noqa: E402
from panoseeker_ros.nodes import interface as api  # noqa: E402
from panoseeker_ros.nodes.conversions import (header, image_to_mask, joint_state_to_pose, rgb_to_image,  # noqa: E402
                                              stamp_ns)
from panoseeker_ros.nodes.launcher import Graph, node_command, write_overrides  # noqa: E402
from panoseeker_ros.nodes.operator import Operator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUBE = ROOT.parent / "shared" / "data" / "panoramas" / "cube_faces_1024x512.png"
PARAMS = ROOT / "config" / "seek.yaml"
NS = f"/panoseeker_test_{os.getpid()}"  # a random domain and a namespace of our own: no crosstalk
EPISODE = "cube-1"  # starts at θ = 180°, the target is at θ ≈ 90°: at least two decisions
TILT_LIMIT_DEG = 60.0
STEP_PERIOD_S = 0.3  # paces the search so a pre-emption lands mid-search


def _env(domain: int) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def _free_domain() -> int:
    return random.Random(os.getpid() ^ time.time_ns()).randint(1, 200)


class Client:
    """This test's window on the graph: the operator plus raw subscriptions and service calls."""

    def __init__(self, domain: int):
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("test_client", namespace=NS, context=self.context)
        self.op = Operator(self.node)
        self.explored: dict[int, int] = {}  # stamp → explored canvas pixels
        self.poses: list[tuple[int, Pose]] = []
        self.masks: dict[int, Image] = {}
        n = self.node
        n.create_subscription(Image, api.EXPLORED, self._on_explored, api.IMAGE_QOS)
        n.create_subscription(JointState, api.POSE, lambda m: self.poses.append(
            (stamp_ns(m.header.stamp), joint_state_to_pose(m))), api.COMMAND_QOS)
        n.create_subscription(Image, api.MASK, lambda m: self.masks.__setitem__(stamp_ns(m.header.stamp), m),
                              api.IMAGE_QOS)
        self.pub_image = n.create_publisher(Image, api.IMAGE, api.IMAGE_QOS)
        self.pub_move = n.create_publisher(JointState, api.MOVE, api.COMMAND_QOS)
        self.pub_instruction = self.op.pub

    def _on_explored(self, msg: Image) -> None:
        self.explored[stamp_ns(msg.header.stamp)] = int(np.count_nonzero(image_to_mask(msg)))

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def spin_until(self, predicate, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            self.op.spin_for(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def call(self, service: str, srv_type=Trigger, request=None, timeout: float = 10.0):
        cli = self.node.create_client(srv_type, service)
        try:
            self.spin_until(lambda: cli.service_is_ready(), timeout, f"service {service}")
            future = cli.call_async(request or srv_type.Request())
            self.spin_until(future.done, timeout, f"response of {service}")
            return future.result()
        finally:
            self.node.destroy_client(cli)

    def statuses_since(self, t_ns: int) -> list[dict]:
        return [p for kind, arrived, p in self.op.events if kind == "status" and arrived * 1e9 >= t_ns]

    def feedback_since(self, t_ns: int) -> list[tuple[float, dict]]:
        return [(arrived, p) for kind, arrived, p in self.op.events if kind == "feedback" and arrived * 1e9 >= t_ns]

    def pose_after(self, t_ns: int, timeout: float = 10.0) -> Pose:
        self.spin_until(lambda: any(s > t_ns for s, _ in self.poses), timeout, "a camera pose")
        return [p for s, p in self.poses if s > t_ns][-1]

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _log_count(path: Path, pattern: str) -> int:
    return len(re.findall(pattern, path.read_text(errors="replace")))


@pytest.fixture(scope="module")
def green_dataset(tmp_path_factory) -> Path:
    """The cube panorama (1024×512) with its green '+X' face as the target (θ ≈ +90°)."""
    erp = load_rgb(CUBE)
    green = ((erp[..., 1] > 200) & (erp[..., 0] < 150) & (erp[..., 2] < 100)).astype(np.uint8)
    contours, _ = cv2.findContours(green, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    mask = np.zeros_like(green)
    cv2.drawContours(mask, [max(contours, key=cv2.contourArea)], -1, 255, -1)  # the face, letters included
    root = tmp_path_factory.mktemp("green_ds")
    cv2.imwrite(str(root / "green.png"), mask)
    (root / "cube.png").write_bytes(CUBE.read_bytes())
    centroid = spherical_centroid(mask > 0)
    specs = [EpisodeSpec(f"cube-{i}", root / "cube.png", "the green face", "UNIQ", Pose(t, 0.0), "green face",
                         centroid, {"png": root / "green.png"}) for i, t in enumerate((-90.0, 180.0))]
    return save_dataset(root / "dataset.json", specs)


@pytest.fixture(scope="module")
def scene(green_dataset):
    config = SeekConfig()
    env = SeekEnv(load_dataset(green_dataset).by_id(EPISODE), config)
    return green_dataset, env, config


@pytest.fixture(scope="module")
def graph(scene, tmp_path_factory):
    dataset, env, _ = scene
    yield from running_graph(tmp_path_factory.mktemp("graph") / "nodes.log", 60.0,
                             shared={"dataset": str(dataset), "episode_id": EPISODE,
                                     "camera": {"tilt_min_deg": -TILT_LIMIT_DEG, "tilt_max_deg": TILT_LIMIT_DEG}},
                             per_node={"policy_node": {"min_step_period_s": STEP_PERIOD_S}})


def running_graph(log: Path, ready_timeout_s: float, shared: dict, per_node: dict):
    """Start the four nodes on a free domain, yield (graph, client, log) once they are ready, stop them all."""
    domain = _free_domain()
    with open(log, "w") as out:
        g = Graph(PARAMS, NS, shared=shared, per_node=per_node, env=_env(domain), stdout=out,
                  stderr=subprocess.STDOUT)
        client = None
        try:
            g.start()
            client = Client(domain)
            reason = client.op.wait_ready(ready_timeout_s)
            assert reason is None, f"{reason}\n{log.read_text()}"
            yield g, client, log
        finally:
            if client is not None:
                client.close()
            g.stop()
    assert all(p.poll() is not None for p in g.procs.values())


def _alive(g: Graph) -> None:
    assert g.exited() == {}, f"nodes died: {g.exited()}"


def test_bad_inputs_are_dropped_logged_once_and_survived(graph):
    g, c, log = graph
    mono = rgb_to_image(np.zeros((768, 1024, 3), np.uint8), header(c.node.get_clock().now().to_msg(), "camera"))
    mono.encoding, mono.step, mono.data = "mono8", 1024, mono.data[:1024 * 768]
    small = rgb_to_image(np.zeros((480, 640, 3), np.uint8), header(c.node.get_clock().now().to_msg(), "camera"))
    c.spin_until(lambda: c.pub_image.get_subscription_count() >= 3, 10, "image subscribers")
    c.spin_until(lambda: c.pub_move.get_subscription_count() >= 1, 10, "the camera's move subscription")
    for bad in (mono, mono, small, small):  # one at a time: an image subscriber keeps only the newest
        c.pub_image.publish(bad)
        c.pub_move.publish(JointState(name=["pan"], position=[float("nan")]))
        c.op.spin_for(0.3)
    # each of the three image subscribers says it once per kind of problem
    c.spin_until(lambda: _log_count(log, r"image encoding 'mono8' is not supported") >= 3, 20, "the encoding log")
    c.spin_until(lambda: _log_count(log, r"image is 640x480, the graph expects 1024x768") >= 3, 20, "the size log")
    c.spin_until(lambda: _log_count(log, r"sets pan to nan") >= 1, 20, "the bad-move log")
    c.op.spin_for(0.5)
    assert _log_count(log, r"image encoding 'mono8' is not supported") == 3
    assert _log_count(log, r"image is 640x480") == 3
    assert _log_count(log, r"sets pan to nan") == 1
    for node in ("egosphere_node", "policy_node", "segmentation_node"):
        assert re.search(rf"\[{NS.strip('/')}\.{node}\]: dropped an image on camera/image: image encoding 'mono8'",
                         log.read_text()), node
    _alive(g)


def test_empty_instruction_is_rejected_with_a_status(graph):
    g, c, _ = graph
    outcome = c.op.seek("   ", timeout=10)
    assert outcome.state == "rejected" and outcome.exit_code == 2
    assert "instruction is empty" in outcome.message
    _alive(g)


def test_out_of_range_move_is_clamped_to_the_tilt_limit(graph):
    g, c, log = graph
    t = c.now_ns()
    c.pub_move.publish(JointState(name=["pan", "tilt"], position=[0.3, -4.0]))  # 229° up
    up = c.pose_after(t)
    assert up.phi == pytest.approx(TILT_LIMIT_DEG, abs=1e-6)
    t = c.now_ns()
    c.pub_move.publish(JointState(name=["tilt"], position=[10.0]))  # far down
    assert c.pose_after(t).phi == pytest.approx(-TILT_LIMIT_DEG, abs=1e-6)
    # the log line may reach the file after the pose reached us
    c.spin_until(lambda: _log_count(log, r"clamped to ϕ=") >= 2, 20, "the clamp log")
    _alive(g)


def test_expert_finds_and_segments_the_target_while_the_canvas_grows(graph, scene):
    g, c, _ = graph
    _, env, config = scene
    sent = c.now_ns()
    outcome = c.op.seek("the green face", timeout=60)
    assert outcome.state == "success", outcome.message
    res = outcome.result
    final = pan_tilt_to_pose(res["pan"], res["tilt"])
    assert pose_distance(final, env.truth.centroid) < config.reward.tau_deg
    assert res["iou"] >= 0.5 and res["aligned"] and res["found"]
    # the published mask, scored here independently, agrees
    c.spin_until(lambda: res["stamp"] in c.masks, 5, "the mask stamped like the result")
    score = score_against_truth(image_to_mask(c.masks[res["stamp"]]), final, env.truth, env.intrinsics, config.reward)
    assert score.iou >= 0.5 and score.iou == pytest.approx(res["iou"], abs=1e-6)
    # one decision per observation, each taken on a newer view than the one before
    steps = outcome.feedback
    assert [fb["step"] for fb in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert pose_distance(pan_tilt_to_pose(steps[0]["pan"], steps[0]["tilt"]), env.spec.initial_pose) < 1e-6
    assert steps[-1]["action"].startswith("STOP [")
    stamps = [fb["stamp"] for fb in steps]
    assert stamps == sorted(stamps) and stamps[0] > sent
    # the canvas the policy saw at each step covered more than at the step before
    c.spin_until(lambda: all(s in c.explored for s in stamps), 5, "explored masks of every step")
    explored = [c.explored[s] for s in stamps]
    assert all(b > a for a, b in zip(explored, explored[1:])), explored
    _alive(g)


def test_new_instruction_preempts_the_search(graph):
    g, c, _ = graph
    t0 = c.now_ns()
    c.pub_instruction.publish(String(data="the green face"))
    c.spin_until(lambda: c.feedback_since(t0), 20, "the first step of the first search")
    t1 = c.now_ns()
    outcome = c.op.seek("the big green face", timeout=60)
    assert outcome.state == "success", outcome.message
    cancelled = [s for s in c.statuses_since(t1) if s["state"] == "cancelled"]
    assert cancelled and cancelled[0]["instruction"] == "the green face"
    assert "pre-empted" in cancelled[0]["message"]
    first_episode = cancelled[0]["episode"]
    late = [fb for _, fb in c.feedback_since(t1 + int(0.5e9)) if fb["episode"] == first_episode]
    assert late == [], "the pre-empted search went on deciding"
    assert not [s for s in c.statuses_since(t1)
                if s["episode"] == first_episode and s["state"] in ("done", "segmenting")]
    _alive(g)


def test_cancel_service_stops_the_search_and_no_result_follows(graph):
    g, c, _ = graph
    t0 = c.now_ns()
    c.pub_instruction.publish(String(data="the green face"))
    c.spin_until(lambda: c.feedback_since(t0), 20, "the first step")
    response = c.call(f"{NS}/{api.CANCEL}")
    assert response.success and "the green face" in response.message
    c.spin_until(lambda: [s for s in c.statuses_since(t0) if s["state"] == "cancelled"], 5, "the cancelled status")
    c.op.spin_for(2.0)
    assert not [r for arrived, r in c.op.results if r["stamp"] > t0]
    assert not c.call(f"{NS}/{api.CANCEL}").success  # nothing left to cancel
    _alive(g)


def test_reset_services_restore_the_start_pose_and_clear_the_canvas(graph, scene):
    g, c, _ = graph
    _, env, _ = scene
    t = c.now_ns()
    c.pub_move.publish(JointState(name=["pan", "tilt"], position=[1.0, 0.5]))
    moved = c.pose_after(t)
    assert pose_distance(moved, env.spec.initial_pose) > 30
    assert c.call(f"{NS}/{api.EGOSPHERE_RESET}").success
    t = c.now_ns()
    assert c.call(f"{NS}/{api.CAMERA_RESET}").success
    assert pose_distance(c.pose_after(t), env.spec.initial_pose) < 1e-6
    # after the reset the canvas holds exactly one view
    c.spin_until(lambda: [s for s in c.explored if s > t], 5, "the canvas after the reset")
    one_view = c.explored[max(c.explored)]
    t = c.now_ns()
    c.pub_move.publish(JointState(name=["pan"], position=[-1.0]))
    c.spin_until(lambda: [s for s in c.explored if s > t], 5, "the canvas after a move")
    two_views = c.explored[max(c.explored)]
    assert 0 < one_view < two_views < 2 * one_view
    _alive(g)


def test_recorder_writes_a_training_bag(graph, tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    g, c, _ = graph
    bag = tmp_path / "bag"
    env = dict(os.environ, ROS_DOMAIN_ID=str(c.context.get_domain_id()))
    rec = subprocess.Popen([sys.executable, "-m", "panoseeker_ros.nodes.commands", "record", "--out", str(bag),
                            "--namespace", NS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        c.spin_until(lambda: c.node.count_subscribers(f"{NS}/{api.FEEDBACK}") >= 2 and
                     c.node.count_subscribers(f"{NS}/{api.CANVAS}") >= 2, 20, "the recorder's subscriptions")
        c.op.spin_for(1.0)
        outcome = c.op.seek("the green face", timeout=60)
        assert outcome.state == "success"
        c.op.spin_for(0.5)
        rec.send_signal(signal.SIGTERM)
        out, _ = rec.communicate(timeout=20)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    assert rec.returncode == 0, out
    store = get_typestore(Stores.ROS2_KILTED)
    with Reader(bag) as reader:
        counts = {conn.topic: conn.msgcount for conn in reader.connections}
        for topic in api.TRAINING_TOPICS:
            assert f"{NS}/{topic}" in counts, topic
        for name in (api.IMAGE, api.POSE, api.CANVAS, api.INSTRUCTION, api.MOVE, api.FEEDBACK, api.RESULT):
            assert counts[f"{NS}/{name}"] >= 1, (name, counts)
        assert counts[f"{NS}/{api.FEEDBACK}"] >= len(outcome.feedback)
        images = [c_ for c_ in reader.connections if c_.topic == f"{NS}/{api.IMAGE}"]
        _, _, raw = next(reader.messages(connections=images))
        img = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
        assert (img.width, img.height, img.encoding) == (1024, 768, "rgb8")


def test_missing_model_directory_fails_activation_with_one_line(tmp_path):
    domain = _free_domain()
    log = tmp_path / "policy.log"
    # per-node values go in a params file: a node's own section outranks '-p' (a global override)
    overrides = write_overrides(tmp_path, {}, {"policy_node": {"backend": "qwen", "model": "/nonexistent/qwen-model"}})
    cmd = node_command("policy_node", [PARAMS, overrides], "/missing_model")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(domain), stdout=out, stderr=subprocess.STDOUT)
        client = None
        try:
            end = time.monotonic() + 30
            while "parameter 'model'" not in log.read_text() and time.monotonic() < end:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
            lines = [ln for ln in log.read_text().splitlines() if "parameter 'model'" in ln]
            assert len(lines) == 1, log.read_text()
            assert "/nonexistent/qwen-model" in lines[0] and "no such directory" in lines[0]
            assert "Traceback" not in log.read_text()
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
            context = rclpy.Context()
            rclpy.init(context=context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
            client = Node("probe", context=context)
            cli = client.create_client(GetState, "/missing_model/policy_node/get_state")
            executor = rclpy.executors.SingleThreadedExecutor(context=context)
            executor.add_node(client)
            end = time.monotonic() + 20
            while not cli.service_is_ready() and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.1)
            future = cli.call_async(GetState.Request())
            while not future.done() and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.1)
            assert future.done() and future.result().current_state.label == "inactive"
            assert proc.poll() is None  # the node is alive, just not active
        finally:
            if client is not None:
                client.destroy_node()
                rclpy.try_shutdown(context=context)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_launch_demo_searches_prints_and_saves_the_overlay(green_dataset, tmp_path):
    overlay = tmp_path / "overlay.png"
    proc = subprocess.run([sys.executable, "-m", "panoseeker_ros.nodes.commands", "launch", "--demo",
                           "--dataset", str(green_dataset), "--episode", "cube-0", "--overlay", str(overlay),
                           "--timeout", "60"], env=_env(_free_domain()), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"step +1 at θ= +-90\.0°", proc.stdout) and "result: success" in proc.stdout
    assert overlay.is_file() and overlay.stat().st_size > 1000


def test_launch_stops_every_node_on_sigterm(green_dataset):
    proc = subprocess.Popen([sys.executable, "-m", "panoseeker_ros.nodes.commands", "launch",
                             "--dataset", str(green_dataset)], env=_env(_free_domain()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids, left = [], []
    try:
        first = proc.stdout.readline()
        pids = [int(p) for p in re.findall(r"pid (\d+)", first)]
        assert len(pids) == 4, first
        time.sleep(3.0)  # let the nodes come up
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        left = [pid for pid in pids if _exists(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:  # never leave a node behind, whatever the assertions say
            if _exists(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0
    assert left == [], f"nodes still running after SIGTERM: {left}"


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
