"""The shipped SROS2 permissions (config/security/panoseeker_policy.xml) against the graph's interface: who may
publish what. sros2 itself is not on PyPI; `ros2 security generate_artifacts` on a ROS install reads this file."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from panoseeker_ros.nodes import NODES
from panoseeker_ros.nodes.interface import SERVICES, STATUS, TOPICS
from panoseeker_ros.nodes.launcher import ENCLAVES, node_command

POLICY = Path(__file__).resolve().parents[1] / "config" / "security" / "panoseeker_policy.xml"


def _allowed(kind: str, mode: str) -> dict[str, set[str]]:
    """{enclave name: names allowed} for topics publish/subscribe or services reply/request."""
    root = ET.parse(POLICY).getroot()
    out = {}
    for enclave in root.iter("enclave"):
        name = enclave.get("path").rsplit("/", 1)[-1]
        out[name] = {el.text for block in enclave.iter(kind) if block.get(mode) == "ALLOW" for el in block}
    return out


def test_only_the_policy_node_may_drive_the_camera():
    publish = _allowed("topics", "publish")
    assert {e for e, names in publish.items() if "camera/move" in names} == {"policy_node"}
    assert {e for e, names in publish.items() if "camera/look" in names} == {"policy_node"}
    assert {e for e, names in _allowed("services", "request").items() if "camera/reset" in names} == {"policy_node"}


def test_every_topic_is_published_only_by_the_node_the_interface_names():
    publish, subscribe = _allowed("topics", "publish"), _allowed("topics", "subscribe")
    assert set(NODES) <= set(publish)
    for topic in TOPICS:
        publishers = {e for e, names in publish.items() if topic.name in names}
        also = {"launcher"} if topic.name == STATUS else set()  # it announces a node that exited
        assert publishers == {topic.publisher} | also, (topic.name, publishers)
        for reader in (s.strip() for s in topic.subscribers.split(",") if s.strip() != "—"):
            assert topic.name in subscribe[reader], (topic.name, reader)
    for name, _, server, _ in SERVICES:
        assert {e for e, names in _allowed("services", "reply").items() if name in names} == {server}, name


def test_every_node_runs_in_its_enclave():
    for node in NODES:
        cmd = node_command(node, [], "/panoseeker")
        assert cmd[cmd.index("--enclave") + 1] == f"{ENCLAVES}/{node}"
