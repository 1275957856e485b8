"""The operator console in a real browser (headless Chromium driven by Selenium) against a running
simulated graph (the node processes on a random ROS_DOMAIN_ID, localhost discovery only): the page
loads and shows the live graph, a typed instruction runs a search to its decision lines and final
overlay, cancel stops a running search, the token is enforced on another address, a camera error shows
with its message, and a killed graph shows as disconnected within seconds.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``);
where they are missing these tests say so and are skipped. Every wait is on a condition.
"""
from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("no browser: install Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver) to run the console's browser tests", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from panoseeker_ros.nodes.launcher import Graph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "config" / "seek.yaml"
NS = f"/console_test_{os.getpid()}"
STEP_PERIOD_S = 3.0  # paces the search: a cancel lands mid-search, also on a busy machine
INSTRUCTION = "the label on the green face"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1400")


def _env(domain: int) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


class Console:
    """``panoseeker console`` as a process; ``url`` is the address it printed."""

    def __init__(self, env: dict, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "panoseeker_ros.cli", "console", "--port", "0", *args],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()
        try:
            first = self.lines.get(timeout=60)
        except queue.Empty:
            self.stop()
            raise AssertionError("the console printed nothing within 60 s") from None
        found = re.search(r"open (http://\S+)", first)
        assert found, first
        self.url = found.group(1)
        self.port = int(re.search(r":(\d+)/", self.url).group(1))

    def stop(self) -> int:
        """Ctrl-C, as an operator would; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def graph(cube_dataset, tmp_path_factory):
    """The graph on the cube scene, episode cube-1 (start θ = 180°, target at θ ≈ 90°), and its console."""
    domain = random.Random(os.getpid() ^ time.time_ns()).randint(1, 200)
    log = tmp_path_factory.mktemp("console_graph") / "nodes.log"
    with open(log, "w") as out:
        g = Graph(PARAMS, NS, shared={"dataset": str(cube_dataset), "episode_id": "cube-1"},
                  per_node={"policy_node": {"min_step_period_s": STEP_PERIOD_S}}, env=_env(domain), stdout=out,
                  stderr=subprocess.STDOUT)
        console = None
        try:
            g.start()
            console = Console(_env(domain), "--namespace", NS)
            yield g, console, domain
        finally:
            code = console.stop() if console is not None else 0
            g.stop()
    assert code == 0, "the console did not exit cleanly on Ctrl-C"


def wait(driver, timeout: float, what: str, condition):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"{what} within {timeout} s")


def state(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).get_attribute("data-state")


def image_shown(driver, element_id: str) -> bool:
    return driver.execute_script(f"const i = document.getElementById('{element_id}');"
                                 "return !i.hidden && i.complete && i.naturalWidth > 0;")


def decisions(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#decisions li'), li => li.textContent)")


def seek(driver, text: str) -> str:
    """Type ``text`` and press Seek; once the page follows the search it started, its id."""
    box = driver.find_element(By.ID, "instruction")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()
    sent = wait(driver, 10, "the instruction sent", lambda d: re.search(r"\(id (console-\w+)\)",
                                                                      d.find_element(By.ID, "notice").text))
    rid = sent.group(1)
    wait(driver, 30, "the page on the new search",
         lambda d: d.find_element(By.ID, "search").get_attribute("data-id") == rid)
    return rid


def test_the_page_shows_the_live_graph(browser, graph):
    _, console, _ = graph
    browser.get(console.url)
    assert browser.title == "panoseeker console"
    wait(browser, 60, "the graph connected", lambda d: state(d, "graph") == "connected")
    wait(browser, 30, "the camera ready", lambda d: state(d, "camera") == "ready")
    wait(browser, 30, "the policy node ready", lambda d: state(d, "node") == "ready")
    assert decisions(browser) == [] and state(browser, "search") == "idle"


def test_a_typed_instruction_searches_and_shows_decisions_and_the_final_overlay(browser, graph):
    _, console, _ = graph
    browser.get(console.url)
    wait(browser, 60, "the graph connected", lambda d: state(d, "graph") == "connected")
    seek(browser, INSTRUCTION)
    assert "accepted" in browser.find_element(By.ID, "statuses").text
    assert INSTRUCTION in browser.find_element(By.ID, "target").text
    lines = wait(browser, 30, "the first decision line", decisions)
    assert re.match(r"step +1 at θ= +-?180\.0° ϕ= +0\.0° +MOVE .* policy \d+\.\d+ s", lines[0]), lines
    wait(browser, 30, "the camera view", lambda d: image_shown(d, "view"))
    assert browser.execute_script("return document.getElementById('view').naturalWidth") == 1024
    wait(browser, 30, "the EgoSphere canvas", lambda d: image_shown(d, "canvas"))
    wait(browser, 60, "the search done", lambda d: state(d, "search") == "done")
    wait(browser, 30, "the final overlay", lambda d: image_shown(d, "overlay"))
    result = browser.find_element(By.ID, "result")
    assert result.get_attribute("data-success") == "true" and result.text.startswith("result: success")
    numbers = browser.find_element(By.ID, "numbers").text
    assert re.search(r"IoU \d\.\d{3}", numbers) and re.search(r"distance to the target \d+\.\d°", numbers)
    assert re.search(r"mask pixels [1-9]\d*", numbers)
    final = decisions(browser)  # the search's decisions, the last one STOP, then the review of its mask
    assert len(final) >= 3 and "STOP" in final[-2] and final[-1].startswith("review 1 of the mask") and \
        "ACCEPT" in final[-1]


def test_cancel_stops_a_running_search(browser, graph):
    _, console, _ = graph
    browser.get(console.url)
    wait(browser, 60, "the graph connected", lambda d: state(d, "graph") == "connected")
    seek(browser, INSTRUCTION)
    wait(browser, 30, "the first decision line", decisions)
    assert state(browser, "search") == "accepted"
    browser.find_element(By.ID, "cancel").click()
    wait(browser, 30, "the search cancelled", lambda d: state(d, "search") == "cancelled")
    assert browser.find_element(By.ID, "outcome").get_attribute("hidden") is not None  # no result follows
    wait(browser, 10, "the cancel answer", lambda d: "cancel" in d.find_element(By.ID, "notice").text.lower())


def test_the_token_is_required_when_bound_beyond_this_machine(browser, graph):
    _, _, domain = graph
    console = Console(_env(domain), "--namespace", NS, "--bind", "0.0.0.0")
    try:
        token = re.search(r"\?token=(\S+)", console.url).group(1)
        assert len(token) >= 16
        browser.get(f"http://127.0.0.1:{console.port}/")
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(f"http://127.0.0.1:{console.port}/?token=wrong{token}")
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(f"http://127.0.0.1:{console.port}/?token={token}")
        wait(browser, 30, "the page's websocket online", lambda d: state(d, "link") == "online")
        opened = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"const ws = new WebSocket('ws://127.0.0.1:{console.port}/ws');"
            "ws.onopen = () => done('opened'); ws.onclose = () => done('refused');")
        assert opened == "refused"  # a websocket without the token is refused
    finally:
        assert console.stop() == 0


@contextlib.contextmanager
def ros_client(domain: int):
    """A node of this test's own on the graph's domain and namespace (as another operator or a driver)."""
    import rclpy
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    node = Node("console_test_client", namespace=NS, context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_search_started_elsewhere_without_an_id_is_followed_too(browser, graph):
    from std_msgs.msg import String

    from panoseeker_ros.nodes import interface as api

    _, console, domain = graph
    browser.get(console.url)
    wait(browser, 60, "the graph connected", lambda d: state(d, "graph") == "connected")
    with ros_client(domain) as node:
        pub = node.create_publisher(String, api.INSTRUCTION, api.INSTRUCTION_QOS)  # as `ros2 topic pub` does
        wait(browser, 20, "the instruction publisher matched", lambda d: pub.get_subscription_count() > 0)
        plain = "find the green face"  # not a substring of an earlier test's instruction: the page must change
        assert plain not in INSTRUCTION
        pub.publish(String(data=plain))
        # plain text gets an id of the policy node's own (doc/ros_interface.md)
        wait(browser, 30, "the plain-text search on the page, under an id of the policy node's own",
             lambda d: plain in d.find_element(By.ID, "target").text
             and re.fullmatch(r"plain-\d+-\d+", d.find_element(By.ID, "search").get_attribute("data-id") or ""))
        assert state(browser, "node") == "ready"  # a search's status is not the node's own state
        wait(browser, 60, "the search done", lambda d: state(d, "search") == "done")
        assert decisions(browser) and browser.find_element(By.ID, "result").get_attribute("data-success") == "true"


def test_the_camera_status_shows_an_error_with_its_message(browser, graph):
    from std_msgs.msg import String

    from panoseeker_ros.nodes import interface as api

    _, console, domain = graph
    browser.get(console.url)
    wait(browser, 60, "the camera ready", lambda d: state(d, "camera") == "ready")
    with ros_client(domain) as node:
        head = node.create_publisher(String, api.CAMERA_STATUS, api.LATCHED_QOS)  # as a real head's driver says it
        head.publish(String(data=api.dumps({"state": "error", "message": "no answer from the head"})))
        wait(browser, 20, "the camera error", lambda d: state(d, "camera") == "error")
        assert browser.find_element(By.ID, "camera").text == "camera: error: no answer from the head"
        head.publish(String(data=api.dumps({"state": "ready", "message": "the head answers again"})))
        wait(browser, 20, "the camera ready again", lambda d: state(d, "camera") == "ready")


def test_a_killed_graph_shows_as_disconnected_within_seconds(browser, graph):
    g, console, _ = graph
    browser.get(console.url)
    wait(browser, 60, "the graph connected", lambda d: state(d, "graph") == "connected")
    for p in g.procs.values():
        p.kill()
    killed = time.monotonic()
    wait(browser, 10, "the graph disconnected", lambda d: state(d, "graph") == "disconnected")
    assert time.monotonic() - killed < 8
    assert state(browser, "link") == "online"  # the console itself is still there
