"""The robot install path: ``colcon build --packages-select panoseeker_ros`` in a fresh workspace installs
the share directory, the ament index marker and the node executables, and an installed node runs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODES = ("camera_node", "policy_node", "segmentation_node")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if shutil.which("colcon", path=str(BIN)) is None:
        pytest.fail("colcon is not installed beside this Python; 'make test' installs requirements.txt")
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "panoseeker_ros"
    # the package as a ROS user checks it out: its tracked files, not this checkout's build outputs
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(BIN / "colcon"), "build", "--packages-select", "panoseeker_ros"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws / "install" / "panoseeker_ros"


def _installed_env(prefix: Path) -> dict:
    site = next(prefix.glob("lib/python3*/site-packages"))
    return dict(os.environ, AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(site),
                ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(150 + os.getpid() % 50))


def test_colcon_installs_share_index_and_executables(workspace):
    share = workspace / "share" / "panoseeker_ros"
    for rel in ("package.xml", "launch/seek.launch.py", "config/seek.yaml", "sim/bedroom/dataset.json",
                "sim/bedroom/bedroom_1024x512.png", "config/foxglove/panoseeker.json"):
        assert (share / rel).is_file(), rel
    site = next(workspace.glob("lib/python3*/site-packages"))
    for page_file in ("index.html", "console.js", "console.css"):  # the console's page ships with the code
        assert (site / "panoseeker_ros" / "console" / "static" / page_file).is_file(), page_file
    assert (workspace / "share" / "ament_index" / "resource_index" / "packages" / "panoseeker_ros").is_file()
    for node in NODES + ("panoseeker",):
        exe = workspace / "lib" / "panoseeker_ros" / node
        assert exe.is_file() and os.access(exe, os.X_OK), node


def test_the_installed_package_finds_its_share_directory(workspace):
    code = ("import panoseeker_ros, panoseeker_ros.paths as p; "
            "from ament_index_python.packages import get_package_share_directory as g; "
            "print(panoseeker_ros.__file__); print(g('panoseeker_ros')); print(p.default_params())")
    out = subprocess.run([sys.executable, "-c", code], env=_installed_env(workspace), cwd=workspace,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    share = str(workspace / "share" / "panoseeker_ros")
    assert out[0].startswith(str(workspace)) and out[1] == share and out[2] == f"{share}/config/seek.yaml"


def test_an_installed_node_starts_and_stops(workspace):
    exe = workspace / "lib" / "panoseeker_ros" / "camera_node"
    dataset = workspace / "share" / "panoseeker_ros" / "sim" / "bedroom" / "dataset.json"
    proc = subprocess.Popen([str(exe), "--ros-args", "-p", f"dataset:={dataset}"], env=_installed_env(workspace),
                            cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        end = time.monotonic() + 60
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "sim camera ready" in line:
                break
        assert any("sim camera ready" in ln for ln in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
