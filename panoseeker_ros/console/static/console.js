// The operator console's page: one websocket to the console (events as JSON text, frames as one
// channel byte + JPEG), an instruction box and a cancel button. Plain script, no build step.
"use strict";

const CHANNELS = ["view", "canvas", "overlay"];
const TOKEN = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const NODE_STATES = ["ready", "inactive"]; // the policy node's own state, carrying no id
const idOf = (payload) => (payload.id === undefined || payload.id === null ? "" : String(payload.id));

let socket = null;
let retryMs = 500;
let search;              // id of the search on screen (the newest accepted one; "" for one sent without an id)
let hasResult = false;    // the search on screen has its result
let overlayFresh = false; // an overlay frame came after the search on screen was accepted

function badge(id, state, text) {
  $(id).dataset.state = state;
  $(id).textContent = text;
}

function notice(text, isError) {
  $("notice").textContent = text;
  $("notice").className = isError ? "error" : "";
}

function addLine(list, text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  $(list).appendChild(li);
}

function showFrame(channel, jpeg) {
  const img = $(channel);
  const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = url;
  img.src = url;
  if (channel === "overlay") {
    overlayFresh = true;
    img.hidden = !hasResult;
  }
}

function newSearch(id, instruction) {
  search = id;
  $("search").dataset.id = id || "";
  $("search").dataset.state = "idle";
  $("search").textContent = "idle";
  hasResult = false;
  overlayFresh = false;
  $("statuses").replaceChildren();
  $("decisions").replaceChildren();
  $("outcome").hidden = true;
  $("overlay").hidden = true;
  $("target").textContent = instruction ? `“${instruction}”` : "";
}

function onStatus(s) {
  if (s.graph) { // the launcher: a node of the graph exited
    addLine("statuses", `${s.state}: ${s.message || s.graph}`);
    notice(s.message || "a node of the graph exited", true);
    return;
  }
  if (NODE_STATES.includes(s.state) && idOf(s) === "") {
    badge("node", s.state, `policy: ${s.state}`);
    return;
  }
  if (s.state === "accepted" || s.state === "rejected") newSearch(idOf(s), s.instruction);
  if (idOf(s) !== search) return;
  $("search").dataset.state = s.state;
  $("search").textContent = s.state;
  addLine("statuses", s.message ? `${s.state}: ${s.message}` : s.state);
}

function fmt(x, digits) {
  return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "—";
}

function onResult(r, line) {
  if (idOf(r) !== search) return;
  hasResult = true;
  $("outcome").hidden = false;
  $("result").dataset.success = String(!!r.success);
  $("result").textContent = line;
  const rows = [
    ["success", r.success ? "yes" : "no"],
    ["found", r.found ? "yes" : "no"],
    ["IoU", fmt(r.iou, 3)],
    ["distance to the target", typeof r.distance === "number" ? `${fmt(r.distance * 180 / Math.PI, 1)}°` : "—"],
    ["mask pixels", r.mask_pixels === undefined ? "—" : String(r.mask_pixels)],
    ["decisions", r.steps === undefined ? "—" : String(r.steps)],
  ];
  $("numbers").replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    for (const text of [k, v]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
  $("overlay").hidden = !overlayFresh;
}

function onEvent(e) {
  switch (e.type) {
    case "graph":
      badge("graph", e.state, e.message ? `graph: ${e.state}: ${e.message}` : `graph: ${e.state}`);
      break;
    case "camera": {
      const c = e.data || {};
      badge("camera", c.state || "unknown", c.message ? `camera: ${c.state}: ${c.message}` : `camera: ${c.state}`);
      break;
    }
    case "status":
      onStatus(e.data || {});
      break;
    case "feedback":
      if (e.data && idOf(e.data) === search) addLine("decisions", e.line, "decision");
      break;
    case "result":
      onResult(e.data || {}, e.line);
      break;
    case "sent":
      notice(`sent “${e.instruction}” (id ${e.id})`, false);
      break;
    case "cancel":
      notice(e.message, !e.success);
      break;
    case "error":
      notice(e.message, true);
      break;
  }
}

function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "";
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    retryMs = 500;
    badge("link", "online", "console: online");
    newSearch(undefined, ""); // the console replays the recent events
  };
  socket.onmessage = (m) => {
    if (typeof m.data === "string") {
      onEvent(JSON.parse(m.data));
    } else {
      const channel = CHANNELS[new Uint8Array(m.data, 0, 1)[0]];
      if (channel) showFrame(channel, m.data.slice(1));
    }
  };
  socket.onclose = () => {
    badge("link", "offline", "console: offline, reconnecting…");
    badge("graph", "unknown", "graph: unknown (console offline)");
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  };
}

function send(command) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    notice("the console is offline; wait until it reconnects", true);
    return;
  }
  socket.send(JSON.stringify(command));
}

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("instruction").value.trim();
  if (!text) {
    notice("type what the camera should find first", true);
    return;
  }
  send({ type: "instruction", text });
});
$("cancel").addEventListener("click", () => send({ type: "cancel" }));
connect();
