"""The console's web side without ROS: the page and its files, the token and origin rules, events in
order with the recent ones replayed, frames rate-capped with only the newest one waiting for a browser,
and the page's commands. An aiohttp server in this process, real HTTP and websocket clients."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import ClientSession, WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

from panoseeker_ros.console.web import (CHANNELS, STATIC_DIR, ConsoleError, ConsoleSettings, Hub, serve,
                                        settings_for)

ROOT = Path(__file__).resolve().parents[1]


def run(coro_fn, hub: Hub):
    """Run ``coro_fn(client)`` against a live server of ``hub``."""
    async def main():
        async with TestClient(TestServer(hub.app(), host="127.0.0.1")) as client:
            return await coro_fn(client)

    return asyncio.run(main())


async def receive_until(ws, predicate, timeout: float = 10.0) -> list:
    """Messages (text as dicts, binary as (channel, rgb)) until ``predicate(messages)`` holds."""
    got = []
    end = time.monotonic() + timeout
    while not predicate(got):
        left = end - time.monotonic()
        assert left > 0, f"timed out; got {[m if isinstance(m, dict) else m[0] for m in got]}"
        msg = await ws.receive(timeout=left)
        if msg.type == WSMsgType.TEXT:
            got.append(json.loads(msg.data))
        elif msg.type == WSMsgType.BINARY:
            rgb = cv2.imdecode(np.frombuffer(msg.data[1:], np.uint8), cv2.IMREAD_COLOR)
            got.append((CHANNELS[msg.data[0]], rgb))
        else:
            raise AssertionError(f"websocket ended: {msg.type}")
    return got


def frame(value: int, size=(48, 64)) -> np.ndarray:
    return np.full(size + (3,), value, np.uint8)


def test_the_page_loads_only_its_own_files():
    async def check(client):
        page = await client.get("/")
        html = await page.text()
        assert page.status == 200 and "<title>panoseeker console</title>" in html
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs and all(r.startswith("static/") for r in refs), refs  # nothing from the network
        for ref in refs:
            r = await client.get("/" + ref)
            assert r.status == 200, ref
        assert (await client.get("/static/../web.py")).status in (403, 404)

    run(check, Hub(ConsoleSettings()))
    assert {p.name for p in STATIC_DIR.iterdir()} >= {"index.html", "console.js", "console.css"}


def test_the_token_is_required_by_the_page_and_the_websocket():
    token = "s3cret-token-0123456789"

    async def check(client):
        assert (await client.get("/")).status == 401
        assert (await client.get("/?token=wrong")).status == 401
        assert (await client.get(f"/?token={token}")).status == 200
        with pytest.raises(WSServerHandshakeError) as err:
            await client.ws_connect("/ws")
        assert err.value.status == 401
        ws = await client.ws_connect(f"/ws?token={token}")
        await ws.close()

    run(check, Hub(ConsoleSettings(token=token)))


def test_a_local_console_refuses_other_host_names_and_other_sites():
    async def check(client):
        assert (await client.get("/", headers={"Host": "attacker.example:8080"})).status == 403  # DNS rebinding
        with pytest.raises(WSServerHandshakeError) as err:
            await client.ws_connect("/ws", headers={"Origin": "http://attacker.example"})
        assert err.value.status == 403
        ws = await client.ws_connect("/ws", headers={"Origin": f"http://127.0.0.1:{client.port}"})
        await ws.close()

    run(check, Hub(ConsoleSettings()))


def test_a_browser_gets_the_recent_events_then_the_live_ones_in_order():
    hub = Hub(ConsoleSettings(history=3))
    for i in range(5):
        hub.post({"type": "status", "data": {"state": "accepted", "n": i}})

    async def check(client):
        ws = await client.ws_connect("/ws")
        got = await receive_until(ws, lambda g: len(g) == 3)
        assert [e["data"]["n"] for e in got] == [2, 3, 4]  # the newest history, in order
        threads = [threading.Thread(target=lambda k=k: [hub.post({"type": "feedback", "k": k, "i": i})
                                                        for i in range(50)]) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = await receive_until(ws, lambda g: len(g) == 100)
        seqs = [e["seq"] for e in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 100  # every event once, in order
        for k in range(2):
            assert [e["i"] for e in got if e["k"] == k] == list(range(50))
        await ws.close()

    run(check, hub)


def test_frames_are_rate_capped_and_the_newest_one_always_arrives():
    hub = Hub(ConsoleSettings(max_fps=4.0))

    async def check(client):
        ws = await client.ws_connect("/ws")
        start = time.monotonic()
        for value in range(0, 250, 2):  # 125 frames, as fast as a camera thread can offer them
            await asyncio.to_thread(hub.offer_frame, "view", frame(value))
        offered_s = time.monotonic() - start
        got = await receive_until(ws, lambda g: g and abs(int(g[-1][1].mean()) - 248) <= 2)
        assert all(ch == "view" for ch, _ in got)
        assert len(got) <= 4.0 * (time.monotonic() - start) + 2, (len(got), offered_s)  # capped, not all 125
        await ws.close()

    run(check, hub)


def test_a_stalled_browser_holds_one_frame_and_never_slows_the_others():
    hub = Hub(ConsoleSettings(max_fps=50.0))
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (768, 1024, 3), np.uint8) for _ in range(2)]  # big JPEGs fill a socket

    async def check(client):
        stalled = await client.ws_connect("/ws")  # never reads: its socket fills up
        fast = await client.ws_connect("/ws")
        means = []

        async def watch():  # the fast browser takes every frame as it comes
            async for msg in fast:
                if msg.type == WSMsgType.BINARY:
                    means.append(cv2.imdecode(np.frombuffer(msg.data[1:], np.uint8), cv2.IMREAD_COLOR).mean())

        watcher = asyncio.create_task(watch())
        for i in range(60):
            hub.offer_frame("view", noise[i % 2])
            await asyncio.sleep(0.005)
        hub.offer_frame("view", frame(200, (768, 1024)))
        end = time.monotonic() + 20
        while not (means and abs(means[-1] - 200) <= 2):  # the fast browser gets the newest frame
            assert time.monotonic() < end, f"the fast browser got {len(means)} frames, not the newest"
            await asyncio.sleep(0.02)
        # the stalled browser holds exactly one frame (the newest), never a queue; the fast one none
        assert sorted(len(b.frames) for b in hub._browsers) == [0, 1]
        assert max(b.dropped_frames for b in hub._browsers) > 0
        watcher.cancel()
        await stalled.close()
        await fast.close()

    run(check, hub)


def test_commands_go_to_the_graph_and_mistakes_come_back_to_their_page():
    sent = []

    def on_command(command):
        if command["type"] == "cancel":
            raise ValueError("no policy_node offers cancel")
        sent.append(command["text"])
        return {"type": "sent", "id": "c-1", "instruction": command["text"]}

    hub = Hub(ConsoleSettings(), on_command)

    async def check(client):
        ws = await client.ws_connect("/ws")
        for text in ('{"type": "instruction", "text": "the lamp"}', '{"type": "instruction", "text": "  "}',
                     "not json", '{"type": "launch"}', '{"type": "cancel"}'):
            await ws.send_str(text)
        got = await receive_until(ws, lambda g: len(g) == 5)
        assert got[0] == {"type": "sent", "id": "c-1", "instruction": "the lamp"}
        assert [e["type"] for e in got[1:]] == ["error"] * 4
        assert "instruction is empty" in got[1]["message"] and "unknown command" in got[2]["message"]
        assert "unknown command" in got[3]["message"] and got[4]["message"] == "no policy_node offers cancel"
        await ws.close()

    run(check, hub)
    assert sent == ["the lamp"]


def test_settings_need_a_token_beyond_this_machine_and_say_what_is_wrong(tmp_path):
    local = settings_for("127.0.0.1", 8080)
    assert local.token is None and local.url() == "http://127.0.0.1:8080/"
    wide = settings_for("0.0.0.0", 8080)
    assert wide.token and len(wide.token) >= 16 and wide.url().endswith(f"/?token={wide.token}")
    assert settings_for("0.0.0.0", 8080).token != wide.token  # a fresh one each start
    good = tmp_path / "token"
    good.write_text("a-long-enough-token-1234\n")
    assert settings_for("127.0.0.1", 8080, str(good)).token == "a-long-enough-token-1234"
    short = tmp_path / "short"
    short.write_text("abc")
    for args, words in ((("robot.local", 8080), "--bind robot.local: not an IP address"),
                        (("127.0.0.1", 70000), "--port 70000"),
                        (("0.0.0.0", 8080, str(short)), "at least 16 characters"),
                        (("0.0.0.0", 8080, str(tmp_path / "none")), "--token-file")):
        with pytest.raises(ConsoleError, match=re.escape(words)) as err:
            settings_for(*args)
        assert "\n" not in str(err.value)


def test_a_port_in_use_is_one_line_naming_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConsoleError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*in use; pick another --port"):
            asyncio.run(serve(Hub(ConsoleSettings(port=port)), on_started=lambda url: None))


def test_serve_prints_the_address_and_stops_when_asked():
    urls = []

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(serve(Hub(ConsoleSettings(port=0)), on_started=urls.append, stop=stop))
        end = time.monotonic() + 10
        while not urls:
            assert not task.done() and time.monotonic() < end, "the console did not start"
            await asyncio.sleep(0.01)
        async with ClientSession() as session:
            async with session.get(urls[0]) as page:
                assert page.status == 200
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", urls[0])


def test_the_foxglove_layout_shows_topics_of_the_graph():
    api = pytest.importorskip("panoseeker_ros.nodes.interface")
    layout = json.loads((ROOT / "config" / "foxglove" / "panoseeker.json").read_text())
    panels = set(layout["configById"])

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(layout["layout"])) == sorted(panels)  # every panel placed, none missing
    text = json.dumps(layout["configById"])
    topics = set(re.findall(r'"(/panoseeker/[\w/]+)', text))
    relative = {t[len(api.DEFAULT_NAMESPACE) + 1:] for t in topics}
    assert relative <= set(api.TOPIC_BY_NAME), relative - set(api.TOPIC_BY_NAME)
    assert {api.IMAGE, api.CANVAS, api.RESULT_OVERLAY, api.STATUS, api.FEEDBACK, api.RESULT,
            api.CAMERA_STATUS} <= relative


def test_the_command_line_says_what_is_wrong_in_one_line(capsys, monkeypatch):
    pytest.importorskip("rclpy")
    from panoseeker_ros.cli import main

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, words in ((["--namespace", "bad ns"], "--namespace bad ns: namespace must not contain"),
                            (["--bind", "robot.local"], "--bind robot.local: not an IP address"),
                            (["--port", str(port)], f"cannot listen on 127.0.0.1:{port}: address already in use")):
            assert main(["console", *args]) == 2
            err = capsys.readouterr().err
            assert err.startswith("panoseeker console: error: ") and words in err and err.count("\n") == 1, err
